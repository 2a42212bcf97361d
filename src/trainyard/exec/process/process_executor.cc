#include "trainyard/exec/process/process_executor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <utility>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

extern char** environ;

namespace trainyard::exec {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kNodeFile[] = "node.json";
constexpr char kLogFile[] = "output.log";
constexpr char kShimPidFile[] = "shim.pid";
constexpr char kChildPidFile[] = "child.pid";
constexpr char kExitFile[] = "exit";
constexpr char kDefaultPath[] = "/usr/local/bin:/usr/bin:/bin";

// How often to look again when nothing can be waited on directly.
constexpr int kPollMillis = 20;
// How long Stop waits for the shim to record the status after SIGKILL.
constexpr int kKillWaitMillis = 10'000;
// How long Stop waits for the shim to record the node's pid (it does so right after forking).
constexpr int kChildPidWaitMillis = 5'000;

// ---------------------------------------------------------------------------------------------
// Async-signal-safe helpers: the shim and the node's process run them between fork and exec, in
// a copy of a multithreaded daemon, so they allocate nothing and call only async-signal-safe
// functions.

// A bounded string builder on a caller's buffer.
struct RawBuf {
  char* data;
  size_t cap;
  size_t len = 0;

  void Add(const char* s) {
    for (; *s != '\0' && len + 1 < cap; ++s) data[len++] = *s;
    data[len] = '\0';
  }
  void AddInt(long long v) {
    char digits[24];
    int n = 0;
    bool neg = v < 0;
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
};

void WriteAllRaw(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// strerror is not async-signal-safe (it may consult the locale); the errors exec and chdir give.
const char* ErrnoText(int err) {
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
    if (t.err == err) return t.text;
  }
  return nullptr;
}

void AddErrno(RawBuf& b, int err) {
  if (const char* text = ErrnoText(err)) {
    b.Add(text);
  } else {
    b.Add("errno ");
    b.AddInt(err);
  }
}

// Reads the state (field 3) and start time (field 22, clock ticks since boot) of a process from
// /proc/PID/stat. False when the process does not exist.
bool ReadProcStat(pid_t pid, char* state, unsigned long long* start_time) {
  char path[64];
  RawBuf p{path, sizeof path};
  p.Add("/proc/");
  p.AddInt(pid);
  p.Add("/stat");
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[2048];
  size_t len = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf + len, sizeof buf - 1 - len);
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
  unsigned long long value = 0;
  while (i < len) {
    while (i < len && buf[i] == ' ') ++i;
    if (i >= len) break;
    ++field;
    if (field == 3) *state = buf[i];
    if (field == 22) {
      value = 0;
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

// Writes `data` to `tmp`, then renames it to `path`: readers see the whole file or none. No fsync:
// the files it writes must survive a crash of the daemon, not of the machine.
bool WriteRenamed(const char* tmp, const char* path, const char* data, size_t n) {
  int fd = ::open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  WriteAllRaw(fd, data, n);
  ::close(fd);
  return ::rename(tmp, path) == 0;
}

// Everything the shim and the node's process need, prepared before fork.
struct ShimPlan {
  char* const* argv;
  char* const* envp;
  const char* const* candidates;  // argv[0] resolved against PATH, in search order
  size_t n_candidates;
  char** sh_argv;           // {"/bin/sh", <slot for the script>, argv[1..], nullptr} for ENOEXEC
  const char* working_dir;  // nullptr: stay in the daemon's folder
  const char* search_path;  // for the "not found" message
  const char* child_pid_tmp;
  const char* child_pid_path;
  const char* exit_tmp;
  const char* exit_path;
  int log_fd;   // >= 3
  int null_fd;  // >= 3
  int max_fd;   // for closing inherited descriptors without close_range
};

void SetAllSignals(void (*handler)(int)) {
  struct sigaction sa {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &sa, nullptr);  // fails harmlessly for the C library's reserved signals
  }
}

[[noreturn]] void FailChild(const char* what, const char* name, int err, const char* extra) {
  char msg[4096];
  RawBuf b{msg, sizeof msg};
  b.Add("trainyard: ");
  b.Add(what);
  b.Add(" '");
  b.Add(name);
  b.Add("': ");
  if (extra != nullptr) {
    b.Add(extra);
  } else {
    AddErrno(b, err);
  }
  b.Add("\n");
  WriteAllRaw(2, msg, b.len);
  ::_exit(127);
}

// The node's process: its own process group, default signals, then exec.
[[noreturn]] void RunNode(const ShimPlan& plan) {
  ::setpgid(0, 0);
  SetAllSignals(SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);  // a pending SIGTERM from Stop fires here
  if (plan.working_dir != nullptr && ::chdir(plan.working_dir) != 0) {
    FailChild("cannot change to the working folder", plan.working_dir, errno, nullptr);
  }
  int err = ENOENT;
  bool seen_eacces = false;
  for (size_t i = 0; i < plan.n_candidates; ++i) {
    const char* file = plan.candidates[i];
    ::execve(file, plan.argv, plan.envp);
    err = errno;
    if (err == ENOEXEC) {
      // Like execvp: a file without a known format is a shell script.
      plan.sh_argv[1] = const_cast<char*>(file);
      ::execve("/bin/sh", plan.sh_argv, plan.envp);
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
    RawBuf b{not_found, sizeof not_found};
    b.Add("command not found in PATH=");
    b.Add(plan.search_path);
    extra = not_found;
  }
  FailChild("cannot run", plan.argv[0], err, extra);
}

// The shim: detaches from the daemon, starts the node and records how it ended.
[[noreturn]] void RunShim(const ShimPlan& plan) {
  ::setsid();
  // Everything blocked: the shim outlives stops and hang-ups, and a SIGTERM that reaches the
  // node's process before it has reset its signals stays pending instead of being ignored.
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  SetAllSignals(
      SIG_DFL);  // the daemon's handlers are meaningless here; SIGCHLD must not be ignored
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) ::sigaction(sig, &ign, nullptr);

  ::dup2(plan.null_fd, 0);
  ::dup2(plan.log_fd, 1);
  ::dup2(plan.log_fd, 2);
  if (::close_range(3, ~0U, 0) != 0) {
    for (int fd = 3; fd <= plan.max_fd; ++fd) ::close(fd);
  }

  // vfork, as posix_spawn does: the node's process only resets its signals and execs, and the
  // shim (single-threaded, every signal blocked) is suspended meanwhile.
  pid_t child = ::vfork();
  if (child == 0) RunNode(plan);

  char buf[256];
  int exit_code = 127;
  int signal = 0;
  if (child < 0) {
    char msg[256];
    RawBuf m{msg, sizeof msg};
    m.Add("trainyard: cannot start the process: fork: ");
    AddErrno(m, errno);
    m.Add("\n");
    WriteAllRaw(2, msg, m.len);
  } else {
    ::setpgid(child, child);  // also done by the child; whichever runs first
    char state = 0;
    unsigned long long start = 0;
    ReadProcStat(child, &state, &start);  // the child is not reaped yet, so its pid is valid
    RawBuf b{buf, sizeof buf};
    b.AddInt(child);
    b.Add(" ");
    b.AddInt(static_cast<long long>(start));
    b.Add("\n");
    WriteRenamed(plan.child_pid_tmp, plan.child_pid_path, buf, b.len);

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
  RawBuf b{buf, sizeof buf};
  b.Add("{\"exit_code\":");
  b.AddInt(exit_code);
  b.Add(",\"signal\":");
  b.AddInt(signal);
  b.Add("}\n");
  WriteRenamed(plan.exit_tmp, plan.exit_path, buf, b.len);
  ::_exit(0);
}

// ---------------------------------------------------------------------------------------------
// The daemon's side.

struct NodePaths {
  explicit NodePaths(fs::path d)
      : dir(std::move(d)),
        node_json(dir / kNodeFile),
        log(dir / kLogFile),
        shim_pid(dir / kShimPidFile),
        child_pid(dir / kChildPidFile),
        exit(dir / kExitFile) {}
  fs::path dir, node_json, log, shim_pid, child_pid, exit;
};

bool Exists(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

int OpenPidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

}  // namespace

StatusOr<ExitInfo> ParseExitRecord(std::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("exit_code") || !j["exit_code"].is_number_integer() ||
      j["exit_code"].get<std::int64_t>() < std::numeric_limits<int>::min() ||
      j["exit_code"].get<std::int64_t>() > std::numeric_limits<int>::max()) {
    return InvalidArgument("malformed exit status: " + std::string(text.substr(0, 200)));
  }
  return ExitInfo{j["exit_code"].get<int>(), false};
}

std::optional<PidRecord> ParsePidRecord(std::string_view text) {
  std::istringstream in{std::string(text.substr(0, 4096))};
  PidRecord r;
  long long pid = 0;
  if (!(in >> pid >> r.start_time) || pid <= 0 || pid > std::numeric_limits<pid_t>::max()) {
    return std::nullopt;
  }
  r.pid = static_cast<pid_t>(pid);
  in >> r.boot_id;
  return r;
}

namespace {

Status Vanished(const std::string& handle) {
  return NotFound("the process shim of node " + handle +
                  " vanished without recording an exit status");
}

// The exit status the shim recorded; nullopt while there is none.
StatusOr<std::optional<ExitInfo>> ReadExit(const NodePaths& node) {
  auto text = ReadFile(node.exit);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) return std::optional<ExitInfo>();
    return text.status();
  }
  StatusOr<ExitInfo> exit = ParseExitRecord(*text);
  if (!exit.ok()) return Internal(node.exit.string() + ": " + exit.status().message());
  return std::optional<ExitInfo>(*exit);
}

std::optional<PidRecord> ReadPidRecord(const fs::path& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return std::nullopt;
  return ParsePidRecord(*text);
}

// True when the recorded process still exists (possibly as a zombie) with the same start time.
bool SameProcess(const PidRecord& r, bool* zombie = nullptr) {
  char state = 0;
  unsigned long long start = 0;
  if (!ReadProcStat(r.pid, &state, &start) || start != r.start_time) return false;
  if (zombie != nullptr) *zombie = state == 'Z' || state == 'X';
  return true;
}

// Watches a node's shim: whether it has exited, and reaps it when it is the daemon's child.
class ShimWatch {
 public:
  ShimWatch(const NodePaths& node, const std::string& boot_id) {
    std::optional<PidRecord> rec = ReadPidRecord(node.shim_pid);
    if (!rec || (!rec->boot_id.empty() && rec->boot_id != boot_id)) return;  // gone
    rec_ = *rec;
    int fd = OpenPidfd(rec_.pid);
    if (fd < 0 && errno == ESRCH) return;
    // Check the start time after opening: the pidfd then refers to the recorded process.
    if (!SameProcess(rec_)) {
      if (fd >= 0) ::close(fd);
      return;
    }
    pidfd_ = fd;
    valid_ = true;
  }
  ~ShimWatch() {
    if (pidfd_ >= 0) ::close(pidfd_);
  }
  ShimWatch(const ShimWatch&) = delete;
  ShimWatch& operator=(const ShimWatch&) = delete;

