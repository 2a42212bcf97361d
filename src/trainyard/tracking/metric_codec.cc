#include "trainyard/tracking/metric_codec.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

namespace trainyard::tracking {

namespace {

constexpr bool kLittleEndian = std::endian::native == std::endian::little;

template <typename T>
T LoadLe(const char* p) {
  char b[sizeof(T)];
  std::memcpy(b, p, sizeof(T));
  if constexpr (!kLittleEndian) std::reverse(b, b + sizeof(T));
  T v;
  std::memcpy(&v, b, sizeof(T));
  return v;
}

template <typename T>
void StoreLe(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  if constexpr (!kLittleEndian) std::reverse(b, b + sizeof(T));
  out->append(b, sizeof(T));
}

// Copies n little-endian 8-byte elements from `p` into `out`.
template <typename T>
void LoadColumn(const char* p, size_t n, std::vector<T>* out) {
  static_assert(sizeof(T) == 8);
  out->resize(n);
  if constexpr (kLittleEndian) {
    std::memcpy(out->data(), p, n * 8);
  } else {
    for (size_t i = 0; i < n; ++i) (*out)[i] = LoadLe<T>(p + i * 8);
  }
}

template <typename T>
void StoreColumn(std::string* out, std::span<const T> col) {
  static_assert(sizeof(T) == 8);
  if constexpr (kLittleEndian) {
    out->append(reinterpret_cast<const char*>(col.data()), col.size() * 8);
  } else {
    for (T v : col) StoreLe(out, v);
  }
}

std::string Plural(size_t n, std::string_view what) {
  return std::to_string(n) + " " + std::string(what) + (n == 1 ? "" : "s");
}

std::string FormatLimit(size_t bytes) {
  std::string s = std::to_string(bytes) + " bytes";
  if (bytes >= (1 << 20) && bytes % (1 << 20) == 0) {
    s = std::to_string(bytes >> 20) + " MiB (" + s + ")";
  }
  return s;
}

// UTF-8 validity and no control characters (C0, DEL, C1); no length rule.
Status CheckNameBytes(std::string_view name);

}  // namespace

size_t MetricBatch::PointCount() const {
  size_t n = 0;
  for (const auto& s : series) n += s.values.size();
  return n;
}

std::string SeriesLabel(size_t index, std::string_view name) {
  return "series " + std::to_string(index) + " (" + QuoteName(name) + ")";
}

std::string QuoteName(std::string_view name) {
  // Bytes of invalid UTF-8 are escaped too, so the message is always valid UTF-8 (it ends up
  // in JSON error bodies); a valid name is cut at a character boundary.
  const bool utf8 = CheckNameBytes(name).ok();
  std::string out = "\"";
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    if (i >= 64 && (!utf8 || (c & 0xc0) != 0x80)) {
      out += "...";
      break;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  return out;
}

Status ValidateMetricName(std::string_view name) {
  if (name.empty()) return InvalidArgument("the name is empty");
  if (name.size() > kMaxMetricNameBytes) {
    return InvalidArgument("the name has " + std::to_string(name.size()) + " bytes; at most " +
                           std::to_string(kMaxMetricNameBytes) + " are allowed");
  }
  return CheckNameBytes(name);
}

namespace {

Status CheckNameBytes(std::string_view name) {
  const auto* p = reinterpret_cast<const unsigned char*>(name.data());
  const size_t n = name.size();
  for (size_t i = 0; i < n;) {
    unsigned c = p[i];
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) {
        return InvalidArgument("the name has a control character at byte " + std::to_string(i));
      }
      ++i;
      continue;
    }
    size_t len;
    std::uint32_t cp;
    std::uint32_t min;
    if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return InvalidArgument("the name is not valid UTF-8 at byte " + std::to_string(i));
    }
    if (i + len > n) {
      return InvalidArgument("the name is not valid UTF-8 at byte " + std::to_string(i));
    }
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) {
        return InvalidArgument("the name is not valid UTF-8 at byte " + std::to_string(i));
      }
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return InvalidArgument("the name is not valid UTF-8 at byte " + std::to_string(i));
    }
    if (cp >= 0x80 && cp <= 0x9f) {
      return InvalidArgument("the name has a control character at byte " + std::to_string(i));
    }
    i += len;
  }
  return Status::Ok();
}

}  // namespace

