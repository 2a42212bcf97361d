// Reading Slurm's machine-readable output, and the argv of sbatch.
//
// Two JSON shapes exist. Slurm 22.05 (data_parser v0.0.38) prints plain numbers (null for
// "not set"), job_state as a string and exit_code as the raw wait status of the batch script
// (768 = exit 3, 15 = killed by SIGTERM). Slurm 23.02 and later print numbers as
// {"set","infinite","number"} objects, states as arrays of a base state and flags, and exit_code
// as {"status":[...],"return_code":{...},"signal":{"id":{...},"name":...}}. sacct's jobs differ
// again (state {"current","reason"}, times under "time", comment {"job",...}); both are read.

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainyard/common/util.h"
#include "trainyard/slurm/slurm.h"

namespace trainyard::slurm {
namespace {

using nlohmann::json;

// A number in either shape; nullopt for null, unset or infinite values, and for a value no
// int64 holds (a float out of range or NaN). Slurm nests {"number": ...} once; `depth` bounds
// what a malformed answer could nest.
std::optional<std::int64_t> Number(const json& v, int depth = 0) {
  if (v.is_number_integer()) return v.get<std::int64_t>();
  if (v.is_number_unsigned()) {
    auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<std::int64_t>(u);
  }
  if (v.is_number_float()) {
    // [-2^63, 2^63): the doubles that convert to int64 without undefined behaviour.
    constexpr double kLimit = 9223372036854775808.0;
    const double d = v.get<double>();
    if (!(d >= -kLimit && d < kLimit)) return std::nullopt;
    return static_cast<std::int64_t>(d);
  }
  if (v.is_object() && depth < 4) {
    if (v.contains("set") && v["set"].is_boolean() && !v["set"].get<bool>()) return std::nullopt;
    if (v.contains("infinite") && v["infinite"].is_boolean() && v["infinite"].get<bool>()) {
      return std::nullopt;
    }
    if (v.contains("number")) return Number(v["number"], depth + 1);
  }
  return std::nullopt;
}

std::optional<std::int64_t> NumberField(const json& obj, const char* key) {
  if (!obj.is_object() || !obj.contains(key)) return std::nullopt;
  return Number(obj[key]);
}

std::string StringField(const json& obj, const char* key) {
  if (!obj.is_object() || !obj.contains(key)) return "";
  const json& v = obj[key];
  if (v.is_string()) return v.get<std::string>();
  return "";
}

// A state string, or an array of a base state and flags, as a list of upper-case words.
std::vector<std::string> StateWords(const json& v) {
  std::vector<std::string> out;
  auto add = [&out](std::string s) {
    // sacct's text form says "CANCELLED by 0": the base state is the first word.
    size_t sp = s.find(' ');
    if (sp != std::string::npos) s.resize(sp);
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (!s.empty()) out.push_back(s);
  };
  if (v.is_string()) {
    add(v.get<std::string>());
  } else if (v.is_array()) {
    for (const json& e : v) {
      if (e.is_string()) add(e.get<std::string>());
    }
  }
  return out;
}

bool Contains(const std::vector<std::string>& words, std::string_view w) {
  return std::find(words.begin(), words.end(), w) != words.end();
}

bool IsBaseJobState(std::string_view s) {
  static constexpr std::string_view kBase[] = {
      "PENDING", "RUNNING",   "SUSPENDED", "COMPLETED", "CANCELLED", "FAILED",
      "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",  "OUT_OF_MEMORY"};
  return std::find(std::begin(kBase), std::end(kBase), s) != std::end(kBase);
}

// The job's state as JobInfo documents it: COMPLETING and CONFIGURING (flags in the array form)
// win over the base state, as in squeue's text output.
std::string JobState(const json& v) {
  std::vector<std::string> words = StateWords(v);
  if (words.empty()) return "";
  if (words.size() == 1) return words[0];
  if (Contains(words, "COMPLETING")) return "COMPLETING";
  if (Contains(words, "CONFIGURING")) return "CONFIGURING";
  for (const std::string& w : words) {
    if (IsBaseJobState(w)) return w;
  }
  return words[0];
}

// Fills exit_code/signal from either exit_code shape.
void ReadExit(const json& v, JobInfo& job) {
  if (v.is_number()) {
    // 22.05: the raw wait status of the batch script.
    std::optional<std::int64_t> raw = Number(v);
    if (!raw) return;
    int status = static_cast<int>(*raw);
    int sig = status & 0x7f;
    if (sig != 0 && sig != 0x7f) {
      job.signal = sig;
    } else {
      job.exit_code = (status >> 8) & 0xff;
    }
    return;
  }
  if (!v.is_object()) return;
  // 23.x squeue and sacct: {"status": ["EXITED"] or "SIGNALED" ..., "return_code", "signal"}.
  std::vector<std::string> status = StateWords(v.value("status", json()));
  if (Contains(status, "PENDING")) return;
  if (Contains(status, "SIGNALED")) {
    const json sig = v.value("signal", json::object());
    std::optional<std::int64_t> id = NumberField(sig, "id");
    if (!id) id = NumberField(sig, "signal_id");  // 22.05 sacct
    if (id) {
      job.signal = static_cast<int>(*id);
      return;
    }
  }
  if (std::optional<std::int64_t> rc = NumberField(v, "return_code")) {
    job.exit_code = static_cast<int>(*rc);
  }
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The node's state in sinfo's words: "idle", "mixed", "allocated", "down", "drained", ...
std::string NodeState(const json& node) {
  std::vector<std::string> words = StateWords(node.value("state", json()));
  std::vector<std::string> flags = StateWords(node.value("state_flags", json()));
  flags.insert(flags.end(), words.begin() + (words.empty() ? 0 : 1), words.end());
  if (words.empty()) return "";
  std::string base = Lower(words[0]);
  if (Contains(flags, "DRAIN")) {
    return base == "idle" || base == "down" ? "drained" : "draining";
  }
  return base;
}

// Sums the GPU counts of a gres string: "gpu:4", "gpu:a100:4(S:0-1)", "gpu:2,gpu:t4:1".
int GpuCount(std::string_view gres) {
  std::vector<std::string> entries;
  std::string cur;
  int depth = 0;
  for (char c : gres) {
    if (c == '(') ++depth;
    if (c == ')' && depth > 0) --depth;
    if (c == ',' && depth == 0) {
      entries.push_back(cur);
      cur.clear();
      continue;
    }
    if (depth == 0 && c != ')') cur += c;
  }
  entries.push_back(cur);
  int total = 0;
  for (const std::string& e : entries) {
    std::vector<std::string> parts = Split(Trim(e), ':');
    if (parts.empty() || parts[0] != "gpu") continue;
    if (parts.size() == 1) {
      total += 1;
      continue;
    }
    const std::string& last = parts.back();
    bool digits = !last.empty() && std::all_of(last.begin(), last.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c)) != 0;
    });
    if (!digits) {
      total += 1;  // "gpu:a100": one of that type
    } else if (last.size() < 7) {
      total += std::stoi(last);
    }
  }
  return total;
}

