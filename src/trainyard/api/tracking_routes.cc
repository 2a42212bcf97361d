#include "trainyard/api/tracking_routes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "trainyard/api/run_scope.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/tracking/entries.h"
#include "trainyard/tracking/run_files.h"

namespace trainyard::api {
namespace {

using json = nlohmann::json;

// GET routes run through upload routes too (to reach the blocking pool); they take no body.
constexpr std::uint64_t kMaxGetBody = 64 << 10;
constexpr std::size_t kMaxKeyBytes = 250;         // tag and property names
constexpr std::size_t kMaxValueBytes = 64 << 10;  // tag and property values, status messages
constexpr std::size_t kMaxIdempotencyKeyBytes = 200;

HttpResponse JsonText(int status, const json& j) {
  return HttpResponse::Text(status, j.dump(-1, ' ', false, json::error_handler_t::replace),
                            "application/json");
}

// What the handlers share. Lives as long as the server's routes (held by their closures).
struct Context {
  store::Store& store;
  tracking::SeriesStore& series;
  WorkspaceLayout layout;
  TrackingRouteOptions options;
};

// The run named by the request's {name}; NotFound naming it. PermissionDenied for a write
// made with the run's token once the run reached Finalizing (CheckRunWritable).
StatusOr<store::RunRecord> RunOf(Context& c, const HttpRequest& req) {
  TY_ASSIGN_OR_RETURN(store::RunRecord run, c.store.GetRun(req.Param("name")));
  TY_RETURN_IF_ERROR(CheckRunWritable(req, run));
  return run;
}

// --- metrics ---------------------------------------------------------------------------------

HttpResponse PostMetrics(Context& c, HttpRequest& req) {
  auto run = RunOf(c, req);
  if (!run.ok()) return HttpResponse::FromStatus(run.status());
  tracking::MetricDecodeOptions decode;
  decode.max_body_bytes = c.options.max_metrics_body_bytes;
  auto batch =
      tracking::DecodeMetricsBody(req.Header("content-type").value_or(""), req.body, decode);
  if (!batch.ok()) return HttpResponse::FromStatus(batch.status());
  const std::uint64_t points = batch->PointCount();

  std::optional<std::string> key = req.Header("idempotency-key");
  if (key && (key->empty() || key->size() > kMaxIdempotencyKeyBytes)) {
    return HttpResponse::FromStatus(InvalidArgument(
        "Idempotency-Key must be 1.." + std::to_string(kMaxIdempotencyKeyBytes) + " bytes"));
  }
  if (key) {
    auto result = c.series.AppendOnce(run->id, *key, *batch, NowMillis());
    if (!result.ok()) return HttpResponse::FromStatus(result.status().WithPrefix("run " + run->id));
    if (result->replayed) return JsonText(200, {{"points", result->points}, {"replayed", true}});
    return JsonText(200, {{"points", points}});
  }
  if (Status st = c.series.Append(run->id, *batch, NowMillis()); !st.ok()) {
    return HttpResponse::FromStatus(st.WithPrefix("run " + run->id));
  }
  return JsonText(200, {{"points", points}});
}

HttpResponse ListMetrics(Context& c, HttpRequest& req) {
  auto run = RunOf(c, req);
  if (!run.ok()) return HttpResponse::FromStatus(run.status());
  auto list = c.series.ListSeries(run->id);
  if (!list.ok()) return HttpResponse::FromStatus(list.status());
  return HttpResponse::Text(200, tracking::SeriesListToJson(*list), "application/json");
}

HttpResponse GetMetric(Context& c, HttpRequest& req) {
  auto run = RunOf(c, req);
  if (!run.ok()) return HttpResponse::FromStatus(run.status());
  std::size_t max_points = c.options.default_max_points;
  if (auto mp = req.Query("max_points")) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(mp->c_str(), &end, 10);
    if (mp->empty() || end == mp->c_str() || *end != '\0' || errno != 0 || v < 2 ||
        (*mp)[0] == '-') {
      return HttpResponse::FromStatus(
          InvalidArgument("max_points must be an integer >= 2, got '" + *mp + "'"));
    }
    max_points = static_cast<std::size_t>(v);
  }
  const std::string format = req.Query("format").value_or("json");
  if (format != "json" && format != "csv") {
    return HttpResponse::FromStatus(
        InvalidArgument("format must be json or csv, got '" + format + "'"));
  }
  auto data = c.series.ReadSeries(run->id, req.Param("metric"), max_points);
  if (!data.ok()) return HttpResponse::FromStatus(data.status().WithPrefix("run " + run->id));
  if (format == "csv") {
    return HttpResponse::Text(200, tracking::SeriesDataToCsv(*data), "text/csv; charset=utf-8");
  }
  return HttpResponse::Text(200, tracking::SeriesDataToJson(*data), "application/json");
}

// --- entries ---------------------------------------------------------------------------------

// OK when `rel` names a regular file of the run's folder, reached without following a link.
Status CheckRunFile(const fs::path& run_dir, const std::string& rel) {
  TY_RETURN_IF_ERROR(SplitRelativePath(rel).status());
  auto root = RootedDir::Open(run_dir);
  if (!root.ok() || !root->OpenFile(rel).ok()) {
    return InvalidArgument("file '" + rel + "' was not uploaded (PUT /files/" + rel + " first)");
  }
  return Status::Ok();
}

HttpResponse PostEntries(Context& c, HttpRequest& req) {
  auto run = RunOf(c, req);
  if (!run.ok()) return HttpResponse::FromStatus(run.status());
  auto entries = tracking::ParseEntriesJson(req.body);
  if (!entries.ok()) return HttpResponse::FromStatus(entries.status());
  const fs::path run_dir = c.layout.RunDir(run->id);
  for (std::size_t i = 0; i < entries->size(); ++i) {
    const tracking::Entry& e = (*entries)[i];
    if (e.kind != tracking::EntryKind::kImage) continue;
    json value = json::parse(e.value_json, nullptr, false);
    std::string path;
    if (value.is_object() && value.contains("path") && value["path"].is_string()) {
      path = value["path"].get<std::string>();
    }
    Status st = CheckRunFile(run_dir, path);
    if (!st.ok()) {
      return HttpResponse::FromStatus(InvalidArgument("entry " + std::to_string(i) + " (" +
                                                      tracking::QuoteName(e.name) +
                                                      "): value: " + st.message()));
    }
  }
  Status st = c.series.AppendEntries(run->id, *entries, NowMillis());
  if (!st.ok()) return HttpResponse::FromStatus(st);
  return JsonText(200, {{"entries", entries->size()}});
}

HttpResponse ListEntries(Context& c, HttpRequest& req) {
  auto run = RunOf(c, req);
  if (!run.ok()) return HttpResponse::FromStatus(run.status());
  auto entries = c.series.ListEntries(run->id, req.Query("name"));
  if (!entries.ok()) return HttpResponse::FromStatus(entries.status());
  return HttpResponse::Text(200, tracking::EntriesToJson(*entries), "application/json");
}

// --- tags, properties, status ----------------------------------------------------------------

Status CheckKey(std::string_view what, const std::string& key) {
  if (key.empty() || key.size() > kMaxKeyBytes) {
    return InvalidArgument(std::string(what) + " names must be 1.." + std::to_string(kMaxKeyBytes) +
                           " bytes");
  }
  return Status::Ok();
}

// {"k": "v", ...} with every value a string.
StatusOr<std::map<std::string, std::string>> StringMap(std::string_view what, const json& doc) {
  if (!doc.is_object()) {
    return InvalidArgument(std::string(what) + " must be an object of name -> string");
  }
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : doc.items()) {
    TY_RETURN_IF_ERROR(CheckKey(what, k));
    if (!v.is_string()) {
      return InvalidArgument(std::string(what) + " '" + k + "': the value must be a string");
    }
    if (v.get_ref<const std::string&>().size() > kMaxValueBytes) {
      return InvalidArgument(std::string(what) + " '" + k + "': the value is over " +
                             std::to_string(kMaxValueBytes) + " bytes");
    }
    out[k] = v.get<std::string>();
  }
  return out;
}

