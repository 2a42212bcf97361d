#include "trainyard/cli/metric_format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "trainyard/cli/format.h"

namespace trainyard::cli {

using json = nlohmann::json;

namespace {

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// A metric value as a double: NaN for null, strings "NaN", or anything else unreadable.
double AsDouble(const json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "Infinity") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
  }
  return std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

std::string FormatMetricValue(const json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  if (v.is_number()) return Num(v.get<double>());
  return v.dump();
}

std::string RenderMetricTable(const json& metrics) {
  const json& list =
      metrics.is_object() && metrics.contains("metrics") ? metrics["metrics"] : metrics;
  if (!list.is_array() || list.empty()) return "";
  std::vector<std::vector<std::string>> rows;
  for (const json& m : list) {
    if (!m.is_object()) continue;
    rows.push_back({m.value("name", ""), FormatMetricValue(m.value("last_value", json())),
                    FormatMetricValue(m.value("last_step", json())),
                    FormatMetricValue(m.value("count", json())),
                    FormatMetricValue(m.value("min", json())),
                    FormatMetricValue(m.value("max", json()))});
  }
  return RenderTable({"METRIC", "LAST", "STEP", "POINTS", "MIN", "MAX"}, rows);
}

std::string RenderPlot(const json& series, int width, int height) {
  width = std::max(width, 8);
  height = std::max(height, 3);
  const json values = series.value("values", json::array());
  const json steps = series.value("steps", json::array());
  std::vector<std::pair<double, double>> points;  // (step, value), finite values only
  size_t skipped = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = AsDouble(values[i]);
    if (!std::isfinite(v)) {
      ++skipped;
      continue;
    }
    const double x =
        i < steps.size() && steps[i].is_number() ? steps[i].get<double>() : static_cast<double>(i);
    points.emplace_back(x, v);
  }
  const std::string name = series.value("name", "");
  if (points.empty()) return name + ": no finite values to plot\n";

  double x0 = points.front().first, x1 = x0, y0 = points.front().second, y1 = y0;
  for (const auto& [x, y] : points) {
    x0 = std::min(x0, x);
    x1 = std::max(x1, x);
    y0 = std::min(y0, y);
    y1 = std::max(y1, y);
  }
  if (y1 == y0) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  // Per column, the lowest and highest row reached.
  std::vector<int> lo(static_cast<size_t>(width), height), hi(static_cast<size_t>(width), -1);
  auto row_of = [&](double y) {
    const int r = static_cast<int>(std::lround((y - y0) / (y1 - y0) * (height - 1)));
    return std::clamp(r, 0, height - 1);
  };
  for (const auto& [x, y] : points) {
    const int c =
        x1 == x0 ? 0
                 : std::clamp(static_cast<int>((x - x0) / (x1 - x0) * (width - 1)), 0, width - 1);
    lo[static_cast<size_t>(c)] = std::min(lo[static_cast<size_t>(c)], row_of(y));
    hi[static_cast<size_t>(c)] = std::max(hi[static_cast<size_t>(c)], row_of(y));
  }
  const std::string top = Num(y1), bottom = Num(y0);
  const size_t label = std::max(top.size(), bottom.size());
  std::string out = name + "\n";
  for (int r = height - 1; r >= 0; --r) {
    std::string axis = r == height - 1 ? top : r == 0 ? bottom : "";
    out += std::string(label - axis.size(), ' ') + axis + " |";
    for (size_t c = 0; c < static_cast<size_t>(width); ++c) {
      out += hi[c] >= 0 && r >= lo[c] && r <= hi[c] ? '*' : ' ';
    }
    out += "\n";
  }
  out += std::string(label, ' ') + " +" + std::string(static_cast<size_t>(width), '-') + "\n";
  const std::string left = "step " + Num(x0), right = Num(x1);
  out += std::string(label + 2, ' ') + left;
  if (static_cast<size_t>(width) > left.size() + right.size()) {
    out += std::string(static_cast<size_t>(width) - left.size() - right.size(), ' ') + right;
  }
  out += "\n";
  if (series.value("downsampled", false)) {
    out += "(" + FormatMetricValue(series.value("count", json())) + " points, " +
           std::to_string(values.size()) + " shown)\n";
  }
  if (skipped > 0) out += "(" + std::to_string(skipped) + " NaN/Inf points not drawn)\n";
  return out;
}

}  // namespace trainyard::cli
