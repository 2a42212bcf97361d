#include "trainyard/common/rooted_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "trainyard/common/util.h"

namespace trainyard {
namespace {

namespace fs = std::filesystem;

// Cleared the first time the kernel (or a seccomp filter) answers openat2 with ENOSYS.
std::atomic<bool> g_have_openat2{true};

std::string Join(const std::vector<std::string>& parts, std::size_t from, std::size_t to) {
  std::string out;
  for (std::size_t i = from; i < to; ++i) {
    if (!out.empty()) out += '/';
    out += parts[i];
  }
  return out;
}

// The error a caller sees for `rel` after an open failed with `err`.
Status OpenError(std::string_view rel, int err) {
  const std::string what = "'" + std::string(rel) + "'";
  switch (err) {
    case ENOENT:
      return NotFound(what + " does not exist");
    case ELOOP:
    case EXDEV:
      return InvalidArgument(what + " passes through a symbolic link, which is never followed");
    case ENOTDIR:
      return InvalidArgument(what + ": a component of the path is not a folder");
    case ENXIO:
      return InvalidArgument(what + " is not a regular file");
    case EACCES:
    case EPERM:
      return PermissionDenied(what + ": " + std::strerror(err));
    default:
      return Internal(what + ": " + std::strerror(err));
  }
}

// The components of `rel` without empty and "." ones; false when one is "..".
bool Components(std::string_view rel, std::vector<std::string>* parts) {
  for (std::size_t start = 0; start <= rel.size();) {
    std::size_t slash = rel.find('/', start);
    if (slash == std::string_view::npos) slash = rel.size();
    std::string part(rel.substr(start, slash - start));
    if (part == "..") return false;
    if (!part.empty() && part != ".") parts->push_back(std::move(part));
    start = slash + 1;
  }
  return true;
}

int OpenWalk(int dir_fd, std::string_view rel, int flags, unsigned mode) {
  std::vector<std::string> parts;
  if (!Components(rel, &parts)) {
    errno = EXDEV;
    return -1;
  }
  if (parts.empty()) return ::openat(dir_fd, ".", flags | O_CLOEXEC, mode);
  int cur = dir_fd;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    int next = ::openat(cur, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    const int err = errno;
    if (cur != dir_fd) ::close(cur);
    if (next < 0) {
      errno = err;
      return -1;
    }
    cur = next;
  }
  int fd = ::openat(cur, parts.back().c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
  const int err = errno;
  if (cur != dir_fd) ::close(cur);
  errno = err;
  return fd;
}

// Checks that `fd` is a regular file (or a folder when `dir`); closes it and sets errno
// otherwise.
int KeepIfKind(int fd, bool dir, struct stat* out) {
  if (fd < 0) return fd;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
    ::close(fd);
    errno = dir ? ENOTDIR : ENXIO;
    return -1;
  }
  if (out != nullptr) *out = st;
  return fd;
}

Status WriteAllFd(int fd, std::string_view data, std::string_view rel) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Internal("writing '" + std::string(rel) + "': " + std::strerror(errno));
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return Status::Ok();
}

// Removes everything inside the open folder `dir` (consumes it).
Status ClearDir(int dir, std::string_view rel) {
  DIR* d = ::fdopendir(dir);
  if (d == nullptr) {
    ::close(dir);
    return Internal("cannot list '" + std::string(rel) + "': " + std::strerror(errno));
  }
  Status result = Status::Ok();
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  const int fd = ::dirfd(d);
  for (const std::string& name : names) {
    struct stat st {};
    if (::fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    const std::string child = std::string(rel) + "/" + name;
    if (S_ISDIR(st.st_mode)) {
      int sub = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) {
        if (Status st2 = ClearDir(sub, child); !st2.ok() && result.ok()) result = st2;
      }
      if (::unlinkat(fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT && result.ok()) {
        result = Internal("cannot remove '" + child + "': " + std::strerror(errno));
      }
    } else if (::unlinkat(fd, name.c_str(), 0) != 0 && errno != ENOENT && result.ok()) {
      result = Internal("cannot remove '" + child + "': " + std::strerror(errno));
    }
  }
  ::closedir(d);
  return result;
}

}  // namespace

void ScopedFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

int ScopedFd::Close() {
  int rc = fd_ >= 0 ? ::close(fd_) : 0;
  fd_ = -1;
  return rc;
}

StatusOr<std::vector<std::string>> SplitRelativePath(std::string_view rel) {
  if (rel.find('\0') != std::string_view::npos) {
    return InvalidArgument("path contains a NUL byte");
  }
  if (!rel.empty() && rel.front() == '/') {
    return InvalidArgument("path '" + std::string(rel) + "' must be relative");
  }
  std::vector<std::string> parts;
  if (!Components(rel, &parts)) {
    return InvalidArgument("path '" + std::string(rel) + "' must not contain '..'");
  }
  if (parts.empty()) return InvalidArgument("path '" + std::string(rel) + "' names no file");
  return parts;
}

int OpenBeneath(int dir_fd, std::string_view rel, int flags, unsigned mode, bool force_walk) {
  if (!force_walk && g_have_openat2.load(std::memory_order_relaxed)) {
    open_how how{};
    how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
    how.mode = (flags & O_CREAT) != 0 ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const std::string path = rel.empty() ? std::string(".") : std::string(rel);
    long fd = ::syscall(SYS_openat2, dir_fd, path.c_str(), &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS) return static_cast<int>(fd);
    g_have_openat2.store(false, std::memory_order_relaxed);
  }
  return OpenWalk(dir_fd, rel, flags, mode);
}

StatusOr<RootedDir> RootedDir::Open(const fs::path& root) {
  int fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound("folder " + root.string() + " does not exist");
    if (err == ENOTDIR || err == ELOOP) {
      return InvalidArgument(root.string() + " is not a folder (symbolic links are not followed)");
    }
    return Internal("cannot open " + root.string() + ": " + std::strerror(err));
  }
  return RootedDir(ScopedFd(fd), root);
}