HttpResponse GetTags(Context& c, HttpRequest& req) {
  auto run = RunOf(c, req);
  if (!run.ok()) return HttpResponse::FromStatus(run.status());
  return JsonText(200, {{"tags", run->tags}});
}

HttpResponse PatchTags(Context& c, HttpRequest& req) {
  auto run = RunOf(c, req);
  if (!run.ok()) return HttpResponse::FromStatus(run.status());
  auto doc = req.JsonBody();
  if (!doc.ok()) return HttpResponse::FromStatus(doc.status());
  const Status shape =
      InvalidArgument(R"(expected {"set": {"name": "value", ...}, "remove": ["name", ...]})");
  if (!doc->is_object()) return HttpResponse::FromStatus(shape);
  std::map<std::string, std::string> set;
  if (doc->contains("set")) {
    auto parsed = StringMap("tag", (*doc)["set"]);
    if (!parsed.ok()) return HttpResponse::FromStatus(parsed.status());
    set = std::move(parsed).value();
  }
  std::vector<std::string> remove;
  if (doc->contains("remove")) {
    const json& r = (*doc)["remove"];
    if (!r.is_array()) return HttpResponse::FromStatus(shape);
    for (const json& k : r) {
      if (!k.is_string()) return HttpResponse::FromStatus(shape);
      remove.push_back(k.get<std::string>());
    }
  }
  if (Status st = c.store.UpdateRunTags(run->id, set, remove, c.options.max_tags_per_run);
      !st.ok()) {
    return HttpResponse::FromStatus(st);
  }
  auto now = c.store.GetRun(run->id);
  if (!now.ok()) return HttpResponse::FromStatus(now.status());
  return JsonText(200, {{"tags", now->tags}});
}

