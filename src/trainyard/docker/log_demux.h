#pragma once

// Docker's multiplexed log stream (containers created without a TTY): each frame is an 8-byte
// header — stream type (0 stdin, 1 stdout, 2 stderr), three zero bytes, big-endian uint32 payload
// size — followed by the payload.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "trainyard/common/status.h"
#include "trainyard/docker/engine.h"

namespace trainyard::docker {

// The engine's timestamp "2026-12-06T18:32:09.123456789Z" (or with a "+HH:MM" offset) as
// (seconds since the epoch, nanoseconds); nullopt when malformed.
std::optional<std::pair<std::int64_t, std::int32_t>> ParseLogTime(std::string_view time);

// Follows the messages of a log stream asked for with timestamps=1 ("TIME TEXT" per frame):
// strips the timestamp, skips what lies at or before `from`, and hands the text of each
// message to `sink` with the position after it. Feed it the demultiplexed pieces of each frame
// in order, with whether the piece ends its frame.
class TimestampedLog {
 public:
  TimestampedLog(const LogPosition& from, PositionedSink sink);
  // InvalidArgument when a frame does not start with a timestamp.
  Status Piece(std::string_view data, bool frame_end);

 private:
  Status StartMessage();

  PositionedSink sink_;
  std::optional<std::pair<std::int64_t, std::int32_t>> from_time_;
  std::uint64_t skip_at_from_ = 0;  // messages at exactly from_time_ still to skip
  LogPosition position_;
  std::string head_;       // The start of a frame until its timestamp is complete.
  bool in_text_ = false;   // Past the timestamp of the current frame.
  bool skipping_ = false;  // The current frame was delivered before.
  std::string text_;       // The current message's text, delivered at its end.
};

// Splits the stream back into payload bytes, fed in arbitrary chunks (a header or a payload may
// be cut anywhere between two chunks). Payload bytes are handed on as soon as they arrive, so one
// frame may reach the sink in several pieces. Not thread-safe; one instance per stream.
class LogDemuxer {
 public:
  enum class Stream { kStdin = 0, kStdout = 1, kStderr = 2 };
  using Sink = std::function<void(Stream stream, std::string_view payload)>;

  explicit LogDemuxer(Sink sink) : sink_(std::move(sink)) {}

  // Consumes `data`. InvalidArgument when a header is malformed (unknown stream type or non-zero
  // padding); the demuxer then refuses further input.
  Status Feed(std::string_view data);

  // True when the input so far ended exactly at a frame boundary. Asked from inside the sink:
  // whether the piece it is given ends its frame.
  bool AtFrameBoundary() const { return header_len_ == 0 && remaining_ == 0; }

 private:
  Sink sink_;
  unsigned char header_[8] = {};
  int header_len_ = 0;           // bytes of the current header seen so far
  std::uint32_t remaining_ = 0;  // payload bytes of the current frame still to come
  Stream stream_ = Stream::kStdout;
  bool failed_ = false;
};

}  // namespace trainyard::docker
