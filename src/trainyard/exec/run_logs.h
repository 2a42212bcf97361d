#pragma once

// The log files of a run while its nodes are followed (user_logs/std_log.txt and one per node),
// written below the run's folder without following links: the run can write there too.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/mutex.h"
#include "trainyard/common/rooted_dir.h"
#include "trainyard/docker/engine.h"

namespace trainyard::exec {

namespace fs = std::filesystem;

// Whether the last 64 KiB of the regular file `rel` below `run_dir` (reached without following
// any link) contain `needle`.
bool LogTailMentions(const fs::path& run_dir, std::string_view rel, std::string_view needle);

// Writes whole lines to `sink`, each after `prefix`; a partial line waits for its end (or Flush).
class LinePrefixer {
 public:
  // A line longer than this is passed on in pieces of this size, each prefixed: a node that
  // writes gigabytes without a newline costs no more memory than this.
  static constexpr std::size_t kMaxLine = 64 * 1024;

  LinePrefixer(std::string prefix, docker::TextSink sink)
      : prefix_(std::move(prefix)), sink_(std::move(sink)) {}
  void Write(std::string_view t) {
    std::string out;
    while (!t.empty()) {
      const std::size_t nl = t.find('\n');
      const std::size_t room = kMaxLine - pending_.size();
      if (nl == std::string_view::npos || nl >= room) {
        if (t.size() < room) {
          pending_.append(t);
          break;
        }
        // The line reaches kMaxLine without its end: pass it on as a line of its own.
        out += prefix_;
        out += pending_;
        out.append(t.substr(0, room));
        out.push_back('\n');
        pending_.clear();
        t.remove_prefix(room);
        if (out.size() >= kMaxLine) Emit(&out);
        continue;
      }
      out += prefix_;
      out += pending_;
      out.append(t.substr(0, nl + 1));
      pending_.clear();
      t.remove_prefix(nl + 1);
      if (out.size() >= kMaxLine) Emit(&out);
    }
    Emit(&out);
  }
  void Flush() {
    if (!pending_.empty()) sink_(prefix_ + pending_ + "\n");
    pending_.clear();
  }
  // The start of a line whose end has not come yet (for a checkpoint), and putting it back.
  const std::string& pending() const { return pending_; }
  void Restore(std::string pending) {
    pending_ = std::move(pending);
    if (pending_.size() >= kMaxLine) pending_.resize(kMaxLine - 1);
  }

 private:
  void Emit(std::string* out) {
    if (!out->empty()) sink_(*out);
    out->clear();
  }

  std::string prefix_;
  docker::TextSink sink_;
  std::string pending_;  // At most kMaxLine - 1 bytes.
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
    MutexLock lock(mu_);  // the nodes of a run write into one log
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
  // The file's size; nullopt when it could not be opened.
  std::optional<std::uint64_t> Size() {
    MutexLock lock(mu_);
    struct stat st {};
    if (fd_ < 0 || ::fstat(fd_, &st) != 0) return std::nullopt;
    return static_cast<std::uint64_t>(st.st_size);
  }
  // Cuts the file back to `size` bytes (writes go on at its end).
  bool TruncateTo(std::uint64_t size) {
    MutexLock lock(mu_);
    return fd_ >= 0 && ::ftruncate(fd_, static_cast<off_t>(size)) == 0;
  }

 private:
  int fd_ = -1;
  Mutex mu_;
  std::function<void()> on_write_;
};

// The log files of a run's nodes while they are followed: one node's output is the run's log;
// several each have their own (NodeLogName) and the run's log has every node's lines prefixed
// "[node i] ". Before each write a record (kCheckpoint) gives the state before and after it:
// each node's position in its output, every file's size and each node's unfinished line. A
// later daemon resumes exactly from it: it keeps the files as far as a whole write reached, cuts
// off a write the crash interrupted, and resumes each node's output just after its position.
// So after a restart nothing the files had is lost (not even when the engine rotated that output
// away meanwhile), and nothing is written twice. Thread-safe.
class FollowedLogs {
 public:
  static constexpr const char* kCheckpoint = "user_logs/.follow";

  // With `resume` and a usable checkpoint, carries on from it; else the files start empty and
  // every node's output from its first byte. `on_write` runs after each write to the run's log.
  FollowedLogs(const fs::path& run_dir, int nodes, bool resume, std::function<void()> on_write);
  ~FollowedLogs();
  FollowedLogs(const FollowedLogs&) = delete;
  FollowedLogs& operator=(const FollowedLogs&) = delete;

  // Where node `i`'s output resumes ("" for its first byte).
  std::string Position(int i);
  // Node `i`'s output, and the position just after it.
  void Write(int i, std::string_view data, const std::string& position);
  // Node `i`'s output ended: its last partial line is ended.
  void Flush(int i);
  // Removes the checkpoint (the run ended: there is nothing left to resume).
  static void Forget(const fs::path& run_dir);

 private:
  struct NodeState {
    std::string position;
    std::uint64_t log_bytes = 0;  // Its own log (several nodes).
    std::string pending;          // Its unfinished line (several nodes).
  };
  struct State {
    std::uint64_t log_bytes = 0;  // The run's log.
    std::vector<NodeState> nodes;
  };
  static nlohmann::json ToJson(const State& state);
  static std::optional<State> FromJson(const nlohmann::json& j, std::size_t nodes);
  bool Resume() REQUIRES(mu_);
  void Open(bool truncate) REQUIRES(mu_);
  // Records that the files go from state_ to `after`, before they do.
  void RecordLocked(const State& after) REQUIRES(mu_);
  // Writes `node_text` to node i's log and `run_text` to the run's log, as recorded.
  void ApplyLocked(int i, std::string_view node_text, const std::string& run_text, State after)
      REQUIRES(mu_);

  fs::path run_dir_;
  std::size_t nodes_;
  Mutex mu_;
  std::unique_ptr<LogWriter> run_log_ GUARDED_BY(mu_);
  std::vector<std::unique_ptr<LogWriter>> node_logs_ GUARDED_BY(mu_);
  std::vector<std::unique_ptr<LinePrefixer>> prefixers_ GUARDED_BY(mu_);
  std::string prefixed_ GUARDED_BY(mu_);  // what the prefixers passed on during one write
  State state_ GUARDED_BY(mu_);
  int checkpoint_fd_ GUARDED_BY(mu_) = -1;
  std::function<void()> on_write_;
};

}  // namespace trainyard::exec