  // Waits up to `timeout_ms` for the shim to exit; true once it has.
  bool WaitExited(int timeout_ms) {
    if (!valid_) return true;
    if (pidfd_ >= 0) {
      pollfd p{pidfd_, POLLIN, 0};
      int r = ::poll(&p, 1, timeout_ms);
      if (r > 0) return true;
      if (r == 0) return false;
      if (errno == EINTR) return false;
      return !Alive();
    }
    if (!Alive()) return true;
    if (timeout_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(timeout_ms, kPollMillis)));
    }
    return !Alive();
  }

  // Reaps the exited shim when it is the daemon's child (no-op otherwise).
  void Reap() {
    if (!valid_) return;
    if (pidfd_ >= 0) {
      siginfo_t info{};
      ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &info, WEXITED | WNOHANG);
      return;
    }
    bool zombie = false;
    if (SameProcess(rec_, &zombie) && zombie) ::waitpid(rec_.pid, nullptr, WNOHANG);
  }

 private:
  bool Alive() {
    bool zombie = false;
    return SameProcess(rec_, &zombie) && !zombie;
  }

  PidRecord rec_;
  bool valid_ = false;
  int pidfd_ = -1;
};

std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// A minimal base taken from the daemon's environment (PATH, HOME, locale, time zone, user,
// TMPDIR) overlaid with the spec's: nothing else of the daemon's reaches a run, so no token or
// password the daemon was started with does (docs/security.md).
StatusOr<std::vector<std::string>> NodeEnvironment(const LaunchSpec& spec) {
  std::vector<std::string> env;
  std::unordered_map<std::string, size_t> index;
  auto set = [&](std::string kv) {
    std::string key = kv.substr(0, kv.find('='));
    auto [it, inserted] = index.try_emplace(key, env.size());
    if (inserted) {
      env.push_back(std::move(kv));
    } else {
      env[it->second] = std::move(kv);
    }
  };
  for (std::string& kv : SelectEnvironment(environ, BaseEnvironmentNames())) set(std::move(kv));
  for (const std::string& kv : spec.env) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument("environment entry '" + kv + "' of node " + spec.name +
                             " is not KEY=VALUE");
    }
    set(kv);
  }
  for (const auto& [var, dir] : spec.prepend_paths) {
    if (var.empty() || var.find('=') != std::string::npos) {
      return InvalidArgument("invalid search-path variable '" + var + "' for node " + spec.name);
    }
    std::string current;
    if (auto it = index.find(var); it != index.end())
      current = env[it->second].substr(var.size() + 1);
    set(var + "=" + dir + (current.empty() ? "" : ":" + current));
  }
  return env;
}

