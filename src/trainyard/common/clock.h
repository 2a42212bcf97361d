#pragma once

// The time a component reads and waits by, injected so that tests of timeouts move time
// forward instead of sleeping through it (FakeClock, common/testing/fake_clock.h).

#include <chrono>
#include <condition_variable>
#include <cstdint>

#include "trainyard/common/mutex.h"

namespace trainyard {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  virtual ~Clock() = default;
  // Wall-clock time, unix milliseconds: what records say (a run's transitions).
  virtual std::int64_t NowMillis() = 0;
  // Monotonic time: what deadlines are measured on.
  virtual TimePoint SteadyNow() = 0;
  // Waits on `cv` (whose mutex `lock` holds) until it is notified or this clock reaches
  // `deadline`. False when the deadline passed; true when woken before it, which callers treat
  // as "look again" (a wakeup may be spurious).
  virtual bool WaitUntil(MutexLock& lock, std::condition_variable& cv, TimePoint deadline) = 0;

  // The machine's clocks. Lives for the whole program.
  static Clock& Real();
};

}  // namespace trainyard
