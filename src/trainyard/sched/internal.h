#pragma once

// Pieces the scheduler's files share (scheduler.cc, slurm_runs.cc). Not part of its interface.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/fs.h"
#include "trainyard/common/rooted_dir.h"
#include "trainyard/docker/engine.h"
#include "trainyard/sched/scheduler.h"
#include "trainyard/spec/definition.h"
#include "trainyard/spec/spec.h"
#include "trainyard/store/store.h"

namespace trainyard::sched::internal {

namespace fs = std::filesystem;

// "trainyard-<workspace id>-<run>": the container of a one-node run, the network of a multi-node
// one, the Slurm job of a run. The workspace id keeps two workspaces that share an engine or a
// cluster (and both run a job named `baseline`) apart.
std::string ContainerName(const std::string& workspace_id, const std::string& run_id);
// Node `i`'s log, relative to the run's folder (multi-node runs).
std::string NodeLogName(int i);
// Processes the command runs as on each node (distribution.process_count_per_instance).
int ProcessesPerNode(const spec::RunRequest& req);
// Whether a run's code folder is mounted read-only (hard links to the snapshot's objects).
bool CodeIsReadOnly(const spec::RunRequest& req);
// Whether the last 64 KiB of the regular file `rel` below `run_dir` (reached without following
// any link) contain `needle`.
bool LogTailMentions(const fs::path& run_dir, std::string_view rel, std::string_view needle);
// The reason a run ends with when its script reported fail(message), or nullopt.
std::optional<std::string> ScriptFailure(store::Store& store, const std::string& run_id);

// Writes whole lines to `sink`, each after `prefix`; a partial line waits for its end (or Flush).
class LinePrefixer {
 public:
  LinePrefixer(std::string prefix, docker::TextSink sink)
      : prefix_(std::move(prefix)), sink_(std::move(sink)) {}
  void Write(std::string_view t) {
    std::string out;
    while (!t.empty()) {
      const std::size_t nl = t.find('\n');
      if (nl == std::string_view::npos) {
        pending_.append(t);
        break;
      }
      out += prefix_;
      out += pending_;
      out.append(t.substr(0, nl + 1));
      pending_.clear();
      t.remove_prefix(nl + 1);
    }
    if (!out.empty()) sink_(out);
  }
  void Flush() {
    if (!pending_.empty()) sink_(prefix_ + pending_ + "\n");
    pending_.clear();
  }

 private:
  std::string prefix_;
  docker::TextSink sink_;
  std::string pending_;
};

// Appends to one of a run's log files and tells listeners after each write.
class LogWriter {
 public:
  // Writes the file `rel` below the folder `root` (created when missing). The folder may be
  // writable by the run: the file is opened by descriptor without following any link on the way
  // and never blocks on a FIFO planted there; such a log is not written (and not a failure).
  LogWriter(const fs::path& root, std::string_view rel, bool truncate,
            std::function<void()> on_write)
      : on_write_(std::move(on_write)) {
    auto dir = RootedDir::Create(root);
    if (!dir.ok()) return;
    auto fd = dir->OpenForWrite(rel, truncate);
    if (fd.ok()) fd_ = fd->Release();
  }
  ~LogWriter() {
    if (fd_ >= 0) ::close(fd_);
  }
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  void Write(std::string_view text) {
    if (fd_ < 0 || text.empty()) return;
    std::lock_guard lock(mu_);  // the nodes of a run write into one log
    while (!text.empty()) {
      ssize_t n = ::write(fd_, text.data(), text.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      text.remove_prefix(static_cast<size_t>(n));
    }
    on_write_();
  }
  docker::TextSink Sink() {
    return [this](std::string_view t) { Write(t); };
  }

 private:
  int fd_ = -1;
  std::mutex mu_;
  std::function<void()> on_write_;
};

}  // namespace trainyard::sched::internal

namespace trainyard::sched {

struct Scheduler::RunContext {
  std::string id;
  spec::RunRequest request;
  store::RunStatus status = store::RunStatus::kNotStarted;
  std::int64_t running_since = 0;

  // How the worker starts: a fresh run, or a re-attach to a container a previous daemon
  // launched.
  bool attach = false;

  // Where it runs. Set at admission; `slots` while it holds nodes. Guarded by the scheduler's
  // mu_ (except `compute` and `nodes`, fixed at admission).
  std::string compute;
  bool process = false;  // a `process` compute: no image, host paths
  bool slurm = false;    // a `slurm` compute: one batch job on a cluster
  std::string shared_dir;  // a slurm compute's shared folder (empty: the workspace)
  int nodes = 1;
  std::pair<int, std::uint64_t> queue_key;  // (-priority, submission order)
  std::int64_t queued_at = 0;
  bool image_ready = false;  // its image was built (or needs none): it may start
  bool queued = false;       // in its compute's queue
  std::vector<int> slots;    // node slots held
  std::string image_hash;    // its environment's image, for the prebuild

  std::mutex mu;
  std::condition_variable cv;
  bool cancel_requested = false;  // Guarded by mu.
  bool timed_out = false;         // Guarded by mu.
  bool node_done = false;         // Guarded by mu: every node ended.
  bool node_failed = false;       // Guarded by mu: a node ended with an error.
  std::vector<std::string> handles;  // Guarded by mu: one per node, once launched.
  std::int64_t slurm_job = 0;        // Guarded by mu: its Slurm job, once submitted.
  std::string slurm_wait;            // Guarded by mu: why Slurm holds it pending, if it does.
};

}  // namespace trainyard::sched