StatusOr<json> ParseDocument(const std::string& text, const char* what) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgument(std::string(what) + " output is not a JSON object");
  }
  return doc;
}

JobInfo ReadJob(const json& j) {
  JobInfo job;
  job.id = NumberField(j, "job_id").value_or(0);
  job.name = StringField(j, "name");
  if (j.contains("comment") && j["comment"].is_object()) {
    job.comment = StringField(j["comment"], "job");  // sacct
  } else {
    job.comment = StringField(j, "comment");
  }
  job.partition = StringField(j, "partition");
  if (j.contains("job_state")) {
    job.state = JobState(j["job_state"]);
    job.reason = StringField(j, "state_reason");
  } else if (j.contains("state") && j["state"].is_object()) {  // sacct
    job.state = JobState(j["state"].value("current", json()));
    job.reason = StringField(j["state"], "reason");
  }
  if (job.reason == "None") job.reason.clear();
  job.nodes = StringField(j, "nodes");
  const json* times = &j;
  if (j.contains("time") && j["time"].is_object()) times = &j["time"];  // sacct
  job.time_limit_minutes =
      NumberField(j, "time_limit").value_or(NumberField(*times, "limit").value_or(0));
  job.submit_time =
      NumberField(j, "submit_time").value_or(NumberField(*times, "submission").value_or(0));
  job.start_time = NumberField(j, "start_time").value_or(NumberField(*times, "start").value_or(0));
  job.end_time = NumberField(j, "end_time").value_or(NumberField(*times, "end").value_or(0));
  // Before the batch script ends, exit_code is a placeholder (0, or status PENDING).
  if ((IsFinalState(job.state) || job.state == "COMPLETING") && j.contains("exit_code")) {
    ReadExit(j["exit_code"], job);
  }
  return job;
}

}  // namespace

