#include "trainyard/cli/cli.h"

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <thread>

#include "trainyard/cas/snapshot.h"
#include "trainyard/cli/format.h"
#include "trainyard/cli/metric_format.h"
#include "trainyard/cli/snapshot_commands.h"
#include "trainyard/client/snapshot_upload.h"
#include "trainyard/client/workspace_client.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/compute.h"
#include "trainyard/spec/definition.h"
#include "trainyard/spec/run_request_check.h"
#include "trainyard/spec/spec.h"

namespace trainyard::cli {

// The daemon's entry point lives with the server code; the CLI only dispatches to it.
int ServerMain(const ServerArgs& args);

namespace {

using json = nlohmann::json;

// Set by `job create --stream` / `job stream` so Ctrl-C can say which run goes on.
char g_streaming_run[300];

void OnInterrupt(int) {
  const char* a = "\nStopped streaming. The run goes on; resume with: trainyard job stream ";
  ssize_t ignored = ::write(2, a, std::strlen(a));
  ignored = ::write(2, g_streaming_run, std::strlen(g_streaming_run));
  ignored = ::write(2, "\n", 1);
  (void)ignored;
  ::_exit(130);
}

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.message().c_str());
  return s.code() == StatusCode::kInvalidArgument ? 2 : 1;
}

fs::path SelfExe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("trainyard") : p;
}

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

// Per-invocation state: the workspace and a lazily connected client.
class Session {
 public:
  Status Init() {
    TY_ASSIGN_OR_RETURN(target_, client::FindWorkspace(fs::current_path()));
    return Status::Ok();
  }
  const WorkspaceLayout& layout() const { return target_.layout; }

  // Drops the connection so the next Client() finds (or starts) the daemon again: after a
  // daemon restart its port and token are new.
  void Reconnect() { client_.reset(); }

  const client::WorkspaceTarget& target() const { return target_; }

  StatusOr<HttpClient*> Client() {
    if (!client_) {
      if (target_.remote()) {
        client_ = std::make_unique<HttpClient>(target_.url, target_.token, target_.tls);
      } else {
        TY_ASSIGN_OR_RETURN(client_, client::ConnectOrStart(target_.layout, SelfExe()));
      }
    }
    return client_.get();
  }

  // Snapshots a folder for the daemon: into the workspace's content store when it is local;
  // for a remote daemon, hashed here (with a local stat cache) and only the objects the daemon
  // lacks uploaded. `job_limits` override the workspace's limits where set.
  StatusOr<cas::SnapshotResult> Snapshot(const fs::path& dir,
                                         const std::optional<std::uint64_t>& max_files = {},
                                         const std::optional<std::uint64_t>& max_bytes = {}) {
    cas::SnapshotLimits limits;
    if (target_.remote()) {
      TY_ASSIGN_OR_RETURN(HttpClient * http, Client());
      TY_ASSIGN_OR_RETURN(json ws, http->GetJson("/api/v1/workspace"));
      if (ws.contains("snapshot_limits") && ws["snapshot_limits"].is_object()) {
        limits.max_files = ws["snapshot_limits"].value("max_files", limits.max_files);
        limits.max_bytes = ws["snapshot_limits"].value("max_bytes", limits.max_bytes);
      }
    } else {
      TY_ASSIGN_OR_RETURN(WorkspaceConfig cfg, LoadWorkspaceConfig(target_.layout));
      limits.max_bytes = cfg.snapshot_max_bytes;
      limits.max_files = cfg.snapshot_max_files;
    }
    if (max_files) limits.max_files = *max_files;
    if (max_bytes) limits.max_bytes = *max_bytes;

    if (target_.remote()) {
      TY_ASSIGN_OR_RETURN(cas::SnapshotResult scan,
                          cas::ScanTree(dir, limits, client::ClientCacheDir() / "statcache"));
      TY_ASSIGN_OR_RETURN(HttpClient * http, Client());
      TY_ASSIGN_OR_RETURN(client::UploadStats up, client::UploadSnapshot(*http, scan));
      std::cerr << "Uploaded " << up.objects_uploaded << " of " << up.objects
                << (up.objects == 1 ? " object" : " objects") << " ("
                << FormatBytes(up.bytes_uploaded) << ") to " << target_.url << "\n";
      return scan;
    }
    TY_RETURN_IF_ERROR(target_.layout.Create());
    cas::ObjectStore objects(target_.layout.ObjectsDir());
    // The stat cache lets an unchanged tree re-snapshot without reading its files.
    cas::Snapshotter snapshotter(objects, target_.layout.SnapshotsDir(),
                                 target_.layout.ObjectsDir() / "statcache");
    return snapshotter.Snapshot(dir, limits);
  }

  // Converts a parsed environment to the definition the daemon takes.
  StatusOr<spec::EnvironmentDefinition> Definition(const spec::EnvironmentSpec& env) {
    std::string context;
    if (env.build) {
      TY_ASSIGN_OR_RETURN(cas::SnapshotResult snap, Snapshot(env.build->path));
      context = snap.id;
    }
    return spec::DefinitionFromSpec(env, context);
  }

 private:
  client::WorkspaceTarget target_;
  std::unique_ptr<HttpClient> client_;
};

std::string JobPath(const std::string& name, const std::string& rest = "") {
  return "/api/v1/jobs/" + HttpClient::UrlEncode(name) + rest;
}

