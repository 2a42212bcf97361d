#include "trainyard/cli/metric_format.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace trainyard::cli {
namespace {

using json = nlohmann::json;

TEST(MetricFormatTest, TableShowsLastValuesAndNonFiniteAsWritten) {
  json metrics = json::parse(R"({"metrics": [
    {"name": "accuracy", "count": 10, "last_value": 0.9731, "last_step": 9, "min": 0.5, "max": 0.98},
    {"name": "loss", "count": 3, "last_value": "NaN", "last_step": 2, "min": 0.1, "max": "Infinity"}]})");
  const std::string table = RenderMetricTable(metrics);
  EXPECT_NE(table.find("METRIC"), std::string::npos) << table;
  EXPECT_NE(table.find("accuracy"), std::string::npos) << table;
  EXPECT_NE(table.find("0.9731"), std::string::npos) << table;
  EXPECT_NE(table.find("NaN"), std::string::npos) << table;
  EXPECT_NE(table.find("Infinity"), std::string::npos) << table;
  EXPECT_EQ(RenderMetricTable(json::parse(R"({"metrics": []})")), "");
}

TEST(MetricFormatTest, PlotKeepsSpikesAndSaysWhatItLeftOut) {
  json values = json::array(), steps = json::array();
  for (int i = 0; i < 1000; ++i) {
    steps.push_back(i);
    values.push_back(i == 500 ? 100.0 : 1.0);
  }
  values[10] = "NaN";
  json series = {{"name", "loss"}, {"steps", steps}, {"values", values}, {"count", 1000}};
  const std::string plot = RenderPlot(series, 40, 10);
  // The top row (value 100) has exactly one mark: the spike at step 500.
  const size_t first_nl = plot.find('\n');
  const std::string top_row =
      plot.substr(first_nl + 1, plot.find('\n', first_nl + 1) - first_nl - 1);
  EXPECT_NE(top_row.find("100"), std::string::npos) << plot;
  EXPECT_EQ(std::count(top_row.begin(), top_row.end(), '*'), 1) << plot;
  EXPECT_NE(plot.find("step 0"), std::string::npos) << plot;
  EXPECT_NE(plot.find("999"), std::string::npos) << plot;
  EXPECT_NE(plot.find("1 NaN/Inf points not drawn"), std::string::npos) << plot;
  EXPECT_NE(RenderPlot(json{{"name", "x"}, {"values", json::array({"NaN"})}}).find("no finite"),
            std::string::npos);
}

}  // namespace
}  // namespace trainyard::cli
