// End-to-end metric ingest: the C++ client header (sdk/cpp/trainyard/run.h) logging into a real
// in-process daemon, through the unix socket a container uses and over TCP, until every point
// is durable; and, in the same run, the anchor of DESIGN.md: one SQLite INSERT per point in
// 1000-point transactions (WAL, synchronous=FULL). With the daemon still up, the Python client
// (sdk/python) logs too: bench/metrics/py_ingest.py runs as a child process with the environment
// a run's container gets, logs PY_POINTS points with run.log() in a loop and flushes. Then chart
// reads (a 1 M-point series downsampled to 2000 points) alone and while the C++ client ingests
// into another run at full speed.
//   e2e_tool DIR [POINTS [PY_POINTS [PY_ARGS...]]]   (PY_POINTS 0: no Python case; PY_ARGS go to
//                                                     py_ingest.py, e.g. --profile FILE)
// Prints one "key value" line per figure (read by bench/metrics.sh).

#include <spawn.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "trainyard/api/daemon.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"
#include "trainyard/http/socket_relay.h"
#include "trainyard/run.h"
#include "trainyard/store/store.h"

namespace fs = std::filesystem;
using namespace trainyard;
using Clock = std::chrono::steady_clock;

extern char** environ;

namespace {

// A run token for `run`, valid for the bench's length.
std::string Token(const SecretBox& box, const std::string& run) {
  return box.RunToken(run, NowMillis() / 1000 + 3600);
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "e2e_tool: %s\n", what.c_str());
  std::exit(1);
}

// Every point must be stored, or the figure means nothing: the run's one series holds `points`.
void CheckStored(sdk::Run& r, const std::string& run, long points) {
  const std::string list = r.Get("/metrics");
  if (list.find("\"count\":" + std::to_string(points)) == std::string::npos) {
    Die("run " + run + " did not store all " + std::to_string(points) + " points: " + list);
  }
}

// Logs `points` points of one series through the client and returns points/s, counting until
// the last one is durable (Flush returns after the daemon's answer).
double Ingest(const std::string& url, const std::string& run, const std::string& token,
              long points) {
  sdk::Options options;
  options.batch_points = 200000;
  sdk::Run r(run, url, token, "bench", options);
  const auto start = Clock::now();
  for (long i = 0; i < points; ++i) r.Log("loss", 1.0 / static_cast<double>(i + 1), i);
  r.Flush();
  const double rate = static_cast<double>(points) / Seconds(start);
  CheckStored(r, run, points);
  return rate;
}

// Runs `argv` with the environment `env`; returns its standard output (its standard error
// passes through). Dies if it cannot start or does not exit 0.
std::string RunChild(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  int fds[2];
  if (pipe(fds) != 0) Die(std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  std::vector<char*> args, envp;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) Die("cannot start " + argv[0] + ": " + std::strerror(rc));
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    Die(argv[1] + " failed (status " + std::to_string(status) + "); its output: " + out);
  }
  return out;
}

// The value of the "key value" line `key` in `out`, or dies.
double Field(const std::string& out, const std::string& key) {
  const std::string head = key + " ";
  for (size_t pos = 0; pos < out.size();) {
    size_t end = out.find('\n', pos);
    if (end == std::string::npos) end = out.size();
    if (out.compare(pos, head.size(), head) == 0) {
      return std::strtod(out.c_str() + pos + head.size(), nullptr);
    }
    pos = end + 1;
  }
  Die("py_ingest.py printed no " + key + ": " + out);
}

