#include "trainyard/docker/json_messages.h"

#include "trainyard/common/util.h"

namespace trainyard::docker {

using json = nlohmann::json;

std::string JsonString(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

void LineSplitter::Feed(std::string_view data, const OnLine& on_line) {
  while (!data.empty()) {
    const std::size_t nl = data.find('\n');
    const std::size_t room = kMaxLine - partial_.size();
    if (nl == std::string_view::npos || nl > room) {
      if (data.size() < room) {
        partial_.append(data);
        return;
      }
      partial_.append(data.substr(0, room));  // A line this long goes on in pieces.
      data.remove_prefix(room);
      on_line(std::string_view(partial_));
      partial_.clear();
      continue;
    }
    partial_.append(data.substr(0, nl));
    data.remove_prefix(nl + 1);
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    on_line(std::string_view(partial_));
    partial_.clear();
  }
}

void LineSplitter::Flush(const OnLine& on_line) {
  if (partial_.empty()) return;
  if (partial_.back() == '\r') partial_.pop_back();
  on_line(std::string_view(partial_));
  partial_.clear();
}

void JsonMessageStream::Feed(std::string_view data) {
  lines_.Feed(data, [this](std::string_view line) { OnLine(line); });
}

void JsonMessageStream::Finish() {
  lines_.Flush([this](std::string_view line) { OnLine(line); });
  stream_lines_.Flush([this](std::string_view line) { Emit(line); });
}

void JsonMessageStream::Emit(std::string_view text) {
  if (!on_text_) return;
  std::string line(text);
  for (const std::string& s : secrets_) line = Redact(std::move(line), s);
  on_text_(line);
}

void JsonMessageStream::OnLine(std::string_view line) {
  if (Trim(line).empty()) return;
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    Emit(line);
    return;
  }
  std::string error;
  if (auto detail = j.find("errorDetail"); detail != j.end()) {
    error = JsonString(*detail, "message");
  }
  if (error.empty()) error = JsonString(j, "error");
  if (!error.empty() || j.contains("error") || j.contains("errorDetail")) {
    if (!failed_) {
      failed_ = true;
      error_ = error.empty() ? std::string(line) : error;
      for (const std::string& s : secrets_) error_ = Redact(std::move(error_), s);
    }
    return;
  }
  if (auto stream = j.find("stream"); stream != j.end() && stream->is_string()) {
    stream_lines_.Feed(stream->get_ref<const std::string&>(),
                       [this](std::string_view l) { Emit(l); });
    return;
  }
  const std::string status = JsonString(j, "status");
  if (status.empty()) return;  // "aux" and other bookkeeping
  const std::string id = JsonString(j, "id");
  const std::string progress = JsonString(j, "progress");
  std::string out = id.empty() ? status : id + ": " + status;
  if (!progress.empty()) out += " " + progress;
  Emit(out);
}

}  // namespace trainyard::docker