std::string ValueOf(const std::vector<std::string>& env, const std::string& var) {
  for (const std::string& kv : env) {
    if (kv.size() > var.size() && kv.compare(0, var.size(), var) == 0 && kv[var.size()] == '=') {
      return kv.substr(var.size() + 1);
    }
  }
  return {};
}

// A descriptor >= 3, so that the shim's dup2 onto 0-2 cannot overwrite it.
int AboveStdio(int fd) {
  if (fd < 0 || fd >= 3) return fd;
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  ::close(fd);
  return moved;
}

Status ErrnoError(const std::string& what, int err) {
  return Internal(what + ": " + std::strerror(err));
}

}  // namespace

ProcessExecutor::ProcessExecutor(ProcessExecutorOptions options) : options_(std::move(options)) {
  if (auto id = ReadFile("/proc/sys/kernel/random/boot_id"); id.ok()) {
    boot_id_ = std::string(Trim(*id));
  }
}

StatusOr<std::string> ProcessExecutor::Launch(const LaunchSpec& spec) {
  if (!IsValidName(spec.name)) {
    return InvalidArgument("invalid node name '" + spec.name +
                           "': use letters, digits, '.', '_' and '-'");
  }
  if (spec.argv.empty() || spec.argv.front().empty()) {
    return InvalidArgument("node " + spec.name + " has no command to run");
  }
  if (!spec.mounts.empty()) {
    return InvalidArgument("the process compute cannot mount " + spec.mounts.front().source +
                           " at " + spec.mounts.front().target + " (node " + spec.name +
                           "): it runs on the host, with host paths");
  }
  std::string working_dir;
  if (!spec.working_dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(spec.working_dir, ec)) {
      return InvalidArgument("the working folder " + spec.working_dir + " of node " + spec.name +
                             " does not exist");
    }
    working_dir = fs::absolute(spec.working_dir, ec).string();
  }

  TY_ASSIGN_OR_RETURN(std::vector<std::string> env, NodeEnvironment(spec));
  std::vector<std::string> candidates;
  std::string search_path;
  const std::string& program = spec.argv.front();
  if (program.find('/') != std::string::npos) {
    candidates.push_back(program);
  } else {
    search_path = ValueOf(env, "PATH");
    if (search_path.empty()) search_path = kDefaultPath;
    for (const std::string& dir : Split(search_path, ':')) {
      candidates.push_back((dir.empty() ? std::string(".") : dir) + "/" + program);
    }
  }

  NodePaths node(options_.state_dir / spec.name);
  TY_RETURN_IF_ERROR(MakeDirs(options_.state_dir));
  if (::mkdir(node.dir.c_str(), 0755) != 0) {
    if (errno == EEXIST) {
      return AlreadyExists("node " + spec.name + " already exists in " +
                           options_.state_dir.string());
    }
    return ErrnoError("create " + node.dir.string(), errno);
  }
  // From here on, a failure removes the half-made folder.
  auto fail = [&](Status s) {
    (void)RemoveTree(node.dir);
    return s;
  };

  nlohmann::json meta = {{"name", spec.name},          {"run_id", spec.run_id},
                         {"labels", spec.labels},      {"argv", spec.argv},
                         {"working_dir", working_dir}, {"created_ms", NowMillis()}};
  // Written like the pid files, without fsync (see WriteRenamed): WriteFileAtomic's two fsyncs
  // would cost more than the rest of a launch together.
  const std::string meta_text = meta.dump() + "\n";
  const std::string meta_tmp = node.node_json.string() + ".tmp";
  if (!WriteRenamed(meta_tmp.c_str(), node.node_json.c_str(), meta_text.data(), meta_text.size())) {
    return fail(ErrnoError("write " + node.node_json.string(), errno));
  }

  int log_fd =
      AboveStdio(::open(node.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (log_fd < 0) return fail(ErrnoError("create " + node.log.string(), errno));
  int null_fd = AboveStdio(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (null_fd < 0) {
    int err = errno;
    ::close(log_fd);
    return fail(ErrnoError("open /dev/null", err));
  }

  // Every string the shim and the node's process use, prepared before fork.
  std::vector<std::string> args = spec.argv;
  std::vector<char*> argv = CStrings(args);
  std::vector<char*> envp = CStrings(env);
  std::vector<const char*> candidate_ptrs;
  for (const std::string& c : candidates) candidate_ptrs.push_back(c.c_str());
  std::string sh = "/bin/sh";
  std::vector<char*> sh_argv = {sh.data(), nullptr};
  for (size_t i = 1; i < args.size(); ++i) sh_argv.push_back(args[i].data());
  sh_argv.push_back(nullptr);
  const std::string child_pid_tmp = node.child_pid.string() + ".tmp";
  const std::string exit_tmp = node.exit.string() + ".tmp";
  rlimit nofile{};
  int max_fd = 1024;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    max_fd = static_cast<int>(std::min<rlim_t>(nofile.rlim_cur, 1 << 20));
  }
  ShimPlan plan{argv.data(),
                envp.data(),
                candidate_ptrs.data(),
                candidate_ptrs.size(),
                sh_argv.data(),
                working_dir.empty() ? nullptr : working_dir.c_str(),
                search_path.empty() ? nullptr : search_path.c_str(),
                child_pid_tmp.c_str(),
                node.child_pid.c_str(),
                exit_tmp.c_str(),
                node.exit.c_str(),
                log_fd,
                null_fd,
                max_fd};

  pid_t shim = ::fork();
  if (shim == 0) RunShim(plan);
  int fork_errno = errno;
  ::close(log_fd);
  ::close(null_fd);
  if (shim < 0) return fail(ErrnoError("fork the shim of node " + spec.name, fork_errno));

  // The shim is not reaped yet, so its pid and start time are certain.
  char state = 0;
  unsigned long long start = 0;
  if (!ReadProcStat(shim, &state, &start)) {
    ::kill(shim, SIGKILL);
    ::waitpid(shim, nullptr, 0);
    return fail(Internal("cannot read /proc/" + std::to_string(shim) + "/stat"));
  }
  std::string record = std::to_string(shim) + " " + std::to_string(start) + " " +
                       (boot_id_.empty() ? "-" : boot_id_) + "\n";
  const std::string shim_tmp = node.shim_pid.string() + ".tmp";
  if (!WriteRenamed(shim_tmp.c_str(), node.shim_pid.c_str(), record.data(), record.size())) {
    // Without the record the node could not be found again: do not leave it running.
    int err = errno;
    ::kill(shim, SIGKILL);
    ::waitpid(shim, nullptr, 0);
    if (auto child = ReadPidRecord(node.child_pid); child && SameProcess(*child)) {
      ::kill(-child->pid, SIGKILL);
    }
    return fail(ErrnoError("write " + node.shim_pid.string(), err));
  }
  return spec.name;
}

StatusOr<std::vector<std::string>> ProcessExecutor::ListNodes() {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(options_.state_dir, ec)) return out;
  fs::directory_iterator it(options_.state_dir, ec);
  if (ec) return Internal("list " + options_.state_dir.string() + ": " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return Internal("list " + options_.state_dir.string() + ": " + ec.message());
    std::string name = it->path().filename().string();
    if (IsValidName(name) && it->is_directory(ec)) out.push_back(std::move(name));
  }
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

// Kills the process group of a node whose shim vanished, while its leader's pid is certain.
void KillOrphan(const NodePaths& node) {
  if (auto child = ReadPidRecord(node.child_pid); child) {
    bool zombie = false;
    if (SameProcess(*child, &zombie) && !zombie) ::kill(-child->pid, SIGKILL);
  }
}

// The state folder of a handle; NotFound when there is none.
StatusOr<NodePaths> FindNode(const fs::path& state_dir, const std::string& handle) {
  if (!IsValidName(handle) || !Exists(state_dir / handle)) {
    return NotFound("no process node " + handle + " in " + state_dir.string());
  }
  return NodePaths(state_dir / handle);
}

}  // namespace

