#include "trainyard/cli/format.h"

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "trainyard/common/util.h"

namespace trainyard::cli {
namespace {

std::int64_t Millis(const nlohmann::json& run, const char* key) {
  if (!run.contains(key) || !run[key].is_number_integer()) return 0;
  return run[key].get<std::int64_t>();
}

std::string Str(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_string()) return "";
  return j[key].get<std::string>();
}

// Memory in powers of 1024 as Docker sizes are written: "4 GiB", "1.5 GiB", "512 MiB".
std::string FormatMemory(std::int64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (v == static_cast<double>(static_cast<std::int64_t>(v))) {
    std::snprintf(buf, sizeof buf, "%lld %s", static_cast<long long>(v), kUnits[u]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  }
  return buf;
}

// "2", "0.5", "1.25": a CPU count without trailing zeros.
std::string FormatCpus(double cpus) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", cpus);
  return buf;
}

}  // namespace

void PrintJson(const nlohmann::json& j) {
  std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

std::string RenderTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < width.size(); ++i) {
      std::string c = i < cells.size() ? cells[i] : "";
      out += c;
      if (i + 1 < width.size()) out += std::string(width[i] - c.size() + 2, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header);
  for (const auto& r : rows) out += line(r);
  return out;
}

std::string RunDuration(const nlohmann::json& run) {
  std::int64_t start = Millis(run, "created_ms");
  std::int64_t end = Millis(run, "ended_ms");
  if (start == 0) return "";
  if (end == 0) end = NowMillis();
  return FormatDuration(end - start);
}

std::string RenderSummary(const nlohmann::json& run, const nlohmann::json& files) {
  std::string out = "\nExecution summary\n";
  auto row = [&](const std::string& k, const std::string& v) {
    if (!v.empty()) out += "  " + k + std::string(12 - k.size(), ' ') + v + "\n";
  };
  row("Run:", Str(run, "name"));
  row("Status:", Str(run, "status"));
  std::string phases;
  for (const char* p : {"queued", "preparing", "running"}) {
    std::string key = std::string(p) + "_ms";
    if (run.contains("phase_durations") && run["phase_durations"].contains(key)) {
      if (!phases.empty()) phases += ", ";
      phases +=
          std::string(p) + " " + FormatDuration(run["phase_durations"][key].get<std::int64_t>());
    }
  }
  row("Duration:", RunDuration(run) + (phases.empty() ? "" : " (" + phases + ")"));
  row("Image:", Str(run, "image"));
  if (run.contains("exit_code") && run["exit_code"].is_number()) {
    row("Exit code:", std::to_string(run["exit_code"].get<int>()));
  }
  row("Reason:", Str(run, "failure_reason"));
  std::string outputs;
  int n = 0;
  if (files.is_array()) {
    for (const auto& f : files) {
      std::string path = Str(f, "path");
      if (!StartsWith(path, "outputs/")) continue;
      if (++n > 8) continue;
      if (!outputs.empty()) outputs += ", ";
      outputs += path.substr(8) + " (" + FormatBytes(f.value("size", 0ULL)) + ")";
    }
  }
  if (n > 8) outputs += ", and " + std::to_string(n - 8) + " more";
  row("Outputs:", n == 0 ? "none" : outputs);
  if (n > 0) row("Download:", "trainyard job download " + Str(run, "name"));
  return out;
}

std::string RenderRun(const nlohmann::json& run) {
  std::string out;
  auto row = [&](const std::string& k, const std::string& v) {
    if (!v.empty()) out += k + std::string(k.size() < 16 ? 16 - k.size() : 1, ' ') + v + "\n";
  };
  row("Name:", Str(run, "name"));
  row("Display name:", Str(run, "display_name"));
  row("Experiment:", Str(run, "experiment"));
  row("Status:", Str(run, "status"));
  row("Reason:", Str(run, "failure_reason"));
  row("Waiting:", Str(run, "wait_reason"));
  row("Compute:", Str(run, "compute"));
  if (run.contains("slurm_job") && run["slurm_job"].is_number_integer()) {
    row("Slurm job:", std::to_string(run["slurm_job"].get<std::int64_t>()));
  }
  row("Environment:", Str(run, "environment"));
  row("Image:", Str(run, "image"));
  row("Snapshot:", Str(run, "snapshot_id"));
  row("Created:", Str(run, "created_at"));
  row("Duration:", RunDuration(run));
  if (run.contains("exit_code") && run["exit_code"].is_number()) {
    row("Exit code:", std::to_string(run["exit_code"].get<int>()));
  }
  if (run.contains("tags") && run["tags"].is_object() && !run["tags"].empty()) {
    std::string tags;
    for (const auto& [k, v] : run["tags"].items()) {
      tags += (tags.empty() ? "" : ", ") + k + "=" + (v.is_string() ? v.get<std::string>() : "");
    }
    row("Tags:", tags);
  }
  if (run.contains("transitions") && run["transitions"].is_array()) {
    out += "History:\n";
    for (const auto& t : run["transitions"]) {
      out += "  " + Str(t, "at") + "  " + Str(t, "status") + "\n";
    }
  }
  return out;
}

