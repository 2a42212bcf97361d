#include "trainyard/tracking/chunk.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>

namespace trainyard::tracking {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

void ExpectRoundTrip(const PointColumns& in) {
  std::string enc;
  EncodeChunk(in.steps, in.timestamps, in.values, &enc);
  auto n = ChunkPointCount(enc);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, in.size());
  PointColumns out;
  out.steps = {7};  // Decoding appends.
  out.timestamps = {8};
  out.values = {9};
  Status s = DecodeChunk(enc, &out);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(out.size(), in.size() + 1);
  for (size_t i = 0; i < in.size(); ++i) {
    ASSERT_EQ(out.steps[i + 1], in.steps[i]) << i;
    ASSERT_EQ(out.timestamps[i + 1], in.timestamps[i]) << i;
    ASSERT_EQ(std::bit_cast<std::uint64_t>(out.values[i + 1]),
              std::bit_cast<std::uint64_t>(in.values[i]))
        << i;
  }
}

PointColumns Regular(size_t n) {
  PointColumns c;
  for (size_t i = 0; i < n; ++i) {
    c.steps.push_back(static_cast<std::int64_t>(i));
    c.timestamps.push_back(1732600000000 + static_cast<std::int64_t>(i) * 100);
    c.values.push_back(1.0 / (1.0 + static_cast<double>(i)));
  }
  return c;
}

TEST(Chunk, SinglePointAndSpecials) {
  ExpectRoundTrip(Regular(1));
  ExpectRoundTrip(Regular(2));
  ExpectRoundTrip(Regular(3));
  PointColumns c;
  const double specials[] = {std::nan(""),
                             -std::nan(""),
                             std::bit_cast<double>(0x7ff0000000000001ull),  // Signalling NaN.
                             std::bit_cast<double>(0xfff8dead0000beefull),  // Payload.
                             kInf,
                             -kInf,
                             0.0,
                             -0.0,
                             std::numeric_limits<double>::denorm_min(),
                             std::numeric_limits<double>::max(),
                             std::numeric_limits<double>::lowest(),
                             1.0,
                             1.0,
                             1.0};
  std::int64_t k = 0;
  for (double v : specials) {
    c.steps.push_back(k);
    c.timestamps.push_back(k * k);
    c.values.push_back(v);
    ++k;
  }
  ExpectRoundTrip(c);
}

TEST(Chunk, ExtremeIntegers) {
  constexpr auto kMin = std::numeric_limits<std::int64_t>::min();
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  PointColumns c;
  for (std::int64_t v : {kMin, kMax, kMin, 0L, kMax, kMax, kMax, -1L, 1L, kMin + 1}) {
    c.steps.push_back(v);
    c.timestamps.push_back(~v);
    c.values.push_back(static_cast<double>(v));
  }
  ExpectRoundTrip(c);
}

TEST(Chunk, RandomDataBitExact) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 200; ++round) {
    const size_t n = 1 + rng() % 5000;
    PointColumns c;
    const int mode = round % 5;
    std::int64_t step = static_cast<std::int64_t>(rng() % 1000);
    std::int64_t ts = 1732600000000;
    double v = 0.5;
    for (size_t i = 0; i < n; ++i) {
      switch (mode) {
        case 0:  // Anything at all: random bit patterns (many NaNs with payloads).
          step = static_cast<std::int64_t>(rng());
          ts = static_cast<std::int64_t>(rng());
          v = std::bit_cast<double>(rng());
          break;
        case 1:  // Training-like: regular steps, jittery clock, noisy decreasing loss.
          step += 1;
          ts += 90 + static_cast<std::int64_t>(rng() % 20);
          v = 2.0 * std::exp(-static_cast<double>(i) / 1000) +
              std::ldexp(static_cast<double>(rng() % 1000), -14);
          break;
        case 2:  // Runs of repeats mixed with specials.
          step += static_cast<std::int64_t>(rng() % 3);
          ts += (rng() % 4 == 0) ? 1000 : 0;
          if (rng() % 7 == 0) {
            const double sp[] = {std::nan(""), kInf, -kInf, -0.0, 0.0};
            v = sp[rng() % 5];
          }
          break;
        case 3:  // Out-of-order steps and decreasing timestamps.
          step = static_cast<std::int64_t>(rng() % 100) - 50;
          ts -= static_cast<std::int64_t>(rng() % 1000);
          v = static_cast<double>(static_cast<float>(rng() % 100000) / 7.0f);
          break;
        default:  // Integral values.
          step += 10;
          ts += 100;
          v = static_cast<double>(rng() % 10);
          break;
      }
      c.steps.push_back(step);
      c.timestamps.push_back(ts);
      c.values.push_back(v);
    }
    ExpectRoundTrip(c);
    if (HasFatalFailure()) return;
  }
}

TEST(Chunk, CompressesRegularSeries) {
  PointColumns c = Regular(4096);
  std::string enc;
  EncodeChunk(c.steps, c.timestamps, c.values, &enc);
  // Steps and timestamps take a few bytes in all; the values dominate.
  EXPECT_LT(enc.size(), 4096u * 8);
  PointColumns flat;
  for (int i = 0; i < 4096; ++i) {
    flat.steps.push_back(i);
    flat.timestamps.push_back(0);
    flat.values.push_back(0.25);
  }
  enc.clear();
  EncodeChunk(flat.steps, flat.timestamps, flat.values, &enc);
  EXPECT_LT(enc.size(), 600u);  // ~1 bit per repeated value.
}

TEST(Chunk, SummaryIgnoresNaN) {
  PointColumns c;
  c.steps = {5, 3, 9, 4};
  c.timestamps = {1, 2, 3, 4};
  c.values = {std::nan(""), -kInf, 2.0, std::nan("")};
  ChunkSummary s = SummarizePoints(c.steps, c.timestamps, c.values);
  EXPECT_EQ(s.count, 4u);
  EXPECT_EQ(s.first_step, 5);
  EXPECT_EQ(s.last_step, 4);
  EXPECT_EQ(s.max_step, 9);
  EXPECT_EQ(s.last_timestamp, 4);
  EXPECT_TRUE(std::isnan(s.last_value));
  EXPECT_EQ(*s.min, -kInf);
  EXPECT_EQ(*s.max, 2.0);
  c.values = {std::nan(""), std::nan(""), std::nan(""), std::nan("")};
  s = SummarizePoints(c.steps, c.timestamps, c.values);
  EXPECT_FALSE(s.min.has_value());
  EXPECT_FALSE(s.max.has_value());
}

TEST(Chunk, CorruptDataIsAnErrorNotACrash) {
  PointColumns c = Regular(300);
  std::string enc;
  EncodeChunk(c.steps, c.timestamps, c.values, &enc);
  std::mt19937 rng(7);
  int errors = 0;
  for (size_t len = 0; len < enc.size(); ++len) {
    PointColumns out;
    if (!DecodeChunk(enc.substr(0, len), &out).ok()) ++errors;
  }
  EXPECT_EQ(errors, static_cast<int>(enc.size()));  // Every truncation is detected.
  for (int i = 0; i < 2000; ++i) {
    std::string bad = enc;
    bad[rng() % bad.size()] ^= static_cast<char>(1 + rng() % 255);
    PointColumns out;
    (void)DecodeChunk(bad, &out);  // Must not crash or read out of bounds (ASan).
  }
  PointColumns out;
  EXPECT_EQ(DecodeChunk("", &out).code(), StatusCode::kInternal);
  EXPECT_EQ(DecodeChunk(std::string("\x02\x01", 2), &out).code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace trainyard::tracking
