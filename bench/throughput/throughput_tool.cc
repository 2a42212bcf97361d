// Scheduler throughput (DESIGN.md's performance table): N trivial runs (`command: "true"`) on a
// `process` compute with max_nodes 2, submitted over HTTP by C concurrent clients to a real
// in-process daemon whose workspace is on a real disk; timed from the first submit to the last
// run Completed, with every state transition persisted by the store. Every run must end
// Completed with its full history (Queued, Preparing, Starting, Running, Finalizing,
// Completed), or the figure means nothing and the tool fails.
//   throughput_tool DIR [RUNS [CLIENTS]]   (defaults: 1000 runs, 20 clients)
// Prints one "key value" line per figure (read by bench/throughput.sh). The daemon's own log
// (one line per transition) goes to DIR/ws-*/daemon.log, not to the terminal.

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "trainyard/api/daemon.h"
#include "trainyard/client/http_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"
#include "trainyard/spec/definition.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace trainyard;
using Clock = std::chrono::steady_clock;

namespace {

int g_stderr = 2;  // the terminal's stderr, kept when fd 2 goes to the daemon's log

[[noreturn]] void Die(const std::string& what) {
  const std::string line = "throughput_tool: " + what + "\n";
  (void)!write(g_stderr, line.data(), line.size());
  std::exit(1);
}

// The job every client submits: `true` on the bench compute. A process compute uses no image,
// but a job still names an environment.
json TrivialJob(const std::string& name) {
  spec::RunRequest req;
  req.name = name;
  req.experiment_name = "throughput";
  req.command = "true";
  req.compute = "bench";
  spec::EnvironmentDefinition env;
  env.image = "busybox:latest";
  env.user_managed_dependencies = true;
  req.environment = env;
  return req.ToJson(spec::SecretMode::kPlain);
}

// Runs in a terminal state, read straight from the workspace's database (a WAL reader never
// blocks the daemon's writers), so waiting costs the daemon nothing.
long TerminalRuns(sqlite3* db) {
  sqlite3_stmt* q = nullptr;
  if (sqlite3_prepare_v2(db,
                         "SELECT count(*) FROM runs WHERE status IN "
                         "('Completed', 'Failed', 'Canceled')",
                         -1, &q, nullptr) != SQLITE_OK) {
    Die(std::string("cannot query the store: ") + sqlite3_errmsg(db));
  }
  long n = -1;
  if (sqlite3_step(q) == SQLITE_ROW) n = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  return n;
}

double Mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return v.empty() ? 0 : sum / static_cast<double>(v.size());
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Die("usage: throughput_tool DIR [RUNS [CLIENTS [durable|fast]]]");
  const long runs = argc > 2 ? std::atol(argv[2]) : 1000;
  const int clients = argc > 3 ? std::atoi(argv[3]) : 20;
  // "fast": transitions to Starting and to a final state without synchronous=FULL, to measure
  // what their durability costs (the daemon never runs so).
  const bool durable = argc <= 4 || std::string(argv[4]) != "fast";
  if (runs < 1 || clients < 1) Die("RUNS and CLIENTS must be positive");
  const fs::path root = fs::path(argv[1]) / ("ws-tput-" + RandomHex(4));
  if (!MakeDirs(root).ok()) Die("cannot create " + root.string());

