#pragma once

// Writes JSON text straight into a string, for answers the API serves often (a page of runs):
// no document tree, no allocation per value. Strings are escaped as JSON requires; bytes that
// are not valid UTF-8 become U+FFFD, one per maximal invalid subpart (as nlohmann::json's
// dump with error_handler_t::replace does), so any text is written as valid JSON.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trainyard {

// Appends `s` as a JSON string literal (quotes included).
void AppendJsonString(std::string& out, std::string_view s);

class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  JsonWriter& BeginObject() { return Open('{'); }
  JsonWriter& EndObject() { return Close('}'); }
  JsonWriter& BeginArray() { return Open('['); }
  JsonWriter& EndArray() { return Close(']'); }
  // The key of the next value, inside an object.
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view v);
  JsonWriter& Int(std::int64_t v);
  JsonWriter& Null();
  // Key(key) then the value.
  JsonWriter& Field(std::string_view key, std::string_view v) { return Key(key).String(v); }
  JsonWriter& Field(std::string_view key, std::int64_t v) { return Key(key).Int(v); }

 private:
  JsonWriter& Open(char c);
  JsonWriter& Close(char c);
  void BeforeValue();

  std::string& out_;
  std::vector<bool> first_;  // per open object or array: no value written in it yet
  bool after_key_ = false;
};

}  // namespace trainyard
