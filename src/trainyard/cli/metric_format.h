#pragma once

// Rendering of run metrics for the terminal: the table of last values (`job show`,
// `job metrics`) and a small chart of one series (`job metrics --plot`).

#include <nlohmann/json.hpp>
#include <string>

namespace trainyard::cli {

// A metric value from the API as text: numbers with up to 6 significant digits, and the
// strings "NaN", "Infinity", "-Infinity" as they are; "" for null.
std::string FormatMetricValue(const nlohmann::json& v);

// The table of a run's metrics from GET /metrics ({"metrics": [...]}):
// NAME, LAST, STEP, POINTS, MIN, MAX. "" when the run has none.
std::string RenderMetricTable(const nlohmann::json& metrics);

// A chart of one series from GET /metrics/{name} ({"name", "steps", "values", ...}), `width`
// columns by `height` rows of plot area plus axes: each column shows the lowest and highest
// value of the points falling in it, so spikes stay visible. Non-finite points are left out
// and counted under the chart.
std::string RenderPlot(const nlohmann::json& series, int width = 64, int height = 12);

}  // namespace trainyard::cli
