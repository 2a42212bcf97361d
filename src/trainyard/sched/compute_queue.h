#pragma once

// One compute target's node slots and its queue of runs: which queued runs start, in which
// order, on which slots, and why the others wait. Pure: no threads, no I/O, no clock; the
// scheduler keeps one per compute under its own mutex.
//
// The order: higher priority first, then the order runs were pushed in. A run starts when it is
// ready (its image was built, or it needs none) and enough slots are free; a ready run that does
// not fit holds back every run behind it (strict order: a large run is never starved by small
// ones), while runs that are not ready yet are passed over.

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace trainyard::sched {

class ComputeQueue {
 public:
  struct Item {
    std::string run_id;
    int nodes = 1;
    int priority = 0;
    std::int64_t queued_at = 0;  // unix millis, shown to users
    bool ready = false;
  };
  // A run that starts, with the node slots it now holds (slot s owns the machine's GPUs
  // [s * gpus, (s + 1) * gpus)).
  struct Started {
    std::string run_id;
    std::vector<int> slots;
  };
  struct Waiting {
    Item item;
    std::string reason;  // as WaitReason says, and "behind run X ..." for a run held back
  };

  explicit ComputeQueue(int max_nodes = 1) { SetMaxNodes(max_nodes); }

  // Slots beyond a lowered max_nodes are no longer handed out (their runs keep them).
  void SetMaxNodes(int max_nodes);
  int max_nodes() const { return max_nodes_; }

  // Queues a run. A run already queued is not queued twice (false).
  bool Push(Item item);
  // Takes a run out of the queue; false when it is not in it.
  bool Remove(const std::string& run_id);
  bool IsQueued(const std::string& run_id) const { return keys_.count(run_id) > 0; }
  // Marks a queued run as ready to start.
  void SetReady(const std::string& run_id);

  // The runs that start now, in queue order; they leave the queue and hold their slots.
  std::vector<Started> Dispatch();
  // A run takes `nodes` slots without waiting (re-attached after a restart: its nodes already
  // run), beyond max_nodes if need be. Returns them.
  std::vector<int> Hold(const std::string& run_id, int nodes);
  // Frees the slots `run_id` holds.
  void Release(const std::string& run_id);

  int busy() const { return busy_; }
  // max_nodes minus the slots held, at least 0.
  int idle() const { return busy_ >= max_nodes_ ? 0 : max_nodes_ - busy_; }
  std::size_t queued() const { return queue_.size(); }
  // The runs holding slots, in slot order, each once.
  std::vector<std::string> Running() const;
  // The queue in start order, with why each waits.
  std::vector<Waiting> Queue() const;
  // Why a queued run waits: "waiting for its image build", "waiting for 2 nodes (1 of 4
  // free)"; "" when it is not queued.
  std::string WaitReason(const std::string& run_id) const;

 private:
  using Key = std::pair<int, std::uint64_t>;  // (-priority, push order)
  std::string ReasonFor(const Item& item, const Item* blocker) const;

  int max_nodes_ = 1;
  std::vector<std::string> slots_;  // the run holding each slot, "" when free
  int busy_ = 0;
  std::uint64_t next_ = 0;
  std::map<Key, Item> queue_;
  std::map<std::string, Key> keys_;  // run id -> its place in queue_
};

}  // namespace trainyard::sched
