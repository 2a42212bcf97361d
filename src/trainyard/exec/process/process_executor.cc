#include "trainyard/exec/process/process_executor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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
#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/util.h"
#include "trainyard/exec/process/raw_io.h"

extern char** environ;

namespace trainyard::exec {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kNodeFile[] = "node.json";
constexpr char kLogFile[] = "output.log";
constexpr char kShimPidFile[] = "shim.pid";
constexpr char kChildPidFile[] = "child.pid";
constexpr char kExitFile[] = "exit";
constexpr char kShimName[] = "trainyard-shim";
constexpr char kDefaultPath[] = "/usr/local/bin:/usr/bin:/bin";

// How often to look again when nothing can be waited on directly.
constexpr int kPollMillis = 20;
// How long Stop waits for the shim to record the status after SIGKILL.
constexpr int kKillWaitMillis = 10'000;
// How long Stop waits for the shim to record the node's pid (it does so right after forking).
constexpr int kChildPidWaitMillis = 5'000;

using raw::ReadProcStat;

// Writes `data` to `tmp`, then renames it to `path` (raw::WriteRenamedAt).
bool WriteRenamed(const char* tmp, const char* path, const char* data, size_t n) {
  return raw::WriteRenamedAt(AT_FDCWD, tmp, path, data, n);
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

// A close-on-exec descriptor above 3 (the shim's 0-3 are set up with dup2): the same
// descriptor, or a copy of it (the original closed); -1 with errno set on failure.
int AboveShimFds(int fd) {
  if (fd < 0 || fd > 3) return fd;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 4);
  const int err = errno;
  ::close(fd);
  errno = err;
  return moved;
}

Status ErrnoError(const std::string& what, int err) {
  return Internal(what + ": " + std::strerror(err));
}

}  // namespace

std::vector<fs::path> ShimCandidates() {
  std::vector<fs::path> out;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    out.push_back(exe.parent_path() / kShimName);
    out.push_back(exe.parent_path().parent_path() / "libexec/trainyard" / kShimName);
  }
  out.emplace_back(TRAINYARD_SHIM_BUILD_PATH);
  return out;
}

ProcessExecutor::ProcessExecutor(ProcessExecutorOptions options) : options_(std::move(options)) {
  if (auto id = ReadFile("/proc/sys/kernel/random/boot_id"); id.ok()) {
    boot_id_ = std::string(Trim(*id));
  }
  if (!options_.shim.empty()) {
    shim_ = options_.shim;
    return;
  }
  for (const fs::path& c : ShimCandidates()) {
    if (::access(c.c_str(), X_OK) == 0) {
      shim_ = c;
      return;
    }
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

  if (shim_.empty()) {
    std::string looked;
    for (const fs::path& c : ShimCandidates()) looked += (looked.empty() ? "" : ", ") + c.string();
    return FailedPrecondition(std::string("cannot start node ") + spec.name + ": the program " +
                              kShimName + " that runs process nodes is not installed (looked at " +
                              looked + ")");
  }
  TY_ASSIGN_OR_RETURN(std::vector<std::string> env, NodeEnvironment(spec));
  // A bare command is searched in the node's PATH by the shim; "" tells it argv[0] is a file.
  std::string search_path;
  if (spec.argv.front().find('/') == std::string::npos) {
    search_path = ValueOf(env, "PATH");
    if (search_path.empty()) search_path = kDefaultPath;
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
  // Written like the pid files, without fsync (see raw::WriteRenamedAt): WriteFileAtomic's two
  // fsyncs would cost more than the rest of a launch together.
  const std::string meta_text = meta.dump() + "\n";
  const std::string meta_tmp = node.node_json.string() + ".tmp";
  if (!WriteRenamed(meta_tmp.c_str(), node.node_json.c_str(), meta_text.data(), meta_text.size())) {
    return fail(ErrnoError("write " + node.node_json.string(), errno));
  }

  // The shim's descriptors 0-3 (shim_main.cc), each opened close-on-exec above 3 so that the
  // spawn's dup2 onto 0-3 neither overwrites one with another nor keeps the original open.
  ScopedFd log_fd(AboveShimFds(
      ::open(node.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644)));
  if (!log_fd.valid()) return fail(ErrnoError("create " + node.log.string(), errno));
  ScopedFd null_fd(AboveShimFds(::open("/dev/null", O_RDONLY | O_CLOEXEC)));
  if (!null_fd.valid()) return fail(ErrnoError("open /dev/null", errno));
  ScopedFd dir_fd(
      AboveShimFds(::open(node.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)));
  if (!dir_fd.valid()) return fail(ErrnoError("open " + node.dir.string(), errno));

  std::vector<std::string> args = {kShimName, working_dir, search_path, "--"};
  args.insert(args.end(), spec.argv.begin(), spec.argv.end());
  std::vector<char*> argv = CStrings(args);
  std::vector<char*> envp = CStrings(env);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawnattr_init(&attr);
  ::posix_spawn_file_actions_adddup2(&actions, null_fd.get(), 0);
  ::posix_spawn_file_actions_adddup2(&actions, log_fd.get(), 1);
  ::posix_spawn_file_actions_adddup2(&actions, log_fd.get(), 2);
  ::posix_spawn_file_actions_adddup2(&actions, dir_fd.get(), 3);
  // Detached from the daemon's session, every signal blocked (the shim sets its own dispositions)
  // and every disposition the daemon set back to its default.
  sigset_t all;
  sigfillset(&all);
  ::posix_spawnattr_setsigmask(&attr, &all);
  ::posix_spawnattr_setsigdefault(&attr, &all);
  ::posix_spawnattr_setflags(&attr,
                             POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t shim = -1;
  const int spawn_err =
      ::posix_spawn(&shim, shim_.c_str(), &actions, &attr, argv.data(), envp.data());
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attr);
  if (spawn_err != 0) {
    return fail(ErrnoError("start " + shim_.string() + " for node " + spec.name, spawn_err));
  }

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
    const std::optional<std::uint64_t> parsed = ParseWholeInteger<std::uint64_t>(from);
    if (!parsed) return InvalidArgument("bad log position '" + from + "' for node " + handle);
    offset = *parsed;
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
