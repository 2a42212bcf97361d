#include "trainyard/tracking/chunk.h"

#include <bit>
#include <cmath>
#include <cstring>

namespace trainyard::tracking {

namespace {

constexpr std::uint8_t kVersion = 1;

inline std::uint64_t ZigZag(std::uint64_t v) {
  return (v << 1) ^ static_cast<std::uint64_t>(static_cast<std::int64_t>(v) >> 63);
}
inline std::uint64_t UnZigZag(std::uint64_t v) { return (v >> 1) ^ (~(v & 1) + 1); }

inline void PutVarint(std::string* out, std::uint64_t v) {
  char b[10];
  int n = 0;
  while (v >= 0x80) {
    b[n++] = static_cast<char>(v | 0x80);
    v >>= 7;
  }
  b[n++] = static_cast<char>(v);
  out->append(b, static_cast<size_t>(n));
}

// Bounds-checked reader over a byte range.
struct Reader {
  const unsigned char* p;
  const unsigned char* end;

  bool Varint(std::uint64_t* v) {
    std::uint64_t r = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p == end) return false;
      const std::uint64_t b = *p++;
      r |= (b & 0x7f) << shift;
      if (b < 0x80) {
        *v = r;
        return true;
      }
    }
    return false;
  }
};

Status Corrupt(std::string_view what) {
  return Internal("corrupt metric chunk: " + std::string(what));
}

void EncodeInts(std::span<const std::int64_t> col, std::string* out) {
  const size_t n = col.size();
  PutVarint(out, ZigZag(static_cast<std::uint64_t>(col[0])));
  if (n == 1) return;
  std::uint64_t prev = static_cast<std::uint64_t>(col[1]);
  std::uint64_t delta = prev - static_cast<std::uint64_t>(col[0]);
  PutVarint(out, ZigZag(delta));
  size_t i = 2;
  while (i < n) {
    const std::uint64_t cur = static_cast<std::uint64_t>(col[i]);
    const std::uint64_t d = cur - prev;
    const std::uint64_t dod = d - delta;
    if (dod != 0) {
      PutVarint(out, ZigZag(dod));
      prev = cur;
      delta = d;
      ++i;
      continue;
    }
    // A run of zero delta-of-deltas: the same delta repeats.
    size_t run = 1;
    prev = cur;
    ++i;
    while (i < n && static_cast<std::uint64_t>(col[i]) - prev == delta) {
      prev = static_cast<std::uint64_t>(col[i]);
      ++run;
      ++i;
    }
    out->push_back(0);
    PutVarint(out, run - 1);
  }
}

bool DecodeInts(Reader r, size_t n, std::int64_t* out) {
  std::uint64_t v;
  if (!r.Varint(&v)) return false;
  std::uint64_t prev = UnZigZag(v);
  out[0] = static_cast<std::int64_t>(prev);
  if (n == 1) return r.p == r.end;
  if (!r.Varint(&v)) return false;
  std::uint64_t delta = UnZigZag(v);
  prev += delta;
  out[1] = static_cast<std::int64_t>(prev);
  size_t i = 2;
  while (i < n) {
    if (!r.Varint(&v)) return false;
    if (v != 0) {
      delta += UnZigZag(v);
      prev += delta;
      out[i++] = static_cast<std::int64_t>(prev);
      continue;
    }
    std::uint64_t extra;
    if (!r.Varint(&extra) || extra >= n - i) return false;
    for (size_t k = 0; k <= extra; ++k) {
      prev += delta;
      out[i++] = static_cast<std::int64_t>(prev);
    }
  }
  return r.p == r.end;
}

// Most-significant-bit-first bit writer.
class BitWriter {
 public:
  explicit BitWriter(std::string* out) : out_(out) {}
  // Writes the low `bits` bits of v (bits in 1..64).
  void Write(std::uint64_t v, int bits) {
    if (bits < 64) v &= (std::uint64_t{1} << bits) - 1;
    const int free = 64 - used_;
    if (bits <= free) {
      acc_ |= bits == 64 ? v : v << (free - bits);
      used_ += bits;
      if (used_ == 64) Flush();
      return;
    }
    // Split: the high part fills the accumulator.
    const int rest = bits - free;
    acc_ |= v >> rest;
    used_ = 64;
    Flush();
    acc_ = v << (64 - rest);
    used_ = rest;
  }
  void Finish() {
    const int bytes = (used_ + 7) / 8;
    for (int i = 0; i < bytes; ++i) out_->push_back(static_cast<char>(acc_ >> (56 - 8 * i)));
    acc_ = 0;
    used_ = 0;
  }