StatusOr<RootedDir> RootedDir::Create(const fs::path& root) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return Internal("cannot create " + root.string() + ": " + ec.message());
  return Open(root);
}

StatusOr<ScopedFd> RootedDir::OpenFile(std::string_view rel, struct stat* st) const {
  TY_ASSIGN_OR_RETURN(auto parts, SplitRelativePath(rel));
  int fd = KeepIfKind(OpenBeneath(fd_.get(), Join(parts, 0, parts.size()), O_RDONLY | O_NONBLOCK),
                      false, st);
  if (fd < 0) return OpenError(rel, errno);
  return ScopedFd(fd);
}

StatusOr<ScopedFd> RootedDir::OpenDir(std::string_view rel) const {
  std::string clean;
  if (!rel.empty() && rel != ".") {
    TY_ASSIGN_OR_RETURN(auto parts, SplitRelativePath(rel));
    clean = Join(parts, 0, parts.size());
  }
  int fd = KeepIfKind(OpenBeneath(fd_.get(), clean, O_RDONLY | O_DIRECTORY), true, nullptr);
  if (fd < 0) return OpenError(rel, errno);
  return ScopedFd(fd);
}

StatusOr<ScopedFd> RootedDir::MakeDirs(std::string_view rel) const {
  std::vector<std::string> parts;
  if (!rel.empty() && rel != ".") {
    TY_ASSIGN_OR_RETURN(parts, SplitRelativePath(rel));
  }
  ScopedFd cur(::dup(fd_.get()));
  if (!cur.valid()) return Internal(std::string("dup: ") + std::strerror(errno));
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (::mkdirat(cur.get(), parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
      return Internal("cannot create the folder '" + Join(parts, 0, i + 1) +
                      "': " + std::strerror(errno));
    }
    int next =
        ::openat(cur.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) {
      const int err = errno;
      if (err == ELOOP || err == ENOTDIR) {
        return InvalidArgument("'" + Join(parts, 0, i + 1) +
                               "' is not a folder (symbolic links are not followed)");
      }
      return OpenError(Join(parts, 0, i + 1), err);
    }
    cur.Reset(next);
  }
  return cur;
}

