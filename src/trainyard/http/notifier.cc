#include "trainyard/http/notifier.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <utility>

#include "trainyard/common/mutex.h"

namespace trainyard {

// One suspended WaitForChange. The timer fires at the deadline; a wake-up cancels it. The timer
// is only touched on its own executor (the waiting coroutine's), never concurrently.
struct Notifier::Waiter {
  Waiter(const asio::any_io_executor& executor, Clock::time_point deadline)
      : timer(executor, deadline) {}
  asio::steady_timer timer;
};

std::uint64_t Notifier::Sequence(const std::string& key) const {
  MutexLock lock(mu_);
  auto it = entries_.find(key);
  return it == entries_.end() ? 0 : it->second.sequence;
}

void Notifier::WakeLocked(const std::vector<std::shared_ptr<Waiter>>& waiters) {
  for (const auto& waiter : waiters) {
    // Posting (not cancelling here) keeps the timer single-threaded; on a strand the post runs
    // after the waiter suspended in async_wait, so the cancel always finds the wait.
    asio::post(waiter->timer.get_executor(), [waiter] { waiter->timer.cancel(); });
  }
}

void Notifier::Notify(const std::string& key) {
  MutexLock lock(mu_);
  Entry& entry = entries_[key];
  entry.sequence = ++last_sequence_;
  if (shut_down_ || entry.waiters.empty()) return;
  // Each waiter needs one wake-up; handing them over empties the list for the next round.
  std::vector<std::shared_ptr<Waiter>> waiters = std::move(entry.waiters);
  entry.waiters.clear();
  WakeLocked(waiters);
}

void Notifier::Forget(const std::string& key) {
  MutexLock lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  if (!shut_down_) WakeLocked(it->second.waiters);
  entries_.erase(it);
}

void Notifier::Shutdown() {
  MutexLock lock(mu_);
  // Waiters stay registered: each unregisters when it reaches its deadline or its frame is
  // destroyed. They are deliberately not woken: a handler that loops "check, wait" would find
  // nothing new and wait again at once, spinning without ever yielding to its event loop.
  shut_down_ = true;
}

std::size_t Notifier::WaiterCount(const std::string& key) const {
  MutexLock lock(mu_);
  auto it = entries_.find(key);
  return it == entries_.end() ? 0 : it->second.waiters.size();
}

void Notifier::Unregister(const std::string& key, const std::shared_ptr<Waiter>& waiter) {
  MutexLock lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  auto& waiters = it->second.waiters;
  waiters.erase(std::remove(waiters.begin(), waiters.end(), waiter), waiters.end());
  // A key that was only waited on, never notified, leaves no trace.
  if (waiters.empty() && it->second.sequence == 0) entries_.erase(it);
}

asio::awaitable<std::uint64_t> Notifier::WaitForChange(std::string key, std::uint64_t seen,
                                                       Clock::time_point deadline) {
  const asio::any_io_executor executor = co_await asio::this_coro::executor;
  auto waiter = std::make_shared<Waiter>(executor, deadline);
  bool registered = false;
  {
    MutexLock lock(mu_);
    auto it = entries_.find(key);
    const std::uint64_t current = it == entries_.end() ? 0 : it->second.sequence;
    if (current != seen || Clock::now() >= deadline) co_return current;
    // After Shutdown nothing wakes us any more: just wait for the deadline (or the event loop
    // to stop) so that callers looping on "check, wait" do not spin.
    if (!shut_down_) {
      entries_[key].waiters.push_back(waiter);
      registered = true;
    }
  }

  // Unregisters on every exit, including when the frame is destroyed without resuming (its
  // io_context went away), so no stale executor is left behind for Notify to post to.
  struct Registration {
    Notifier* notifier;
    const std::string& key;
    const std::shared_ptr<Waiter>& waiter;
    bool active;
    ~Registration() {
      if (active) notifier->Unregister(key, waiter);
    }
  } registration{this, key, waiter, registered};

  boost::system::error_code ec;  // operation_aborted on wake-up; the deadline otherwise.
  co_await waiter->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  co_return Sequence(key);
}

asio::awaitable<void> Notifier::WaitForChange(std::string key, Clock::time_point deadline) {
  const std::uint64_t seen = Sequence(key);
  co_await WaitForChange(std::move(key), seen, deadline);
}

}  // namespace trainyard