// The Python client (sdk/python) in a child process with a run container's environment: logs
// `points` points of one series with run.log() in a loop, then run.flush(). Returns points/s
// from the first log() to flush() returning (measured by the script), after checking through
// the API that every point is stored. `extra` goes to py_ingest.py.
double PythonIngest(const std::string& url, const std::string& run, const std::string& token,
                    long points, const std::vector<std::string>& extra, std::string* details) {
  const fs::path source = TRAINYARD_SOURCE_DIR;
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view kv(*e);
    if (kv.starts_with("TRAINYARD_") || kv.starts_with("PYTHONPATH=") ||
        kv.starts_with("AZUREML_")) {
      continue;
    }
    env.emplace_back(kv);
  }
  env.push_back("TRAINYARD_TRACKING_URL=" + url);
  env.push_back("TRAINYARD_RUN_TOKEN=" + token);
  env.push_back("TRAINYARD_RUN_ID=" + run);
  env.push_back("TRAINYARD_EXPERIMENT=bench");
  env.push_back("AZUREML_RUN_ID=" + run);
  env.push_back("AZUREML_ARM_PROJECT_NAME=bench");
  env.push_back("PYTHONPATH=" + (source / "sdk/python").string());
  std::vector<std::string> argv = {"python3", (source / "bench/metrics/py_ingest.py").string(),
                                   std::to_string(points)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const std::string out = RunChild(argv, env);
  const double elapsed = Field(out, "py_elapsed_s");
  char line[160];
  std::snprintf(line, sizeof line, "py_loop_s %.3f\npy_flush_s %.3f\n", Field(out, "py_loop_s"),
                Field(out, "py_flush_s"));
  *details = line;
  sdk::Run r(run, url, token, "bench");
  CheckStored(r, run, points);
  return static_cast<double>(points) / elapsed;
}

// Latencies (ms, sorted) of `reads` chart reads: run `run`'s series "loss" downsampled to 2000
// points, as a chart asks for it, each answer checked.
std::vector<double> ChartReads(const std::string& url, const std::string& run,
                               const std::string& token, int reads) {
  sdk::Run r(run, url, token, "bench");
  std::vector<double> ms;
  for (int i = 0; i < reads; ++i) {
    const auto start = Clock::now();
    const std::string body = r.Get("/metrics/loss?max_points=2000");
    ms.push_back(Seconds(start) * 1000);
    if (body.size() < 2000 * 10)
      Die("the chart read of " + run + " answered " + body.substr(0, 300));
  }
  std::sort(ms.begin(), ms.end());
  return ms;
}