StatusOr<ScopedFd> RootedDir::OpenForWrite(std::string_view rel, bool truncate,
                                           unsigned mode) const {
  TY_ASSIGN_OR_RETURN(auto parts, SplitRelativePath(rel));
  TY_ASSIGN_OR_RETURN(ScopedFd dir, MakeDirs(Join(parts, 0, parts.size() - 1)));
  // O_NONBLOCK: a FIFO planted here with no reader fails (ENXIO) instead of blocking.
  const int flags =
      O_WRONLY | O_CREAT | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | (truncate ? O_TRUNC : O_APPEND);
  int fd = KeepIfKind(::openat(dir.get(), parts.back().c_str(), flags, mode), false, nullptr);
  if (fd < 0) return OpenError(rel, errno);
  return ScopedFd(fd);
}

StatusOr<std::string> RootedDir::ReadFile(std::string_view rel, std::uint64_t max_bytes) const {
  struct stat st {};
  TY_ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(rel, &st));
  std::string out;
  if (st.st_size > 0) {
    out.reserve(static_cast<std::size_t>(
        std::min<std::uint64_t>(static_cast<std::uint64_t>(st.st_size), max_bytes + 1)));
  }
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Internal("reading '" + std::string(rel) + "': " + std::strerror(errno));
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > max_bytes) {
      return FailedPrecondition("'" + std::string(rel) + "' is larger than " +
                                std::to_string(max_bytes) + " bytes");
    }
  }
  return out;
}