std::string FormatNodeSize(const nlohmann::json& compute) {
  if (Str(compute, "type") == "slurm") {
    const int gpus = compute.value("gpus_per_node", 0);
    return "partition " + Str(compute, "partition") + "'s nodes" +
           (gpus > 0 ? ", " + std::to_string(gpus) + (gpus == 1 ? " GPU" : " GPUs") : "");
  }
  const double cpus = compute.value("node_cpus", 0.0);
  const std::int64_t memory = compute.value("node_memory_bytes", std::int64_t{0});
  const int gpus = compute.value("node_gpus", 0);
  std::string out = cpus > 0 ? FormatCpus(cpus) + (cpus == 1 ? " CPU" : " CPUs") : "all CPUs";
  out += ", " + (memory > 0 ? FormatMemory(memory) : std::string("all memory"));
  if (gpus > 0) out += ", " + std::to_string(gpus) + (gpus == 1 ? " GPU" : " GPUs");
  return out;
}

std::string RenderComputeStatus(const nlohmann::json& status) {
  std::string out;
  auto row = [&](const std::string& k, const std::string& v) {
    out += k + std::string(k.size() < 14 ? 14 - k.size() : 1, ' ') + v + "\n";
  };
  auto count = [](const nlohmann::json& j, const char* key) {
    return j.contains(key) && j[key].is_number_integer() ? j[key].get<std::int64_t>() : 0;
  };
  row("Name:", Str(status, "name"));
  const std::string type = Str(status, "type");
  row("Type:", type + (type == "process" ? " (runs on the host)"
                       : type == "slurm" ? " (batch jobs on a Slurm cluster)"
                                         : " (containers)"));
  row("Node size:", FormatNodeSize(status));
  const nlohmann::json nodes = status.value("nodes", nlohmann::json::object());
  row("Nodes:", std::to_string(count(nodes, "busy")) + " busy, " +
                    std::to_string(count(nodes, "idle")) + " idle, " +
                    std::to_string(count(nodes, "total")) + " total");
  if (const std::int64_t idle = count(status, "idle_seconds"); idle > 0) {
    row("Scale-down:", "after " + std::to_string(idle) + " s idle");
  }
  if (status.contains("slurm") && status["slurm"].is_object()) {
    const nlohmann::json& slurm = status["slurm"];
    if (!Str(slurm, "error").empty()) row("Slurm:", "cannot be asked: " + Str(slurm, "error"));
    std::string nodes_text;
    for (const auto& n : slurm.value("nodes", nlohmann::json::array())) {
      nodes_text +=
          (nodes_text.empty() ? "" : ", ") + Str(n, "name") + " " + Str(n, "state") + " (" +
          std::to_string(count(n, "alloc_cpus")) + "/" + std::to_string(count(n, "cpus")) +
          " CPUs" +
          (count(n, "gpus") > 0 ? ", " + std::to_string(count(n, "gpus")) + " GPUs" : "") + ")";
    }
    row("Partition:",
        Str(slurm, "partition") + ": " + (nodes_text.empty() ? "no nodes" : nodes_text));
    const nlohmann::json jobs = slurm.value("jobs", nlohmann::json::array());
    if (jobs.empty()) {
      row("Slurm queue:", "empty");
    } else {
      out += "Slurm queue (" + std::to_string(jobs.size()) +
             " jobs in the partition, every user's):\n";
      std::vector<std::vector<std::string>> rows;
      for (const auto& j : jobs) {
        rows.push_back({std::to_string(count(j, "job_id")), Str(j, "name"),
                        Str(j, "run").empty() ? "-" : Str(j, "run"), Str(j, "state"),
                        Str(j, "reason").empty() ? "-" : Str(j, "reason"), Str(j, "nodes")});
      }
      for (const std::string& line :
           Split(RenderTable({"JOB", "NAME", "RUN", "STATE", "REASON", "NODES"}, rows), '\n')) {
        if (!line.empty()) out += "  " + line + "\n";
      }
    }
  }
  std::string running;
  const nlohmann::json run_ids = status.value("running", nlohmann::json::array());
  for (const auto& id : run_ids) {
    if (id.is_string()) running += (running.empty() ? "" : ", ") + id.get<std::string>();
  }
  row("Running (" + std::to_string(run_ids.size()) + "):", running.empty() ? "none" : running);
  const nlohmann::json queued = status.value("queued", nlohmann::json::array());
  if (queued.empty()) {
    row("Queued (0):", "none");
    return out;
  }
  out += "Queued (" + std::to_string(queued.size()) + "), in the order they start:\n";
  std::vector<std::vector<std::string>> rows;
  int position = 0;
  for (const auto& q : queued) {
    rows.push_back({std::to_string(++position), Str(q, "name"), std::to_string(count(q, "nodes")),
                    std::to_string(count(q, "priority")), Str(q, "queued_at").substr(0, 19),
                    Str(q, "wait_reason")});
  }
  std::string table = RenderTable({"#", "RUN", "NODES", "PRIORITY", "QUEUED", "WAITING"}, rows);
  for (const std::string& line : Split(table, '\n')) {
    if (!line.empty()) out += "  " + line + "\n";
  }
  return out;
}

}  // namespace trainyard::cli