double Percentile(const std::vector<double>& sorted, double p) {
  const size_t i = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

// Chart reads of a 1 M-point series, first alone, then while a C++ client ingests into another
// run at full speed over the unix socket; prints their p50 and p99 and the ingest rate meanwhile.
void ReadsUnderIngest(const std::string& tcp_url, const std::string& socket_url,
                      const SecretBox& box) {
  Ingest(socket_url, "bench-read", Token(box, "bench-read"), 1'000'000);
  constexpr int kReads = 200;
  const std::vector<double> quiet = ChartReads(tcp_url, "bench-read", Token(box, "bench-read"), 20);
  std::atomic<bool> stop{false};
  std::atomic<long> logged{0};
  double ingest_seconds = 0;
  std::thread loader([&] {
    sdk::Options options;
    options.batch_points = 200000;
    sdk::Run r("bench-load", socket_url, Token(box, "bench-load"), "bench", options);
    const auto start = Clock::now();
    long i = 0;
    // A batch, then Flush (which returns once the daemon has it durably): as fast as the daemon
    // takes points, without overrunning the client's buffer (which would drop points).
    while (!stop.load(std::memory_order_relaxed)) {
      for (int k = 0; k < 200000; ++k, ++i) r.Log("loss", 1.0 / static_cast<double>(i + 1), i);
      r.Flush();
    }
    ingest_seconds = Seconds(start);
    logged = i;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the loader at full speed
  const std::vector<double> loaded =
      ChartReads(tcp_url, "bench-read", Token(box, "bench-read"), kReads);
  stop = true;
  loader.join();
  sdk::Run check("bench-load", socket_url, Token(box, "bench-load"), "bench");
  CheckStored(check, "bench-load", logged.load());
  std::printf("chart_read_quiet_ms_p50 %.2f\nchart_read_quiet_ms_p99 %.2f\n",
              Percentile(quiet, 0.5), Percentile(quiet, 0.99));
  std::printf("chart_read_ingest_ms_p50 %.2f\nchart_read_ingest_ms_p99 %.2f\n",
              Percentile(loaded, 0.5), Percentile(loaded, 0.99));
  std::printf("chart_reads %d\ningest_during_reads_points_per_s %.0f\n", kReads,
              static_cast<double>(logged.load()) / ingest_seconds);
}

double Baseline(const fs::path& db_path, long points) {
  sqlite3* db = nullptr;
  if (sqlite3_open(db_path.c_str(), &db) != SQLITE_OK) Die("cannot open " + db_path.string());
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", nullptr, nullptr, nullptr);
  sqlite3_exec(db,
               "CREATE TABLE IF NOT EXISTS points (run TEXT, name TEXT, step INTEGER, "
               "ts INTEGER, value REAL)",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* insert = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO points VALUES (?, ?, ?, ?, ?)", -1, &insert, nullptr);
  const auto start = Clock::now();
  for (long i = 0; i < points; ++i) {
    if (i % 1000 == 0) sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    sqlite3_bind_text(insert, 1, "run", -1, SQLITE_STATIC);
    sqlite3_bind_text(insert, 2, "loss", -1, SQLITE_STATIC);
    sqlite3_bind_int64(insert, 3, i);
    sqlite3_bind_int64(insert, 4, 1795700000000 + i);
    sqlite3_bind_double(insert, 5, 1.0 / static_cast<double>(i + 1));
    sqlite3_step(insert);
    sqlite3_reset(insert);
    if (i % 1000 == 999 || i == points - 1) sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  const double rate = static_cast<double>(points) / Seconds(start);
  sqlite3_finalize(insert);
  sqlite3_close(db);
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Die("usage: e2e_tool DIR [POINTS]");
  const long points = argc > 2 ? std::atol(argv[2]) : 5'000'000;
  const long py_points = argc > 3 ? std::atol(argv[3]) : 1'500'000;
  const std::vector<std::string> py_extra(argv + std::min(argc, 4), argv + argc);
  const fs::path root = fs::path(argv[1]) / ("ws-" + RandomHex(4));
  api::DaemonOptions opts;
  opts.workspace = root;
  opts.port = 0;
  opts.write_server_file = false;
  opts.docker_config = root / "no-docker-config.json";
  auto daemon = api::Daemon::Start(opts);
  if (!daemon.ok()) Die(daemon.status().ToString());
  WorkspaceLayout layout;
  layout.root = root;
  auto store = store::OpenSqliteStore(layout.Database().string());
  auto box = SecretBox::Open(layout.SecretKey());
  if (!store.ok() || !box.ok()) Die("cannot open the workspace's store or key");
  for (const char* id : {"bench-unix", "bench-tcp", "bench-py", "bench-read", "bench-load"}) {
    store::RunRecord r;
    r.id = id;
    r.experiment = "bench";
    r.compute = "local";
    r.request_json = "{}";
    r.created_at = NowMillis();
    r.status = store::RunStatus::kRunning;
    if (Status s = (*store)->InsertRun(r); !s.ok()) Die(s.ToString());
  }
  auto socket_dir = ApiSocketDir(root);
  if (!socket_dir.ok()) Die(socket_dir.status().ToString());
  const std::string socket_url = "unix://" + (*socket_dir / "api.sock").string();
  const double unix_rate = Ingest(socket_url, "bench-unix", Token(*box, "bench-unix"), points);
  const double tcp_rate = Ingest((*daemon)->url(), "bench-tcp", Token(*box, "bench-tcp"), points);
  double py_rate = 0;
  std::string py_details;
  if (py_points > 0) {
    py_rate = PythonIngest(socket_url, "bench-py", Token(*box, "bench-py"), py_points, py_extra,
                           &py_details);
  }
  ReadsUnderIngest((*daemon)->url(), socket_url, *box);
  const double baseline = Baseline(root / "baseline.db", std::min(points, 1'000'000L));
  std::printf("points %ld\n", points);
  std::printf("cpp_unix_points_per_s %.0f\n", unix_rate);
  std::printf("cpp_tcp_points_per_s %.0f\n", tcp_rate);
  if (py_points > 0) {
    std::printf("py_points %ld\n", py_points);
    std::printf("py_unix_points_per_s %.0f\n", py_rate);
    std::printf("%s", py_details.c_str());
  }
  std::printf("baseline_points_per_s %.0f\n", baseline);
  daemon->reset();
  (void)RemoveTree(root);
  return 0;
}