// Streams a run's image build log and run log until it ends. Returns the final run JSON.
StatusOr<json> StreamRun(Session& session, const std::string& name) {
  std::snprintf(g_streaming_run, sizeof g_streaming_run, "%s", name.c_str());
  struct sigaction sa {};
  sa.sa_handler = OnInterrupt;
  ::sigaction(SIGINT, &sa, nullptr);

  std::uint64_t build_offset = 0, log_offset = 0;
  std::string status;
  bool build_header = false, log_header = false;
  for (;;) {
    std::string path = JobPath(name, "/stream?build_offset=" + std::to_string(build_offset) +
                                         "&log_offset=" + std::to_string(log_offset) +
                                         "&status=" + status + "&wait_ms=15000");
    // The daemon may restart while a run goes on (an upgrade, a crash): reconnect and resume
    // from the same offsets for a while before giving up.
    StatusOr<HttpResult> res = Unavailable("not connected");
    for (int attempt = 0; attempt < 60; ++attempt) {
      auto http = session.Client();
      res = http.ok() ? (*http)->Request("GET", path, "", "application/json", 30000)
                      : StatusOr<HttpResult>(http.status());
      if (res.ok() || res.status().code() != StatusCode::kUnavailable) break;
      if (attempt == 0) std::cerr << "(lost the daemon; reconnecting)\n";
      session.Reconnect();
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    if (!res.ok()) return res.status();
    if (res->status != 200) {
      auto j = json::parse(res->body, nullptr, false);
      std::string msg =
          j.is_object() && j.contains("error") ? Str(j["error"], "message") : res->body;
      return Status(StatusCodeFromHttp(res->status), msg);
    }
    auto j = json::parse(res->body, nullptr, false);
    if (j.is_discarded()) return Internal("the daemon sent a malformed stream answer");
    std::string build = Str(j, "build"), log = Str(j, "log");
    if (!build.empty()) {
      if (!build_header) {
        std::cout << "--- image build (logs/image_build.log) ---\n";
        build_header = true;
      }
      std::cout << build;
    }
    std::string new_status = Str(j, "status");
    if (new_status != status) {
      if (new_status == "Running" && !log_header) {
        std::cout << "--- run log (user_logs/std_log.txt) ---\n";
        log_header = true;
      }
      status = new_status;
    }
    if (!log.empty()) {
      if (!log_header) {
        std::cout << "--- run log (user_logs/std_log.txt) ---\n";
        log_header = true;
      }
      std::cout << log;
    }
    std::cout.flush();
    build_offset = j.value("build_offset", build_offset);
    log_offset = j.value("log_offset", log_offset);
    if (j.value("done", false)) break;
  }
  ::signal(SIGINT, SIG_DFL);
  auto http = session.Client();
  if (!http.ok()) return http.status();
  return (*http)->GetJson(JobPath(name));
}

int FinishStream(HttpClient& http, const StatusOr<json>& run) {
  if (!run.ok()) return Fail(run.status());
  auto files = http.GetJson(JobPath(Str(*run, "name"), "/files"));
  std::cout << RenderSummary(*run, files.ok() ? *files : json::array());
  if (auto metrics = http.GetJson(JobPath(Str(*run, "name"), "/metrics")); metrics.ok()) {
    if (std::string table = RenderMetricTable(*metrics); !table.empty()) {
      std::cout << "\nMetrics\n" << table;
    }
  }
  std::string st = Str(*run, "status");
  if (st == "Completed") return 0;
  std::fprintf(stderr, "error: run %s %s%s%s\n", Str(*run, "name").c_str(),
               st == "Canceled" ? "was canceled" : "failed",
               Str(*run, "failure_reason").empty() ? "" : ": ",
               Str(*run, "failure_reason").c_str());
  return 1;
}

// `job create` options that override the job file.
struct SubmitOptions {
  std::string name;
  bool copy = false;
  std::optional<std::uint64_t> max_files;
  std::string max_size;  // As written: "500m", "2g", bytes.
  std::string priority;  // As written: low, medium, high or an integer; empty: the file's.
  std::string compute;   // Empty: the file's.
};

int JobCreate(Session& s, const std::string& file, bool stream, const SubmitOptions& opts,
              const std::string& output) {
  auto job = spec::ParseJobFile(file);
  if (!job.ok()) return Fail(job.status());
  if (!opts.name.empty()) job->name = opts.name;
  if (opts.copy) job->code_copy = true;
  if (!opts.compute.empty()) {
    // As in the file: an `azureml:` prefix names the same target.
    job->compute = StartsWith(opts.compute, "azureml:") ? opts.compute.substr(8) : opts.compute;
  }
  if (opts.max_files) job->snapshot_max_files = opts.max_files;
  if (!opts.max_size.empty()) {
    StatusOr<std::int64_t> bytes = spec::ParseByteSize(opts.max_size);
    if (!bytes.ok() || *bytes <= 0) {
      return Fail(
          InvalidArgument("--snapshot-max-size must be a size greater than zero like "
                          "500m, 2g or a number of bytes, got '" +
                          opts.max_size + "'"));
    }
    job->snapshot_max_bytes = static_cast<std::uint64_t>(*bytes);
  }
  if (!opts.priority.empty()) {
    StatusOr<int> priority = spec::ParsePriority(opts.priority);
    if (!priority.ok()) return Fail(priority.status().WithPrefix("--priority"));
    job->priority = *priority;
  }

  // What the request alone decides fails here, before any file is read or sent: the daemon
  // checks the same again at submit.
  if (Status st = spec::CheckRunRequest(spec::RequestFromJob(*job, "", std::nullopt)); !st.ok()) {
    return Fail(st.WithPrefix(file));
  }

  std::string code_snapshot;
  if (!job->code.empty()) {
    auto snap = s.Snapshot(job->code, job->snapshot_max_files, job->snapshot_max_bytes);
    if (!snap.ok()) return Fail(snap.status());
    code_snapshot = snap->id;
    if (output != "json") {
      std::cerr << "Snapshot of " << job->code << ": " << snap->file_count << " files, "
                << FormatBytes(snap->total_bytes) << " (" << snap->id.substr(0, 12) << ")\n";
    }
  }
  std::optional<spec::EnvironmentDefinition> inline_env;
  if (job->environment.kind == spec::EnvironmentRef::Kind::kInline) {
    auto def = s.Definition(job->environment.inline_spec);
    if (!def.ok()) return Fail(def.status());
    inline_env = std::move(def).value();
  }
  spec::RunRequest req = spec::RequestFromJob(*job, code_snapshot, std::move(inline_env));
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto run = (*http)->PostJson("/api/v1/jobs", req.ToJson(spec::SecretMode::kPlain));
  if (!run.ok()) return Fail(run.status());
  const std::string run_name = Str(*run, "name");
  if (output == "json" && !stream) {
    PrintJson(*run);
    return 0;
  }
  std::cout << "Run:     " << run_name << "\n"
            << "Status:  " << Str(*run, "status") << "\n"
            << "URL:     " << Str(*run, "url") << "\n";
  if (!stream) {
    std::cout << "Follow it with: trainyard job stream " << run_name << "\n";
    return 0;
  }
  std::cout << "\n";
  std::cout.flush();
  auto final_run = StreamRun(s, run_name);
  auto now = s.Client();
  if (!now.ok()) return Fail(now.status());
  return FinishStream(**now, final_run);
}

int JobList(Session& s, const std::string& experiment, int limit, const std::string& output) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  std::string q = "/api/v1/jobs?limit=" + std::to_string(limit);
  if (!experiment.empty()) q += "&experiment=" + HttpClient::UrlEncode(experiment);
  auto runs = (*http)->GetJson(q);
  if (!runs.ok()) return Fail(runs.status());
  if (output == "json") {
    PrintJson(*runs);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : *runs) {
    rows.push_back({Str(r, "name"), Str(r, "experiment"), Str(r, "status"),
                    Str(r, "created_at").substr(0, 19), RunDuration(r), Str(r, "failure_reason")});
  }
  std::cout << RenderTable({"NAME", "EXPERIMENT", "STATUS", "CREATED", "DURATION", "REASON"}, rows);
  return 0;
}

