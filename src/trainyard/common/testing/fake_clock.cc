#include "trainyard/common/testing/fake_clock.h"

#include "trainyard/common/util.h"

namespace trainyard::testing {

FakeClock::FakeClock() : FakeClock(trainyard::NowMillis()) {}

FakeClock::FakeClock(std::int64_t wall_millis)
    : wall_start_ms_(wall_millis), steady_start_(std::chrono::steady_clock::now()) {}

std::int64_t FakeClock::NowMillis() { return wall_start_ms_ + offset_ms_.load(); }

Clock::TimePoint FakeClock::SteadyNow() {
  return steady_start_ + std::chrono::milliseconds(offset_ms_.load());
}

bool FakeClock::WaitUntil(MutexLock& lock, std::condition_variable& cv, TimePoint deadline) {
  // Polled rather than signalled: Advance would otherwise have to reach the caller's mutex,
  // which may be gone by then.
  while (SteadyNow() < deadline) {
    if (lock.WaitUntil(cv, std::chrono::steady_clock::now() + std::chrono::milliseconds(1))) {
      return true;
    }
  }
  return false;
}

void FakeClock::Advance(std::chrono::milliseconds by) { offset_ms_ += by.count(); }

}  // namespace trainyard::testing
