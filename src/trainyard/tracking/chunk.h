#pragma once

// The compressed block a metric series is stored in: up to a few thousand points, as three
// columns (step, timestamp, value).
//
// Encoding (format version 1):
//   u8      version = 1
//   varint  n (points)
//   varint  byte length of the steps column, then the column
//   varint  byte length of the timestamps column, then the column
//   the values column (the rest)
// Integer columns: the first value and the first delta as zigzag varints, then the
// delta-of-deltas as zigzag varints where a zero is followed by a varint count of further
// zeros (a regular step or clock costs a few bytes per chunk, a jittery clock ~1-2 bytes per
// point). All arithmetic wraps, so every int64 round-trips.
// Values: Gorilla XOR encoding (Pelkonen et al., VLDB 2015) over the IEEE 754 bit patterns, so
// NaN payloads, ±Inf and -0.0 round-trip bit for bit.
//
// Functions here are pure and thread-safe.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::tracking {

// Points in columns; all three vectors have the same length.
struct PointColumns {
  std::vector<std::int64_t> steps;
  std::vector<std::int64_t> timestamps;
  std::vector<double> values;

  size_t size() const { return values.size(); }
  void clear() {
    steps.clear();
    timestamps.clear();
    values.clear();
  }
};

// What is known of a run of points without decoding it.
struct ChunkSummary {
  std::uint64_t count = 0;
  std::int64_t first_step = 0;
  std::int64_t last_step = 0;
  std::int64_t max_step = 0;
  std::int64_t last_timestamp = 0;
  double last_value = 0;
  // Over the non-NaN values; absent when every value is NaN.
  std::optional<double> min;
  std::optional<double> max;
};

// Summary of points [0, n) of the columns. Precondition: equal lengths, n >= 1.
ChunkSummary SummarizePoints(std::span<const std::int64_t> steps,
                             std::span<const std::int64_t> timestamps,
                             std::span<const double> values);

// Appends the encoding of the points to `out`. Precondition: equal lengths, >= 1 point.
void EncodeChunk(std::span<const std::int64_t> steps, std::span<const std::int64_t> timestamps,
                 std::span<const double> values, std::string* out);

// Appends the chunk's points to `out`. Internal ("corrupt metric chunk: ...") when the bytes
// are not a valid chunk; `out` may then hold part of it.
Status DecodeChunk(std::string_view data, PointColumns* out);

// The point count of a chunk, from its header.
StatusOr<std::uint64_t> ChunkPointCount(std::string_view data);

}  // namespace trainyard::tracking
