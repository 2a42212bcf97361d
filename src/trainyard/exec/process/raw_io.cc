#include "trainyard/exec/process/raw_io.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>

namespace trainyard::exec::raw {

void Buf::Add(const char* s) {
  if (cap == 0) return;
  for (; *s != '\0' && len + 1 < cap; ++s) data[len++] = *s;
  data[len] = '\0';
}

void Buf::AddInt(long long v) {
  char digits[24];
  int n = 0;
  const bool neg = v < 0;
  unsigned long long u =
      neg ? 0ULL - static_cast<unsigned long long>(v) : static_cast<unsigned long long>(v);
  do {
    digits[n++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0);
  if (neg) digits[n++] = '-';
  char out[24];
  for (int i = 0; i < n; ++i) out[i] = digits[n - 1 - i];
  out[n] = '\0';
  Add(out);
}

void Buf::AddErrno(int err) {
  static constexpr struct {
    int err;
    const char* text;
  } kTexts[] = {
      {ENOENT, "No such file or directory"},
      {EACCES, "Permission denied"},
      {EPERM, "Operation not permitted"},
      {ENOEXEC, "Exec format error"},
      {ENOTDIR, "Not a directory"},
      {EISDIR, "Is a directory"},
      {ELOOP, "Too many levels of symbolic links"},
      {ENAMETOOLONG, "File name too long"},
      {E2BIG, "Argument list too long"},
      {ENOMEM, "Cannot allocate memory"},
      {ETXTBSY, "Text file busy"},
      {EIO, "Input/output error"},
      {ELIBBAD, "Accessing a corrupted shared library"},
      {EAGAIN, "Resource temporarily unavailable"},
  };
  for (const auto& t : kTexts) {
    if (t.err == err) {
      Add(t.text);
      return;
    }
  }
  Add("errno ");
  AddInt(err);
}

void WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

bool ReadProcStat(pid_t pid, char* state, unsigned long long* start_time) {
  char path[64];
  Buf p{path, sizeof path};
  p.Add("/proc/");
  p.AddInt(pid);
  p.Add("/stat");
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[2048];
  size_t len = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf + len, sizeof buf - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += static_cast<size_t>(n);
    if (len == sizeof buf - 1) break;
  }
  ::close(fd);
  buf[len] = '\0';
  // The command name (field 2) is in parentheses and may itself contain ") ".
  size_t close_paren = 0;
  bool found = false;
  for (size_t i = 0; i < len; ++i) {
    if (buf[i] == ')') {
      close_paren = i;
      found = true;
    }
  }
  if (!found) return false;
  int field = 2;
  size_t i = close_paren + 1;
  while (i < len) {
    while (i < len && buf[i] == ' ') ++i;
    if (i >= len) break;
    ++field;
    if (field == 3) *state = buf[i];
    if (field == 22) {
      unsigned long long value = 0;
      while (i < len && buf[i] >= '0' && buf[i] <= '9') {
        value = value * 10 + static_cast<unsigned long long>(buf[i] - '0');
        ++i;
      }
      *start_time = value;
      return true;
    }
    while (i < len && buf[i] != ' ') ++i;
  }
  return false;
}

bool WriteRenamedAt(int dir_fd, const char* tmp, const char* name, const char* data, size_t n) {
  const int fd = ::openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return false;
  WriteAll(fd, data, n);
  ::close(fd);
  return ::renameat(dir_fd, tmp, dir_fd, name) == 0;
}

}  // namespace trainyard::exec::raw