StatusOr<ExitInfo> ProcessExecutor::Wait(const std::string& handle) {
  TY_ASSIGN_OR_RETURN(NodePaths node, FindNode(options_.state_dir, handle));
  ShimWatch shim(node, boot_id_);
  for (;;) {
    TY_ASSIGN_OR_RETURN(std::optional<ExitInfo> exit, ReadExit(node));
    if (exit) {
      // The shim exits right after writing the status; reap it if it is ours.
      shim.WaitExited(1000);
      shim.Reap();
      return *exit;
    }
    if (shim.WaitExited(500)) break;
  }
  shim.Reap();
  TY_ASSIGN_OR_RETURN(std::optional<ExitInfo> exit, ReadExit(node));
  if (exit) return *exit;
  return Vanished(handle);
}

StatusOr<bool> ProcessExecutor::IsRunning(const std::string& handle) {
  TY_ASSIGN_OR_RETURN(NodePaths node, FindNode(options_.state_dir, handle));
  TY_ASSIGN_OR_RETURN(std::optional<ExitInfo> exit, ReadExit(node));
  ShimWatch shim(node, boot_id_);
  if (exit) {
    if (shim.WaitExited(0)) shim.Reap();
    return false;
  }
  if (!shim.WaitExited(0)) return true;
  shim.Reap();
  TY_ASSIGN_OR_RETURN(exit, ReadExit(node));  // written just before the shim exited
  if (exit) return false;
  return Vanished(handle);
}