 private:
  void Flush() {
    char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(acc_ >> (56 - 8 * i));
    out_->append(b, 8);
    acc_ = 0;
    used_ = 0;
  }
  std::string* out_;
  std::uint64_t acc_ = 0;
  int used_ = 0;
};

class BitReader {
 public:
  BitReader(const unsigned char* p, const unsigned char* end) : p_(p), end_(end) {}
  // Reads `bits` (1..64) bits; false past the end.
  bool Read(int bits, std::uint64_t* v) {
    if (avail_ < bits) {
      if (!Refill(bits)) return false;
    }
    if (bits == 64) {
      *v = acc_;
      acc_ = 0;
    } else {
      *v = acc_ >> (64 - bits);
      acc_ <<= bits;
    }
    avail_ -= bits;
    return true;
  }
  bool Bit(std::uint64_t* v) { return Read(1, v); }
  // Bytes not yet loaded plus whole unread bytes in the accumulator.
  bool AtEndWithPadding() const { return p_ == end_ && avail_ < 8; }

 private:
  // Loads bytes until at least `bits` bits are available (the accumulator holds <= 64).
  bool Refill(int bits) {
    if (bits > 56) {
      // Read in two steps to keep the accumulator arithmetic simple.
      return false;
    }
    while (avail_ <= 56 && p_ != end_) {
      acc_ |= static_cast<std::uint64_t>(*p_++) << (56 - avail_);
      avail_ += 8;
    }
    return avail_ >= bits;
  }
  const unsigned char* p_;
  const unsigned char* end_;
  std::uint64_t acc_ = 0;
  int avail_ = 0;
};

bool ReadWide(BitReader* r, int bits, std::uint64_t* v) {
  if (bits <= 32) return r->Read(bits, v);
  std::uint64_t hi, lo;
  if (!r->Read(bits - 32, &hi) || !r->Read(32, &lo)) return false;
  *v = (hi << 32) | lo;
  return true;
}

inline std::uint64_t Bits(double d) { return std::bit_cast<std::uint64_t>(d); }

void EncodeValues(std::span<const double> values, std::string* out) {
  BitWriter w(out);
  std::uint64_t prev = Bits(values[0]);
  w.Write(prev, 64);
  int prev_lead = -1, prev_trail = 0;  // No window yet.
  for (size_t i = 1; i < values.size(); ++i) {
    const std::uint64_t cur = Bits(values[i]);
    const std::uint64_t x = cur ^ prev;
    prev = cur;
    if (x == 0) {
      w.Write(0, 1);
      continue;
    }
    int lead = std::countl_zero(x);
    const int trail = std::countr_zero(x);
    if (lead > 31) lead = 31;
    if (prev_lead >= 0 && lead >= prev_lead && trail >= prev_trail) {
      // Control '10': the meaningful bits fit the previous window.
      w.Write(0b10, 2);
      const int len = 64 - prev_lead - prev_trail;
      w.Write(x >> prev_trail, len);
      continue;
    }
    // Control '11': 5 bits of leading zeros, 6 bits of length (64 stored as 0), the bits.
    const int len = 64 - lead - trail;
    w.Write(0b11, 2);
    w.Write(static_cast<std::uint64_t>(lead), 5);
    w.Write(static_cast<std::uint64_t>(len & 63), 6);
    w.Write(x >> trail, len);
    prev_lead = lead;
    prev_trail = trail;
  }
  w.Finish();
}

