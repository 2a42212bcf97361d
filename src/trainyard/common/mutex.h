#pragma once

// A mutex that clang's thread-safety analysis understands, and the annotations that say which
// data it guards. Every clang build (the `fuzz` preset, so every CI run) compiles with
// -Wthread-safety as an error: reading a GUARDED_BY member without its mutex, calling a
// REQUIRES function without it, or taking a mutex twice does not build. Other compilers ignore
// the annotations.
//
//   class Queue {
//    public:
//     void Push(int v) EXCLUDES(mu_) {
//       MutexLock lock(mu_);
//       items_.push_back(v);
//       cv_.notify_one();
//     }
//     int Pop() EXCLUDES(mu_) {
//       MutexLock lock(mu_);
//       while (items_.empty()) lock.Wait(cv_);
//       ...
//     }
//    private:
//     Mutex mu_;
//     std::condition_variable cv_;
//     std::deque<int> items_ GUARDED_BY(mu_);
//   };
//
// Conditions are waited for in a loop (`while (!ready) lock.Wait(cv)`) rather than with a
// predicate lambda, whose body the analysis would check without knowing the mutex is held.

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define TY_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define TY_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) TY_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY TY_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) TY_THREAD_ANNOTATION(guarded_by(x))
#define REQUIRES(...) TY_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) TY_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) TY_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) TY_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) TY_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))

namespace trainyard {

// std::mutex with a capability the analysis tracks. Not recursive.
class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  bool TryLock() TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  friend class MutexLock;
  std::mutex mu_;
};

// Holds a Mutex for its scope. Unlock()/Lock() release and take it again inside the scope;
// Wait() and WaitUntil() wait on a condition variable, releasing the mutex meanwhile and holding it
// again when they return.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : lock_(mu.mu_) {}
  ~MutexLock() RELEASE() = default;
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void Unlock() RELEASE() { lock_.unlock(); }
  void Lock() ACQUIRE() { lock_.lock(); }

  void Wait(std::condition_variable& cv) { cv.wait(lock_); }
  // False when the deadline passed (the condition may still have become true meanwhile).
  template <class Clock, class Duration>
  bool WaitUntil(std::condition_variable& cv,
                 const std::chrono::time_point<Clock, Duration>& deadline) {
    return cv.wait_until(lock_, deadline) == std::cv_status::no_timeout;
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace trainyard
