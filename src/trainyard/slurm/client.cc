// The Client that runs Slurm's own commands: posix_spawn with an argv (no shell), stdout and
// stderr read through two pipes with poll (so neither can fill and block the command), SIGKILL
// after the timeout.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "trainyard/common/util.h"
#include "trainyard/slurm/slurm.h"

extern char** environ;

namespace trainyard::slurm {
namespace {

using Clock = std::chrono::steady_clock;

struct CommandResult {
  int exit_code = 0;  // 128 + signal when killed by one
  std::string out;
  std::string err;
};

// A pipe whose ends are closed when it goes out of scope.
struct Pipe {
  int fd[2] = {-1, -1};
  ~Pipe() {
    for (int f : fd) {
      if (f >= 0) ::close(f);
    }
  }
  void Close(int i) {
    if (fd[i] >= 0) ::close(fd[i]);
    fd[i] = -1;
  }
};

std::string Describe(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

bool Mentions(const std::string& text, std::initializer_list<std::string_view> needles) {
  for (std::string_view n : needles) {
    if (text.find(n) != std::string::npos) return true;
  }
  return false;
}

// What stderr (or stdout, when stderr is empty) says about a failure.
std::string ErrorText(const CommandResult& r) {
  std::string text(Trim(r.err));
  if (text.empty()) text = std::string(Trim(r.out));
  if (text.empty()) text = "exit code " + std::to_string(r.exit_code);
  return text;
}

bool ControllerUnreachable(const std::string& text) {
  return Mentions(text, {"Unable to contact slurm controller", "Connection refused",
                         "Connection timed out", "Socket timed out", "connect failure",
                         "Zero Bytes were transmitted", "Communication connection failure",
                         "temporarily unable to accept job", "Resource temporarily unavailable"});
}

class CommandClient : public Client {
 public:
  explicit CommandClient(CommandClientOptions options) : options_(std::move(options)) {}

  StatusOr<std::int64_t> Submit(const JobRequest& req) override {
    TY_ASSIGN_OR_RETURN(CommandResult r, Run("sbatch", SbatchArgs(req)));
    if (r.exit_code != 0) {
      std::string text = ErrorText(r);
      if (ControllerUnreachable(text)) return Unavailable(text);
      return InvalidArgument(text);
    }
    // --parsable prints "jobid" or "jobid;cluster".
    std::string_view line = Trim(r.out);
    line = line.substr(0, line.find('\n'));
    line = Trim(line.substr(0, line.find(';')));
    std::int64_t id = 0;
    bool ok = !line.empty() && line.size() < 19;
    for (char c : line) {
      if (c < '0' || c > '9') {
        ok = false;
        break;
      }
      id = id * 10 + (c - '0');
    }
    if (!ok) return Internal("sbatch printed no job id: \"" + std::string(Trim(r.out)) + "\"");
    return id;
  }

  StatusOr<std::vector<JobInfo>> ListJobs() override {
    TY_ASSIGN_OR_RETURN(CommandResult r, Run("squeue", {"--json"}));
    TY_RETURN_IF_ERROR(Failed("squeue --json", r));
    return ParseJobs(r.out);
  }

  StatusOr<std::optional<JobInfo>> AccountedJob(std::int64_t id) override {
    if (accounting_disabled_.load()) return std::optional<JobInfo>();
    TY_ASSIGN_OR_RETURN(CommandResult r, Run("sacct", {"--json", "-j", std::to_string(id)}));
    // Without accounting, sacct says so (exit 1 on 22.05).
    if (Mentions(r.err + r.out, {"accounting storage is disabled"})) {
      accounting_disabled_.store(true);
      return std::optional<JobInfo>();
    }
    TY_RETURN_IF_ERROR(Failed("sacct --json", r));
    TY_ASSIGN_OR_RETURN(std::vector<JobInfo> jobs, ParseJobs(r.out));
    for (JobInfo& job : jobs) {
      if (job.id == id) return std::optional<JobInfo>(std::move(job));
    }
    return std::optional<JobInfo>();
  }

  Status Cancel(std::int64_t id) override {
    TY_ASSIGN_OR_RETURN(CommandResult r, Run("scancel", {std::to_string(id)}));
    if (r.exit_code == 0) return Status::Ok();
    std::string text = ErrorText(r);
    // A job that already ended, or that slurmctld has forgotten, needs no cancelling.
    if (Mentions(text, {"Invalid job id", "already completing or completed", "Job has finished",
                        "already completed"})) {
      return Status::Ok();
    }
    return Failed("scancel " + std::to_string(id), r);
  }

  StatusOr<std::vector<NodeInfo>> ListNodes() override {
    TY_ASSIGN_OR_RETURN(CommandResult r, Run("sinfo", {"--json"}));
    TY_RETURN_IF_ERROR(Failed("sinfo --json", r));
    return ParseNodes(r.out);
  }

 private:
  // OK for exit code 0; else Unavailable when the controller cannot be reached, Internal with
  // the command's message otherwise.
  static Status Failed(const std::string& what, const CommandResult& r) {
    if (r.exit_code == 0) return Status::Ok();
    std::string text = ErrorText(r);
    if (ControllerUnreachable(text)) return Unavailable(what + ": " + text);
    return Internal(what + " failed (exit code " + std::to_string(r.exit_code) + "): " + text);
  }

  StatusOr<CommandResult> Run(const std::string& program, const std::vector<std::string>& args) {
    std::string path = options_.bin_dir.empty() ? program : (options_.bin_dir / program).string();
    std::vector<std::string> argv = {path};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargv;
    for (std::string& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);

    Pipe out, err;
    if (::pipe2(out.fd, O_CLOEXEC) != 0 || ::pipe2(err.fd, O_CLOEXEC) != 0) {
      return Internal("pipe: " + std::string(std::strerror(errno)));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    // dup2 clears O_CLOEXEC on the child's 1 and 2; the originals close on exec.
    posix_spawn_file_actions_adddup2(&actions, out.fd[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err.fd[1], 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // The daemon may block or ignore signals; the command gets the defaults.
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    // Slurm's commands get the base variables and Slurm's own, nothing else of the daemon's:
    // sbatch passes just these on to a job (--export=ALL of this environment).
    std::vector<std::string_view> names = BaseEnvironmentNames();
    // DOCKER_HOST and XDG_RUNTIME_DIR: where the nodes' runtime is for a rootless docker or
    // podman (a per-user path, the same on every node of a cluster).
    names.insert(names.end(), {"SLURM_CONF", "MUNGE_SOCKET", "DOCKER_HOST", "XDG_RUNTIME_DIR"});
    std::vector<std::string> env = SelectEnvironment(environ, names);
    std::vector<char*> envp;
    for (std::string& kv : env) envp.push_back(kv.data());
    envp.push_back(nullptr);
    pid_t pid = -1;
    int rc = options_.bin_dir.empty()
                 ? ::posix_spawnp(&pid, path.c_str(), &actions, &attr, cargv.data(), envp.data())
                 : ::posix_spawn(&pid, path.c_str(), &actions, &attr, cargv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc == ENOENT) {
      return Unavailable(
          program + " not found (is Slurm installed? looked " +
          (options_.bin_dir.empty() ? std::string("on PATH") : "in " + options_.bin_dir.string()) +
          ")");
    }
    if (rc != 0) return Unavailable("cannot run " + path + ": " + std::strerror(rc));
    out.Close(1);
    err.Close(1);

    CommandResult result;
    const auto deadline = Clock::now() + std::chrono::seconds(options_.timeout_seconds);
    bool timed_out = false;
    while (out.fd[0] >= 0 || err.fd[0] >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        timed_out = true;
        break;
      }
      pollfd fds[2];
      int n = 0;
      Pipe* owners[2];
      std::string* sinks[2];
      if (out.fd[0] >= 0) {
        fds[n] = {out.fd[0], POLLIN, 0};
        owners[n] = &out;
        sinks[n++] = &result.out;
      }
      if (err.fd[0] >= 0) {
        fds[n] = {err.fd[0], POLLIN, 0};
        owners[n] = &err;
        sinks[n++] = &result.err;
      }
      int ready = ::poll(fds, static_cast<nfds_t>(n), static_cast<int>(left.count()));
      if (ready < 0) {
        if (errno == EINTR) continue;
        timed_out = true;  // cannot happen in practice; treat like a hung command
        break;
      }
      for (int i = 0; i < n; ++i) {
        if (fds[i].revents == 0) continue;
        char buf[8192];
        ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
        if (got > 0) {
          sinks[i]->append(buf, static_cast<size_t>(got));
        } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
          owners[i]->Close(0);
        }
      }
    }
    if (timed_out) ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out) {
      return Unavailable("`" + Describe(argv) + "` did not finish within " +
                         std::to_string(options_.timeout_seconds) + " s; killed it");
    }
    if (WIFEXITED(status)) {
      result.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      result.exit_code = 128 + WTERMSIG(status);
    }
    return result;
  }

  const CommandClientOptions options_;
  std::atomic<bool> accounting_disabled_{false};
};

}  // namespace

std::unique_ptr<Client> MakeCommandClient(CommandClientOptions options) {
  return std::make_unique<CommandClient>(std::move(options));
}

}  // namespace trainyard::slurm