int JobShow(Session& s, const std::string& name, const std::string& output) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto run = (*http)->GetJson(JobPath(name));
  if (!run.ok()) return Fail(run.status());
  auto metrics = (*http)->GetJson(JobPath(name, "/metrics"));
  if (output == "json") {
    if (metrics.ok() && metrics->contains("metrics")) (*run)["metrics"] = (*metrics)["metrics"];
    PrintJson(*run);
  } else {
    std::cout << RenderRun(*run);
    if (metrics.ok()) {
      if (std::string table = RenderMetricTable(*metrics); !table.empty()) {
        std::cout << "\nMetrics\n" << table;
      }
    }
  }
  return 0;
}

// `job metrics NAME [--name M] [--output table|json|csv] [--plot] [--max-points N]`.
int JobMetrics(Session& s, const std::string& name, const std::string& metric,
               const std::string& output, bool plot, int max_points) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  if (metric.empty()) {
    if (plot) return Fail(InvalidArgument("--plot needs --name METRIC"));
    if (output == "csv") {
      return Fail(InvalidArgument("--output csv needs --name METRIC (one series per file)"));
    }
    auto list = (*http)->GetJson(JobPath(name, "/metrics"));
    if (!list.ok()) return Fail(list.status());
    if (output == "json") {
      PrintJson(*list);
    } else {
      std::string table = RenderMetricTable(*list);
      std::cout << (table.empty() ? "Run " + name + " has no metrics.\n" : table);
    }
    return 0;
  }
  std::string path = JobPath(name, "/metrics/" + HttpClient::UrlEncode(metric));
  // A chart needs a few hundred points at most; the daemon keeps each bucket's extremes.
  const int points = plot && max_points <= 0 ? 512 : max_points;
  if (points > 0) path += "?max_points=" + std::to_string(points);
  if (output == "csv" && !plot) {
    auto res = (*http)->Request("GET", path + (points > 0 ? "&" : "?") + "format=csv");
    if (!res.ok()) return Fail(res.status());
    if (Status st = StatusFromHttpResult(*res); !st.ok()) return Fail(st);
    std::cout << res->body;
    return 0;
  }
  auto series = (*http)->GetJson(path);
  if (!series.ok()) return Fail(series.status());
  if (plot) {
    std::cout << RenderPlot(*series);
  } else if (output == "json") {
    PrintJson(*series);
  } else {
    const json& steps = (*series)["steps"];
    const json& values = (*series)["values"];
    std::vector<std::vector<std::string>> rows;
    for (size_t i = 0; i < values.size(); ++i) {
      rows.push_back(
          {i < steps.size() ? FormatMetricValue(steps[i]) : "", FormatMetricValue(values[i])});
    }
    std::cout << RenderTable({"STEP", metric}, rows);
  }
  return 0;
}

int JobStream(Session& s, const std::string& name) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto final_run = StreamRun(s, name);
  auto now = s.Client();
  if (!now.ok()) return Fail(now.status());
  return FinishStream(**now, final_run);
}

int JobCancel(Session& s, const std::string& name, const std::string& output) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto run = (*http)->PostJson(JobPath(name, "/cancel"), json::object());
  if (!run.ok()) return Fail(run.status());
  if (output == "json") {
    PrintJson(*run);
  } else {
    std::cout << "Cancel requested for " << name << " (status: " << Str(*run, "status") << ")\n";
  }
  return 0;
}

