#pragma once

// Async-signal-safe helpers shared by the process executor (daemon side) and trainyard-shim: they
// run between vfork and exec, so they allocate nothing and call only async-signal-safe functions.

#include <sys/types.h>

#include <cstddef>

namespace trainyard::exec::raw {

// A bounded string builder on a caller's buffer; always NUL-terminated, silently truncated.
struct Buf {
  char* data;
  size_t cap;
  size_t len = 0;

  void Add(const char* s);
  void AddInt(long long v);
  // The text of the errno values exec, chdir and fork give (strerror may consult the locale).
  void AddErrno(int err);
};

// Writes all of [p, p+n) to fd, retrying on EINTR; gives up silently on another error.
void WriteAll(int fd, const char* p, size_t n);

// The state (field 3) and start time (field 22, clock ticks since boot) of a process, from
// /proc/PID/stat. False when the process does not exist.
bool ReadProcStat(pid_t pid, char* state, unsigned long long* start_time);

// Writes `data` to `tmp` in the folder `dir_fd` (AT_FDCWD: relative to the current folder), then
// renames it to `name`: readers see the whole file or none. No fsync: these records must survive a
// crash of the daemon, not of the machine. Neither name may be a link (O_NOFOLLOW on create).
bool WriteRenamedAt(int dir_fd, const char* tmp, const char* name, const char* data, size_t n);

}  // namespace trainyard::exec::raw