HttpResponse GetProperties(Context& c, HttpRequest& req) {
  auto props = c.store.GetRunProperties(req.Param("name"));
  if (!props.ok()) return HttpResponse::FromStatus(props.status());
  return JsonText(200, {{"properties", *props}});
}

HttpResponse PostProperties(Context& c, HttpRequest& req) {
  auto run = RunOf(c, req);
  if (!run.ok()) return HttpResponse::FromStatus(run.status());
  auto doc = req.JsonBody();
  if (!doc.ok()) return HttpResponse::FromStatus(doc.status());
  auto props = StringMap("property", *doc);
  if (!props.ok()) return HttpResponse::FromStatus(props.status());
  if (Status st = c.store.AddRunProperties(run->id, *props, c.options.max_properties_per_run);
      !st.ok()) {
    return HttpResponse::FromStatus(st);
  }
  return GetProperties(c, req);
}

HttpResponse PostStatus(Context& c, HttpRequest& req) {
  auto run = RunOf(c, req);
  if (!run.ok()) return HttpResponse::FromStatus(run.status());
  auto doc = req.JsonBody();
  if (!doc.ok()) return HttpResponse::FromStatus(doc.status());
  const Status shape = InvalidArgument(
      R"(expected {"status": "Completed"} or {"status": "Failed", "message": "..."})");
  if (!doc->is_object() || !doc->contains("status") || !(*doc)["status"].is_string()) {
    return HttpResponse::FromStatus(shape);
  }
  const std::string status = (*doc)["status"].get<std::string>();
  if (status != "Completed" && status != "Failed") return HttpResponse::FromStatus(shape);
  std::string message;
  if (doc->contains("message") && !(*doc)["message"].is_null()) {
    if (!(*doc)["message"].is_string()) return HttpResponse::FromStatus(shape);
    message = (*doc)["message"].get<std::string>();
    if (message.size() > kMaxValueBytes) {
      return HttpResponse::FromStatus(
          InvalidArgument("message is over " + std::to_string(kMaxValueBytes) + " bytes"));
    }
  }
  if (store::IsTerminal(run->status)) {
    return HttpResponse::FromStatus(FailedPrecondition(
        "run '" + run->id + "' already ended as " + std::string(store::RunStatusName(run->status)) +
        "; its verdict can no longer change"));
  }
  Status st = c.store.SetScriptVerdict(
      run->id, status == "Failed" ? store::RunStatus::kFailed : store::RunStatus::kCompleted,
      message);
  if (!st.ok()) return HttpResponse::FromStatus(st);
  return JsonText(200, {{"status", status}, {"message", message}});
}

