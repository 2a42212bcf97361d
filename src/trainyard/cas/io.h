#pragma once

// Small POSIX helpers shared by the cas module's sources. Internal: not part of the API.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/status.h"

namespace trainyard::cas::internal {

// "<what> <path>: <strerror>", with NotFound for ENOENT, PermissionDenied for EACCES/EPERM and
// Internal otherwise.
Status ErrnoError(std::string_view what, const std::filesystem::path& path, int err);

// Writes all of `data` to `fd`, retrying on EINTR and short writes.
Status WriteAll(int fd, std::string_view data, const std::filesystem::path& path);

// Reads up to `size` bytes, retrying on EINTR. Returns the count (0 at end of file) or -1 with
// errno set.
ssize_t ReadSome(int fd, char* buf, size_t size);

// fsyncs a folder so that entries created or renamed in it are durable.
Status SyncDir(const std::filesystem::path& dir);

// Runs fn(i) for every i in [0, n) on up to `max_workers` threads (fewer when the machine has
// fewer cores or there are fewer items), the calling thread being one of them. fn returns false
// to stop the handing out of further items. Items are handed out in increasing order, so when
// fn fails for item k every item below k has been run. Work that mostly waits on the network
// (`io_bound`) is not held to the core count.
template <typename Fn>
void ParallelFor(size_t n, Fn fn, size_t max_workers = 8, bool io_bound = false) {
  size_t workers =
      io_bound ? max_workers : std::max<size_t>(1, std::thread::hardware_concurrency());
  workers = std::min({workers, max_workers, n});
  if (workers <= 1) {
    for (size_t i = 0; i < n; ++i) {
      if (!fn(i)) return;
    }
    return;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  auto work = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      const size_t i = next.fetch_add(1);
      if (i >= n) return;
      if (!fn(i)) stop.store(true);
    }
  };
  std::vector<std::jthread> pool;
  pool.reserve(workers - 1);
  for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
}  // The jthreads join here.

using ScopedFd = ::trainyard::ScopedFd;

// Opens the regular file `src` for reading its content once, start to end: never through a
// final symlink (InvalidArgument "... is a symlink; not stored"), never blocking on a FIFO that
// appeared in its place, and only a regular file (InvalidArgument otherwise). Fills *fd and
// *st (its fstat). Other errors as ErrnoError.
//
// With `beneath`, `src` is a path relative to that folder and is opened without following any
// symbolic link on the way and without leaving the folder (RootedDir::OpenFile): a folder
// swapped for a link after a tree was walked cannot lead the read elsewhere.
Status OpenSourceFile(const std::filesystem::path& src, ScopedFd* fd, struct stat* st,
                      const RootedDir* beneath = nullptr);

}  // namespace trainyard::cas::internal
