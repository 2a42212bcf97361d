#include "trainyard/common/mutex.h"

#include <gtest/gtest.h>

#include <chrono>
#include <deque>
#include <thread>
#include <vector>

namespace trainyard {
namespace {

using namespace std::chrono_literals;

class Queue {
 public:
  void Push(int v) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    items_.push_back(v);
    cv_.notify_one();
  }
  int Pop() EXCLUDES(mu_) {
    MutexLock lock(mu_);
    while (items_.empty()) lock.Wait(cv_);
    const int v = items_.front();
    items_.pop_front();
    return v;
  }
  // Nothing arrives: false once the deadline passed, with the mutex held again.
  bool PopWithin(std::chrono::milliseconds timeout, int* out) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (items_.empty()) {
      if (!lock.WaitUntil(cv_, deadline)) {
        if (items_.empty()) return false;
        break;
      }
    }
    *out = items_.front();
    items_.pop_front();
    held_after_wait_ = mu_.TryLock() ? (mu_.Unlock(), false) : true;
    return true;
  }
  bool held_after_wait() EXCLUDES(mu_) {
    MutexLock lock(mu_);
    return held_after_wait_;
  }

 private:
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<int> items_ GUARDED_BY(mu_);
  bool held_after_wait_ GUARDED_BY(mu_) = false;
};

TEST(MutexTest, WaitReleasesTheMutexAndHoldsItAgainOnReturn) {
  Queue q;
  std::thread consumer([&] {
    int sum = 0;
    for (int i = 0; i < 1000; ++i) sum += q.Pop();
    EXPECT_EQ(sum, 1000 * 999 / 2);
  });
  for (int i = 0; i < 1000; ++i) q.Push(i);
  consumer.join();

  int v = 0;
  EXPECT_FALSE(q.PopWithin(20ms, &v));
  std::thread late([&] {
    std::this_thread::sleep_for(20ms);
    q.Push(7);
  });
  EXPECT_TRUE(q.PopWithin(10s, &v));
  late.join();
  EXPECT_EQ(v, 7);
  EXPECT_TRUE(q.held_after_wait());
}

TEST(MutexTest, UnlockLetsOthersInUntilLock) {
  Mutex mu;
  MutexLock lock(mu);
  lock.Unlock();
  bool other_got_it = false;
  std::thread other([&] {
    MutexLock inner(mu);
    other_got_it = true;
  });
  other.join();
  lock.Lock();
  EXPECT_TRUE(other_got_it);
  EXPECT_FALSE(mu.TryLock());
}

}  // namespace
}  // namespace trainyard
