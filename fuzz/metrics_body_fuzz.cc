// Metric bodies from runs: the binary "TYM1" format and the JSON one. A body either decodes into
// series whose lengths agree, or is refused with an error; never a crash or a huge allocation.
#include <cstdlib>

#include "trainyard/tracking/metric_codec.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  tracking::MetricDecodeOptions options;
  options.max_body_bytes = 1 << 20;
  const char* type = (data[0] & 1) ? "application/json" : "application/x-trainyard-metrics";
  auto batch = tracking::DecodeMetricsBody(type, body, options);
  if (batch.ok()) (void)batch->PointCount();
  return 0;
}