StatusOr<std::string> RootedDir::ReadTail(std::string_view rel, std::uint64_t max_bytes) const {
  struct stat st {};
  TY_ASSIGN_OR_RETURN(ScopedFd fd, OpenFile(rel, &st));
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const std::uint64_t start = size > max_bytes ? size - max_bytes : 0;
  std::string buf(static_cast<std::size_t>(size - start), '\0');
  std::size_t got = 0;
  while (got < buf.size()) {
    ssize_t n =
        ::pread(fd.get(), buf.data() + got, buf.size() - got, static_cast<off_t>(start + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Internal("reading '" + std::string(rel) + "': " + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  buf.resize(got);
  return buf;
}

Status RootedDir::WriteFileAtomic(std::string_view rel, std::string_view data, unsigned mode,
                                  bool durable) const {
  TY_ASSIGN_OR_RETURN(auto parts, SplitRelativePath(rel));
  TY_ASSIGN_OR_RETURN(ScopedFd dir, MakeDirs(Join(parts, 0, parts.size() - 1)));
  const std::string temp = "." + parts.back() + "." + RandomHex(6) + ".tmp";
  ScopedFd fd(::openat(dir.get(), temp.c_str(),
                       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd.valid()) return OpenError(rel, errno);
  Status st = WriteAllFd(fd.get(), data, rel);
  if (st.ok() && ::fchmod(fd.get(), mode) != 0) {
    st = Internal("chmod '" + std::string(rel) + "': " + std::strerror(errno));
  }
  if (st.ok() && durable && ::fsync(fd.get()) != 0) {
    st = Internal("fsync '" + std::string(rel) + "': " + std::strerror(errno));
  }
  if (st.ok() && fd.Close() != 0) {
    st = Internal("close '" + std::string(rel) + "': " + std::strerror(errno));
  }
  if (st.ok() && ::renameat(dir.get(), temp.c_str(), dir.get(), parts.back().c_str()) != 0) {
    st = Internal("rename '" + std::string(rel) + "': " + std::strerror(errno));
  }
  if (!st.ok()) {
    ::unlinkat(dir.get(), temp.c_str(), 0);
    return st;
  }
  if (durable) (void)::fsync(dir.get());
  return Status::Ok();
}

Status RootedDir::Remove(std::string_view rel) const {
  TY_ASSIGN_OR_RETURN(auto parts, SplitRelativePath(rel));
  auto parent = OpenDir(Join(parts, 0, parts.size() - 1));
  if (!parent.ok()) {
    return parent.status().code() == StatusCode::kNotFound ? Status::Ok() : parent.status();
  }
  const char* leaf = parts.back().c_str();
  struct stat st {};
  if (::fstatat(parent->get(), leaf, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? Status::Ok() : OpenError(rel, errno);
  }
  if (S_ISDIR(st.st_mode)) {
    int sub = ::openat(parent->get(), leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub >= 0) TY_RETURN_IF_ERROR(ClearDir(sub, rel));
    if (::unlinkat(parent->get(), leaf, AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return Internal("cannot remove '" + std::string(rel) + "': " + std::strerror(errno));
    }
    return Status::Ok();
  }
  if (::unlinkat(parent->get(), leaf, 0) != 0 && errno != ENOENT) {
    return Internal("cannot remove '" + std::string(rel) + "': " + std::strerror(errno));
  }
  return Status::Ok();
}

namespace {

// Visits the content of the open folder `dir` (consumed), whose path is `prefix`.
bool WalkDir(int dir, const std::string& prefix, int depth, int max_depth,
             const std::function<bool(const RootedDir::Entry&)>& visit) {
  DIR* d = ::fdopendir(dir);
  if (d == nullptr) {
    ::close(dir);
    return true;
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  std::sort(names.begin(), names.end());
  const int fd = ::dirfd(d);
  bool go_on = true;
  for (const std::string& name : names) {
    RootedDir::Entry entry{prefix.empty() ? name : prefix + "/" + name, {}};
    if (::fstatat(fd, name.c_str(), &entry.st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!visit(entry)) {
      go_on = false;
      break;
    }
    if (!S_ISDIR(entry.st.st_mode) || depth + 1 > max_depth) continue;
    // Swapped for a link since the fstatat: O_NOFOLLOW refuses it and the walk moves on.
    int sub = ::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) continue;
    if (!WalkDir(sub, entry.rel, depth + 1, max_depth, visit)) {
      go_on = false;
      break;
    }
  }
  ::closedir(d);
  return go_on;
}

}  // namespace

Status CopyTree(const RootedDir& from, const RootedDir& to, std::string_view rel) {
  Status result = Status::Ok();
  TY_RETURN_IF_ERROR(from.Walk(rel, [&](const RootedDir::Entry& e) {
    if (S_ISDIR(e.st.st_mode)) {
      result = to.MakeDirs(e.rel).status();
    } else if (S_ISREG(e.st.st_mode)) {
      auto in = from.OpenFile(e.rel);
      if (!in.ok()) {
        // Vanished or swapped for a link since it was listed: left behind like a link.
        if (in.status().code() == StatusCode::kNotFound ||
            in.status().code() == StatusCode::kInvalidArgument) {
          return true;
        }
        result = in.status();
        return false;
      }
      auto out = to.OpenForWrite(e.rel, /*truncate=*/true, e.st.st_mode & 0777);
      if (!out.ok()) {
        result = out.status();
        return false;
      }
      char buf[1 << 16];
      for (;;) {
        ssize_t n = ::read(in->get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          result = Internal("reading '" + e.rel + "': " + std::strerror(errno));
          break;
        }
        if (n == 0) break;
        result = WriteAllFd(out->get(), std::string_view(buf, static_cast<std::size_t>(n)), e.rel);
        if (!result.ok()) break;
      }
    }
    return result.ok();
  }));
  return result;
}

Status RootedDir::Walk(std::string_view rel, const std::function<bool(const Entry&)>& visit,
                       int max_depth) const {
  auto dir = OpenDir(rel);
  if (!dir.ok()) {
    return dir.status().code() == StatusCode::kNotFound ? Status::Ok() : dir.status();
  }
  std::string prefix;
  if (!rel.empty() && rel != ".") {
    TY_ASSIGN_OR_RETURN(auto parts, SplitRelativePath(rel));
    prefix = Join(parts, 0, parts.size());
  }
  WalkDir(dir->Release(), prefix, 1, max_depth, visit);
  return Status::Ok();
}

}  // namespace trainyard
