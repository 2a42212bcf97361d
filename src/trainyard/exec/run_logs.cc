#include "trainyard/exec/run_logs.h"

#include <charconv>

#include "trainyard/common/util.h"
#include "trainyard/exec/run_executor.h"

namespace trainyard::exec {

bool LogTailMentions(const fs::path& run_dir, std::string_view rel, std::string_view needle) {
  auto dir = RootedDir::Open(run_dir);
  if (!dir.ok()) return false;
  auto tail = dir->ReadTail(rel, 64 << 10);
  return tail.ok() && tail->find(needle) != std::string::npos;
}

FollowedLogs::FollowedLogs(const fs::path& run_dir, int nodes, bool resume,
                           std::function<void()> on_write)
    : run_dir_(run_dir),
      nodes_(static_cast<std::size_t>(std::max(1, nodes))),
      on_write_(std::move(on_write)) {
  MutexLock lock(mu_);
  state_.nodes.resize(nodes_);
  if (!(resume && Resume())) {
    state_ = State{};
    state_.nodes.resize(nodes_);
    Open(/*truncate=*/true);
  }
  for (std::size_t i = 0; nodes_ > 1 && i < nodes_; ++i) {
    prefixers_.push_back(std::make_unique<LinePrefixer>(
        "[node " + std::to_string(i) + "] ",
        // Called by Write, with mu_ held.
        [this](std::string_view t) REQUIRES(mu_) { prefixed_.append(t); }));
    prefixers_.back()->Restore(state_.nodes[i].pending);
  }
  // The checkpoint is written in place (a record per write); opened truncated, so it is never
  // read back with a link or FIFO planted on the way.
  if (auto dir = RootedDir::Create(run_dir_); dir.ok()) {
    if (auto fd = dir->OpenForWrite(kCheckpoint, /*truncate=*/true, 0600); fd.ok()) {
      checkpoint_fd_ = fd->Release();
    }
  }
  RecordLocked(state_);
}

FollowedLogs::~FollowedLogs() {
  if (checkpoint_fd_ >= 0) ::close(checkpoint_fd_);
}

void FollowedLogs::Open(bool truncate) {
  run_log_ = std::make_unique<LogWriter>(run_dir_, kStdLog, truncate, on_write_);
  node_logs_.clear();
  for (std::size_t i = 0; nodes_ > 1 && i < nodes_; ++i) {
    node_logs_.push_back(
        std::make_unique<LogWriter>(run_dir_, NodeLogName(static_cast<int>(i)), truncate, [] {}));
  }
}

nlohmann::json FollowedLogs::ToJson(const State& state) {
  nlohmann::json nodes = nlohmann::json::array();
  for (const NodeState& n : state.nodes) {
    nodes.push_back({{"position", n.position},
                     {"log_bytes", n.log_bytes},
                     {"pending_b64", Base64Encode(n.pending)}});
  }
  return {{"log_bytes", state.log_bytes}, {"nodes", std::move(nodes)}};
}

std::optional<FollowedLogs::State> FollowedLogs::FromJson(const nlohmann::json& j,
                                                          std::size_t nodes) {
  if (!j.is_object() || !j.value("log_bytes", nlohmann::json()).is_number_unsigned() ||
      !j.value("nodes", nlohmann::json()).is_array() || j["nodes"].size() != nodes) {
    return std::nullopt;
  }
  State state;
  state.log_bytes = j["log_bytes"].get<std::uint64_t>();
  for (const nlohmann::json& n : j["nodes"]) {
    NodeState node;
    if (!n.is_object() || !n.value("position", nlohmann::json()).is_string() ||
        !n.value("log_bytes", nlohmann::json()).is_number_unsigned() ||
        !n.value("pending_b64", nlohmann::json()).is_string() ||
        !Base64Decode(n["pending_b64"].get<std::string>(), &node.pending)) {
      return std::nullopt;
    }
    node.position = n["position"].get<std::string>();
    node.log_bytes = n["log_bytes"].get<std::uint64_t>();
    state.nodes.push_back(std::move(node));
  }
  return state;
}

bool FollowedLogs::Resume() {
  auto dir = RootedDir::Open(run_dir_);
  if (!dir.ok()) return false;
  auto text = dir->ReadFile(kCheckpoint, 16 << 20);
  if (!text.ok()) return false;
  // "<length>\n<record>", the record {"before": state, "after": state}; what follows is left
  // over from a longer record.
  const std::size_t nl = text->find('\n');
  std::uint64_t length = 0;
  if (nl == std::string::npos ||
      std::from_chars(text->data(), text->data() + nl, length).ec != std::errc() ||
      length > text->size() - nl - 1) {
    return false;
  }
  const nlohmann::json record =
      nlohmann::json::parse(text->substr(nl + 1, length), nullptr, /*allow_exceptions=*/false);
  if (!record.is_object()) return false;
  const auto before = FromJson(record.value("before", nlohmann::json()), nodes_);
  const auto after = FromJson(record.value("after", nlohmann::json()), nodes_);
  if (!before || !after) return false;
  Open(/*truncate=*/false);
  auto sizes_are = [&](const State& s) REQUIRES(mu_) {
    if (run_log_->Size() != s.log_bytes) return false;
    for (std::size_t i = 0; i < node_logs_.size(); ++i) {
      if (node_logs_[i]->Size() != s.nodes[i].log_bytes) return false;
    }
    return true;
  };
  auto at_least = [&](const State& s) REQUIRES(mu_) {
    if (run_log_->Size().value_or(0) < s.log_bytes) return false;
    for (std::size_t i = 0; i < node_logs_.size(); ++i) {
      if (node_logs_[i]->Size().value_or(0) < s.nodes[i].log_bytes) return false;
    }
    return true;
  };
  if (sizes_are(*after)) {
    state_ = *after;  // The last write was whole.
    return true;
  }
  if (!at_least(*before)) return false;  // Not the files the record describes.
  // The last write was cut short by the crash: cut it off; it is read again.
  if (!run_log_->TruncateTo(before->log_bytes)) return false;
  for (std::size_t i = 0; i < node_logs_.size(); ++i) {
    if (!node_logs_[i]->TruncateTo(before->nodes[i].log_bytes)) return false;
  }
  state_ = *before;
  return true;
}

void FollowedLogs::RecordLocked(const State& after) {
  if (checkpoint_fd_ < 0) return;
  const std::string record =
      nlohmann::json{{"before", ToJson(state_)}, {"after", ToJson(after)}}.dump();
  const std::string text = std::to_string(record.size()) + "\n" + record;
  // One pwrite: a crash of the daemon leaves the old record or the new one, never half of one
  // (a power loss takes the running containers too, so no fsync).
  (void)::pwrite(checkpoint_fd_, text.data(), text.size(), 0);
}

void FollowedLogs::ApplyLocked(int i, std::string_view node_text, const std::string& run_text,
                               State after) {
  RecordLocked(after);
  if (nodes_ > 1) node_logs_[static_cast<std::size_t>(i)]->Write(node_text);
  run_log_->Write(run_text);
  state_ = std::move(after);
}

std::string FollowedLogs::Position(int i) {
  MutexLock lock(mu_);
  return state_.nodes.at(static_cast<std::size_t>(i)).position;
}

void FollowedLogs::Write(int i, std::string_view data, const std::string& position) {
  MutexLock lock(mu_);
  const auto at = static_cast<std::size_t>(i);
  State after = state_;
  after.nodes.at(at).position = position;
  if (nodes_ == 1) {
    after.log_bytes += data.size();
    ApplyLocked(i, {}, std::string(data), std::move(after));
    return;
  }
  prefixed_.clear();
  prefixers_.at(at)->Write(data);
  after.nodes[at].log_bytes += data.size();
  after.nodes[at].pending = prefixers_[at]->pending();
  after.log_bytes += prefixed_.size();
  ApplyLocked(i, data, prefixed_, std::move(after));
}

void FollowedLogs::Flush(int i) {
  MutexLock lock(mu_);
  if (nodes_ == 1) return;
  const auto at = static_cast<std::size_t>(i);
  prefixed_.clear();
  prefixers_.at(at)->Flush();
  if (prefixed_.empty()) return;
  State after = state_;
  after.nodes[at].pending.clear();
  after.log_bytes += prefixed_.size();
  ApplyLocked(i, {}, prefixed_, std::move(after));
}

void FollowedLogs::Forget(const fs::path& run_dir) {
  if (auto dir = RootedDir::Open(run_dir); dir.ok()) (void)dir->Remove(kCheckpoint);
}

}  // namespace trainyard::exec
