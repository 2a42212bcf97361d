// Correct locking that the analysis must accept (tests/thread_safety/check.sh).
#include "trainyard/common/mutex.h"

namespace {

class Counter {
 public:
  void Add(int n) EXCLUDES(mu_) {
    trainyard::MutexLock lock(mu_);
    AddLocked(n);
    lock.Unlock();
    Slow();
    lock.Lock();
    total_ += n;
  }
  int Wait() EXCLUDES(mu_) {
    trainyard::MutexLock lock(mu_);
    while (total_ == 0) lock.Wait(cv_);
    return total_;
  }

 private:
  void AddLocked(int n) REQUIRES(mu_) { total_ += n; }
  void Slow() EXCLUDES(mu_) {}

  trainyard::Mutex mu_;
  std::condition_variable cv_;
  int total_ GUARDED_BY(mu_) = 0;
};

}  // namespace

int main() {
  Counter c;
  c.Add(1);
  return c.Wait() == 2 ? 0 : 1;
}
