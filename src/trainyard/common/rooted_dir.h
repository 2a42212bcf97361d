#pragma once

// Opening files inside folders that untrusted code can write (a run's folder, a snapshot being
// materialised, a Slurm job's shared folder) without ever leaving them.
//
// A run can replace any folder it can write with a symbolic link at any moment, between a check
// and a use. Checking a path string and opening it later is therefore never safe, and neither is
// O_NOFOLLOW alone (it guards only the last component). Everything here opens relative to a
// descriptor of the root folder with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS), or, where the kernel or a seccomp filter refuses openat2, one
// component at a time with openat(O_NOFOLLOW). Either way no symbolic link is followed anywhere
// along the path, ".." cannot climb out, and a FIFO or device planted in place of a file never
// blocks the caller (files are opened O_NONBLOCK and must be regular files).

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard {

// Owns a file descriptor and closes it when destroyed. Move-only.
class ScopedFd {
 public:
  explicit ScopedFd(int fd = -1) : fd_(fd) {}
  ~ScopedFd() { Reset(); }
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.Release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Closes the descriptor held (if any) and takes `fd`.
  void Reset(int fd = -1);
  // Gives up ownership without closing.
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes now and reports a failed close (which can mean a failed write-back): 0 or -1.
  int Close();

 private:
  int fd_;
};

// Splits a relative path given by a client or a run into its components, dropping empty and
// "." ones. InvalidArgument naming the path for: an absolute path, a ".." component, a NUL
// byte, or no component at all.
StatusOr<std::vector<std::string>> SplitRelativePath(std::string_view rel);

// A folder held open by descriptor; paths below it are opened through that descriptor only.
// The root's own path is trusted (the daemon chose it); everything under it is not.
// Thread-safe: every method is const and the descriptor never changes.
class RootedDir {
 public:
  // Opens the folder `root`. Its last component must not be a symbolic link. NotFound when it
  // does not exist; InvalidArgument when it is not a folder.
  static StatusOr<RootedDir> Open(const std::filesystem::path& root);
  // Creates `root` and its parents (mode 0755) when missing, then opens it.
  static StatusOr<RootedDir> Create(const std::filesystem::path& root);

  RootedDir(RootedDir&&) = default;
  RootedDir& operator=(RootedDir&&) = default;

  const std::filesystem::path& path() const { return path_; }
  int fd() const { return fd_.get(); }

  // Opens the regular file `rel` for reading. NotFound when it does not exist; InvalidArgument
  // when `rel` is not a clean relative path, passes through a symbolic link, or names something
  // other than a regular file. `st` (optional) receives its fstat.
  StatusOr<ScopedFd> OpenFile(std::string_view rel, struct stat* st = nullptr) const;
  // Opens the folder `rel` ("" or "." for the root itself). Errors as OpenFile.
  StatusOr<ScopedFd> OpenDir(std::string_view rel) const;
  // Opens the folder `rel`, creating it and any missing folder on the way (mode 0755). A
  // component that exists as anything but a folder (a symbolic link included) is
  // InvalidArgument naming it.
  StatusOr<ScopedFd> MakeDirs(std::string_view rel) const;
  // Opens the regular file `rel` for writing, creating it (mode `mode`) and its folders when
  // missing; appends, or truncates when `truncate`. Never writes through a symbolic link or into
  // a FIFO: those are InvalidArgument.
  StatusOr<ScopedFd> OpenForWrite(std::string_view rel, bool truncate, unsigned mode = 0644) const;

  // Reads the regular file `rel` whole; FailedPrecondition when it holds more than `max_bytes`.
  // Errors as OpenFile.
  StatusOr<std::string> ReadFile(std::string_view rel, std::uint64_t max_bytes = 64ull << 20) const;
  // The last `max_bytes` (at most) of the regular file `rel`. Errors as OpenFile.
  StatusOr<std::string> ReadTail(std::string_view rel, std::uint64_t max_bytes) const;
  // Writes `data` to `rel` atomically (temp file, fsync, rename within its folder, fsync of the
  // folder), creating its folders. The temp file and the rename never pass through a link.
  // Without `durable`, the fsyncs are left out: the file is whole after a crash of the process
  // but may be the old one after a power loss.
  Status WriteFileAtomic(std::string_view rel, std::string_view data, unsigned mode = 0644,
                         bool durable = true) const;
  // Removes the file or tree `rel` without following links out of it (a link is removed, never
  // its target). OK when it does not exist.
  Status Remove(std::string_view rel) const;

  // One entry met by Walk: its path relative to the root ("/"-separated) and its lstat.
  struct Entry {
    std::string rel;
    struct stat st;
  };
  // Visits every entry under the folder `rel` ("" for the root), depth first, folders before
  // their content, without entering a symbolic link or a folder swapped for one mid-walk (it is
  // reported as the link it is, or skipped when it vanished). Folders deeper than `max_depth`
  // are not entered. `visit` returns false to stop the walk. A missing `rel` visits nothing.
  Status Walk(std::string_view rel, const std::function<bool(const Entry&)>& visit,
              int max_depth = 64) const;

 private:
  RootedDir(ScopedFd fd, std::filesystem::path path) : fd_(std::move(fd)), path_(std::move(path)) {}
  ScopedFd fd_;
  std::filesystem::path path_;
};

// Copies the folder `rel` of `from` into `to` (same relative path), merging with what is there
// and replacing files of the same name: folders and regular files only, each opened by
// descriptor on both sides; links, FIFOs and devices are left behind. OK when `rel` is missing
// in `from`. Errors name the file.
Status CopyTree(const RootedDir& from, const RootedDir& to, std::string_view rel);

// Opens `rel` below the folder descriptor `dir_fd` with `flags` (O_CLOEXEC and O_NOFOLLOW are
// added), following no symbolic link on the way and never leaving `dir_fd`. Returns the
// descriptor, or -1 with errno set (ELOOP or EXDEV for a link or an escape). `rel` must already
// be a clean relative path (see SplitRelativePath). For tests: `force_walk` uses the
// component-by-component fallback even where openat2 works.
int OpenBeneath(int dir_fd, std::string_view rel, int flags, unsigned mode = 0,
                bool force_walk = false);

}  // namespace trainyard
