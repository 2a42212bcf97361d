#include "trainyard/sched/compute_queue.h"

#include <set>

namespace trainyard::sched {

void ComputeQueue::SetMaxNodes(int max_nodes) {
  max_nodes_ = max_nodes < 1 ? 1 : max_nodes;
  if (static_cast<int>(slots_.size()) < max_nodes_) slots_.resize(max_nodes_);
}

bool ComputeQueue::Push(Item item) {
  if (keys_.count(item.run_id)) return false;
  const Key key{-item.priority, next_++};
  keys_[item.run_id] = key;
  queue_.emplace(key, std::move(item));
  return true;
}

bool ComputeQueue::Remove(const std::string& run_id) {
  auto it = keys_.find(run_id);
  if (it == keys_.end()) return false;
  queue_.erase(it->second);
  keys_.erase(it);
  return true;
}

void ComputeQueue::SetReady(const std::string& run_id) {
  if (auto it = keys_.find(run_id); it != keys_.end()) queue_.at(it->second).ready = true;
}

std::vector<ComputeQueue::Started> ComputeQueue::Dispatch() {
  std::vector<Started> started;
  int free = 0;
  for (int i = 0; i < max_nodes_; ++i) free += slots_[i].empty() ? 1 : 0;
  for (auto it = queue_.begin(); it != queue_.end();) {
    const Item& item = it->second;
    if (!item.ready) {
      ++it;  // its image is being built; runs behind it that are ready go first
      continue;
    }
    if (item.nodes > free) break;  // strict order: nothing overtakes a ready run that waits
    Started s{item.run_id, {}};
    for (int i = 0; i < max_nodes_ && static_cast<int>(s.slots.size()) < item.nodes; ++i) {
      if (slots_[i].empty()) {
        slots_[i] = item.run_id;
        s.slots.push_back(i);
      }
    }
    free -= item.nodes;
    busy_ += item.nodes;
    keys_.erase(item.run_id);
    it = queue_.erase(it);
    started.push_back(std::move(s));
  }
  return started;
}

std::vector<int> ComputeQueue::Hold(const std::string& run_id, int nodes) {
  std::vector<int> held;
  for (std::size_t i = 0; static_cast<int>(held.size()) < nodes; ++i) {
    if (i == slots_.size()) slots_.emplace_back();
    if (slots_[i].empty()) {
      slots_[i] = run_id;
      held.push_back(static_cast<int>(i));
    }
  }
  busy_ += nodes;
  return held;
}

void ComputeQueue::Release(const std::string& run_id) {
  for (std::string& holder : slots_) {
    if (holder == run_id) {
      holder.clear();
      --busy_;
    }
  }
}

std::vector<std::string> ComputeQueue::Running() const {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const std::string& id : slots_) {
    if (!id.empty() && seen.insert(id).second) out.push_back(id);
  }
  return out;
}

std::string ComputeQueue::ReasonFor(const Item& item, const Item* blocker) const {
  if (!item.ready) return "waiting for its image build";
  if (blocker != nullptr) {
    return "behind run " + blocker->run_id + " (priority " + std::to_string(blocker->priority) +
           "), which waits for " + std::to_string(blocker->nodes) +
           (blocker->nodes == 1 ? " node" : " nodes");
  }
  return "waiting for " + std::to_string(item.nodes) + (item.nodes == 1 ? " node" : " nodes") +
         " (" + std::to_string(idle()) + " of " + std::to_string(max_nodes_) + " free)";
}

std::vector<ComputeQueue::Waiting> ComputeQueue::Queue() const {
  std::vector<Waiting> out;
  // The first ready run that does not fit holds back every ready run behind it.
  const Item* blocker = nullptr;
  int free = idle();
  for (const auto& [key, item] : queue_) {
    out.push_back({item, ReasonFor(item, item.ready ? blocker : nullptr)});
    if (item.ready && blocker == nullptr && item.nodes > free) blocker = &item;
    if (item.ready && blocker == nullptr) free -= item.nodes;
  }
  return out;
}

std::string ComputeQueue::WaitReason(const std::string& run_id) const {
  auto it = keys_.find(run_id);
  return it == keys_.end() ? "" : ReasonFor(queue_.at(it->second), nullptr);
}

}  // namespace trainyard::sched