Status ProcessExecutor::StreamLogs(const std::string& handle, const std::string& from,
                                   const PositionedSink& sink) {
  std::uint64_t offset = 0;
  if (!from.empty()) {
    const auto [end, ec] = std::from_chars(from.data(), from.data() + from.size(), offset);
    if (ec != std::errc() || end != from.data() + from.size()) {
      return InvalidArgument("bad log position '" + from + "' for node " + handle);
    }
  }
  TY_ASSIGN_OR_RETURN(NodePaths node, FindNode(options_.state_dir, handle));
  int fd = ::open(node.log.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("node " + handle + " has no output log");
    return ErrnoError("open " + node.log.string(), errno);
  }
  if (::lseek(fd, static_cast<off_t>(offset), SEEK_SET) < 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoError("seek " + node.log.string(), err);
  }
  ShimWatch shim(node, boot_id_);
  std::string buf(1 << 16, '\0');
  Status status;
  for (;;) {
    // Whether it ended is decided before draining, so nothing written before the end is missed.
    bool ended = Exists(node.exit) || shim.WaitExited(0);
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) status = ErrnoError("read " + node.log.string(), errno);
      if (n <= 0) break;
      offset += static_cast<std::uint64_t>(n);
      sink(std::string_view(buf.data(), static_cast<size_t>(n)), std::to_string(offset));
    }
    if (ended || !status.ok()) break;
    shim.WaitExited(kPollMillis);  // wakes at once when the node ends
  }
  ::close(fd);
  return status;
}

