#include "trainyard/api/job_routes.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>

#include "trainyard/api/run_scope.h"
#include "trainyard/cas/manifest.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/json_writer.h"
#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/util.h"
#include "trainyard/exec/slurm/slurm_runs.h"
#include "trainyard/tracking/run_files.h"

namespace trainyard::api {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using store::RunStatus;

constexpr std::uint64_t kMaxChunk = 256 * 1024;  // log bytes per stream answer and file

// Reads up to `max` bytes of the run file `rel` from `offset`, ending on a UTF-8 character
// boundary unless `at_end` (the run has ended: a dangling partial character is then passed on,
// to be replaced). Log files sit in folders a run can write, so they are opened below the run's
// folder without following any link and without blocking: a symlink or FIFO reads as empty.
std::string ReadChunk(const RootedDir* run_dir, std::string_view rel, std::uint64_t offset,
                      std::uint64_t max, bool at_end, bool* more) {
  *more = false;
  if (run_dir == nullptr) return "";
  auto file = run_dir->OpenFile(rel);
  if (!file.ok()) return "";
  const int fd = file->get();
  std::string buf(max, '\0');
  ssize_t n = ::pread(fd, buf.data(), max, static_cast<off_t>(offset));
  if (n <= 0) return "";
  buf.resize(static_cast<size_t>(n));
  *more = static_cast<std::uint64_t>(n) == max;
  // Do not cut a multi-byte character in two: keep its head for the next answer.
  size_t keep = buf.size();
  for (size_t back = 1; back <= 3 && back <= buf.size(); ++back) {
    auto c = static_cast<unsigned char>(buf[buf.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    size_t need = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : (c >= 0xC0) ? 2 : 1;
    if (need > back) keep = buf.size() - back;
    break;
  }
  if (!at_end) buf.resize(keep);
  return buf;
}

// A run as the API shows it, written into `out` (a page of runs is the API's most read answer:
// no JSON tree is built). `wait_reason`: why an active run waits (Scheduler::WaitReason), empty
// when it does not.
void AppendRunJson(std::string& out, const store::RunRecord& r, const std::string& base_url,
                   const std::string& wait_reason = "") {
  const std::int64_t ended =
      store::IsTerminal(r.status) && !r.transitions.empty() ? r.transitions.back().at : 0;
  auto span = [&](RunStatus from, RunStatus to) -> std::int64_t {
    std::int64_t a = r.TimeOf(from), b = r.TimeOf(to);
    if (a == 0) return -1;
    if (b == 0) b = ended ? ended : NowMillis();
    return b - a;
  };
  const std::optional<std::int64_t> slurm_job = exec::SlurmRunExecutor::JobOf(r.container_id);
  JsonWriter w(out);
  w.BeginObject()
      .Field("name", r.id)
      .Field("display_name", r.display_name)
      .Field("description", r.description)
      .Field("experiment", r.experiment)
      .Field("status", store::RunStatusName(r.status))
      .Field("compute", r.compute)
      .Field("command", r.command)
      .Field("environment", r.environment_name + ":" + r.environment_version)
      .Field("environment_name", r.environment_name)
      .Field("environment_version", r.environment_version)
      .Field("image", r.image)
      .Field("image_hash", r.image_hash)
      .Field("snapshot_id", r.snapshot_id);
  w.Key("exit_code");
  if (r.exit_code) {
    w.Int(*r.exit_code);
  } else {
    w.Null();
  }
  w.Field("failure_reason", r.failure_reason).Field("wait_reason", wait_reason).Key("slurm_job");
  if (slurm_job) {
    w.Int(*slurm_job);
  } else {
    w.Null();
  }
  w.Key("tags").BeginObject();
  for (const auto& [key, value] : r.tags) w.Field(key, value);
  w.EndObject().Key("transitions").BeginArray();
  for (const auto& t : r.transitions) {
    w.BeginObject()
        .Field("status", store::RunStatusName(t.status))
        .Field("at", FormatTimeIso(t.at))
        .Field("at_ms", t.at)
        .EndObject();
  }
  w.EndArray()
      .Field("created_at", FormatTimeIso(r.created_at))
      .Field("created_ms", r.created_at)
      .Field("ended_ms", ended)
      .Key("phase_durations")
      .BeginObject();
  if (auto v = span(RunStatus::kQueued, RunStatus::kPreparing); v >= 0) w.Field("queued_ms", v);
  if (auto v = span(RunStatus::kPreparing, RunStatus::kStarting); v >= 0) {
    w.Field("preparing_ms", v);
  }
  if (auto v = span(RunStatus::kRunning, RunStatus::kFinalizing); v >= 0) {
    w.Field("running_ms", v);
  }
  w.EndObject().Field("url", base_url + "/api/v1/jobs/" + r.id).EndObject();
}

HttpResponse JsonRun(int status, const store::RunRecord& r, const std::string& base_url,
                     const std::string& wait_reason) {
  std::string text;
  AppendRunJson(text, r, base_url, wait_reason);
  return HttpResponse::Text(status, std::move(text), "application/json");
}

// A run's files as the API serves them: everything in its folder except `code/` (the snapshot,
// served by the snapshot API): outputs/, logs/, user_logs/ and what the run uploaded.
constexpr const char* kUnservedDir = "code";

// The recorded digest of `rel` when the file on disk is still the one recorded: same size and
// not modified after it was recorded (a run may rewrite a file of its ./logs later).
const tracking::RunFile* CurrentRecord(const std::map<std::string, tracking::RunFile>& recorded,
                                       const std::string& rel, std::uint64_t size,
                                       std::int64_t mtime_ms) {
  auto it = recorded.find(rel);
  if (it == recorded.end() || it->second.size != size || mtime_ms > it->second.recorded_ms) {
    return nullptr;
  }
  return &it->second;
}

std::int64_t MtimeMillis(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000;
}

std::map<std::string, tracking::RunFile> RecordedFiles(tracking::SeriesStore& series,
                                                       const std::string& run_id) {
  std::map<std::string, tracking::RunFile> out;
  if (auto files = series.ListFiles(run_id); files.ok()) {
    for (auto& f : *files) out.emplace(f.path, std::move(f));
  }
  return out;
}

// The files of a run folder the caller may see: for the user everything but code/, for a run
// token (`run_scoped`) only its kRunFileFolders. Walked by descriptor, never entering a link.
json ListRunFiles(const fs::path& run_dir, const std::map<std::string, tracking::RunFile>& recorded,
                  bool run_scoped) {
  json files = json::array();
  auto root = RootedDir::Open(run_dir);
  if (!root.ok()) return files;
  std::vector<RootedDir::Entry> found;
  (void)root->Walk("", [&](const RootedDir::Entry& e) {
    if (e.rel == kUnservedDir || StartsWith(e.rel, std::string(kUnservedDir) + "/")) return true;
    if (!S_ISREG(e.st.st_mode)) return true;  // links, FIFOs and the like are never served
    if (run_scoped && !IsRunFilePath(e.rel)) return true;
    found.push_back(e);
    return true;
  });
  for (const auto& [p, st] : found) {
    const auto size = static_cast<std::uint64_t>(st.st_size);
    json f = {{"path", p}, {"size", size}};
    if (!cas::IsValidUtf8(p)) {
      // JSON holds text: such a name is listed printably, and whole in path_b64.
      f["path"] = cas::PrintablePath(p);
      f["path_b64"] = Base64Encode(p);
    }
    if (const auto* rec = CurrentRecord(recorded, p, size, MtimeMillis(st))) {
      f["digest"] = rec->digest;
      f["origin"] = rec->origin;
    }
    files.push_back(std::move(f));
  }
  return files;
}

}  // namespace

JobRoutes::JobRoutes(store::Store& store, sched::Scheduler& scheduler,
                     tracking::SeriesStore& series, WorkspaceLayout layout,
                     std::function<std::string()> base_url)
    : store_(store),
      scheduler_(scheduler),
      series_(series),
      layout_(std::move(layout)),
      base_url_(std::move(base_url)) {}

std::string JobRoutes::WaitReasonOf(const store::RunRecord& r) const {
  return store::IsTerminal(r.status) ? "" : scheduler_.WaitReason(r.id);
}

void JobRoutes::Install(HttpServer& s) {
  http_ = &s;
  // Jobs.
  s.Route("POST", "/api/v1/jobs", SyncHandler([this](HttpRequest& req) {
            auto body = req.JsonBody();
            if (!body.ok()) return HttpResponse::FromStatus(body.status());
            auto request = spec::RunRequest::FromJson(*body);
            if (!request.ok()) return HttpResponse::FromStatus(request.status());
            auto run = scheduler_.Submit(std::move(request).value());
            if (!run.ok()) return HttpResponse::FromStatus(run.status());
            return JsonRun(201, *run, base_url_(), "");
          }));
  s.Route("GET", "/api/v1/jobs", SyncHandler([this](HttpRequest& req) {
            store::RunFilter filter;
            filter.experiment = req.Query("experiment").value_or("");
            if (auto limit = req.Query("limit")) {
              char* end = nullptr;
              long v = std::strtol(limit->c_str(), &end, 10);
              if (end == limit->c_str() || *end != '\0' || v < 1 || v > 10000) {
                return HttpResponse::FromStatus(
                    InvalidArgument("limit must be an integer from 1 to 10000"));
              }
              filter.limit = static_cast<int>(v);
            }
            auto runs = store_.ListRuns(filter);
            if (!runs.ok()) return HttpResponse::FromStatus(runs.status());
            const std::string base_url = base_url_();
            std::string text = "[";
            text.reserve(runs->size() * 1536);  // about a kilobyte per run
            for (const auto& r : *runs) {
              if (text.size() > 1) text += ',';
              AppendRunJson(text, r, base_url, WaitReasonOf(r));
            }
            text += ']';
            return HttpResponse::Text(200, std::move(text), "application/json");
          }));
  s.Route("GET", "/api/v1/jobs/{name}", SyncHandler([this](HttpRequest& req) {
            auto run = store_.GetRun(req.Param("name"));
            if (!run.ok()) return HttpResponse::FromStatus(run.status());
            return JsonRun(200, *run, base_url_(), WaitReasonOf(*run));
          }));
  s.Route("POST", "/api/v1/jobs/{name}/cancel", SyncHandler([this](HttpRequest& req) {
            Status st = scheduler_.Cancel(req.Param("name"));
            if (!st.ok()) return HttpResponse::FromStatus(st);
            auto run = store_.GetRun(req.Param("name"));
            if (!run.ok()) return HttpResponse::FromStatus(run.status());
            return JsonRun(200, *run, base_url_(), WaitReasonOf(*run));
          }));
  s.Route("GET", "/api/v1/jobs/{name}/stream",
          AsyncHandler([this](HttpRequest& req) { return Stream(req); }));
  s.Route("GET", "/api/v1/jobs/{name}/files", SyncHandler([this](HttpRequest& req) {
            auto run = store_.GetRun(req.Param("name"));
            if (!run.ok()) return HttpResponse::FromStatus(run.status());
            return HttpResponse::Json(
                200, ListRunFiles(layout_.RunDir(run->id), RecordedFiles(series_, run->id),
                                  !req.principal.empty()));
          }));
  s.Route("GET", "/api/v1/jobs/{name}/files/{path...}",
          SyncHandler([this](HttpRequest& req) { return File(req); }));
}

HttpResponse JobRoutes::File(HttpRequest& req) {
  auto run = store_.GetRun(req.Param("name"));
  if (!run.ok()) return HttpResponse::FromStatus(run.status());
  const std::string rel = req.Param("path");
  auto parts = SplitRelativePath(rel);
  if (!parts.ok()) return HttpResponse::FromStatus(parts.status());
  std::string clean;
  for (const std::string& p : *parts) clean += (clean.empty() ? "" : "/") + p;
  const Status missing = NotFound("run " + run->id + " has no file '" + rel + "'");
  // code/ is the snapshot (served by the snapshot API); a run token sees its run folders only.
  if (parts->front() == kUnservedDir || (!req.principal.empty() && !IsRunFilePath(clean))) {
    return HttpResponse::FromStatus(missing);
  }
  // Opened below the run's folder by descriptor: no link anywhere along the path is followed,
  // so a folder the run swaps for a link mid-request cannot send the daemon elsewhere. What is
  // checked below is the file that is sent.
  auto root = RootedDir::Open(layout_.RunDir(run->id));
  if (!root.ok()) return HttpResponse::FromStatus(missing);
  struct stat st {};
  auto file = root->OpenFile(clean, &st);
  if (!file.ok()) return HttpResponse::FromStatus(missing);
  HttpResponse response = HttpResponse::File(std::move(file).value());
  const auto recorded = RecordedFiles(series_, run->id);
  if (const auto* rec =
          CurrentRecord(recorded, clean, static_cast<std::uint64_t>(st.st_size), MtimeMillis(st))) {
    std::string raw;
    const std::string hex = rec->digest.substr(rec->digest.find(':') + 1);
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
      raw.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    response.headers.emplace_back("ETag", "\"" + rec->digest + "\"");
    response.headers.emplace_back("Repr-Digest", "sha-256=:" + Base64Encode(raw) + ":");
  }
  return response;
}

asio::awaitable<HttpResponse> JobRoutes::Stream(HttpRequest& req) {
  const std::string name = req.Param("name");
  auto num = [&](const char* key) -> std::uint64_t {
    auto v = req.Query(key);
    return v ? std::strtoull(v->c_str(), nullptr, 10) : 0;
  };
  const std::uint64_t build_offset = num("build_offset");
  const std::uint64_t log_offset = num("log_offset");
  const std::string known_status = req.Query("status").value_or("");
  const std::uint64_t wait_ms = std::min<std::uint64_t>(num("wait_ms"), 60'000);
  // Opened once per answer; the run folder appears when the run is prepared.
  std::optional<RootedDir> run_dir;
  auto size_of = [&](const char* rel) -> std::uint64_t {
    if (!run_dir) return 0;
    struct stat st {};
    auto f = run_dir->OpenFile(rel, &st);
    return f.ok() ? static_cast<std::uint64_t>(st.st_size) : 0;
  };
  const char* build_path = sched::Scheduler::kBuildLog;
  const char* log_path = sched::Scheduler::kStdLog;

  auto deadline = Notifier::Clock::now() + std::chrono::milliseconds(wait_ms);
  for (;;) {
    const std::uint64_t seen = http_->notifier().Sequence(name);
    // The database and the files are read on the blocking pool, never on the event loop.
    std::optional<HttpResponse> answer;
    co_await http_->Offload([&] {
      auto run = store_.GetRun(name);
      if (!run.ok()) {
        answer = HttpResponse::FromStatus(run.status());
        return;
      }
      const std::string status(store::RunStatusName(run->status));
      const bool terminal = store::IsTerminal(run->status);
      if (!run_dir) {
        if (auto opened = RootedDir::Open(layout_.RunDir(name)); opened.ok()) {
          run_dir.emplace(std::move(opened).value());
        }
      }
      const RootedDir* dir = run_dir ? &*run_dir : nullptr;
      const bool news = status != known_status || size_of(build_path) > build_offset ||
                        size_of(log_path) > log_offset;
      if (!news && !terminal && Notifier::Clock::now() < deadline) return;
      bool build_more = false, log_more = false;
      std::string build =
          ReadChunk(dir, build_path, build_offset, kMaxChunk, terminal, &build_more);
      std::string log = ReadChunk(dir, log_path, log_offset, kMaxChunk, terminal, &log_more);
      const std::uint64_t new_build = build_offset + build.size();
      const std::uint64_t new_log = log_offset + log.size();
      const bool done =
          terminal && new_build >= size_of(build_path) && new_log >= size_of(log_path);
      answer = HttpResponse::Json(200, {{"status", status},
                                        {"build", build},
                                        {"build_offset", new_build},
                                        {"log", log},
                                        {"log_offset", new_log},
                                        {"done", done},
                                        {"failure_reason", run->failure_reason}});
    });
    if (answer) co_return std::move(*answer);
    co_await http_->notifier().WaitForChange(name, seen, deadline);
  }
}

}  // namespace trainyard::api
