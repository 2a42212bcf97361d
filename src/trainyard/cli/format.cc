#include "trainyard/cli/format.h"

#include <algorithm>
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
  row("Compute:", Str(run, "compute"));
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

}  // namespace trainyard::cli
