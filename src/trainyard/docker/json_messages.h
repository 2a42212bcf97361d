#pragma once

// The newline-delimited JSON message stream the Docker engine answers image pulls, pushes and
// builds with: {"status", "id", "progress"}, {"stream"} (build output), {"error",
// "errorDetail"}, {"aux"}. Its text comes from registries and from what a build runs, so it is
// parsed with bounded memory.

#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/docker/engine.h"

namespace trainyard::docker {

// The string member `key` of a JSON object; "" when `j` is not an object or has no such string.
std::string JsonString(const nlohmann::json& j, const char* key);

// Cuts a byte stream into lines ("\n" or "\r\n" terminated) across chunk boundaries. A line
// longer than kMaxLine is handed on in pieces of that size, so memory stays bounded.
class LineSplitter {
 public:
  static constexpr std::size_t kMaxLine = 1 << 20;
  using OnLine = std::function<void(std::string_view line)>;

  void Feed(std::string_view data, const OnLine& on_line);
  // Hands on what is left of an unfinished last line.
  void Flush(const OnLine& on_line);

 private:
  std::string partial_;
};

// Reads the message stream: `on_text` gets build output lines (from "stream") and progress lines
// (from "status"); the first error is kept. `secrets` are redacted from all of them.
class JsonMessageStream {
 public:
  JsonMessageStream(const TextSink& on_text, std::vector<std::string> secrets)
      : on_text_(on_text), secrets_(std::move(secrets)) {}

  void Feed(std::string_view data);
  void Finish();

  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }

 private:
  void Emit(std::string_view text);
  void OnLine(std::string_view line);

  const TextSink& on_text_;
  std::vector<std::string> secrets_;
  LineSplitter lines_;
  LineSplitter stream_lines_;
  bool failed_ = false;
  std::string error_;
};

}  // namespace trainyard::docker
