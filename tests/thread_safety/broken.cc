// Locking mistakes the analysis must refuse, one per TY_CASE; each "case N:" line gives the
// diagnostic clang must print (tests/thread_safety/check.sh).
#include "trainyard/common/mutex.h"

// case 1: reading variable 'total_' requires holding mutex 'mu_'
// case 2: calling function 'AddLocked' requires holding mutex 'mu_'
// case 3: acquiring mutex 'mu_' that is already held
// case 4: writing variable 'total_' requires holding mutex 'mu_'

namespace {

class Counter {
 public:
  int Broken() {
#if TY_CASE == 1
    return total_;
#elif TY_CASE == 2
    AddLocked(1);
    return 0;
#elif TY_CASE == 3
    trainyard::MutexLock a(mu_);
    trainyard::MutexLock b(mu_);
    return 0;
#elif TY_CASE == 4
    trainyard::MutexLock lock(mu_);
    lock.Unlock();
    total_ = 1;
    lock.Lock();
    return 0;
#endif
  }

 private:
  void AddLocked(int n) REQUIRES(mu_) { total_ += n; }

  trainyard::Mutex mu_;
  int total_ GUARDED_BY(mu_) = 0;
};

}  // namespace

int main() { return Counter().Broken(); }
