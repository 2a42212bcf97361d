#include "trainyard/docker/log_demux.h"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <string>

#include "trainyard/common/util.h"

namespace trainyard::docker {

namespace {

// A message's text beyond this is handed on before its end (with the position before it): only a
// malformed stream gets there, the engine splits long lines into messages of 16 KiB.
constexpr std::size_t kMaxMessage = 1 << 20;
// A timestamp is about 30 bytes; a frame without one within this many bytes is malformed.
constexpr std::size_t kMaxTimestamp = 64;

bool ParseInt(std::string_view s, int* out) {
  const std::optional<int> v = ParseWholeInteger<int>(s);
  if (v) *out = *v;
  return v.has_value();
}

}  // namespace

std::optional<std::pair<std::int64_t, std::int32_t>> ParseLogTime(std::string_view t) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)
  if (t.size() < 20 || t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' || t[16] != ':') {
    return std::nullopt;
  }
  std::tm tm{};
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!ParseInt(t.substr(0, 4), &year) || !ParseInt(t.substr(5, 2), &month) ||
      !ParseInt(t.substr(8, 2), &day) || !ParseInt(t.substr(11, 2), &hour) ||
      !ParseInt(t.substr(14, 2), &minute) || !ParseInt(t.substr(17, 2), &second)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return std::nullopt;
  }
  std::string_view rest = t.substr(19);
  std::int32_t nanos = 0;
  if (!rest.empty() && rest[0] == '.') {
    std::size_t digits = 1;
    while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
    if (digits == 1 || digits > 10) return std::nullopt;
    for (std::size_t i = 1; i < 10; ++i) {
      nanos = nanos * 10 + (i < digits ? rest[i] - '0' : 0);
    }
    rest.remove_prefix(digits);
  }
  std::int64_t offset_s = 0;
  if (rest == "Z") {
  } else if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':') {
    int oh = 0, om = 0;
    if (!ParseInt(rest.substr(1, 2), &oh) || !ParseInt(rest.substr(4, 2), &om)) {
      return std::nullopt;
    }
    offset_s = (oh * 3600 + om * 60) * (rest[0] == '+' ? 1 : -1);
  } else {
    return std::nullopt;
  }
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  const std::int64_t secs = static_cast<std::int64_t>(::timegm(&tm)) - offset_s;
  return std::make_pair(secs, nanos);
}

std::string LogPosition::ToString() const {
  if (time.empty()) return "";
  return time + " " + std::to_string(messages_at_time);
}

std::optional<LogPosition> LogPosition::Parse(std::string_view text) {
  if (text.empty()) return LogPosition{};
  const std::size_t sp = text.rfind(' ');
  if (sp == std::string_view::npos || sp == 0) return std::nullopt;
  LogPosition p;
  p.time = std::string(text.substr(0, sp));
  const std::string_view count = text.substr(sp + 1);
  const auto [end, ec] =
      std::from_chars(count.data(), count.data() + count.size(), p.messages_at_time);
  if (ec != std::errc() || end != count.data() + count.size()) return std::nullopt;
  return p;
}

TimestampedLog::TimestampedLog(const LogPosition& from, PositionedSink sink)
    : sink_(std::move(sink)), position_(from) {
  if (!from.time.empty()) {
    from_time_ = ParseLogTime(from.time);
    skip_at_from_ = from.messages_at_time;
  }
}

Status TimestampedLog::StartMessage() {
  const auto t = ParseLogTime(head_);
  if (!t) {
    return InvalidArgument("docker log stream: a message does not start with a timestamp (\"" +
                           head_.substr(0, 40) + "\")");
  }
  skipping_ = false;
  if (from_time_ && *t < *from_time_) {
    skipping_ = true;
  } else if (from_time_ && *t == *from_time_ && skip_at_from_ > 0) {
    skipping_ = true;
    --skip_at_from_;
  }
  if (!skipping_) {
    // The position only moves forward: stdout and stderr are stamped by separate copiers, so a
    // message can come after one with a later timestamp. Such a message is delivered but leaves
    // the position where it is (a resume from there would skip the later one's time anyway).
    const auto current = position_.time.empty() ? std::nullopt : ParseLogTime(position_.time);
    if (current && *current == *t) {
      ++position_.messages_at_time;
    } else if (!current || *t > *current) {
      position_.time = head_;
      position_.messages_at_time = 1;
    }
  }
  from_time_ = skipping_ ? from_time_ : std::nullopt;  // Past `from`: nothing more to skip.
  in_text_ = true;
  return Status::Ok();
}

Status TimestampedLog::Piece(std::string_view data, bool frame_end) {
  if (!in_text_) {
    const std::size_t sp = data.find(' ');
    const std::size_t take = sp == std::string_view::npos ? data.size() : sp;
    if (head_.size() + take > kMaxTimestamp) {
      return InvalidArgument("docker log stream: a message does not start with a timestamp");
    }
    head_.append(data.substr(0, take));
    if (sp == std::string_view::npos) {
      if (frame_end) {
        return InvalidArgument("docker log stream: a message has a timestamp and no text");
      }
      return Status::Ok();
    }
    data.remove_prefix(sp + 1);
    TY_RETURN_IF_ERROR(StartMessage());
  }
  if (!skipping_) {
    text_.append(data);
    if (text_.size() > kMaxMessage && !frame_end) {
      // Handed on before its end; a resume from before it would repeat it, never lose it.
      LogPosition before = position_;
      --before.messages_at_time;
      if (sink_) sink_(text_, before);
      text_.clear();
    }
  }
  if (frame_end) {
    if (!skipping_ && sink_) sink_(text_, position_);
    text_.clear();
    head_.clear();
    in_text_ = false;
    skipping_ = false;
  }
  return Status::Ok();
}

Status LogDemuxer::Feed(std::string_view data) {
  if (failed_) return InvalidArgument("docker log stream: input after a malformed frame header");
  while (!data.empty()) {
    if (remaining_ > 0) {
      size_t n = std::min<size_t>(remaining_, data.size());
      remaining_ -= static_cast<std::uint32_t>(n);  // First: the sink may ask AtFrameBoundary.
      sink_(stream_, data.substr(0, n));
      data.remove_prefix(n);
      continue;
    }
    size_t n = std::min<size_t>(sizeof(header_) - static_cast<size_t>(header_len_), data.size());
    std::copy_n(data.data(), n, header_ + header_len_);
    header_len_ += static_cast<int>(n);
    data.remove_prefix(n);
    if (header_len_ < static_cast<int>(sizeof(header_))) break;
    header_len_ = 0;
    if (header_[0] > 2 || header_[1] != 0 || header_[2] != 0 || header_[3] != 0) {
      failed_ = true;
      return InvalidArgument("docker log stream: malformed frame header (type byte " +
                             std::to_string(header_[0]) +
                             "); was the container created with a TTY?");
    }
    stream_ = static_cast<Stream>(header_[0]);
    remaining_ = (std::uint32_t{header_[4]} << 24) | (std::uint32_t{header_[5]} << 16) |
                 (std::uint32_t{header_[6]} << 8) | std::uint32_t{header_[7]};
  }
  return Status::Ok();
}

}  // namespace trainyard::docker