// --- files -----------------------------------------------------------------------------------

// Streams one run file to a temp file in its folder, hashing it on the way; Finish fsyncs it,
// renames it over the final name and records its digest. Folders are walked with O_NOFOLLOW,
// so a symlink the run planted in its folder can never send the write elsewhere.
class RunFileSink : public BodySink {
 public:
  // `request` is the PUT without its body: who made it, checked again before the file lands.
  RunFileSink(Context& c, HttpRequest request, std::string run_id, ScopedFd dir, std::string leaf,
              std::string rel)
      : c_(c),
        request_(std::move(request)),
        run_id_(std::move(run_id)),
        dir_(std::move(dir)),
        dir_fd_(dir_.get()),
        leaf_(std::move(leaf)),
        rel_(std::move(rel)) {}
  ~RunFileSink() override {
    if (fd_ >= 0) ::close(fd_);
    if (!temp_.empty()) ::unlinkat(dir_fd_, temp_.c_str(), 0);
  }

  Status Open() {
    temp_ = ".upload-" + RandomHex(8) + ".tmp";
    fd_ = ::openat(dir_fd_, temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                   0644);
    if (fd_ < 0) {
      temp_.clear();
      return Internal("cannot create a file for '" + rel_ + "': " + std::strerror(errno));
    }
    return Status::Ok();
  }

  Status Write(std::string_view data) override {
    hash_.Update(data);
    while (!data.empty()) {
      ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Internal("writing '" + rel_ + "': " + std::strerror(errno));
      data.remove_prefix(static_cast<std::size_t>(n));
      size_ += static_cast<std::uint64_t>(n);
    }
    return Status::Ok();
  }

  HttpResponse Finish() override {
    // A run token's upload that outlived its run's Running state does not land: what was
    // collected at Finalizing stays what the run left.
    if (auto run = RunOf(c_, request_); !run.ok()) return HttpResponse::FromStatus(run.status());
    if (::fsync(fd_) != 0) {
      return HttpResponse::FromStatus(Internal("writing '" + rel_ + "': " + std::strerror(errno)));
    }
    ::close(fd_);
    fd_ = -1;
    if (::renameat(dir_fd_, temp_.c_str(), dir_fd_, leaf_.c_str()) != 0) {
      return HttpResponse::FromStatus(
          InvalidArgument("cannot store '" + rel_ + "': " + std::strerror(errno)));
    }
    temp_.clear();
    (void)::fsync(dir_fd_);
    const std::string digest = tracking::DigestOfHex(hash_.FinishHex());
    const tracking::RunFile record{rel_, size_, digest, "upload", 0};
    if (Status st = c_.series.RecordFiles(run_id_, {record}, NowMillis()); !st.ok()) {
      return HttpResponse::FromStatus(st.WithPrefix("recording '" + rel_ + "'"));
    }
    return JsonText(201, {{"path", rel_}, {"size", size_}, {"digest", digest}});
  }

