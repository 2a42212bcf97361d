#pragma once

// clang-format off
#include <utility>  // Before Boost 1.74's awaitable.hpp, which uses std::exchange without it.
#include <boost/asio/awaitable.hpp>
// clang-format on

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "trainyard/common/mutex.h"

namespace trainyard {

namespace asio = boost::asio;

// Wakes long-poll handlers when something they watch changes ("run X has new log lines").
//
// Each key has a change token, its sequence. Notify(key) moves the sequence to a value the key
// never had before; tokens are compared for equality only. A key never notified (or forgotten)
// has sequence 0.
//
// The race-free long-poll pattern, inside an HttpServer handler:
//
//   const uint64_t seen = notifier.Sequence(key);          // 1. read the token first,
//   if (/* state already differs from the client's cursor */) co_return Reply();  // 2. check,
//   co_await notifier.WaitForChange(key, seen, deadline);   // 3. then wait.
//   co_return Reply();  // new state, or "nothing new" at the deadline.
//
// The writer changes its state first and calls Notify(key) after. A Notify that lands between
// steps 1 and 3 moved the sequence, so step 3 returns at once: no wake-up is lost.
//
// Thread-safety: every method may be called from any thread, including threads that run no
// asio event loop. WaitForChange must be awaited from a coroutine whose executor is a strand
// or an io_context run by a single thread (every HttpServer handler qualifies: each connection
// runs on its own strand), because the wake-up is posted to that executor.
//
// Lifetime: the Notifier must outlive every coroutine waiting on it (a destroyed coroutine frame
// unregisters itself). Before the io_context of waiting coroutines is stopped and destroyed while
// other threads may still call Notify, call Shutdown() (HttpServer::Stop does this for its own
// notifier()); otherwise a Notify could post to a context that is being torn down.
class Notifier {
 public:
  using Clock = std::chrono::steady_clock;

  Notifier() = default;
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;
  ~Notifier() = default;

  // The current change token of `key`; 0 when the key was never notified.
  std::uint64_t Sequence(const std::string& key) const;

  // Moves the sequence of `key` and wakes every coroutine waiting on it. Never blocks on the
  // waiters; they resume on their own executors.
  void Notify(const std::string& key);

  // Returns as soon as Sequence(key) != seen (at once, without suspending, when that already
  // holds or the deadline has passed), else at `deadline`. Yields the sequence at return; equal
  // to `seen` means "no change".
  // `key` is taken by value: the coroutine frame owns it.
  asio::awaitable<std::uint64_t> WaitForChange(std::string key, std::uint64_t seen,
                                               Clock::time_point deadline);

  // Returns when Notify(key) is called after this call began, or at `deadline`. Prefer the
  // sequence form above: a change made before this call began is not seen.
  asio::awaitable<void> WaitForChange(std::string key, Clock::time_point deadline);

  // Wakes the waiters of `key` and drops its record (the sequence returns to 0). Call when the
  // watched object is deleted so the table does not grow with dead keys.
  void Forget(const std::string& key);

  // Makes Notify stop waking anyone (it still moves sequences), so no wake-up is posted to an
  // event loop that is about to be torn down. Waits in progress and later waits run to their
  // deadline, or end when their event loop stops. Irreversible. Call it before stopping the
  // event loops of waiting coroutines.
  void Shutdown();

  // Number of coroutines currently waiting on `key` (for tests and metrics).
  std::size_t WaiterCount(const std::string& key) const;

 private:
  struct Waiter;
  struct Entry {
    std::uint64_t sequence = 0;
    std::vector<std::shared_ptr<Waiter>> waiters;
  };

  // Posts a wake-up to each waiter. Called with mu_ held so that a waiter's executor cannot be
  // torn down (its frame's unregistration blocks on mu_) while the post is in flight.
  static void WakeLocked(const std::vector<std::shared_ptr<Waiter>>& waiters);
  void Unregister(const std::string& key, const std::shared_ptr<Waiter>& waiter);

  mutable Mutex mu_;
  std::unordered_map<std::string, Entry> entries_ GUARDED_BY(mu_);
  std::uint64_t last_sequence_ GUARDED_BY(mu_) = 0;
  bool shut_down_ GUARDED_BY(mu_) = false;
};

}  // namespace trainyard
