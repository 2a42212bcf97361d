#include "trainyard/tracking/metric_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace trainyard::tracking {
namespace {

using ::testing::HasSubstr;

constexpr double kInf = std::numeric_limits<double>::infinity();

double NanWithPayload(std::uint64_t payload) {
  return std::bit_cast<double>(0x7ff0000000000000ull | (payload & 0xfffffffffffffull));
}

MetricBatch Sample() {
  MetricBatch b;
  b.series.push_back({"loss", {0.9, 0.5, std::nan(""), kInf, -kInf, -0.0}, {}, {}});
  b.series.push_back({"acc", {0.1, 0.2}, {10, 20}, {}});
  b.series.push_back({"lr", {1e-3}, {}, {1732600000000}});
  b.series.push_back({"train/\xce\xbb", {1, 2, 3}, {-5, 0, 5}, {1, 2, 3}});
  return b;
}

void ExpectSameBits(const MetricBatch& a, const MetricBatch& b) {
  ASSERT_EQ(a.series.size(), b.series.size());
  for (size_t i = 0; i < a.series.size(); ++i) {
    const auto& x = a.series[i];
    const auto& y = b.series[i];
    EXPECT_EQ(x.name, y.name);
    ASSERT_EQ(x.values.size(), y.values.size());
    for (size_t k = 0; k < x.values.size(); ++k) {
      EXPECT_EQ(std::bit_cast<std::uint64_t>(x.values[k]),
                std::bit_cast<std::uint64_t>(y.values[k]))
          << "series " << i << " point " << k;
    }
    EXPECT_EQ(x.steps, y.steps);
    EXPECT_EQ(x.timestamps, y.timestamps);
  }
}

TEST(MetricCodecBinary, RoundTripsBitExact) {
  MetricBatch b = Sample();
  b.series[0].values.push_back(NanWithPayload(0x12345));
  b.series[0].values.push_back(-NanWithPayload(1));
  auto body = EncodeMetricsBinary(b);
  auto d = DecodeMetricsBinary(body);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ExpectSameBits(b, *d);
  EXPECT_EQ(d->PointCount(), 14u);
}

TEST(MetricCodecBinary, WriterMatchesEncoder) {
  MetricBatch b = Sample();
  MetricsBinaryWriter w;
  for (const auto& s : b.series) w.AddSeries(s.name, s.values, s.steps, s.timestamps);
  EXPECT_EQ(w.series_count(), 4u);
  EXPECT_EQ(w.Finish(), EncodeMetricsBinary(b));
  EXPECT_EQ(w.series_count(), 0u);
  EXPECT_EQ(w.body().size(), 8u);
}

TEST(MetricCodecBinary, EmptyBatch) {
  auto d = DecodeMetricsBinary(EncodeMetricsBinary({}));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->series.empty());
}

Status DecodeErr(std::string_view body) { return DecodeMetricsBinary(body).status(); }

std::string U32(std::uint32_t v) { return std::string(reinterpret_cast<char*>(&v), 4); }
std::string U16(std::uint16_t v) { return std::string(reinterpret_cast<char*>(&v), 2); }

TEST(MetricCodecBinary, Errors) {
  const std::string good = EncodeMetricsBinary(Sample());
  // Header.
  EXPECT_THAT(DecodeErr("TYM"), ::testing::Property(&Status::message, HasSubstr("truncated")));
  EXPECT_THAT(DecodeErr("XXXX" + U32(0)).message(), HasSubstr("TYM1"));
  EXPECT_EQ(DecodeErr("XXXX" + U32(0)).code(), StatusCode::kInvalidArgument);
  // A count the body cannot hold.
  EXPECT_THAT(DecodeErr("TYM1" + U32(1000000)).message(), HasSubstr("series_count"));
  // Trailing bytes.
  EXPECT_THAT(DecodeErr(good + "x").message(), HasSubstr("1 trailing byte"));

  // Truncation at every length names a series; inside a column it names the point.
  for (size_t len = 8; len < good.size(); ++len) {
    Status s = DecodeErr(good.substr(0, len));
    ASSERT_FALSE(s.ok()) << len;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), ::testing::AnyOf(HasSubstr("series "), HasSubstr("series_count")))
        << len;
  }
  // Series 1 ("acc") values: cut after 1 of 2 values → point 1.
  {
    MetricBatch b;
    b.series.push_back({"x", {1}, {}, {}});
    b.series.push_back({"acc", {1, 2}, {3, 4}, {}});
    std::string body = EncodeMetricsBinary(b);
    // Cut off the steps' last 8 bytes and one value byte more: values intact, steps 0 of 2.
    std::string cut = body.substr(0, body.size() - 8);
    Status s = DecodeErr(cut);
    EXPECT_EQ(s.message(),
              "series 1 (\"acc\"): point 1: truncated steps: 2 points need 16 bytes, 8 remain");
  }
}

