#pragma once

// Codecs for the body of `POST /jobs/{run}/metrics` (docs/tracking.md): the binary
// `application/x-trainyard-metrics` format the clients send and the JSON form for curl.
//
// Decoding validates everything a store needs to trust: names, lengths, flags, truncation and
// trailing bytes. Errors are InvalidArgument with the offending series and point index,
// `series 2 ("acc"): point 17: ...`, or PayloadTooLarge naming the limit. Decoders are pure
// functions and thread-safe.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::tracking {

inline constexpr std::string_view kMetricsBinaryContentType = "application/x-trainyard-metrics";
inline constexpr std::string_view kMetricsBinaryMagic = "TYM1";
inline constexpr size_t kMaxMetricNameBytes = 250;
// The daemon's default body limit for POST /metrics (docs/tracking.md).
inline constexpr size_t kDefaultMaxMetricsBodyBytes = size_t{64} << 20;

// Points of one named series. `steps` and `timestamps` are either empty (absent: the store
// assigns them) or exactly as long as `values`. Timestamps are Unix-epoch milliseconds.
struct MetricSeries {
  std::string name;
  std::vector<double> values;
  std::vector<std::int64_t> steps;
  std::vector<std::int64_t> timestamps;

  bool has_steps() const { return !steps.empty(); }
  bool has_timestamps() const { return !timestamps.empty(); }
};

// One request's worth of points. The same name may appear in more than one series; they are
// appended in order.
struct MetricBatch {
  std::vector<MetricSeries> series;

  size_t PointCount() const;
};

struct MetricDecodeOptions {
  // Bodies larger than this are PayloadTooLarge (HTTP 413) before any parsing.
  size_t max_body_bytes = kDefaultMaxMetricsBodyBytes;
  // More series than this in one body is InvalidArgument naming the limit (memory bound: a
  // series costs ~150 bytes decoded however few points it has).
  size_t max_series = 100'000;
};

// OK when `name` is 1..250 bytes of valid UTF-8 with no control characters (C0, DEL, C1).
// Otherwise InvalidArgument saying what is wrong (without the series prefix).
Status ValidateMetricName(std::string_view name);

// PayloadTooLarge naming the limit when `body_bytes > max_body_bytes`. The HTTP layer calls
// this with the Content-Length before reading the body; the decoders call it too.
Status CheckMetricsBodySize(size_t body_bytes, size_t max_body_bytes);

// Decodes the binary format. Cost: one allocation per column per series, then memcpy; no
// per-point work beyond the copy (on little-endian hosts).
StatusOr<MetricBatch> DecodeMetricsBinary(std::string_view body,
                                          const MetricDecodeOptions& options = {});

// Decodes the JSON format (a streaming parse: no per-point allocation). Values are numbers or
// the strings "NaN", "Infinity", "-Infinity"; steps and timestamps are integers.
StatusOr<MetricBatch> DecodeMetricsJson(std::string_view body,
                                        const MetricDecodeOptions& options = {});

// Decodes by Content-Type (parameters such as "; charset=utf-8" ignored, case-insensitive):
// the binary type or application/json. InvalidArgument naming both accepted types otherwise.
StatusOr<MetricBatch> DecodeMetricsBody(std::string_view content_type, std::string_view body,
                                        const MetricDecodeOptions& options = {});

// Encodes `batch` in the binary format. Precondition: each series' steps/timestamps are empty
// or as long as its values (names are not validated; the server does).
std::string EncodeMetricsBinary(const MetricBatch& batch);

// Encodes `batch` as the JSON body, non-finite values as the strings above; doubles are
// written in their shortest round-trip form.
std::string EncodeMetricsJson(const MetricBatch& batch);

// Builds a binary body series by series without copying the caller's columns into a
// MetricBatch first (what the C++ client uses). Not thread-safe.
class MetricsBinaryWriter {
 public:
  MetricsBinaryWriter();

  // Appends one series. `steps` and `timestamps` are empty or values.size() long;
  // values.size() must be 1..2^32-1 and name.size() <= 65535 (the wire limits).
  void AddSeries(std::string_view name, std::span<const double> values,
                 std::span<const std::int64_t> steps = {},
                 std::span<const std::int64_t> timestamps = {});

  size_t series_count() const { return count_; }
  // The body so far; valid until the next AddSeries or Finish.
  std::string_view body() const { return buf_; }
  // Returns the body and resets the writer to an empty batch.
  std::string Finish();

 private:
  std::string buf_;
  std::uint32_t count_ = 0;
};

// Appends `v` as a JSON number in its shortest round-trip form, or as the string "NaN",
// "Infinity" or "-Infinity" (-0.0 stays -0.0).
void AppendJsonDouble(std::string* out, double v);

// `series 2 ("acc")`: the prefix of every decode error, the name quoted with non-printable
// bytes escaped and cut at 64 bytes.
std::string SeriesLabel(size_t index, std::string_view name);
// `"acc"`: the name in double quotes, escaped and cut as in SeriesLabel.
std::string QuoteName(std::string_view name);

}  // namespace trainyard::tracking