std::vector<std::string> SbatchArgs(const JobRequest& req) {
  // --export=ALL of the environment sbatch itself is given, which is the base variables and
  // Slurm's own (Client::Run): nothing else of the daemon's reaches the job; the run's variables
  // go through the job folder's 0600 env.sh. Not --export=NONE: with it, slurmd loads the user's
  // login environment on the node before it launches the batch script (as --get-user-env would),
  // measured at 0.1 to 1.2 s per job here (bench/slurm.sh), against 1 to 6 ms with ALL.
  std::vector<std::string> args = {"--parsable", "--export=ALL"};
  args.push_back("--job-name=" + req.name);
  args.push_back("--comment=" + req.comment);
  if (!req.partition.empty()) args.push_back("--partition=" + req.partition);
  if (!req.account.empty()) args.push_back("--account=" + req.account);
  if (!req.qos.empty()) args.push_back("--qos=" + req.qos);
  args.push_back("--nodes=" + std::to_string(req.nodes));
  args.push_back("--ntasks-per-node=" + std::to_string(req.tasks_per_node));
  if (req.gpus_per_node > 0) args.push_back("--gpus-per-node=" + std::to_string(req.gpus_per_node));
  if (req.time_limit_seconds > 0) {
    std::int64_t minutes = std::max<std::int64_t>(1, (req.time_limit_seconds + 59) / 60);
    args.push_back("--time=" + std::to_string(minutes));
  }
  if (!req.output.empty()) args.push_back("--output=" + req.output.string());
  if (!req.working_dir.empty()) args.push_back("--chdir=" + req.working_dir.string());
  args.insert(args.end(), req.extra_args.begin(), req.extra_args.end());
  args.push_back(req.script.string());
  return args;
}

bool IsFinalState(const std::string& state) {
  static constexpr std::string_view kFinal[] = {
      "COMPLETED", "FAILED",    "CANCELLED", "TIMEOUT", "NODE_FAIL",   "OUT_OF_MEMORY",
      "PREEMPTED", "BOOT_FAIL", "DEADLINE",  "REVOKED", "SPECIAL_EXIT"};
  return std::find(std::begin(kFinal), std::end(kFinal), state) != std::end(kFinal);
}

StatusOr<std::vector<JobInfo>> ParseJobs(const std::string& text) {
  TY_ASSIGN_OR_RETURN(json doc, ParseDocument(text, "squeue/sacct"));
  if (!doc.contains("jobs") || !doc["jobs"].is_array()) {
    return InvalidArgument("squeue/sacct output has no \"jobs\" array");
  }
  std::vector<JobInfo> jobs;
  for (const json& j : doc["jobs"]) {
    if (!j.is_object()) return InvalidArgument("squeue/sacct output: a job is not an object");
    jobs.push_back(ReadJob(j));
  }
  return jobs;
}

StatusOr<std::vector<NodeInfo>> ParseNodes(const std::string& text) {
  TY_ASSIGN_OR_RETURN(json doc, ParseDocument(text, "sinfo"));
  if (!doc.contains("nodes") || !doc["nodes"].is_array()) {
    return InvalidArgument("sinfo output has no \"nodes\" array");
  }
  std::vector<NodeInfo> nodes;
  for (const json& n : doc["nodes"]) {
    if (!n.is_object()) return InvalidArgument("sinfo output: a node is not an object");
    NodeInfo node;
    node.name = StringField(n, "name");
    if (node.name.empty()) node.name = StringField(n, "hostname");
    node.state = NodeState(n);
    node.cpus = static_cast<int>(NumberField(n, "cpus").value_or(0));
    node.memory_mb = NumberField(n, "real_memory").value_or(0);
    node.alloc_cpus = static_cast<int>(NumberField(n, "alloc_cpus").value_or(0));
    node.gpus = GpuCount(StringField(n, "gres"));
    if (n.contains("partitions") && n["partitions"].is_array()) {
      for (const json& p : n["partitions"]) {
        if (p.is_string()) node.partitions.push_back(p.get<std::string>());
      }
    }
    nodes.push_back(std::move(node));
  }
  return nodes;
}

}  // namespace trainyard::slurm