std::string OneSeries(std::string_view name, std::uint32_t n, std::uint8_t flags,
                      size_t payload_points) {
  std::string b = "TYM1" + U32(1) + U16(static_cast<std::uint16_t>(name.size()));
  b += name;
  b += U32(n);
  b.push_back(static_cast<char>(flags));
  b += std::string(payload_points * 8, '\0');
  return b;
}

TEST(MetricCodecBinary, BadSeries) {
  EXPECT_EQ(DecodeErr(OneSeries("a", 0, 0, 2)).message(),
            "series 0 (\"a\"): the series has no points");
  EXPECT_THAT(DecodeErr(OneSeries("a", 1, 4, 1)).message(),
              HasSubstr("series 0 (\"a\"): unknown flag bits 4"));
  EXPECT_THAT(DecodeErr(OneSeries("", 1, 0, 1)).message(),
              HasSubstr("series 0 (\"\"): the name is empty"));
  EXPECT_THAT(DecodeErr(OneSeries(std::string(251, 'n'), 1, 0, 1)).message(),
              HasSubstr("251 bytes; at most 250"));
  EXPECT_TRUE(DecodeMetricsBinary(OneSeries(std::string(250, 'n'), 1, 0, 1)).ok());
  EXPECT_THAT(DecodeErr(OneSeries("a\nb", 1, 0, 1)).message(),
              HasSubstr("series 0 (\"a\\x0ab\"): the name has a control character at byte 1"));
  EXPECT_THAT(DecodeErr(OneSeries("a\xff", 1, 0, 1)).message(),
              HasSubstr("not valid UTF-8 at byte 1"));
  EXPECT_THAT(DecodeErr(OneSeries("\xc0\xaf", 1, 0, 1)).message(),
              HasSubstr("not valid UTF-8"));  // Overlong.
  EXPECT_THAT(DecodeErr(OneSeries("\xed\xa0\x80", 1, 0, 1)).message(),
              HasSubstr("not valid UTF-8"));  // Surrogate.
  EXPECT_THAT(DecodeErr(OneSeries("\xc2\x85", 1, 0, 1)).message(),
              HasSubstr("control character"));  // C1 (NEL).
  // Values promise 3 points, carry 1.5.
  std::string b = OneSeries("v", 3, 1, 1) + "1234";
  EXPECT_EQ(DecodeErr(b).message(),
            "series 0 (\"v\"): point 1: truncated values: 3 points need 24 bytes, 12 remain");
}

TEST(MetricCodecBinary, BodyLimit) {
  MetricDecodeOptions o;
  o.max_body_bytes = 16;
  Status s = DecodeMetricsBinary(EncodeMetricsBinary(Sample()), o).status();
  EXPECT_EQ(s.code(), StatusCode::kPayloadTooLarge);
  EXPECT_THAT(s.message(), HasSubstr("the limit is 16 bytes"));
  EXPECT_THAT(CheckMetricsBodySize(65u << 20, kDefaultMaxMetricsBodyBytes).message(),
              HasSubstr("the limit is 64 MiB (67108864 bytes)"));
  EXPECT_EQ(DecodeMetricsJson(std::string(17, ' '), o).status().code(),
            StatusCode::kPayloadTooLarge);
}

TEST(MetricCodec, SeriesLimit) {
  MetricDecodeOptions o;
  o.max_series = 3;
  EXPECT_THAT(DecodeMetricsBinary(EncodeMetricsBinary(Sample()), o).status().message(),
              HasSubstr("the body has 4 series; the limit is 3 series per request"));
  EXPECT_THAT(DecodeMetricsJson(EncodeMetricsJson(Sample()), o).status().message(),
              HasSubstr("the limit is 3 series per request"));
  o.max_series = 4;
  EXPECT_TRUE(DecodeMetricsBinary(EncodeMetricsBinary(Sample()), o).ok());
  EXPECT_TRUE(DecodeMetricsJson(EncodeMetricsJson(Sample()), o).ok());
}