  // The daemon logs every transition to stderr: into a file, so the terminal shows figures.
  g_stderr = dup(2);
  const int log_fd = open((root / "daemon.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (g_stderr < 0 || log_fd < 0 || dup2(log_fd, 2) < 0) Die("cannot redirect the daemon's log");
  close(log_fd);

  const auto boot = Clock::now();
  api::DaemonOptions opts;
  opts.workspace = root;
  opts.port = 0;
  opts.write_server_file = false;
  opts.durable_transitions = durable;
  opts.docker_config = root / "no-docker-config.json";
  auto daemon = api::Daemon::Start(opts);
  if (!daemon.ok()) Die(daemon.status().ToString());
  const double start_s = std::chrono::duration<double>(Clock::now() - boot).count();
  HttpClient http((*daemon)->url(), (*daemon)->token());

  auto compute = http.PostJson("/api/v1/computes",
                               json{{"name", "bench"}, {"type", "process"}, {"max_nodes", 2}});
  if (!compute.ok()) Die("creating the compute: " + compute.status().ToString());

  WorkspaceLayout layout;
  layout.root = root;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(layout.Database().c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    Die("cannot open " + layout.Database().string());
  }
  sqlite3_busy_timeout(db, 5000);

  // The jobs are built before the clock starts: only the daemon's work is timed.
  std::vector<std::string> bodies;
  bodies.reserve(static_cast<size_t>(runs));
  const std::string prefix = "tput-" + RandomHex(3) + "-";
  for (long i = 0; i < runs; ++i) bodies.push_back(TrivialJob(prefix + std::to_string(i)).dump());

  std::atomic<long> next{0};
  std::mutex mu;
  std::vector<double> submit_ms;  // GUARDED_BY(mu)
  std::string first_error;        // GUARDED_BY(mu)
  const std::int64_t start_ms = NowMillis();
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      std::vector<double> mine;
      for (long i = next++; i < runs; i = next++) {
        const auto t0 = Clock::now();
        auto r = http.Request("POST", "/api/v1/jobs", bodies[static_cast<size_t>(i)]);
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
        if (!r.ok() || r->status != 201) {
          std::lock_guard lock(mu);
          if (first_error.empty()) {
            first_error =
                r.ok() ? std::to_string(r->status) + " " + r->body : r.status().ToString();
          }
        }
      }
      std::lock_guard lock(mu);
      submit_ms.insert(submit_ms.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  const double submit_s = std::chrono::duration<double>(Clock::now() - start).count();
  if (!first_error.empty()) Die("a submit failed: " + first_error);

  const auto deadline = Clock::now() + std::chrono::seconds(600);
  long done = 0;
  while ((done = TerminalRuns(db)) < runs) {
    if (Clock::now() > deadline)
      Die(std::to_string(done) + " runs of " + std::to_string(runs) + " ended within 600 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const double observed_s = std::chrono::duration<double>(Clock::now() - start).count();
  sqlite3_close(db);

  // Every run, as the API reports it, with its persisted history.
  auto list = http.GetJson("/api/v1/jobs?experiment=throughput&limit=10000", 120000);
  if (!list.ok()) Die("listing the runs: " + list.status().ToString());
  const std::vector<std::string> want = {"Queued",  "Preparing",  "Starting",
                                         "Running", "Finalizing", "Completed"};
  std::set<std::string> names;
  std::int64_t last_ms = 0;
  std::vector<double> queued, preparing, running, finalizing, latency;
  for (const json& run : *list) {
    const std::string name = run.value("name", "");
    names.insert(name);
    if (run.value("status", "") != "Completed") Die("run " + name + " ended " + run.dump());
    std::vector<std::string> seen;
    std::map<std::string, std::int64_t> at;
    for (const json& t : run["transitions"]) {
      const std::string s = t.value("status", "");
      if (s == "NotStarted") continue;
      seen.push_back(s);
      at[s] = t.value("at_ms", std::int64_t{0});
    }
    if (seen != want) Die("run " + name + " has an incomplete history: " + run.dump());
    last_ms = std::max(last_ms, at["Completed"]);
    queued.push_back(static_cast<double>(at["Preparing"] - at["Queued"]));
    preparing.push_back(static_cast<double>(at["Running"] - at["Preparing"]));
    running.push_back(static_cast<double>(at["Finalizing"] - at["Running"]));
    finalizing.push_back(static_cast<double>(at["Completed"] - at["Finalizing"]));
    latency.push_back(static_cast<double>(at["Completed"] - at["Queued"]));
  }
  if (static_cast<long>(names.size()) != runs || static_cast<long>(list->size()) != runs) {
    Die("expected " + std::to_string(runs) + " runs, the API lists " +
        std::to_string(list->size()) + " (" + std::to_string(names.size()) + " names)");
  }
  for (long i = 0; i < runs; ++i) {
    if (names.count(prefix + std::to_string(i)) == 0) Die("run " + prefix + "missing");
  }
  const double seconds = static_cast<double>(last_ms - start_ms) / 1000.0;

  std::printf("runs %ld\n", runs);
  std::printf("clients %d\n", clients);
  std::printf("seconds %.3f\n", seconds);
  std::printf("runs_per_s %.1f\n", static_cast<double>(runs) / seconds);
  std::printf("observed_seconds %.3f\n", observed_s);
  std::printf("submit_seconds %.3f\n", submit_s);
  std::printf("submits_per_s %.1f\n", static_cast<double>(runs) / submit_s);
  std::printf("submit_ms_p50 %.2f\n", Percentile(submit_ms, 0.5));
  std::printf("submit_ms_p99 %.2f\n", Percentile(submit_ms, 0.99));
  std::printf("queued_ms_mean %.1f\n", Mean(queued));
  std::printf("preparing_to_running_ms_mean %.2f\n", Mean(preparing));
  std::printf("running_ms_mean %.2f\n", Mean(running));
  std::printf("finalizing_ms_mean %.2f\n", Mean(finalizing));
  std::printf("node_ms_mean %.2f\n", Mean(preparing) + Mean(running) + Mean(finalizing));
  std::printf("latency_ms_p50 %.0f\n", Percentile(latency, 0.5));
  std::printf("daemon_start_seconds %.3f\n", start_s);
  std::fflush(stdout);
  const auto stop = Clock::now();
  daemon->reset();
  std::printf("daemon_stop_seconds %.3f\n",
              std::chrono::duration<double>(Clock::now() - stop).count());
  if (std::getenv("TPUT_KEEP") == nullptr) (void)RemoveTree(root);
  return 0;
}
