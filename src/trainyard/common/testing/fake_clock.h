#pragma once

// A Clock that moves only when a test says so (Advance), for tests of timeouts that would
// otherwise sleep through them. Linked into tests only (trainyard_common_testing).

#include <atomic>
#include <chrono>

#include "trainyard/common/clock.h"

namespace trainyard::testing {

class FakeClock final : public Clock {
 public:
  // Starts at the machine's time (so records made beside it by the real clock compare sensibly),
  // or at `wall_millis` (unix milliseconds).
  FakeClock();
  explicit FakeClock(std::int64_t wall_millis);

  std::int64_t NowMillis() override;
  TimePoint SteadyNow() override;
  // Waits on `cv` for a notification, looking at this clock every millisecond of real time, so
  // that an Advance past `deadline` ends the wait at once.
  bool WaitUntil(MutexLock& lock, std::condition_variable& cv, TimePoint deadline) override;

  // Moves both clocks forward by `by`.
  void Advance(std::chrono::milliseconds by);

 private:
  std::atomic<std::int64_t> offset_ms_{0};
  const std::int64_t wall_start_ms_;
  const TimePoint steady_start_;
};

}  // namespace trainyard::testing
