// trainyard-shim: the small program the process executor starts (posix_spawn) for each node of a
// `process` compute. It starts the node's command in its own process group, records the node's
// pid and, once it ends, its exit status, in the node's state folder; it outlives the daemon, so a
// restarted daemon finds the node and its status (exec/process/process_executor.h).
//
// Why a program of its own: forking the daemon (tens of MiB, many threads) costs its page tables
// and then a copy-on-write fault, with a TLB shootdown across every core, for each page the
// daemon writes while the copy lives. posix_spawn of this small static program shares the
// daemon's memory until it execs.
//
//   trainyard-shim WORKING_DIR SEARCH_PATH -- ARGV...
// WORKING_DIR: where the node runs ("" stays in the shim's folder); SEARCH_PATH: the PATH in which
// a bare ARGV[0] is searched ("": ARGV[0] names a file). Started with descriptors 0 = /dev/null,
// 1 and 2 = the node's log, 3 = the node's state folder; its environment is the node's, exactly.
// The daemon starts it in a new session with every signal blocked.

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "trainyard/exec/process/raw_io.h"

extern char** environ;

namespace {

using trainyard::exec::raw::Buf;
using trainyard::exec::raw::ReadProcStat;
using trainyard::exec::raw::WriteAll;
using trainyard::exec::raw::WriteRenamedAt;

constexpr int kStateDirFd = 3;

void SetAllSignals(void (*handler)(int)) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &sa, nullptr);  // fails harmlessly for the C library's reserved signals
  }
}

// What the node's process needs, prepared before vfork: it may not allocate.
struct NodePlan {
  char* const* argv;
  const char* const* candidates;  // argv[0] resolved against the search path, in order
  size_t n_candidates;
  char** sh_argv;           // {"/bin/sh", <slot for the script>, argv[1..], nullptr} for ENOEXEC
  const char* working_dir;  // nullptr: stay
  const char* search_path;  // for the "not found" message; nullptr when argv[0] has a '/'
};

[[noreturn]] void FailNode(const char* what, const char* name, int err, const char* extra) {
  char msg[4096];
  Buf b{msg, sizeof msg};
  b.Add("trainyard: ");
  b.Add(what);
  b.Add(" '");
  b.Add(name);
  b.Add("': ");
  if (extra != nullptr) {
    b.Add(extra);
  } else {
    b.AddErrno(err);
  }
  b.Add("\n");
  WriteAll(2, msg, b.len);
  ::_exit(127);
}

// The node's process (a vfork child): its own process group, default signals, then exec.
[[noreturn]] void RunNode(const NodePlan& plan) {
  ::setpgid(0, 0);
  SetAllSignals(SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);  // a pending SIGTERM from Stop fires here
  if (plan.working_dir != nullptr && ::chdir(plan.working_dir) != 0) {
    FailNode("cannot change to the working folder", plan.working_dir, errno, nullptr);
  }
  int err = ENOENT;
  bool seen_eacces = false;
  for (size_t i = 0; i < plan.n_candidates; ++i) {
    const char* file = plan.candidates[i];
    ::execve(file, plan.argv, environ);
    err = errno;
    if (err == ENOEXEC) {
      // Like execvp: a file without a known format is a shell script.
      plan.sh_argv[1] = const_cast<char*>(file);
      ::execve("/bin/sh", plan.sh_argv, environ);
      err = errno;
      break;
    }
    if (err == EACCES) {
      seen_eacces = true;
      continue;
    }
    if (err != ENOENT && err != ENOTDIR && err != ESTALE && err != ENODEV && err != ETIMEDOUT) {
      break;
    }
  }
  if (seen_eacces && (err == ENOENT || err == ENOTDIR)) err = EACCES;
  const char* extra = nullptr;
  char not_found[2048];
  if (err == ENOENT && plan.search_path != nullptr) {
    Buf b{not_found, sizeof not_found};
    b.Add("command not found in PATH=");
    b.Add(plan.search_path);
    extra = not_found;
  }
  FailNode("cannot run", plan.argv[0], err, extra);
}

void RecordExit(int exit_code, int signal) {
  char buf[128];
  Buf b{buf, sizeof buf};
  b.Add("{\"exit_code\":");
  b.AddInt(exit_code);
  b.Add(",\"signal\":");
  b.AddInt(signal);
  b.Add("}\n");
  WriteRenamedAt(kStateDirFd, "exit.tmp", "exit", buf, b.len);
}