Status ProcessExecutor::Stop(const std::string& handle, int grace_seconds) {
  TY_ASSIGN_OR_RETURN(NodePaths node, FindNode(options_.state_dir, handle));
  TY_ASSIGN_OR_RETURN(std::optional<ExitInfo> exit, ReadExit(node));
  ShimWatch shim(node, boot_id_);
  if (exit) {
    if (shim.WaitExited(0)) shim.Reap();
    return Status::Ok();
  }
  // The shim records the node's pid right after forking it.
  std::optional<PidRecord> child;
  auto waited_since = Clock::now();
  bool shim_exited = false;
  while (!(child = ReadPidRecord(node.child_pid))) {
    if (shim.WaitExited(5)) {
      shim_exited = true;
      break;
    }
    if (Clock::now() - waited_since > std::chrono::milliseconds(kChildPidWaitMillis)) {
      return DeadlineExceeded("the process shim of node " + handle + " did not start it");
    }
  }
  if (shim_exited || shim.WaitExited(0)) {
    shim.Reap();
    TY_ASSIGN_OR_RETURN(exit, ReadExit(node));
    if (exit) return Status::Ok();
    KillOrphan(node);  // nobody is left to record its status, but it is stopped
    return Vanished(handle);
  }
  // Signals the node's process group unless its leader's pid now names another process.
  auto signal_group = [&](int sig) {
    char state = 0;
    unsigned long long start = 0;
    if (ReadProcStat(child->pid, &state, &start) && start != child->start_time) return;
    ::kill(-child->pid, sig);
  };
  auto wait_for_shim = [&](std::chrono::milliseconds budget) {
    auto deadline = Clock::now() + budget;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return shim.WaitExited(0);
      if (shim.WaitExited(static_cast<int>(std::min<long long>(left.count(), 500)))) return true;
    }
  };

  signal_group(SIGTERM);
  bool ended = wait_for_shim(std::chrono::seconds(std::max(grace_seconds, 0)));
  if (!ended) {
    signal_group(SIGKILL);
    ended = wait_for_shim(std::chrono::milliseconds(kKillWaitMillis));
  }
  if (!ended) return DeadlineExceeded("node " + handle + " did not end after SIGKILL");
  // What the node started and left behind in its group goes too, as with a container.
  ::kill(-child->pid, SIGKILL);
  shim.Reap();
  TY_ASSIGN_OR_RETURN(exit, ReadExit(node));
  return exit ? Status::Ok() : Vanished(handle);
}

Status ProcessExecutor::Cleanup(const std::string& handle) {
  if (!IsValidName(handle)) return Status::Ok();
  NodePaths node(options_.state_dir / handle);
  if (!Exists(node.dir)) return Status::Ok();
  StatusOr<bool> running = IsRunning(handle);
  if (running.ok() && *running) {
    TY_RETURN_IF_ERROR(Stop(handle, 0));
  } else if (!running.ok()) {
    KillOrphan(node);  // the shim vanished; its node may live on
  }
  return RemoveTree(node.dir);
}

}  // namespace trainyard::exec