TEST(MetricCodecJson, RoundTrips) {
  MetricBatch b = Sample();
  b.series[0].values.push_back(0.1);
  b.series[0].values.push_back(std::numeric_limits<double>::denorm_min());
  b.series[0].values.push_back(std::numeric_limits<double>::max());
  b.series[1].steps = {std::numeric_limits<std::int64_t>::min(),
                       std::numeric_limits<std::int64_t>::max()};
  auto body = EncodeMetricsJson(b);
  auto d = DecodeMetricsJson(body);
  ASSERT_TRUE(d.ok()) << d.status().ToString() << "\n" << body;
  // JSON keeps NaN's payload out ("NaN"); compare with a canonical NaN.
  b.series[0].values[2] = std::numeric_limits<double>::quiet_NaN();
  ASSERT_TRUE(std::isnan(d->series[0].values[2]));
  d->series[0].values[2] = std::numeric_limits<double>::quiet_NaN();
  ExpectSameBits(b, *d);
}

TEST(MetricCodecJson, DocumentedExample) {
  auto d = DecodeMetricsJson(
      R"({"series": [{"name": "loss", "values": [0.9, 0.5, "NaN"], "steps": [0, 1, 2],
             "timestamps": [1732600000000, 1732600000100, 1732600000200]}]})");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->series.size(), 1u);
  EXPECT_EQ(d->series[0].values.size(), 3u);
  EXPECT_TRUE(std::isnan(d->series[0].values[2]));
  EXPECT_EQ(d->series[0].steps, (std::vector<std::int64_t>{0, 1, 2}));
  EXPECT_EQ(d->series[0].timestamps[2], 1732600000200);
  // Integral floats are accepted as steps; integers as values.
  d = DecodeMetricsJson(R"({"series":[{"values":[1, -2, 3e0],"steps":[1.0, 2, 3],"name":"x"}]})");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->series[0].values[1], -2.0);
}

std::string JsonErr(std::string_view body) { return DecodeMetricsJson(body).status().message(); }

TEST(MetricCodecJson, ErrorsNameSeriesAndPoint) {
  // Bad value at point 17 of series 2, name before the values.
  std::string vals;
  for (int i = 0; i < 17; ++i) vals += std::to_string(i) + ",";
  std::string body = R"({"series":[{"name":"a","values":[1]},{"name":"b","values":[1]},)"
                     R"({"name":"acc","values":[)" +
                     vals + R"("oops"]}]})";
  EXPECT_THAT(JsonErr(body), HasSubstr("series 2 (\"acc\"): point 17: the value \"oops\" is not "
                                       "a number"));
  // Name after the values: still named.
  EXPECT_THAT(JsonErr(R"({"series":[{"values":[1,true],"name":"late"}]})"),
              HasSubstr("series 0 (\"late\"): point 1: the value is a boolean"));
  // ... also in a later series, found by a second streaming pass that skips the others.
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"a","values":[1],"steps":[7]},)"
                      R"({"values":[1,"x"],"steps":[0,1],"name":"second"},{"name":"c"}]})"),
              HasSubstr("series 1 (\"second\"): point 1"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"a","values":[1]},{"values":[true],"name":"t")"),
              HasSubstr("series 1 (\"t\"): point 0"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"a","values":[1]},{"values":[true]},{"name":"z"}]})"),
              HasSubstr("series 1: point 0"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"n","values":[1,null]}]})"),
              HasSubstr("series 0 (\"n\"): point 1: the value is null"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"n","values":[1,[2]]}]})"),
              HasSubstr("point 1: the value is an array"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"n","values":[1,2],"steps":[0,1.5]}]})"),
              HasSubstr("series 0 (\"n\"): point 1: the steps value 1.5 is not an integer"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"n","values":[1,2],"steps":[0,"1"]}]})"),
              HasSubstr("point 1: the steps value is a string, not an integer"));
  EXPECT_THAT(
      JsonErr(R"({"series":[{"name":"n","values":[1,2],"timestamps":[0,18446744073709551615]}]})"),
      HasSubstr("point 1: the timestamps value 18446744073709551615 does not fit"));
  // Lengths.
  EXPECT_EQ(JsonErr(R"({"series":[{"name":"n","values":[1,2,3],"steps":[0,1]}]})"),
            "series 0 (\"n\"): point 2: \"steps\" has 2 entries but \"values\" has 3");
  EXPECT_EQ(JsonErr(R"({"series":[{"name":"n","values":[1],"timestamps":[0,1]}]})"),
            "series 0 (\"n\"): point 1: \"timestamps\" has 2 entries but \"values\" has 1");
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"n","values":[]}]})"),
              HasSubstr("series 0 (\"n\"): the series has no points"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"n"}]})"), HasSubstr("\"values\" is missing"));
  // Names.
  EXPECT_THAT(JsonErr(R"({"series":[{"values":[1]}]})"), HasSubstr("series 0: no \"name\""));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"","values":[1]}]})"),
              HasSubstr("series 0 (\"\"): the name is empty"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"a\u0001","values":[1]}]})"),
              HasSubstr("control character"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":5,"values":[1]}]})"),
              HasSubstr("series 0: \"name\" is a number, expected a string"));
  // Structure.
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"n","value":[1]}]})"),
              HasSubstr("series 0 (\"n\"): unknown field \"value\""));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"n","values":[1],"values":[2]}]})"),
              HasSubstr("appears twice"));
  EXPECT_THAT(JsonErr(R"({"serie":[]})"), HasSubstr("unknown field \"serie\""));
  EXPECT_THAT(JsonErr(R"({})"), HasSubstr("no \"series\""));
  EXPECT_THAT(JsonErr(R"([])"), HasSubstr("expected an object"));
  EXPECT_THAT(JsonErr(R"({"series":{}})"), HasSubstr("\"series\" is an object"));
  EXPECT_THAT(JsonErr(R"({"series":[1]})"), HasSubstr("series 0 is a number"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"n","values":[1]}]} x)"), HasSubstr("malformed"));
  EXPECT_THAT(JsonErr(R"({"series":[{"name":"n","values":[1)"), HasSubstr("malformed"));
  EXPECT_THAT(JsonErr(""), HasSubstr("malformed"));
}