int JobDownload(Session& s, const std::string& name, const std::string& dest_arg) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto files = (*http)->GetJson(JobPath(name, "/files"));
  if (!files.ok()) return Fail(files.status());
  fs::path dest = fs::absolute(dest_arg.empty() ? fs::path(".") : fs::path(dest_arg)) / name;
  std::uint64_t total = 0;
  int count = 0;
  int verified = 0;
  for (const auto& f : *files) {
    std::string path = Str(f, "path");
    // A name that is not UTF-8 comes whole in path_b64 (path is then only printable).
    if (const std::string b64 = Str(f, "path_b64"); !b64.empty() && !Base64Decode(b64, &path)) {
      return Fail(Internal("the daemon listed a file with a bad path_b64: " + b64));
    }
    // The server names the files, but a path that would leave the folder is never written.
    auto target = ResolveUnder(dest, path);
    if (!target.ok()) return Fail(target.status().WithPrefix("refusing to download " + path));
    if (Status st = MakeDirs(target->parent_path()); !st.ok()) return Fail(st);
    std::string url = JobPath(name, "/files/" + HttpClient::UrlEncodePath(path));
    if (Status st = (*http)->DownloadTo(url, *target); !st.ok()) return Fail(st);
    // A recorded file (an output or upload) must arrive with the bytes the daemon recorded.
    if (const std::string digest = Str(f, "digest"); !digest.empty()) {
      auto hex = Sha256File(*target);
      if (!hex.ok()) return Fail(hex.status());
      if ("sha256:" + *hex != digest) {
        std::error_code ec;
        fs::remove(*target, ec);
        return Fail(Internal("downloaded " + path + " does not match its recorded digest " +
                             digest + " (got sha256:" + *hex + "); the file was removed"));
      }
      ++verified;
    }
    total += f.value("size", 0ULL);
    ++count;
  }
  std::cout << "Downloaded " << count << " files (" << FormatBytes(total) << ") to "
            << dest.string() << "; " << verified << " checked against their digests\n";
  return 0;
}

int EnvCreate(Session& s, const std::string& file, const std::string& output) {
  auto env = spec::ParseEnvironmentFile(file);
  if (!env.ok()) return Fail(env.status());
  if (env->name.empty()) {
    return Fail(InvalidArgument(file + ": an environment to register needs a 'name'"));
  }
  auto def = s.Definition(*env);
  if (!def.ok()) return Fail(def.status());
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto rec = (*http)->PostJson("/api/v1/environments", def->ToJson(spec::SecretMode::kPlain));
  if (!rec.ok()) return Fail(rec.status());
  if (output == "json") {
    PrintJson(*rec);
  } else {
    std::cout << "Environment " << Str(*rec, "name") << ":" << Str(*rec, "version") << " (image "
              << Str(*rec, "image") << ")\n";
  }
  return 0;
}

int EnvList(Session& s, const std::string& output) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto envs = (*http)->GetJson("/api/v1/environments");
  if (!envs.ok()) return Fail(envs.status());
  if (output == "json") {
    PrintJson(*envs);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& e : *envs) {
    rows.push_back(
        {Str(e, "name"), Str(e, "version"), Str(e, "created_at").substr(0, 19), Str(e, "image")});
  }
  std::cout << RenderTable({"NAME", "VERSION", "CREATED", "IMAGE"}, rows);
  return 0;
}

int EnvShow(Session& s, std::string ref, const std::string& output) {
  if (StartsWith(ref, "azureml:")) ref = ref.substr(8);
  std::string name = ref, version = "latest";
  if (auto colon = ref.find(':'); colon != std::string::npos) {
    name = ref.substr(0, colon);
    version = ref.substr(colon + 1);
  } else if (auto at = ref.find('@'); at != std::string::npos) {
    name = ref.substr(0, at);
    version = ref.substr(at + 1);
  }
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto rec = (*http)->GetJson("/api/v1/environments/" + HttpClient::UrlEncode(name) + "/versions/" +
                              HttpClient::UrlEncode(version));
  if (!rec.ok()) return Fail(rec.status());
  if (output == "json") {
    PrintJson(*rec);
  } else {
    std::cout << "Name:       " << Str(*rec, "name") << "\n"
              << "Version:    " << Str(*rec, "version") << "\n"
              << "Created:    " << Str(*rec, "created_at") << "\n"
              << "Image:      " << Str(*rec, "image") << "\n"
              << "Definition:\n"
              << (*rec)["definition"].dump(2) << "\n";
  }
  return 0;
}

// `compute create` flags; each one given overrides the file's value.
struct ComputeFlags {
  std::string file;
  std::optional<std::string> name, type, node_memory;
  std::optional<int> max_nodes, node_gpus;
  std::optional<double> node_cpus;
  std::optional<std::int64_t> idle_seconds;
  // slurm
  std::optional<std::string> partition, account, qos, container_runtime, registry,
      registry_username, shared_dir;
  std::optional<int> gpus_per_node;
  std::vector<std::string> sbatch_args;
  bool registry_password_stdin = false;
  bool update = false;
};

std::string ComputePath(const std::string& name) {
  return "/api/v1/computes/" + HttpClient::UrlEncode(name);
}