bool DecodeValues(const unsigned char* p, const unsigned char* end, size_t n, double* out) {
  BitReader r(p, end);
  std::uint64_t prev;
  if (!ReadWide(&r, 64, &prev)) return false;
  out[0] = std::bit_cast<double>(prev);
  int lead = -1, len = 0;
  for (size_t i = 1; i < n; ++i) {
    std::uint64_t b;
    if (!r.Bit(&b)) return false;
    if (b == 0) {
      out[i] = std::bit_cast<double>(prev);
      continue;
    }
    if (!r.Bit(&b)) return false;
    if (b == 1) {
      std::uint64_t l, m;
      if (!r.Read(5, &l) || !r.Read(6, &m)) return false;
      lead = static_cast<int>(l);
      len = m == 0 ? 64 : static_cast<int>(m);
      if (lead + len > 64) return false;
    } else if (lead < 0) {
      return false;
    }
    std::uint64_t bits;
    if (!ReadWide(&r, len, &bits)) return false;
    const int trail = 64 - lead - len;
    prev ^= trail >= 64 ? 0 : bits << trail;
    out[i] = std::bit_cast<double>(prev);
  }
  return r.AtEndWithPadding();
}

}  // namespace

ChunkSummary SummarizePoints(std::span<const std::int64_t> steps,
                             std::span<const std::int64_t> timestamps,
                             std::span<const double> values) {
  ChunkSummary s;
  const size_t n = values.size();
  s.count = n;
  s.first_step = steps[0];
  s.last_step = steps[n - 1];
  s.last_timestamp = timestamps[n - 1];
  s.last_value = values[n - 1];
  std::int64_t max_step = steps[0];
  for (size_t i = 1; i < n; ++i) max_step = std::max(max_step, steps[i]);
  s.max_step = max_step;
  double lo = 0, hi = 0;
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    const double v = values[i];
    if (std::isnan(v)) continue;
    if (!any) {
      lo = hi = v;
      any = true;
    } else {
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
  }
  if (any) {
    s.min = lo;
    s.max = hi;
  }
  return s;
}

void EncodeChunk(std::span<const std::int64_t> steps, std::span<const std::int64_t> timestamps,
                 std::span<const double> values, std::string* out) {
  const size_t n = values.size();
  out->push_back(static_cast<char>(kVersion));
  PutVarint(out, n);
  std::string col;
  col.reserve(n + 16);
  EncodeInts(steps, &col);
  PutVarint(out, col.size());
  out->append(col);
  col.clear();
  EncodeInts(timestamps, &col);
  PutVarint(out, col.size());
  out->append(col);
  EncodeValues(values, out);
}

StatusOr<std::uint64_t> ChunkPointCount(std::string_view data) {
  Reader r{reinterpret_cast<const unsigned char*>(data.data()),
           reinterpret_cast<const unsigned char*>(data.data() + data.size())};
  if (r.p == r.end || *r.p != kVersion) return Corrupt("unknown version");
  ++r.p;
  std::uint64_t n;
  if (!r.Varint(&n) || n == 0) return Corrupt("bad point count");
  return n;
}

Status DecodeChunk(std::string_view data, PointColumns* out) {
  Reader r{reinterpret_cast<const unsigned char*>(data.data()),
           reinterpret_cast<const unsigned char*>(data.data() + data.size())};
  if (r.p == r.end || *r.p != kVersion) return Corrupt("unknown version");
  ++r.p;
  std::uint64_t n;
  // A point takes at least one bit; refuse counts the data cannot hold.
  if (!r.Varint(&n) || n == 0 || n > data.size() * 8) return Corrupt("bad point count");
  const size_t base = out->size();
  out->steps.resize(base + n);
  out->timestamps.resize(base + n);
  out->values.resize(base + n);
  std::uint64_t len;
  if (!r.Varint(&len) || len > static_cast<std::uint64_t>(r.end - r.p)) {
    return Corrupt("bad steps length");
  }
  if (!DecodeInts(Reader{r.p, r.p + len}, n, out->steps.data() + base)) {
    return Corrupt("bad steps column");
  }
  r.p += len;
  if (!r.Varint(&len) || len > static_cast<std::uint64_t>(r.end - r.p)) {
    return Corrupt("bad timestamps length");
  }
  if (!DecodeInts(Reader{r.p, r.p + len}, n, out->timestamps.data() + base)) {
    return Corrupt("bad timestamps column");
  }
  r.p += len;
  if (!DecodeValues(r.p, r.end, n, out->values.data() + base)) {
    return Corrupt("bad values column");
  }
  return Status::Ok();
}

}  // namespace trainyard::tracking