Status CheckMetricsBodySize(size_t body_bytes, size_t max_body_bytes) {
  if (body_bytes > max_body_bytes) {
    return PayloadTooLarge("the metrics body has " + std::to_string(body_bytes) +
                           " bytes; the limit is " + FormatLimit(max_body_bytes));
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Binary.

StatusOr<MetricBatch> DecodeMetricsBinary(std::string_view body,
                                          const MetricDecodeOptions& options) {
  TY_RETURN_IF_ERROR(CheckMetricsBodySize(body.size(), options.max_body_bytes));
  const char* p = body.data();
  const size_t size = body.size();
  size_t pos = 0;
  if (size < 8) {
    return InvalidArgument("truncated metrics body: " + Plural(size, "byte") +
                           ", the header alone needs 8");
  }
  if (body.substr(0, 4) != kMetricsBinaryMagic) {
    return InvalidArgument("not a metrics body: it does not start with \"TYM1\"");
  }
  const std::uint32_t count = LoadLe<std::uint32_t>(p + 4);
  pos = 8;
  // Each series takes at least 15 bytes (an empty name, one value); refuse a count the body
  // cannot hold before reserving memory for it.
  constexpr size_t kMinSeriesBytes = 2 + 4 + 1 + 8;
  if (count > (size - pos) / kMinSeriesBytes) {
    return InvalidArgument("series_count is " + std::to_string(count) + " but the remaining " +
                           Plural(size - pos, "byte") + " can hold at most " +
                           std::to_string((size - pos) / kMinSeriesBytes) + " series");
  }
  if (count > options.max_series) {
    return InvalidArgument("the body has " + std::to_string(count) + " series; the limit is " +
                           std::to_string(options.max_series) + " series per request");
  }
  MetricBatch batch;
  batch.series.resize(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    MetricSeries& s = batch.series[i];
    auto remaining = [&] { return size - pos; };
    if (remaining() < 2) {
      return InvalidArgument(SeriesLabel(i, "") + ": truncated before the name length");
    }
    const std::uint16_t name_len = LoadLe<std::uint16_t>(p + pos);
    pos += 2;
    if (remaining() < name_len) {
      return InvalidArgument(SeriesLabel(i, "") + ": truncated name: " + Plural(name_len, "byte") +
                             " announced, " + std::to_string(remaining()) + " remain");
    }
    s.name.assign(p + pos, name_len);
    pos += name_len;
    if (Status st = ValidateMetricName(s.name); !st.ok()) {
      return InvalidArgument(SeriesLabel(i, s.name) + ": " + st.message());
    }
    if (remaining() < 5) {
      return InvalidArgument(SeriesLabel(i, s.name) + ": truncated before the point count");
    }
    const std::uint32_t n = LoadLe<std::uint32_t>(p + pos);
    const std::uint8_t flags = static_cast<std::uint8_t>(p[pos + 4]);
    pos += 5;
    if (n == 0) return InvalidArgument(SeriesLabel(i, s.name) + ": the series has no points");
    if (flags & ~3u) {
      return InvalidArgument(SeriesLabel(i, s.name) + ": unknown flag bits " +
                             std::to_string(flags & ~3u) + " (only bits 0 and 1 are defined)");
    }
    auto column = [&](std::string_view what, auto* out) -> Status {
      const size_t need = size_t{n} * 8;
      if (remaining() < need) {
        return InvalidArgument(
            SeriesLabel(i, s.name) + ": point " + std::to_string(remaining() / 8) + ": truncated " +
            std::string(what) + ": " + Plural(n, "point") + " need " + std::to_string(need) +
            " bytes, " + std::to_string(remaining()) + " remain");
      }
      LoadColumn(p + pos, n, out);
      pos += need;
      return Status::Ok();
    };
    TY_RETURN_IF_ERROR(column("values", &s.values));
    if (flags & 1) TY_RETURN_IF_ERROR(column("steps", &s.steps));
    if (flags & 2) TY_RETURN_IF_ERROR(column("timestamps", &s.timestamps));
  }
  if (pos != size) {
    return InvalidArgument(Plural(size - pos, "trailing byte") + " after the last of " +
                           Plural(count, "series") + " (offset " + std::to_string(pos) + ")");
  }
  return batch;
}

MetricsBinaryWriter::MetricsBinaryWriter() {
  buf_.append(kMetricsBinaryMagic);
  StoreLe<std::uint32_t>(&buf_, 0);
}

void MetricsBinaryWriter::AddSeries(std::string_view name, std::span<const double> values,
                                    std::span<const std::int64_t> steps,
                                    std::span<const std::int64_t> timestamps) {
  buf_.reserve(buf_.size() + 2 + name.size() + 5 +
               8 * (values.size() + steps.size() + timestamps.size()));
  StoreLe<std::uint16_t>(&buf_, static_cast<std::uint16_t>(name.size()));
  buf_.append(name);
  StoreLe<std::uint32_t>(&buf_, static_cast<std::uint32_t>(values.size()));
  buf_.push_back(static_cast<char>((steps.empty() ? 0 : 1) | (timestamps.empty() ? 0 : 2)));
  StoreColumn(&buf_, values);
  if (!steps.empty()) StoreColumn(&buf_, steps);
  if (!timestamps.empty()) StoreColumn(&buf_, timestamps);
  ++count_;
  std::string c;
  StoreLe<std::uint32_t>(&c, count_);
  std::memcpy(buf_.data() + 4, c.data(), 4);
}

std::string MetricsBinaryWriter::Finish() {
  std::string out = std::move(buf_);
  buf_.clear();
  buf_.append(kMetricsBinaryMagic);
  StoreLe<std::uint32_t>(&buf_, 0);
  count_ = 0;
  return out;
}

std::string EncodeMetricsBinary(const MetricBatch& batch) {
  MetricsBinaryWriter w;
  for (const auto& s : batch.series) {
    w.AddSeries(s.name, s.values, s.steps, s.timestamps);
  }
  return w.Finish();
}

// ---------------------------------------------------------------------------------------------
// JSON.

void AppendJsonDouble(std::string* out, double v) {
  if (std::isnan(v)) {
    out->append("\"NaN\"");
  } else if (std::isinf(v)) {
    out->append(v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  } else if (v == 0 && std::signbit(v)) {
    out->append("-0.0");  // "-0" would parse as the integer 0.
  } else {
    char b[32];
    auto r = std::to_chars(b, b + sizeof b, v);
    out->append(b, r.ptr);
  }
}

namespace {

void AppendInt(std::string* out, std::int64_t v) {
  char b[24];
  auto r = std::to_chars(b, b + sizeof b, v);
  out->append(b, r.ptr);
}

using Json = nlohmann::json;

// Streaming (SAX) decoder for {"series": [{"name", "values", "steps", "timestamps"}, ...]}.
// Numbers go straight into the columns; the only allocations are per series and per key.
class JsonHandler : public nlohmann::json_sax<Json> {
 public:
  enum class Column { kNone, kValues, kSteps, kTimestamps };

  explicit JsonHandler(size_t max_series) : max_series_(max_series) {}

  bool null() override { return Scalar("null"); }
  bool boolean(bool) override { return Scalar("a boolean"); }
  bool number_integer(number_integer_t v) override {
    if (state_ != State::kColumn) return Scalar("a number");
    if (column_ == Column::kValues) {
      Cur().values.push_back(static_cast<double>(v));
      return true;
    }
    ColumnVec().push_back(v);
    return true;
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (state_ != State::kColumn) return Scalar("a number");
    if (column_ == Column::kValues) {
      Cur().values.push_back(static_cast<double>(v));
      return true;
    }
    if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return PointError("the " + ColumnName() + " value " + std::to_string(v) +
                        " does not fit in a signed 64-bit integer");
    }
    ColumnVec().push_back(static_cast<std::int64_t>(v));
    return true;
  }
  bool number_float(number_float_t v, const string_t& text) override {
    if (state_ != State::kColumn) return Scalar("a number");
    if (column_ == Column::kValues) {
      Cur().values.push_back(v);
      return true;
    }
    // 2^63 is exactly representable; integral doubles below it convert exactly.
    if (!(v == std::floor(v) && v >= -9223372036854775808.0 && v < 9223372036854775808.0)) {
      return PointError("the " + ColumnName() + " value " + text + " is not an integer");
    }
    ColumnVec().push_back(static_cast<std::int64_t>(v));
    return true;
  }
  bool string(string_t& v) override {
    if (state_ == State::kSeriesObject && key_ == Key::kName) {
      Cur().name = std::move(v);
      have_name_ = true;
      state_ = State::kSeriesObject;
      key_ = Key::kNone;
      return true;
    }
    if (state_ == State::kColumn && column_ == Column::kValues) {
      double d;
      if (v == "NaN") {
        d = std::numeric_limits<double>::quiet_NaN();
      } else if (v == "Infinity") {
        d = std::numeric_limits<double>::infinity();
      } else if (v == "-Infinity") {
        d = -std::numeric_limits<double>::infinity();
      } else {
        return PointError("the value \"" + v.substr(0, 32) +
                          "\" is not a number (non-finite values are \"NaN\", \"Infinity\", "
                          "\"-Infinity\")");
      }
      Cur().values.push_back(d);
      return true;
    }
    return Scalar("a string");
  }
  bool binary(binary_t&) override { return Scalar("binary data"); }

  bool start_object(std::size_t) override {
    switch (state_) {
      case State::kStart:
        state_ = State::kTop;
        return true;
      case State::kSeriesArray:
        if (batch_.series.size() == max_series_) {
          return Fail("the body has more than " + std::to_string(max_series_) +
                      " series; the limit is " + std::to_string(max_series_) +
                      " series per request");
        }
        batch_.series.emplace_back();
        have_name_ = false;
        seen_ = 0;
        state_ = State::kSeriesObject;
        key_ = Key::kNone;
        return true;
      default:
        return Scalar("an object");
    }
  }
  bool end_object() override {
    if (state_ == State::kTop) {
      if (!have_series_) return Fail("the body has no \"series\" field");
      state_ = State::kEnd;
      return true;
    }
    // End of one series: check it is complete and consistent.
    const size_t i = batch_.series.size() - 1;
    MetricSeries& s = Cur();
    if (!have_name_) return Fail("series " + std::to_string(i) + ": no \"name\"");
    if (Status st = ValidateMetricName(s.name); !st.ok()) {
      return Fail(SeriesLabel(i, s.name) + ": " + st.message());
    }
    if (s.values.empty()) {
      return Fail(SeriesLabel(i, s.name) + ": the series has no points (\"values\" is " +
                  ((seen_ & 1) ? "empty)" : "missing)"));
    }
    auto check = [&](const std::vector<std::int64_t>& col, int bit, std::string_view what) -> bool {
      if (!(seen_ & bit)) return true;
      if (col.size() == s.values.size()) return true;
      const size_t at = std::min(col.size(), s.values.size());
      return Fail(SeriesLabel(i, s.name) + ": point " + std::to_string(at) + ": \"" +
                  std::string(what) + "\" has " + std::to_string(col.size()) +
                  (col.size() == 1 ? " entry" : " entries") + " but \"values\" has " +
                  std::to_string(s.values.size()));
    };
    if (!check(s.steps, 2, "steps") || !check(s.timestamps, 4, "timestamps")) return false;
    state_ = State::kSeriesArray;
    return true;
  }
  bool start_array(std::size_t) override {
    if (state_ == State::kTop && key_ == Key::kSeries) {
      state_ = State::kSeriesArray;
      key_ = Key::kNone;
      return true;
    }
    if (state_ == State::kSeriesObject &&
        (key_ == Key::kValues || key_ == Key::kSteps || key_ == Key::kTimestamps)) {
      column_ = key_ == Key::kValues  ? Column::kValues
                : key_ == Key::kSteps ? Column::kSteps
                                      : Column::kTimestamps;
      state_ = State::kColumn;
      key_ = Key::kNone;
      return true;
    }
    return Scalar("an array");
  }
  bool end_array() override {
    if (state_ == State::kColumn) {
      state_ = State::kSeriesObject;
      column_ = Column::kNone;
      return true;
    }
    // End of the series array.
    state_ = State::kTop;
    return true;
  }
  bool key(string_t& k) override {
    if (state_ == State::kTop) {
      if (k != "series") return Fail("unknown field \"" + k.substr(0, 64) + "\" in the body");
      if (have_series_) return Fail("the body has \"series\" twice");
      have_series_ = true;
      key_ = Key::kSeries;
      return true;
    }
    // In a series object.
    int bit = 0;
    if (k == "name") {
      key_ = Key::kName, bit = 8;
    } else if (k == "values") {
      key_ = Key::kValues, bit = 1;
    } else if (k == "steps") {
      key_ = Key::kSteps, bit = 2;
    } else if (k == "timestamps") {
      key_ = Key::kTimestamps, bit = 4;
    } else {
      return Fail(SeriesPrefix() + ": unknown field \"" + k.substr(0, 64) +
                  "\" (expected name, values, steps, timestamps)");
    }
    if (seen_ & bit) return Fail(SeriesPrefix() + ": field \"" + k + "\" appears twice");
    seen_ |= bit;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    if (error_.empty()) {
      std::string what = ex.what();
      // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." → the tail.
      if (auto p = what.find("parse error"); p != std::string::npos) what = what.substr(p);
      error_ = "malformed JSON at byte " + std::to_string(position) + ": " + what;
    }
    return false;
  }

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  bool complete() const { return state_ == State::kEnd; }
  MetricBatch&& TakeBatch() { return std::move(batch_); }
  // Index of the series being parsed, and the point index within the current column.
  size_t series_index() const { return batch_.series.size() - 1; }

 private:
  enum class State { kStart, kTop, kSeriesArray, kSeriesObject, kColumn, kEnd };
  enum class Key { kNone, kSeries, kName, kValues, kSteps, kTimestamps };

  MetricSeries& Cur() { return batch_.series.back(); }
  std::vector<std::int64_t>& ColumnVec() {
    return column_ == Column::kSteps ? Cur().steps : Cur().timestamps;
  }
  std::string ColumnName() const {
    return column_ == Column::kValues  ? "values"
           : column_ == Column::kSteps ? "steps"
                                       : "timestamps";
  }
  size_t PointIndex() {
    return column_ == Column::kValues ? Cur().values.size() : ColumnVec().size();
  }
  std::string SeriesPrefix() {
    const size_t i = series_index();
    // The name may come after the error; DecodeMetricsJson fills it in then.
    pending_name_series_ = have_name_ ? SIZE_MAX : i;
    return have_name_ ? SeriesLabel(i, Cur().name) : "series " + std::to_string(i);
  }
  bool Fail(std::string msg) {
    error_ = std::move(msg);
    return false;
  }
  bool PointError(const std::string& msg) {
    const size_t point = PointIndex();
    return Fail(SeriesPrefix() + ": point " + std::to_string(point) + ": " + msg);
  }
  // A JSON value where it does not belong.
  bool Scalar(std::string_view what) {
    switch (state_) {
      case State::kColumn:
        if (column_ == Column::kValues) {
          return PointError("the value is " + std::string(what) +
                            ", not a number (non-finite values are \"NaN\", \"Infinity\", "
                            "\"-Infinity\")");
        }
        return PointError("the " + ColumnName() + " value is " + std::string(what) +
                          ", not an integer");
      case State::kSeriesObject: {
        static constexpr const char* kWant[] = {"",         "",         "a string",
                                                "an array", "an array", "an array"};
        static constexpr const char* kName[] = {"", "", "name", "values", "steps", "timestamps"};
        const int k = static_cast<int>(key_);
        return Fail(SeriesPrefix() + ": \"" + kName[k] + "\" is " + std::string(what) +
                    ", expected " + kWant[k]);
      }
      case State::kSeriesArray:
        return Fail("series " + std::to_string(batch_.series.size()) + " is " + std::string(what) +
                    ", expected an object");
      case State::kTop:
        return Fail("\"series\" is " + std::string(what) + ", expected an array");
      default:
        return Fail("the body is " + std::string(what) + ", expected an object");
    }
  }

 public:
  // Set when an error message was built before the series' name was known.
  size_t pending_name_series_ = SIZE_MAX;

 private:
  const size_t max_series_;
  State state_ = State::kStart;
  Key key_ = Key::kNone;
  Column column_ = Column::kNone;
  MetricBatch batch_;
  bool have_series_ = false;
  bool have_name_ = false;
  int seen_ = 0;
  std::string error_;
};

// Finds the "name" of series `index` in a second streaming pass, for an error found before the
// name was read. Keeps nothing but that name: memory does not grow with the body.
class SeriesNameFinder : public nlohmann::json_sax<Json> {
 public:
  explicit SeriesNameFinder(size_t index) : index_(index) {}

  bool null() override { return Value(); }
  bool boolean(bool) override { return Value(); }
  bool number_integer(number_integer_t) override { return Value(); }
  bool number_unsigned(number_unsigned_t) override { return Value(); }
  bool number_float(number_float_t, const string_t&) override { return Value(); }
  bool binary(binary_t&) override { return Value(); }
  bool string(string_t& v) override {
    if (InTarget() && depth_ == 3 && key_is_name_) {
      name_ = v;
      return false;  // Found: stop reading.
    }
    return Value();
  }
  bool start_object(std::size_t) override { return Open(); }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t) override { return Open(); }
  bool end_array() override { return Close(); }
  bool key(string_t& k) override {
    if (depth_ == 1) in_series_ = k == "series";
    key_is_name_ = depth_ == 3 && k == "name";
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }

  const std::optional<std::string>& name() const { return name_; }

 private:
  // Depth 1: the top object; 2: the "series" array; 3: a series object.
  bool InTarget() const { return in_series_ && element_ == index_ + 1; }
  bool Open() {
    if (depth_ == 2 && in_series_) ++element_;  // An element of "series", whatever its kind.
    ++depth_;
    key_is_name_ = false;
    return element_ <= index_ + 1;
  }
  bool Close() {
    --depth_;
    return !(depth_ == 2 && InTarget());  // Past the target series: no name there.
  }
  bool Value() {
    if (depth_ == 2 && in_series_) ++element_;
    key_is_name_ = false;
    return element_ <= index_ + 1;
  }

  const size_t index_;
  size_t depth_ = 0;
  size_t element_ = 0;  // Elements of the series array seen so far.
  bool in_series_ = false;
  bool key_is_name_ = false;
  std::optional<std::string> name_;
};

}  // namespace

StatusOr<MetricBatch> DecodeMetricsJson(std::string_view body, const MetricDecodeOptions& options) {
  TY_RETURN_IF_ERROR(CheckMetricsBodySize(body.size(), options.max_body_bytes));
  JsonHandler h(options.max_series);
  const bool ok = Json::sax_parse(body.begin(), body.end(), &h,
                                  nlohmann::detail::input_format_t::json, /*strict=*/true);
  if (!ok || h.failed() || !h.complete()) {
    std::string msg = h.failed() ? h.error() : "malformed JSON: the body is incomplete";
    // An error found before the series' "name": look the name up in a DOM parse (error path
    // only) so the message names the series as documented.
    if (h.pending_name_series_ != SIZE_MAX) {
      const size_t i = h.pending_name_series_;
      SeriesNameFinder finder(i);
      (void)Json::sax_parse(body.begin(), body.end(), &finder,
                            nlohmann::detail::input_format_t::json, /*strict=*/false);
      const std::string plain = "series " + std::to_string(i);
      if (finder.name() && msg.compare(0, plain.size(), plain) == 0) {
        msg = SeriesLabel(i, *finder.name()) + msg.substr(plain.size());
      }
    }
    return InvalidArgument(std::move(msg));
  }
  return h.TakeBatch();
}

StatusOr<MetricBatch> DecodeMetricsBody(std::string_view content_type, std::string_view body,
                                        const MetricDecodeOptions& options) {
  std::string type(content_type.substr(0, content_type.find(';')));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.pop_back();
  size_t lead = 0;
  while (lead < type.size() && (type[lead] == ' ' || type[lead] == '\t')) ++lead;
  type.erase(0, lead);
  for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (type == kMetricsBinaryContentType) return DecodeMetricsBinary(body, options);
  if (type == "application/json") return DecodeMetricsJson(body, options);
  return InvalidArgument("unsupported Content-Type \"" + std::string(content_type.substr(0, 100)) +
                         "\" for metrics; use " + std::string(kMetricsBinaryContentType) +
                         " or application/json");
}

std::string EncodeMetricsJson(const MetricBatch& batch) {
  std::string out = "{\"series\":[";
  for (size_t i = 0; i < batch.series.size(); ++i) {
    const auto& s = batch.series[i];
    if (i) out += ',';
    out += "{\"name\":";
    out += Json(s.name).dump();
    out += ",\"values\":[";
    for (size_t k = 0; k < s.values.size(); ++k) {
      if (k) out += ',';
      AppendJsonDouble(&out, s.values[k]);
    }
    out += ']';
    auto ints = [&](std::string_view key, const std::vector<std::int64_t>& col) {
      if (col.empty()) return;
      out += ",\"";
      out += key;
      out += "\":[";
      for (size_t k = 0; k < col.size(); ++k) {
        if (k) out += ',';
        AppendInt(&out, col[k]);
      }
      out += ']';
    };
    ints("steps", s.steps);
    ints("timestamps", s.timestamps);
    out += '}';
  }
  out += "]}";
  return out;
}

}  // namespace trainyard::tracking