// The definition `compute create` sends: the file's (if any) with the flags over it.
StatusOr<spec::ComputeDefinition> ComputeFromFlags(const ComputeFlags& f) {
  spec::ComputeDefinition def;
  if (!f.file.empty()) {
    TY_ASSIGN_OR_RETURN(def, spec::ParseComputeFile(f.file));
  } else if (!f.name) {
    return InvalidArgument("compute create needs --name NAME or -f FILE");
  }
  if (f.name) def.name = *f.name;
  if (f.type) def.type = *f.type == "amlcompute" ? "docker" : *f.type;
  if (f.max_nodes) def.max_nodes = *f.max_nodes;
  if (f.node_cpus) def.node_cpus = *f.node_cpus;
  if (f.node_memory) {
    StatusOr<std::int64_t> bytes = spec::ParseByteSize(*f.node_memory);
    if (!bytes.ok() || (*bytes != 0 && *bytes < (6LL << 20))) {
      return InvalidArgument(
          "--node-memory must be a size like 4g or 512m (at least 6m; 0: the "
          "machine's), got '" +
          *f.node_memory + "'");
    }
    def.node_memory_bytes = *bytes;
  }
  if (f.node_gpus) def.node_gpus = *f.node_gpus;
  if (f.idle_seconds) def.idle_seconds = *f.idle_seconds;
  if (f.partition) def.partition = *f.partition;
  if (f.account) def.account = *f.account;
  if (f.qos) def.qos = *f.qos;
  if (f.container_runtime) def.container_runtime = *f.container_runtime;
  if (f.gpus_per_node) def.gpus_per_node = *f.gpus_per_node;
  if (!f.sbatch_args.empty()) def.sbatch_args = f.sbatch_args;
  if (f.shared_dir) {
    std::error_code ec;
    const fs::path dir = fs::absolute(*f.shared_dir, ec);
    if (ec || !fs::is_directory(dir, ec)) {
      return InvalidArgument("--shared-dir " + *f.shared_dir + " is not a folder");
    }
    def.shared_dir = dir.lexically_normal().string();
  }
  if (f.registry) {
    // The password never goes on a command line: it comes from stdin or the environment.
    spec::RegistryCredentials creds;
    creds.address = *f.registry;
    creds.username = f.registry_username.value_or("");
    if (f.registry_password_stdin) {
      std::getline(std::cin, creds.password);
    } else if (const char* pw = std::getenv("TRAINYARD_REGISTRY_PASSWORD")) {
      creds.password = pw;
    }
    if (creds.username.empty() || creds.password.empty()) {
      return InvalidArgument(
          "--registry needs --registry-username and a password, from "
          "--registry-password-stdin or the TRAINYARD_REGISTRY_PASSWORD variable");
    }
    def.registry = std::move(creds);
  } else if (f.registry_username || f.registry_password_stdin) {
    return InvalidArgument("--registry-username and --registry-password-stdin go with --registry");
  }
  // Checked here too, so a mistake is reported before the daemon is started.
  TY_RETURN_IF_ERROR(def.Validate());
  return def;
}

std::string ComputeSummary(const json& c) {
  const int nodes = c.value("max_nodes", 0);
  std::string out = "  type " + Str(c, "type") + ", up to " + std::to_string(nodes) +
                    (nodes == 1 ? " node" : " nodes");
  if (Str(c, "type") == "slurm") {
    out +=
        " of partition " + Str(c, "partition") + ", containers by " + Str(c, "container_runtime");
    if (c.contains("registry") && c["registry"].is_object()) {
      out += ", images through " + Str(c["registry"], "address");
    }
  } else {
    out += " of " + FormatNodeSize(c);
  }
  if (const std::int64_t idle = c.value("idle_seconds", std::int64_t{0}); idle > 0) {
    out += "; scale-down after " + std::to_string(idle) + " s idle";
  }
  return out + "\n";
}

int ComputeCreate(Session& s, const ComputeFlags& flags, const std::string& output) {
  auto def = ComputeFromFlags(flags);
  if (!def.ok()) return Fail(def.status());
  json body = def->ToJson(spec::SecretMode::kPlain);  // to the daemon over loopback only
  if (flags.update) body["update"] = true;
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto res = (*http)->Request("POST", "/api/v1/computes", body.dump());
  if (!res.ok()) return Fail(res.status());
  if (Status st = StatusFromHttpResult(*res); !st.ok()) return Fail(st);
  auto stored = json::parse(res->body, nullptr, false);
  if (!stored.is_object()) return Fail(Internal("the daemon sent a malformed compute answer"));
  if (output == "json") {
    PrintJson(stored);
    return 0;
  }
  const std::string name = Str(stored, "name");
  const std::string outcome = Str(stored, "outcome");
  if (res->status == 201 || outcome == "created") {
    std::cout << "Created compute target " << name << "\n";
  } else if (outcome == "updated") {
    std::cout << "Updated compute target " << name << "\n";
  } else {
    std::cout << "Compute target " << name << " exists with the same settings\n";
  }
  std::cout << ComputeSummary(stored);
  return 0;
}

int ComputeList(Session& s, const std::string& output) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto computes = (*http)->GetJson("/api/v1/computes");
  if (!computes.ok()) return Fail(computes.status());
  if (output == "json") {
    PrintJson(*computes);
    return 0;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& c : *computes) {
    std::string busy = "?", queued = "?";
    // A compute deleted between the two calls just shows "?".
    if (auto st = (*http)->GetJson(ComputePath(Str(c, "name"))); st.ok()) {
      busy = std::to_string(st->value("nodes", json::object()).value("busy", 0));
      queued = std::to_string(st->value("queued", json::array()).size());
    }
    rows.push_back({Str(c, "name"), Str(c, "type"), std::to_string(c.value("max_nodes", 0)),
                    FormatNodeSize(c), busy, queued});
  }
  std::cout << RenderTable({"NAME", "TYPE", "MAX NODES", "NODE SIZE", "BUSY", "QUEUED"}, rows);
  return 0;
}

int ComputeShow(Session& s, const std::string& name, const std::string& output) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto status = (*http)->GetJson(ComputePath(name));
  if (!status.ok()) return Fail(status.status());
  if (output == "json") {
    PrintJson(*status);
  } else {
    std::cout << RenderComputeStatus(*status);
  }
  return 0;
}

int ComputeDelete(Session& s, const std::string& name) {
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  auto deleted = (*http)->DeleteJson(ComputePath(name));
  if (!deleted.ok()) return Fail(deleted.status());
  std::cout << "Deleted compute target " << name << "\n";
  return 0;
}

