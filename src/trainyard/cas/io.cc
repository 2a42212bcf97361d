#include "trainyard/cas/io.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "trainyard/cas/manifest.h"

namespace trainyard::cas::internal {

Status ErrnoError(std::string_view what, const std::filesystem::path& path, int err) {
  std::string msg =
      std::string(what) + " " + PrintablePath(path.native()) + ": " + std::strerror(err);
  if (err == ENOENT) return NotFound(std::move(msg));
  if (err == EACCES || err == EPERM) return PermissionDenied(std::move(msg));
  return Internal(std::move(msg));
}

Status WriteAll(int fd, std::string_view data, const std::filesystem::path& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

ssize_t ReadSome(int fd, char* buf, size_t size) {
  for (;;) {
    ssize_t n = ::read(fd, buf, size);
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

Status SyncDir(const std::filesystem::path& dir) {
  ScopedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("cannot open folder", dir, errno);
  if (::fsync(fd.get()) != 0) return ErrnoError("cannot fsync folder", dir, errno);
  return Status::Ok();
}

Status OpenSourceFile(const std::filesystem::path& src, ScopedFd* fd, struct stat* st,
                      const RootedDir* beneath) {
  if (beneath != nullptr) {
    // RootedDir::OpenFile: O_NONBLOCK, regular files only, no link followed, nothing outside.
    StatusOr<ScopedFd> opened = beneath->OpenFile(src.native(), st);
    if (!opened.ok()) {
      return opened.status().WithPrefix("cannot read " +
                                        PrintablePath((beneath->path() / src).native()));
    }
    *fd = std::move(opened).value();
    ::posix_fadvise(fd->get(), 0, 0, POSIX_FADV_SEQUENTIAL);
    return Status::Ok();
  }
  // O_NONBLOCK: opening a FIFO that appeared in place of a file must not hang.
  fd->Reset(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!fd->valid()) {
    if (errno == ELOOP) {
      return InvalidArgument(PrintablePath(src.native()) + " is a symlink; not stored");
    }
    return ErrnoError("cannot read", src, errno);
  }
  if (::fstat(fd->get(), st) != 0) return ErrnoError("cannot stat", src, errno);
  if (!S_ISREG(st->st_mode)) {
    return InvalidArgument(PrintablePath(src.native()) + " is not a regular file");
  }
  ::posix_fadvise(fd->get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  return Status::Ok();
}

}  // namespace trainyard::cas::internal
