#include "trainyard/common/clock.h"

#include "trainyard/common/util.h"

namespace trainyard {
namespace {

class RealClock final : public Clock {
 public:
  std::int64_t NowMillis() override { return trainyard::NowMillis(); }
  TimePoint SteadyNow() override { return std::chrono::steady_clock::now(); }
  bool WaitUntil(MutexLock& lock, std::condition_variable& cv, TimePoint deadline) override {
    return lock.WaitUntil(cv, deadline);
  }
};

}  // namespace

Clock& Clock::Real() {
  static RealClock clock;
  return clock;
}

}  // namespace trainyard
