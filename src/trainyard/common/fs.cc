#include "trainyard/common/fs.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

namespace trainyard {
namespace {

Status ErrnoStatus(std::string_view what, const fs::path& path, int err) {
  std::string msg = std::string(what) + " " + path.string() + ": " + std::strerror(err);
  if (err == ENOENT) return NotFound(msg);
  if (err == EACCES || err == EPERM) return PermissionDenied(msg);
  return Internal(msg);
}

Status WriteAll(int fd, std::string_view data, const fs::path& path) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", path, errno);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::string> ReadFile(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return ErrnoStatus("read", path, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Status WriteFileAtomic(const fs::path& path, std::string_view data, unsigned mode) {
  std::random_device rd;
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoStatus("create", tmp, errno);
  Status s = WriteAll(fd, data, tmp);
  if (s.ok() && ::fchmod(fd, mode) != 0) s = ErrnoStatus("chmod", tmp, errno);
  if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus("fsync", tmp, errno);
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoStatus("rename", path, errno);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

Status AppendFile(const fs::path& path, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("open", path, errno);
  Status s = WriteAll(fd, data, path);
  ::close(fd);
  return s;
}

Status MakeDirs(const fs::path& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return Internal("create folder " + path.string() + ": " + ec.message());
  return Status::Ok();
}

Status RemoveTree(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return Internal("remove " + path.string() + ": " + ec.message());
  return Status::Ok();
}

bool IsWithin(const fs::path& root, const fs::path& path) {
  fs::path r = fs::absolute(root).lexically_normal();
  fs::path p = fs::absolute(path).lexically_normal();
  auto rel = p.lexically_relative(r);
  if (rel.empty()) return false;
  auto first = *rel.begin();
  return first != ".." && !rel.is_absolute();
}

StatusOr<fs::path> ResolveUnder(const fs::path& root, std::string_view relative) {
  if (relative.empty()) return InvalidArgument("empty path");
  if (relative.find('\0') != std::string_view::npos) {
    return InvalidArgument("path contains a NUL byte");
  }
  fs::path rel(relative);
  if (rel.is_absolute()) {
    return InvalidArgument("path '" + std::string(relative) + "' must be relative");
  }
  fs::path joined = (fs::absolute(root) / rel).lexically_normal();
  if (!IsWithin(root, joined) && joined != fs::absolute(root).lexically_normal()) {
    return InvalidArgument("path '" + std::string(relative) + "' escapes " + root.string());
  }
  return joined;
}

std::uint64_t FileSizeOr0(const fs::path& path) {
  std::error_code ec;
  auto n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

Status EnsurePrivateDir(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return ErrnoStatus("mkdir", dir, errno);
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return ErrnoStatus("lstat", dir, errno);
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  if (!S_ISDIR(st.st_mode)) {
    return FailedPrecondition(dir.string() + " exists and is not a folder (" +
                              (S_ISLNK(st.st_mode) ? "a symbolic link" : "a file") +
                              "); remove it: trainyard does not use it");
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return FailedPrecondition(dir.string() + " is not private to this user (owner uid " +
                              std::to_string(st.st_uid) + ", mode " + mode + "; want owner uid " +
                              std::to_string(::geteuid()) +
                              ", mode 0700); remove it: trainyard does not use it");
  }
  return Status::Ok();
}

fs::path HomeDir() {
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') return h;
  if (const passwd* pw = ::getpwuid(::getuid()); pw != nullptr) return pw->pw_dir;
  return "/";
}

}  // namespace trainyard