 private:
  Context& c_;
  HttpRequest request_;
  std::string run_id_;
  Sha256 hash_;
  ScopedFd dir_;
  int dir_fd_;
  std::string leaf_;
  std::string rel_;
  std::string temp_;  // Removed on destruction unless renamed.
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

// Opens a sink for PUT /files/{path}: on the event loop (a database lookup, a few mkdirat).
// Files are stored only under the run folders runs write (kRunFileFolders), never beside the
// daemon's own files of the run (job scripts, the hostfile, user_logs/, code/).
StatusOr<std::unique_ptr<BodySink>> OpenRunFile(Context& c, HttpRequest& req) {
  TY_ASSIGN_OR_RETURN(store::RunRecord run, RunOf(c, req));
  const std::string rel = req.Param("path");
  TY_ASSIGN_OR_RETURN(std::vector<std::string> parts, SplitRelativePath(rel));
  std::string clean_rel;
  for (const std::string& part : parts) clean_rel += (clean_rel.empty() ? "" : "/") + part;
  if (!IsRunFilePath(clean_rel)) {
    return InvalidArgument("file path '" + rel +
                           "' is outside outputs/, logs/ and images/, the folders run files are "
                           "stored in (e.g. outputs/" +
                           parts.back() + ")");
  }
  TY_ASSIGN_OR_RETURN(RootedDir run_dir, RootedDir::Create(c.layout.RunDir(run.id)));
  std::string parent;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i)
    parent += (parent.empty() ? "" : "/") + parts[i];
  // Created and entered by descriptor: a folder the run swapped for a link is refused.
  auto dir = run_dir.MakeDirs(parent);
  if (!dir.ok()) return dir.status().WithPrefix("file path '" + rel + "'");
  struct stat st {};
  if (::fstatat(dir->get(), parts.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
      S_ISDIR(st.st_mode)) {
    return InvalidArgument("file path '" + rel + "' is a folder");
  }
  HttpRequest head = req;  // without a body: who asked, for the check in Finish
  auto sink = std::make_unique<RunFileSink>(c, std::move(head), run.id, std::move(dir).value(),
                                            parts.back(), clean_rel);
  TY_RETURN_IF_ERROR(sink->Open());
  return std::unique_ptr<BodySink>(std::move(sink));
}

}  // namespace

void AddTrackingRoutes(HttpServer& server, store::Store& store, tracking::SeriesStore& tracking,
                       const WorkspaceLayout& layout, const TrackingRouteOptions& options) {
  // Shared by every route's closure: it lives as long as the server's routes do.
  auto ctx = std::shared_ptr<Context>(new Context{store, tracking, layout, options});
  const std::string base = "/api/v1/jobs/{name}/";
  auto bind = [ctx](HttpResponse (*fn)(Context&, HttpRequest&)) {
    return [ctx, fn](HttpRequest& req) { return fn(*ctx, req); };
  };

  // Reads run on their own pool (TrackingRouteOptions::read_pool), never queued behind the
  // writes' commits.
  const BufferedRouteOptions reads{.pool = options.read_pool};
  const std::uint64_t max_metrics = options.max_metrics_body_bytes;
  server.BufferedRoute("POST", base + "metrics", std::numeric_limits<std::uint64_t>::max(),
                       bind(PostMetrics),
                       {.precheck = [max_metrics](HttpRequest& req) -> Status {
                          // Before the body is read, with the codec's own message.
                          if (auto length = req.Header("content-length")) {
                            return tracking::CheckMetricsBodySize(
                                std::strtoull(length->c_str(), nullptr, 10), max_metrics);
                          }
                          return Status::Ok();
                        },
                        .limit_check = [max_metrics](std::size_t so_far) {  // chunked bodies
                          return tracking::CheckMetricsBodySize(so_far, max_metrics);
                        }});
  server.BufferedRoute("GET", base + "metrics", kMaxGetBody, bind(ListMetrics), reads);
  server.BufferedRoute("GET", base + "metrics/{metric...}", kMaxGetBody, bind(GetMetric), reads);

  const std::uint64_t max_json = options.max_json_body_bytes;
  server.BufferedRoute("POST", base + "entries", max_json, bind(PostEntries));
  server.BufferedRoute("GET", base + "entries", kMaxGetBody, bind(ListEntries), reads);
  server.BufferedRoute("GET", base + "tags", kMaxGetBody, bind(GetTags), reads);
  server.BufferedRoute("PATCH", base + "tags", max_json, bind(PatchTags));
  server.BufferedRoute("GET", base + "properties", kMaxGetBody, bind(GetProperties), reads);
  server.BufferedRoute("POST", base + "properties", max_json, bind(PostProperties));
  server.BufferedRoute("POST", base + "status", max_json, bind(PostStatus));

  server.UploadRoute("PUT", base + "files/{path...}", options.max_file_bytes,
                     [ctx](HttpRequest& req) { return OpenRunFile(*ctx, req); });
}

}  // namespace trainyard::api
