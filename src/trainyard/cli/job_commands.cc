#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>

#include "trainyard/cli/command.h"
#include "trainyard/cli/metric_format.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/run_request_check.h"

// `trainyard job ...`: submit, follow, inspect, cancel and download runs.

namespace trainyard::cli {
namespace {

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
  std::string q = "/api/v1/jobs?limit=" + std::to_string(limit);
  if (!experiment.empty()) q += "&experiment=" + HttpClient::UrlEncode(experiment);
  auto runs = s.GetJson(q);
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
  auto run = s.GetJson(JobPath(name));
  if (!run.ok()) return Fail(run.status());
  auto metrics = s.GetJson(JobPath(name, "/metrics"));
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

}  // namespace

void AddJobCommands(CommandLine& cl) {
  struct Options {
    std::string file, name, experiment, dest;
    bool stream = false;
    int limit = 50;
    SubmitOptions submit;
    std::string metric_name, metric_output = "table";
    bool metric_plot = false;
    int metric_points = 0;
  };
  auto o = std::make_shared<Options>();
  auto* job = cl.app.add_subcommand("job", "Submit and follow training jobs");
  job->require_subcommand(1);

  auto* create = job->add_subcommand("create", "Submit a job from a YAML file");
  create->add_option("-f,--file", o->file, "Job YAML file")->required();
  create->add_flag("--stream", o->stream, "Stream the build and run logs until the run ends");
  create->add_option("--name", o->submit.name, "Run name (default: generated)");
  create->add_flag("--copy", o->submit.copy,
                   "Give the run a writable copy of its code instead of read-only links "
                   "(for scripts that write into their code folder)");
  create
      ->add_option("--snapshot-max-files", o->submit.max_files,
                   "Most files the code snapshot may hold (default: the workspace's)")
      ->check(CLI::PositiveNumber);
  create->add_option("--compute", o->submit.compute,
                     "Compute target to run on (overrides the file's `compute:`), so one job "
                     "file runs on local and on a cluster");
  create->add_option("--priority", o->submit.priority,
                     "Queue priority on the compute: low, medium, high or an integer from "
                     "-1000 to 1000 (higher starts first; overrides queue_settings.priority)");
  create->add_option("--snapshot-max-size", o->submit.max_size,
                     "Largest total size of the code snapshot, e.g. 500m or 2g (default: "
                     "the workspace's)");
  cl.AddOutput(create);
  cl.Then(create,
          [o, &cl](Session& s) { return JobCreate(s, o->file, o->stream, o->submit, cl.output); });

  auto* list = job->add_subcommand("list", "List runs, newest first");
  list->add_option("--experiment", o->experiment, "Only runs of this experiment");
  list->add_option("--limit", o->limit, "At most this many runs")->check(CLI::PositiveNumber);
  cl.AddOutput(list);
  cl.Then(list, [o, &cl](Session& s) { return JobList(s, o->experiment, o->limit, cl.output); });

  auto* show = job->add_subcommand("show", "Show one run");
  show->add_option("name", o->name, "Run name")->required();
  cl.AddOutput(show);
  cl.Then(show, [o, &cl](Session& s) { return JobShow(s, o->name, cl.output); });

  auto* metrics = job->add_subcommand("metrics", "Show a run's metrics, one series, or a chart");
  metrics->add_option("name", o->name, "Run name")->required();
  metrics->add_option("--name", o->metric_name, "One metric: its points instead of the table");
  metrics->add_option("-o,--output", o->metric_output, "Output format: table, json or csv")
      ->check(CLI::IsMember({"table", "json", "csv"}));
  metrics->add_flag("--plot", o->metric_plot, "Draw the metric (--name) as a terminal chart");
  metrics
      ->add_option("--max-points", o->metric_points,
                   "Downsample to at most this many points (keeps each bucket's extremes)")
      ->check(CLI::PositiveNumber);
  cl.Then(metrics, [o](Session& s) {
    return JobMetrics(s, o->name, o->metric_name, o->metric_output, o->metric_plot,
                      o->metric_points);
  });

  auto* stream = job->add_subcommand("stream", "Stream a run's logs until it ends");
  stream->add_option("name", o->name, "Run name")->required();
  cl.Then(stream, [o](Session& s) { return JobStream(s, o->name); });

  auto* cancel = job->add_subcommand("cancel", "Cancel a run");
  cancel->add_option("name", o->name, "Run name")->required();
  cl.AddOutput(cancel);
  cl.Then(cancel, [o, &cl](Session& s) { return JobCancel(s, o->name, cl.output); });

  auto* download = job->add_subcommand("download", "Download a run's outputs and logs");
  download->add_option("name", o->name, "Run name")->required();
  download->add_option("-o,--output", o->dest, "Folder to download into (default: .)");
  cl.Then(download, [o](Session& s) { return JobDownload(s, o->name, o->dest); });
}

}  // namespace trainyard::cli