// For programs (the Python SDK): how to reach the workspace's daemon, starting it when the
// workspace is local. The answer holds the bearer token, so it is never written to a terminal.
int WorkspaceConnect(Session& s) {
  if (::isatty(1)) {
    return Fail(FailedPrecondition(
        "`trainyard workspace connect` prints the workspace's token for a program to read; it "
        "does not print it to a terminal (pipe its output)"));
  }
  auto http = s.Client();
  if (!http.ok()) return Fail(http.status());
  const client::WorkspaceTarget& target = s.target();
  json out = {{"found_by", target.found_by}, {"remote", target.remote()}};
  if (target.remote()) {
    out["url"] = target.url;
    out["token"] = target.token;
    out["tls_pin"] = target.tls.pinned_public_key;
    out["ca_file"] = target.tls.ca_file;
  } else {
    auto info = client::ReadServerInfo(target.layout);
    if (!info.ok()) return Fail(info.status());
    out["url"] = info->url;
    out["token"] = info->token;
    out["folder"] = target.layout.root.string();
  }
  std::cout << out.dump() << "\n";
  return 0;
}

// Snapshots a folder into the workspace (uploading what a remote daemon lacks) and prints its id.
int SnapshotCreate(Session& s, const std::string& dir, const std::string& output) {
  auto snap = s.Snapshot(dir);
  if (!snap.ok()) return Fail(snap.status());
  if (output == "json") {
    json out = {{"id", snap->id}, {"files", snap->file_count}, {"bytes", snap->total_bytes}};
    std::cout << out.dump() << "\n";
  } else {
    std::cout << snap->id << "\n";
  }
  return 0;
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"trainyard: train models in custom Docker images, on your own machines"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "trainyard 0.1.0");

  std::string start_dir;
  app.add_option("-C", start_dir,
                 "Run as if trainyard was started in this folder (as git -C): the workspace is "
                 "found from it and relative paths are taken from it");

  std::string output = "table";
  auto add_output = [&](CLI::App* cmd) {
    cmd->add_option("-o,--output", output, "Output format: table or json")
        ->check(CLI::IsMember({"table", "json"}));
  };

  // server
  auto* server = app.add_subcommand("server", "Run the workspace daemon (REST API, scheduler)");
  ServerArgs server_args;
  server->add_option("--workspace", server_args.workspace,
                     "Workspace folder (default: the one found from here)");
  server->add_option("--port", server_args.port,
                     "Port to listen on (default: workspace.json, else any)");
  server->add_option("--host", server_args.host,
                     "Address to bind (default 127.0.0.1). Any other than loopback serves HTTPS "
                     "only (and plain HTTP on 127.0.0.1 for this machine)");
  server->add_option("--tls-cert", server_args.tls_certificate,
                     "PEM certificate chain for --host (default: a self-signed one kept in the "
                     "workspace, whose key pin is printed)");
  server->add_option("--tls-key", server_args.tls_key, "PEM private key of --tls-cert");
  server->add_flag("--insecure-http", server_args.insecure_http,
                   "Serve plain HTTP on a --host beyond loopback (tokens cross the network in "
                   "clear)");

  // login / logout: the user's own tokens for remote daemons (client::CredentialsFile).
  std::string login_url;
  client::Credential login_credential;
  auto* login = app.add_subcommand(
      "login", "Store the token of a remote daemon (read from stdin) for its URL");
  login->add_option("url", login_url, "The daemon's URL, http(s)://HOST:PORT")->required();
  login->add_option("--pin", login_credential.tls.pinned_public_key,
                    "The key pin of an https daemon's self-signed certificate (sha256//..., as "
                    "`trainyard server` prints it)");
  login->add_option("--ca-file", login_credential.tls.ca_file,
                    "A PEM file of the authorities that signed an https daemon's certificate");
  auto* logout = app.add_subcommand("logout", "Forget the stored token of a remote daemon");
  logout->add_option("url", login_url, "The daemon's URL")->required();

  // job
  auto* job = app.add_subcommand("job", "Submit and follow training jobs");
  job->require_subcommand(1);
  std::string file, name, experiment, dest;
  bool stream = false;
  int limit = 50;
  SubmitOptions submit;
  auto* job_create = job->add_subcommand("create", "Submit a job from a YAML file");
  job_create->add_option("-f,--file", file, "Job YAML file")->required();
  job_create->add_flag("--stream", stream, "Stream the build and run logs until the run ends");
  job_create->add_option("--name", submit.name, "Run name (default: generated)");
  job_create->add_flag("--copy", submit.copy,
                       "Give the run a writable copy of its code instead of read-only links "
                       "(for scripts that write into their code folder)");
  job_create
      ->add_option("--snapshot-max-files", submit.max_files,
                   "Most files the code snapshot may hold (default: the workspace's)")
      ->check(CLI::PositiveNumber);
  job_create->add_option("--compute", submit.compute,
                         "Compute target to run on (overrides the file's `compute:`), so one job "
                         "file runs on local and on a cluster");
  job_create->add_option("--priority", submit.priority,
                         "Queue priority on the compute: low, medium, high or an integer from "
                         "-1000 to 1000 (higher starts first; overrides queue_settings.priority)");
  job_create->add_option("--snapshot-max-size", submit.max_size,
                         "Largest total size of the code snapshot, e.g. 500m or 2g (default: "
                         "the workspace's)");
  add_output(job_create);
  auto* job_list = job->add_subcommand("list", "List runs, newest first");
  job_list->add_option("--experiment", experiment, "Only runs of this experiment");
  job_list->add_option("--limit", limit, "At most this many runs")->check(CLI::PositiveNumber);
  add_output(job_list);
  auto* job_show = job->add_subcommand("show", "Show one run");
  job_show->add_option("name", name, "Run name")->required();
  add_output(job_show);
  std::string metric_name, metric_output = "table";
  bool metric_plot = false;
  int metric_points = 0;
  auto* job_metrics =
      job->add_subcommand("metrics", "Show a run's metrics, one series, or a chart");
  job_metrics->add_option("name", name, "Run name")->required();
  job_metrics->add_option("--name", metric_name, "One metric: its points instead of the table");
  job_metrics->add_option("-o,--output", metric_output, "Output format: table, json or csv")
      ->check(CLI::IsMember({"table", "json", "csv"}));
  job_metrics->add_flag("--plot", metric_plot, "Draw the metric (--name) as a terminal chart");
  job_metrics
      ->add_option("--max-points", metric_points,
                   "Downsample to at most this many points (keeps each bucket's extremes)")
      ->check(CLI::PositiveNumber);
  auto* job_stream = job->add_subcommand("stream", "Stream a run's logs until it ends");
  job_stream->add_option("name", name, "Run name")->required();
  auto* job_cancel = job->add_subcommand("cancel", "Cancel a run");
  job_cancel->add_option("name", name, "Run name")->required();
  add_output(job_cancel);
  auto* job_download = job->add_subcommand("download", "Download a run's outputs and logs");
  job_download->add_option("name", name, "Run name")->required();
  job_download->add_option("-o,--output", dest, "Folder to download into (default: .)");

  // env
  auto* env = app.add_subcommand("env", "Register and inspect environments");
  env->alias("environment");
  env->require_subcommand(1);
  auto* env_create = env->add_subcommand("create", "Register an environment from a YAML file");
  env_create->add_option("-f,--file", file, "Environment YAML file")->required();
  add_output(env_create);
  auto* env_list = env->add_subcommand("list", "List environments and their versions");
  add_output(env_list);
  auto* env_show = env->add_subcommand("show", "Show an environment (NAME[:VERSION])");
  env_show->add_option("name", name, "NAME, NAME:VERSION or NAME@latest")->required();
  add_output(env_show);

  // compute
  auto* compute = app.add_subcommand("compute", "Create and inspect compute targets");
  compute->require_subcommand(1);
  ComputeFlags cflags;
  auto* compute_create = compute->add_subcommand(
      "create", "Create a compute target (or attach to an existing one with the same settings)");
  compute_create->add_option("-f,--file", cflags.file, "Compute YAML file (docs/compute.md)");
  compute_create->add_option("--name", cflags.name, "Name (required without -f)");
  compute_create
      ->add_option("--type", cflags.type,
                   "docker (default), process (on the host) or slurm (a Slurm cluster)")
      ->check(CLI::IsMember({"docker", "process", "slurm", "amlcompute"}));
  compute_create->add_option("--max-nodes", cflags.max_nodes, "Nodes runs may hold at once");
  compute_create->add_option("--node-cpus", cflags.node_cpus,
                             "CPUs per node, e.g. 2 or 0.5 (0: the machine's)");
  compute_create->add_option("--node-memory", cflags.node_memory,
                             "Memory per node, e.g. 4g or 512m (0: the machine's)");
  compute_create->add_option("--node-gpus", cflags.node_gpus, "GPUs per node");
  compute_create->add_option("--idle-seconds", cflags.idle_seconds,
                             "Idle time before scale-down, in seconds");
  compute_create->add_option("--partition", cflags.partition, "slurm: the partition jobs go to");
  compute_create->add_option("--account", cflags.account, "slurm: sbatch --account");
  compute_create->add_option("--qos", cflags.qos, "slurm: sbatch --qos");
  compute_create->add_option("--gpus-per-node", cflags.gpus_per_node,
                             "slurm: GPUs each node of a run gets");
  compute_create
      ->add_option("--container-runtime", cflags.container_runtime,
                   "slurm: the container CLI on the nodes, docker (default) or podman")
      ->check(CLI::IsMember({"docker", "podman"}));
  compute_create
      ->add_option("--sbatch-arg", cflags.sbatch_args,
                   "slurm: an extra sbatch option, e.g. --sbatch-arg=--exclusive (repeatable)")
      ->allow_extra_args(false);
  compute_create->add_option("--registry", cflags.registry,
                             "slurm: registry HOST[:PORT] the image is pushed to and nodes pull "
                             "from");
  compute_create->add_option("--registry-username", cflags.registry_username,
                             "slurm: the registry's user");
  compute_create->add_flag("--registry-password-stdin", cflags.registry_password_stdin,
                           "slurm: read the registry's password from stdin (else from "
                           "TRAINYARD_REGISTRY_PASSWORD)");
  compute_create->add_option("--shared-dir", cflags.shared_dir,
                             "slurm: a folder every node sees at the same path (default: the "
                             "workspace)");
  compute_create->add_flag("--update", cflags.update,
                           "Change an existing compute target's settings (for runs started from "
                           "now on)");
  add_output(compute_create);
  auto* compute_list = compute->add_subcommand("list", "List compute targets");
  add_output(compute_list);
  auto* compute_show = compute->add_subcommand(
      "show", "Show a compute target: nodes busy and idle, running runs, the queue");
  compute_show->add_option("name", name, "Compute name")->required();
  add_output(compute_show);
  auto* compute_delete =
      compute->add_subcommand("delete", "Delete a compute target (refused while runs use it)");
  compute_delete->add_option("name", name, "Compute name")->required();

  // snapshot: works on the workspace's files directly; no daemon needed.
  auto* snapshot =
      app.add_subcommand("snapshot", "Inspect, download and clean up source snapshots");
  snapshot->require_subcommand(1);
  std::string snap_dir = ".", snap_id;
  cas::GcOptions gc_options;
  auto* snap_preview =
      snapshot->add_subcommand("preview", "What a snapshot of DIR would include and ignore");
  snap_preview->add_option("dir", snap_dir, "Folder to preview (default: .)");
  add_output(snap_preview);
  auto* snap_create = snapshot->add_subcommand(
      "create",
      "Snapshot DIR into the workspace (uploading what a remote daemon lacks); prints "
      "its id");
  snap_create->add_option("dir", snap_dir, "Folder to snapshot (default: .)");
  add_output(snap_create);
  auto* snap_list = snapshot->add_subcommand("list", "List the workspace's snapshots");
  add_output(snap_list);
  auto* snap_show = snapshot->add_subcommand("show", "Show a snapshot's files");
  snap_show->add_option("id", snap_id, "Snapshot id or a unique prefix (6+ hex digits)")
      ->required();
  add_output(snap_show);
  auto* snap_download =
      snapshot->add_subcommand("download", "Write a snapshot's files into a new folder");
  snap_download->add_option("id", snap_id, "Snapshot id or a unique prefix (6+ hex digits)")
      ->required();
  snap_download->add_option("dir", dest, "Folder to create (must not exist or be empty)")
      ->required();
  auto* snap_gc = snapshot->add_subcommand(
      "gc", "Remove snapshots no run or environment uses, and unreferenced objects");
  snap_gc->add_flag("--dry-run", gc_options.dry_run, "Only report what would be removed");
  snap_gc->add_option(
      "--keep-newer-than", gc_options.keep_newer_than_seconds,
      "Never remove anything modified less than this many seconds ago (default 3600)");
  add_output(snap_gc);

  // workspace
  auto* workspace = app.add_subcommand("workspace", "The workspace and its daemon");
  workspace->require_subcommand(1);
  auto* workspace_connect = workspace->add_subcommand(
      "connect",
      "For programs: the daemon's URL and token as JSON, starting it when local "
      "(never printed to a terminal)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!start_dir.empty() && ::chdir(start_dir.c_str()) != 0) {
    return Fail(InvalidArgument("-C " + start_dir + ": " + std::strerror(errno)));
  }

  if (login->parsed()) {
    // Never from an argument (process listings show those): stdin, a pipe or the terminal.
    if (::isatty(0)) std::fprintf(stderr, "Token for %s: ", login_url.c_str());
    std::string token;
    std::getline(std::cin, token);
    login_credential.token = std::string(Trim(token));
    if (!login_credential.tls.ca_file.empty()) {
      login_credential.tls.ca_file = fs::absolute(login_credential.tls.ca_file).string();
    }
    if (Status st = client::SaveCredential(login_url, login_credential); !st.ok()) {
      return Fail(st);
    }
    std::fprintf(stderr, "Stored the token for %s in %s\n", login_url.c_str(),
                 client::CredentialsFile().c_str());
    return 0;
  }
  if (logout->parsed()) {
    if (Status st = client::RemoveCredential(login_url); !st.ok()) return Fail(st);
    return 0;
  }
  if (server->parsed()) {
    if (server_args.workspace.empty()) {
      auto target = client::FindWorkspace(fs::current_path());
      if (!target.ok()) return Fail(target.status());
      if (target->remote()) {
        return Fail(FailedPrecondition("the server needs a local workspace folder, but " +
                                       target->found_by + " names the remote daemon " +
                                       target->url + "; pass --workspace DIR"));
      }
      server_args.workspace = target->layout.root.string();
    }
    return ServerMain(server_args);
  }

  Session session;
  if (Status s = session.Init(); !s.ok()) return Fail(s);
  if (job_create->parsed()) return JobCreate(session, file, stream, submit, output);
  if (job_list->parsed()) return JobList(session, experiment, limit, output);
  if (job_show->parsed()) return JobShow(session, name, output);
  if (job_stream->parsed()) return JobStream(session, name);
  if (job_metrics->parsed()) {
    return JobMetrics(session, name, metric_name, metric_output, metric_plot, metric_points);
  }
  if (job_cancel->parsed()) return JobCancel(session, name, output);
  if (job_download->parsed()) return JobDownload(session, name, dest);
  if (env_create->parsed()) return EnvCreate(session, file, output);
  if (env_list->parsed()) return EnvList(session, output);
  if (env_show->parsed()) return EnvShow(session, name, output);
  if (compute_create->parsed()) return ComputeCreate(session, cflags, output);
  if (compute_list->parsed()) return ComputeList(session, output);
  if (compute_show->parsed()) return ComputeShow(session, name, output);
  if (compute_delete->parsed()) return ComputeDelete(session, name);
  if (workspace_connect->parsed()) return WorkspaceConnect(session);
  if (snap_create->parsed()) return SnapshotCreate(session, snap_dir, output);
  if (session.target().remote() && !snap_preview->parsed()) {
    return Fail(FailedPrecondition(
        "snapshot commands work on a local workspace's files; this one is the remote daemon " +
        session.target().url + " (from " + session.target().found_by + ")"));
  }
  Status snap = Status::Ok();
  if (snap_preview->parsed()) {
    snap = SnapshotPreview(session.layout(), snap_dir, output);
  } else if (snap_list->parsed()) {
    snap = SnapshotList(session.layout(), output);
  } else if (snap_show->parsed()) {
    snap = SnapshotShow(session.layout(), snap_id, output);
  } else if (snap_download->parsed()) {
    snap = SnapshotDownload(session.layout(), snap_id, dest);
  } else if (snap_gc->parsed()) {
    snap = SnapshotGc(session.layout(), gc_options, output);
  } else {
    return 2;
  }
  return snap.ok() ? 0 : Fail(snap);
}

}  // namespace trainyard::cli
