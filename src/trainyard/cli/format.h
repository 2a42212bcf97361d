#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace trainyard::cli {

// Prints JSON for `--output json`: indented, invalid UTF-8 replaced rather than thrown on.
void PrintJson(const nlohmann::json& j);

// Renders rows as an aligned text table with a header line.
std::string RenderTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows);

// "Completed", "Failed", ... with the duration between two API timestamps in millis.
std::string RunDuration(const nlohmann::json& run);

// The execution summary printed when a streamed run ends.
std::string RenderSummary(const nlohmann::json& run, const nlohmann::json& files);

// A multi-line description of one run (`job show`).
std::string RenderRun(const nlohmann::json& run);

// A compute node's size from a compute's JSON: "2 CPUs, 4 GiB", "0.5 CPUs, 512 MiB, 1 GPU";
// a size of 0 reads "all CPUs" / "all memory" (the machine's).
std::string FormatNodeSize(const nlohmann::json& compute);

// The status view of one compute target (`compute show`): settings, nodes busy/idle/total,
// running runs and the queue in order with wait reasons. Takes GET /api/v1/computes/{name}.
std::string RenderComputeStatus(const nlohmann::json& status);

}  // namespace trainyard::cli