// Starts the node, records its pid, waits for it and records how it ended. A function of its own
// so that no local of main lives across vfork.
__attribute__((noinline)) void StartAndWait(const NodePlan& plan) {
  // vfork, as posix_spawn does: the node's process only resets its signals and execs, and the
  // shim (single-threaded, every signal blocked) is suspended meanwhile.
  const pid_t child = ::vfork();
  if (child == 0) RunNode(plan);

  int exit_code = 127;
  int signal = 0;
  if (child < 0) {
    char msg[256];
    Buf m{msg, sizeof msg};
    m.Add("trainyard: cannot start the process: fork: ");
    m.AddErrno(errno);
    m.Add("\n");
    WriteAll(2, msg, m.len);
  } else {
    ::setpgid(child, child);  // also done by the child; whichever runs first
    char state = 0;
    unsigned long long start = 0;
    ReadProcStat(child, &state, &start);  // the child is not reaped yet, so its pid is valid
    char buf[128];
    Buf b{buf, sizeof buf};
    b.AddInt(child);
    b.Add(" ");
    b.AddInt(static_cast<long long>(start));
    b.Add("\n");
    WriteRenamedAt(kStateDirFd, "child.pid.tmp", "child.pid", buf, b.len);

    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(child, &status, 0);
    } while (r < 0 && errno == EINTR);
    if (r == child && WIFEXITED(status)) {
      exit_code = WEXITSTATUS(status);
    } else if (r == child && WIFSIGNALED(status)) {
      signal = WTERMSIG(status);
      exit_code = 128 + signal;
    }
  }
  RecordExit(exit_code, signal);
}

}  // namespace

int main(int argc, char** argv) {
  // The shim outlives stops and hang-ups; a SIGTERM that reaches the node's process before it has
  // reset its signals stays pending (the mask is inherited) instead of being lost.
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  SetAllSignals(SIG_DFL);  // SIGCHLD in particular must not be ignored
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) ::sigaction(sig, &ign, nullptr);

  // Nothing of the daemon's beyond 0-3 reaches the node, even a descriptor it left inheritable.
  if (::close_range(kStateDirFd + 1, ~0U, 0) != 0) {
    rlimit nofile{};
    int max_fd = 1024;
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
      max_fd = static_cast<int>(nofile.rlim_cur < (1 << 20) ? nofile.rlim_cur : (1 << 20));
    }
    for (int fd = kStateDirFd + 1; fd < max_fd; ++fd) ::close(fd);
  }
  if (::fcntl(kStateDirFd, F_SETFD, FD_CLOEXEC) != 0) {
    static constexpr char kMsg[] =
        "trainyard-shim: descriptor 3 (the node's state folder) is "
        "not open; this program is started by the trainyard daemon\n";
    WriteAll(2, kMsg, sizeof kMsg - 1);
    return 127;
  }
  if (argc < 5 || std::strcmp(argv[3], "--") != 0 || argv[4][0] == '\0') {
    static constexpr char kMsg[] =
        "trainyard-shim: usage: trainyard-shim WORKING_DIR SEARCH_PATH -- ARGV...\n";
    WriteAll(2, kMsg, sizeof kMsg - 1);
    RecordExit(127, 0);
    return 127;
  }
  const std::string working_dir = argv[1];
  const std::string search_path = argv[2];
  char** node_argv = argv + 4;
  const int node_argc = argc - 4;

  // Everything the node's process uses, prepared before vfork.
  std::vector<std::string> candidates;
  const std::string program = node_argv[0];
  if (program.find('/') != std::string::npos || search_path.empty()) {
    candidates.push_back(program);
  } else {
    size_t start = 0;
    for (;;) {
      const size_t colon = search_path.find(':', start);
      const std::string dir = search_path.substr(start, colon - start);
      candidates.push_back((dir.empty() ? std::string(".") : dir) + "/" + program);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
  }
  std::vector<const char*> candidate_ptrs;
  for (const std::string& c : candidates) candidate_ptrs.push_back(c.c_str());
  std::string sh = "/bin/sh";
  std::vector<char*> sh_argv = {sh.data(), nullptr};
  for (int i = 1; i < node_argc; ++i) sh_argv.push_back(node_argv[i]);
  sh_argv.push_back(nullptr);
  const bool searched = program.find('/') == std::string::npos && !search_path.empty();
  const NodePlan plan{node_argv,
                      candidate_ptrs.data(),
                      candidate_ptrs.size(),
                      sh_argv.data(),
                      working_dir.empty() ? nullptr : working_dir.c_str(),
                      searched ? search_path.c_str() : nullptr};

  StartAndWait(plan);
  return 0;
}