TEST(MetricCodec, DecodeByContentType) {
  const MetricBatch b = Sample();
  EXPECT_TRUE(DecodeMetricsBody("application/x-trainyard-metrics", EncodeMetricsBinary(b)).ok());
  EXPECT_TRUE(DecodeMetricsBody("Application/JSON; charset=utf-8", EncodeMetricsJson(b)).ok());
  Status s = DecodeMetricsBody("text/plain", "x").status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("unsupported Content-Type \"text/plain\""));
}

TEST(MetricCodecJson, EmptySeriesList) {
  auto d = DecodeMetricsJson(R"({"series":[]})");
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->series.empty());
}

// Mutated bodies: an error or a batch, never a crash or an out-of-bounds read (ASan/UBSan).
TEST(MetricCodec, MutatedBodiesAreSafe) {
  std::mt19937 rng(11);
  const std::string bin = EncodeMetricsBinary(Sample());
  const std::string json = EncodeMetricsJson(Sample());
  for (int i = 0; i < 3000; ++i) {
    std::string b = bin, j = json;
    for (int k = 0; k < 1 + static_cast<int>(rng() % 3); ++k) {
      b[rng() % b.size()] = static_cast<char>(rng());
      j[rng() % j.size()] = static_cast<char>(rng() % 128);
    }
    auto x = DecodeMetricsBinary(b);
    if (x.ok()) {
      for (const auto& s : x->series) EXPECT_TRUE(ValidateMetricName(s.name).ok());
    } else {
      EXPECT_EQ(x.status().code(), StatusCode::kInvalidArgument);
    }
    auto y = DecodeMetricsJson(j);
    if (!y.ok()) {
      EXPECT_EQ(y.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(MetricCodec, QuoteNameKeepsUtf8Valid) {
  EXPECT_EQ(QuoteName("a\"b"), "\"a\\\"b\"");
  EXPECT_EQ(QuoteName("a\xff"), "\"a\\xff\"");
  std::string longname(63, 'a');
  longname += "\xce\xbb\xce\xbb";
  EXPECT_EQ(QuoteName(longname), "\"" + std::string(63, 'a') + "\xce\xbb...\"");
}

}  // namespace
}  // namespace trainyard::tracking
