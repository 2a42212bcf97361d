#include "trainyard/sched/compute_queue.h"

#include <gtest/gtest.h>

namespace trainyard::sched {
namespace {

using Item = ComputeQueue::Item;

std::vector<std::string> Ids(const std::vector<ComputeQueue::Started>& started) {
  std::vector<std::string> out;
  for (const auto& s : started) out.push_back(s.run_id);
  return out;
}

TEST(ComputeQueueTest, HigherPriorityFirstThenPushOrder) {
  ComputeQueue q(1);
  q.Push({"a", 1, 0, 1, true});
  q.Push({"b", 1, 5, 2, true});
  q.Push({"c", 1, 0, 3, true});
  q.Push({"d", 1, 5, 4, true});
  EXPECT_EQ(Ids(q.Dispatch()), std::vector<std::string>{"b"});
  EXPECT_TRUE(q.Dispatch().empty());  // the one node is held
  q.Release("b");
  EXPECT_EQ(Ids(q.Dispatch()), std::vector<std::string>{"d"});
  q.Release("d");
  EXPECT_EQ(Ids(q.Dispatch()), std::vector<std::string>{"a"});
  q.Release("a");
  EXPECT_EQ(Ids(q.Dispatch()), std::vector<std::string>{"c"});
  EXPECT_EQ(q.queued(), 0u);
}

TEST(ComputeQueueTest, AReadyRunThatDoesNotFitHoldsBackTheRunsBehindIt) {
  ComputeQueue q(4);
  q.Push({"small", 1, 0, 0, true});
  auto started = q.Dispatch();
  ASSERT_EQ(Ids(started), std::vector<std::string>{"small"});
  EXPECT_EQ(started[0].slots, std::vector<int>{0});
  q.Push({"big", 4, 0, 0, true});
  q.Push({"tiny", 1, 0, 0, true});
  // Three nodes are free: "tiny" would fit, but never overtakes "big".
  EXPECT_TRUE(q.Dispatch().empty());
  EXPECT_EQ(q.WaitReason("big"), "waiting for 4 nodes (3 of 4 free)");
  auto waiting = q.Queue();
  ASSERT_EQ(waiting.size(), 2u);
  EXPECT_EQ(waiting[1].item.run_id, "tiny");
  EXPECT_EQ(waiting[1].reason, "behind run big (priority 0), which waits for 4 nodes");
  q.Release("small");
  started = q.Dispatch();
  ASSERT_EQ(Ids(started), std::vector<std::string>{"big"});
  EXPECT_EQ(started[0].slots, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(q.busy(), 4);
  EXPECT_EQ(q.idle(), 0);
}

TEST(ComputeQueueTest, RunsWaitingForTheirImageArePassedOver) {
  ComputeQueue q(2);
  q.Push({"building", 1, 9, 0, false});
  q.Push({"ready", 1, 0, 0, true});
  EXPECT_EQ(Ids(q.Dispatch()), std::vector<std::string>{"ready"});
  EXPECT_EQ(q.WaitReason("building"), "waiting for its image build");
  q.SetReady("building");
  EXPECT_EQ(Ids(q.Dispatch()), std::vector<std::string>{"building"});
  EXPECT_EQ(q.Running(), (std::vector<std::string>{"ready", "building"}));
}

TEST(ComputeQueueTest, RemoveTakesARunOutAndLetsTheNextStart) {
  ComputeQueue q(1);
  q.Push({"a", 1, 0, 0, true});
  q.Push({"b", 2, 0, 0, true});  // can never fit one node: holds back "c"
  q.Push({"c", 1, 0, 0, true});
  EXPECT_EQ(Ids(q.Dispatch()), std::vector<std::string>{"a"});
  EXPECT_FALSE(q.Push({"c", 1, 0, 0, true}));  // queued once
  EXPECT_TRUE(q.Remove("b"));
  EXPECT_FALSE(q.Remove("b"));
  EXPECT_FALSE(q.IsQueued("b"));
  EXPECT_EQ(q.WaitReason("b"), "");
  q.Release("a");
  EXPECT_EQ(Ids(q.Dispatch()), std::vector<std::string>{"c"});
}

TEST(ComputeQueueTest, HeldRunsKeepTheirSlotsWhenTheComputeShrinks) {
  ComputeQueue q(2);
  // Re-attached after a restart: held without queueing, beyond max_nodes if need be.
  EXPECT_EQ(q.Hold("old", 3), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(q.busy(), 3);
  EXPECT_EQ(q.idle(), 0);
  q.Push({"new", 1, 0, 0, true});
  EXPECT_TRUE(q.Dispatch().empty());
  q.SetMaxNodes(1);
  q.Release("old");
  EXPECT_EQ(q.busy(), 0);
  auto started = q.Dispatch();
  ASSERT_EQ(Ids(started), std::vector<std::string>{"new"});
  EXPECT_EQ(started[0].slots, std::vector<int>{0});  // never a slot beyond max_nodes
  q.Push({"next", 1, 0, 0, true});
  EXPECT_TRUE(q.Dispatch().empty());
  EXPECT_EQ(q.WaitReason("next"), "waiting for 1 node (0 of 1 free)");
}

}  // namespace
}  // namespace trainyard::sched
