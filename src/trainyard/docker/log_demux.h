#pragma once

// Docker's multiplexed log stream (containers created without a TTY): each frame is an 8-byte
// header — stream type (0 stdin, 1 stdout, 2 stderr), three zero bytes, big-endian uint32 payload
// size — followed by the payload.

#include <cstdint>
#include <functional>
#include <string_view>
#include <utility>

#include "trainyard/common/status.h"

namespace trainyard::docker {

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

  // True when the input so far ended exactly at a frame boundary.
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
