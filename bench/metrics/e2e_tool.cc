// End-to-end metric ingest: the C++ client header (sdk/cpp/trainyard/run.h) logging into a real
// in-process daemon, through the unix socket a container uses and over TCP, until every point
// is durable; and, in the same run, the anchor of DESIGN.md: one SQLite INSERT per point in
// 1000-point transactions (WAL, synchronous=FULL).
//   e2e_tool DIR [POINTS]
// Prints one "key value" line per figure (read by bench/metrics.sh).

#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "trainyard/api/daemon.h"
#include "trainyard/api/socket_relay.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"
#include "trainyard/run.h"
#include "trainyard/store/store.h"

namespace fs = std::filesystem;
using namespace trainyard;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "e2e_tool: %s\n", what.c_str());
  std::exit(1);
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
  // Every point must be stored, or the figure means nothing.
  const std::string list = r.Get("/metrics");
  if (list.find("\"count\":" + std::to_string(points)) == std::string::npos) {
    Die("run " + run + " did not store all " + std::to_string(points) + " points: " + list);
  }
  return rate;
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
  for (const char* id : {"bench-unix", "bench-tcp"}) {
    store::RunRecord r;
    r.id = id;
    r.experiment = "bench";
    r.compute = "local";
    r.request_json = "{}";
    r.created_at = NowMillis();
    r.status = store::RunStatus::kRunning;
    if (Status s = (*store)->InsertRun(r); !s.ok()) Die(s.ToString());
  }
  const std::string socket_url = "unix://" + (ApiSocketDir(root) / "api.sock").string();
  const double unix_rate = Ingest(socket_url, "bench-unix", box->RunToken("bench-unix"), points);
  const double tcp_rate =
      Ingest((*daemon)->url(), "bench-tcp", box->RunToken("bench-tcp"), points);
  const double baseline = Baseline(root / "baseline.db", std::min(points, 1'000'000L));
  std::printf("points %ld\n", points);
  std::printf("cpp_unix_points_per_s %.0f\n", unix_rate);
  std::printf("cpp_tcp_points_per_s %.0f\n", tcp_rate);
  std::printf("baseline_points_per_s %.0f\n", baseline);
  daemon->reset();
  (void)RemoveTree(root);
  return 0;
}
