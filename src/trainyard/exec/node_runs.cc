#include "trainyard/exec/node_runs.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <thread>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/exec/run_logs.h"

namespace trainyard::exec {

using store::RunStatus;

class NodeRunExecutor::Run : public LaunchedRun {
 public:
  Run(NodeRunExecutor& executor, RunPlan plan, std::vector<std::string> handles)
      : executor_(executor), plan_(std::move(plan)), handles_(std::move(handles)) {}

  RunEnd Follow(RunHost& host, bool resume) override;
  Status Release(RunHost& host) override;

 private:
  NodeRunExecutor& executor_;
  const RunPlan plan_;
  const std::vector<std::string> handles_;  // one per node
};

StatusOr<bool> NodeRunExecutor::OwnsNode(const RunPlan& plan, const std::string& handle) {
  auto labels = nodes_.Labels(handle);
  if (!labels.ok()) {
    if (labels.status().code() == StatusCode::kNotFound) return false;
    return labels.status();
  }
  if (!labels->has_value()) return true;  // nodes no one else can have
  const auto& l = **labels;
  auto is = [&](const char* key, const std::string& want) {
    auto it = l.find(key);
    return it != l.end() && it->second == want;
  };
  return is("trainyard.workspace", plan.workspace_root.string()) &&
         is("trainyard.run_id", plan.run_id);
}

void NodeRunExecutor::RemoveLeftovers() {
  std::vector<std::string> leftovers;
  {
    MutexLock lock(mu_);
    leftovers.swap(leftovers_);
  }
  for (const std::string& h : leftovers) {
    if (!nodes_.Cleanup(h).ok()) {
      MutexLock lock(mu_);
      leftovers_.push_back(h);
    }
  }
}

StatusOr<std::unique_ptr<LaunchedRun>> NodeRunExecutor::Launch(const RunPlan& plan, RunHost& host) {
  TY_RETURN_IF_ERROR(host.Transition(RunStatus::kStarting).WithPrefix("internal"));
  const NodeView view = ViewOf(plan);
  // A multi-node run's nodes share a network of their own, where they find each other by name.
  Status launched = Status::Ok();
  if (plan.nodes > 1) {
    launched = WriteFileAtomic(HostfilePath(plan), Hostfile(plan, view));
    if (launched.ok()) {
      launched = nodes_.CreateNetwork(ContainerName(plan.workspace_id, plan.run_id),
                                      {{"trainyard.run_id", plan.run_id},
                                       {"trainyard.workspace", plan.workspace_root.string()}});
    }
  }
  // Nodes of earlier runs that could not be removed when their engine was gone; it answers now.
  RemoveLeftovers();
  std::vector<std::string> handles;
  for (int node = 0; node < plan.nodes && launched.ok(); ++node) {
    auto launch = MakeNodeLaunch(plan, view, node, /*distribution=*/true, options_);
    if (!launch.ok()) {
      launched = launch.status();
      break;
    }
    // A leftover from an interrupted attempt of this run is removed; a node of that name that
    // is not this run's of this workspace is never touched (the launch then fails, naming it).
    if (auto owned = OwnsNode(plan, launch->name); owned.ok() && *owned) {
      (void)nodes_.Cleanup(launch->name);
    }
    auto handle = nodes_.Launch(*launch);
    if (!handle.ok()) {
      launched = plan.nodes > 1 ? handle.status().WithPrefix("node " + std::to_string(node))
                                : handle.status();
      break;
    }
    handles.push_back(launch->name);
    if (node == 0) host.RecordHandle(*handle);
  }
  if (!launched.ok()) {
    for (const auto& h : handles) (void)nodes_.Cleanup(h);
    if (plan.nodes > 1) (void)nodes_.RemoveNetwork(ContainerName(plan.workspace_id, plan.run_id));
    return launched.WithPrefix("could not start the run");
  }
  // Canceled between launch and now: Follow stops the nodes.
  (void)host.Transition(RunStatus::kRunning);
  return std::unique_ptr<LaunchedRun>(std::make_unique<Run>(*this, plan, std::move(handles)));
}

StatusOr<std::unique_ptr<LaunchedRun>> NodeRunExecutor::Recover(const RunPlan& plan,
                                                                RunHost& /*host*/, RunStatus status,
                                                                const std::string& /*handle*/) {
  std::vector<std::string> handles;
  for (int i = 0; i < plan.nodes; ++i) handles.push_back(NodeName(plan, i));
  // A node of that name that is not this run's (another workspace's) is not its either.
  auto owned = OwnsNode(plan, handles.front());
  StatusOr<bool> running =
      !owned.ok() ? StatusOr<bool>(owned.status())
      : *owned    ? nodes_.IsRunning(handles.front())
                  : StatusOr<bool>(NotFound("the container of that name is not this run's"));
  if (!running.ok() && running.status().code() != StatusCode::kNotFound) {
    // The engine cannot be asked (dockerd down or restarting): failing the run would be a
    // guess, and its container may be alive.
    return running.status().WithPrefix("the engine did not answer");
  }
  // A run caught in Starting is followed when its node runs or ran to its end (its command must
  // not run twice), else started again (Launch removes a half-made node).
  bool started = running.ok() && *running;
  if (status == RunStatus::kStarting && running.ok() && !*running) {
    auto ended = nodes_.HasEnded(handles.front());
    started = ended.ok() && *ended;
  }
  const bool launched = status == RunStatus::kRunning || status == RunStatus::kFinalizing ||
                        status == RunStatus::kCancelRequested ||
                        (status == RunStatus::kStarting && started);
  if (!launched || !running.ok()) return NotFound("the run's nodes were not launched");
  return std::unique_ptr<LaunchedRun>(std::make_unique<Run>(*this, plan, std::move(handles)));
}

RunEnd NodeRunExecutor::Run::Follow(RunHost& host, bool resume) {
  NodeExecutor& nodes = executor_.nodes_;
  RunControl& control = host.control();
  const std::vector<std::string>& handles = handles_;
  const int n = static_cast<int>(handles.size());
  // Cancel, timeout and a failed node are carried out by a watchdog, so the log streams are
  // never blocked: it stops every node that still runs. The flags below are guarded by
  // control.mu.
  bool nodes_done = false, node_failed = false;
  const auto deadline = TimeoutDeadline(plan_, host.running_since(), host.clock());
  std::thread watchdog([&] {
    MutexLock lock(control.mu);
    auto stop_wanted = [&]() REQUIRES(control.mu) {
      return nodes_done || control.cancel_requested || node_failed;
    };
    while (!stop_wanted()) {
      if (!deadline) {
        lock.Wait(control.cv);
      } else if (!host.clock().WaitUntil(lock, control.cv, *deadline)) {
        if (!stop_wanted()) control.timed_out = true;
        break;
      }
    }
    if (nodes_done) return;
    lock.Unlock();
    std::vector<std::thread> stops;
    for (const auto& h : handles) {
      stops.emplace_back([&, h] { (void)nodes.Stop(h, executor_.options_.stop_grace_seconds); });
    }
    for (auto& t : stops) t.join();
  });

  // One node: its output is the run's log. Several: each has its own
  // (user_logs/std_log_node_<i>.txt) and the run's log has every node's lines, each prefixed
  // "[node i] ". A re-attach resumes each from where the previous daemon's checkpoint left it.
  FollowedLogs logs(plan_.run_dir, n, resume, [&host] { host.LogsChanged(); });
  std::vector<StatusOr<ExitInfo>> exits(n, Internal("not waited for"));
  // The order nodes ended badly in (1 = first), 0 for those that did not: the first is the
  // cause, the others were most likely stopped because of it.
  std::vector<int> failed_at(n, 0);
  std::atomic<int> failures{0};
  auto follow = [&](int i) {
    // The engine may end a follow before the end of the output (Docker 20.10 does when a
    // container exits while the follower is behind): ask again from where it stopped until a
    // follow brings nothing new.
    Status streamed;
    // Positions only move forward and the output of an ended node is finite: this ends. The
    // bound is a backstop against an engine that keeps answering with the same messages.
    constexpr int kMaxFollows = 1000;
    for (int follows = 0; follows < kMaxFollows && streamed.ok(); ++follows) {
      bool more = false;
      streamed = nodes.StreamLogs(handles[i], logs.Position(i),
                                  [&](std::string_view data, const std::string& position) {
                                    more = true;
                                    logs.Write(i, data, position);
                                  });
      if (!more) break;
    }
    if (!streamed.ok()) {
      std::fprintf(stderr, "[%s] run %s: following the output of node %d stopped: %s\n",
                   FormatTimeIso(NowMillis()).c_str(), plan_.run_id.c_str(), i,
                   streamed.message().c_str());
    }
    logs.Flush(i);
    exits[i] = nodes.Wait(handles[i]);
    if (!exits[i].ok() || exits[i]->exit_code != 0) {
      failed_at[i] = ++failures;
      {
        MutexLock lock(control.mu);
        node_failed = true;
      }
      control.cv.notify_all();
    }
  };
  if (n == 1) {
    follow(0);
  } else {
    std::vector<std::thread> followers;
    for (int i = 0; i < n; ++i) followers.emplace_back(follow, i);
    for (auto& t : followers) t.join();
  }
  {
    MutexLock lock(control.mu);
    nodes_done = true;
  }
  control.cv.notify_all();
  watchdog.join();

  bool stopped_here;
  {
    MutexLock lock(control.mu);
    stopped_here = control.cancel_requested || control.timed_out;
  }
  // The node the run's outcome is told by: the first to fail, else node 0.
  int cause = 0;
  for (int i = 0; i < n; ++i) {
    if (failed_at[i] != 0 && (failed_at[cause] == 0 || failed_at[i] < failed_at[cause])) cause = i;
  }
  StatusOr<ExitInfo> exit = exits[cause];
  if (executor_.NodesEndWithTheirEngine() && !stopped_here && exit.ok() && !exit->oom_killed &&
      (exit->exit_code == 137 || exit->exit_code == 143)) {
    // Killed by a signal nobody here sent: the engine may be shutting down (dockerd stops its
    // containers as it goes). Its API goes away moments after the containers do.
    for (int i = 0; i < 30; ++i) {
      if (Status ping = nodes.Ping(); !ping.ok()) {
        exit = Unavailable("the node was killed (exit code " + std::to_string(exit->exit_code) +
                           ") as its engine went away: " + ping.message());
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  const std::string node_prefix = n > 1 ? "node " + std::to_string(cause) + ": " : "";
  RunEnd end;
  if (!exit.ok()) {
    end.compute_verdict =
        Verdict{RunStatus::kFailed, "compute lost: " + node_prefix + exit.status().message()};
    return end;
  }
  end.exit_code = exit->exit_code;
  if (exit->oom_killed) {
    end.exit_verdict = Verdict{RunStatus::kFailed, "out of memory: " + node_prefix +
                                                       "the kernel killed the script (exit code " +
                                                       std::to_string(exit->exit_code) + ")"};
  } else if (exit->exit_code != 0) {
    std::string reason = node_prefix + "script exited with code " + std::to_string(exit->exit_code);
    if (n > 1) {
      reason += " (its log: " + NodeLogName(cause) + "; the other nodes were stopped)";
    }
    end.exit_verdict = Verdict{RunStatus::kFailed, reason + ReadOnlyCodeHint(plan_)};
  }
  return end;
}

Status NodeRunExecutor::Run::Release(RunHost& /*host*/) {
  // ./outputs and ./logs were written straight into the run's folders (bind mounts, or links
  // for a process); nothing is left inside a node once it is removed.
  for (const auto& h : handles_) {
    if (!executor_.nodes_.Cleanup(h).ok()) {
      // The engine went away with the node: removed the next time a run starts on it.
      MutexLock lock(executor_.mu_);
      executor_.leftovers_.push_back(h);
    }
  }
  if (handles_.size() > 1) {
    (void)executor_.nodes_.RemoveNetwork(ContainerName(plan_.workspace_id, plan_.run_id));
  }
  return Status::Ok();
}

}  // namespace trainyard::exec
