#include "trainyard/tracking/entries.h"

#include <nlohmann/json.hpp>

#include "trainyard/tracking/metric_codec.h"

namespace trainyard::tracking {

namespace {

using Json = nlohmann::json;

bool IsNumberLike(const Json& v) {
  if (v.is_number()) return true;
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    return s == "NaN" || s == "Infinity" || s == "-Infinity";
  }
  return false;
}

std::string Kind(const Json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// JSON-quoted, cut at 64 bytes (a cut inside a UTF-8 sequence is replaced, not thrown on).
std::string Quote(std::string_view s) {
  return Json(std::string(s.substr(0, 64))).dump(-1, ' ', false, Json::error_handler_t::replace);
}

Status ValidateValue(EntryKind kind, const Json& v) {
  switch (kind) {
    case EntryKind::kList:
      if (!v.is_array()) return InvalidArgument("value: a list is an array, not " + Kind(v));
      for (size_t i = 0; i < v.size(); ++i) {
        if (!IsNumberLike(v[i])) {
          return InvalidArgument("value[" + std::to_string(i) + "] is " + Kind(v[i]) +
                                 ", not a number");
        }
      }
      return Status::Ok();
    case EntryKind::kRow:
      if (!v.is_object()) return InvalidArgument("value: a row is an object, not " + Kind(v));
      for (const auto& [k, x] : v.items()) {
        if (!IsNumberLike(x)) {
          return InvalidArgument("value[" + Quote(k) + "] is " + Kind(x) + ", not a number");
        }
      }
      return Status::Ok();
    case EntryKind::kTable: {
      if (!v.is_object()) return InvalidArgument("value: a table is an object, not " + Kind(v));
      std::optional<size_t> len;
      std::string first;
      for (const auto& [k, col] : v.items()) {
        if (!col.is_array()) {
          return InvalidArgument("value[" + Quote(k) + "] is " + Kind(col) +
                                 ", expected an array of numbers");
        }
        for (size_t i = 0; i < col.size(); ++i) {
          if (!IsNumberLike(col[i])) {
            return InvalidArgument("value[" + Quote(k) + "][" + std::to_string(i) + "] is " +
                                   Kind(col[i]) + ", not a number");
          }
        }
        if (!len) {
          len = col.size();
          first = k;
        } else if (*len != col.size()) {
          return InvalidArgument("value: column " + Quote(k) + " has " +
                                 std::to_string(col.size()) + " rows but column " + Quote(first) +
                                 " has " + std::to_string(*len));
        }
      }
      return Status::Ok();
    }
    case EntryKind::kImage: {
      if (!v.is_object() || !v.contains("path") || !v["path"].is_string() || v.size() != 1) {
        return InvalidArgument("value: an image is {\"path\": \"...\"}");
      }
      const auto& path = v["path"].get_ref<const std::string&>();
      if (path.empty() || path.front() == '/' || path.back() == '/') {
        return InvalidArgument("value: path " + Quote(path) + " is not a relative file path");
      }
      size_t start = 0;
      while (start <= path.size()) {
        size_t end = path.find('/', start);
        if (end == std::string::npos) end = path.size();
        std::string_view part(path.data() + start, end - start);
        if (part.empty() || part == "." || part == "..") {
          return InvalidArgument("value: path " + Quote(path) + " has an empty, . or .. part");
        }
        start = end + 1;
      }
      if (path.find('\0') != std::string::npos) {
        return InvalidArgument("value: path has a NUL byte");
      }
      return Status::Ok();
    }
  }
  return InvalidArgument("unknown kind");
}

}  // namespace

std::string_view EntryKindName(EntryKind kind) {
  switch (kind) {
    case EntryKind::kList:
      return "list";
    case EntryKind::kRow:
      return "row";
    case EntryKind::kTable:
      return "table";
    case EntryKind::kImage:
      return "image";
  }
  return "unknown";
}

std::optional<EntryKind> ParseEntryKind(std::string_view name) {
  for (EntryKind k : {EntryKind::kList, EntryKind::kRow, EntryKind::kTable, EntryKind::kImage}) {
    if (EntryKindName(k) == name) return k;
  }
  return std::nullopt;
}

Status ValidateEntry(const Entry& entry) {
  TY_RETURN_IF_ERROR(ValidateMetricName(entry.name));
  Json v = Json::parse(entry.value_json, nullptr, /*allow_exceptions=*/false);
  if (v.is_discarded()) return InvalidArgument("value: not valid JSON");
  return ValidateValue(entry.kind, v);
}

StatusOr<std::vector<Entry>> ParseEntriesJson(std::string_view body) {
  Json doc = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return InvalidArgument("malformed JSON in the entries body");
  if (!doc.is_object() || !doc.contains("entries") || !doc["entries"].is_array()) {
    return InvalidArgument("the body must be {\"entries\": [...]}");
  }
  std::vector<Entry> out;
  const Json& list = doc["entries"];
  out.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& e = list[i];
    std::string label = "entry " + std::to_string(i);
    if (!e.is_object()) return InvalidArgument(label + " is " + Kind(e) + ", not an object");
    Entry entry;
    if (!e.contains("name") || !e["name"].is_string()) {
      return InvalidArgument(label + ": \"name\" must be a string");
    }
    entry.name = e["name"].get<std::string>();
    label += " (" + Quote(entry.name) + ")";
    for (const auto& [k, x] : e.items()) {
      if (k != "name" && k != "kind" && k != "value" && k != "step" && k != "description" &&
          k != "timestamp") {
        return InvalidArgument(label + ": unknown field " + Quote(k));
      }
    }
    if (Status s = ValidateMetricName(entry.name); !s.ok()) {
      return InvalidArgument(label + ": " + s.message());
    }
    if (!e.contains("kind") || !e["kind"].is_string()) {
      return InvalidArgument(label + ": \"kind\" must be one of list, row, table, image");
    }
    auto kind = ParseEntryKind(e["kind"].get_ref<const std::string&>());
    if (!kind) {
      return InvalidArgument(label + ": unknown kind " + Quote(e["kind"].get<std::string>()) +
                             " (one of list, row, table, image)");
    }
    entry.kind = *kind;
    if (!e.contains("value")) return InvalidArgument(label + ": no \"value\"");
    if (Status s = ValidateValue(entry.kind, e["value"]); !s.ok()) {
      return InvalidArgument(label + ": " + s.message());
    }
    entry.value_json = e["value"].dump();
    auto int_field = [&](const char* key, std::optional<std::int64_t>* dst) -> Status {
      if (!e.contains(key) || e[key].is_null()) return Status::Ok();
      if (!e[key].is_number_integer()) {
        return InvalidArgument(label + ": \"" + key + "\" must be an integer");
      }
      if (e[key].is_number_unsigned() &&
          e[key].get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
        return InvalidArgument(label + ": \"" + key + "\" is out of range");
      }
      *dst = e[key].get<std::int64_t>();
      return Status::Ok();
    };
    TY_RETURN_IF_ERROR(int_field("step", &entry.step));
    TY_RETURN_IF_ERROR(int_field("timestamp", &entry.timestamp));
    if (e.contains("description") && !e["description"].is_null()) {
      if (!e["description"].is_string()) {
        return InvalidArgument(label + ": \"description\" must be a string");
      }
      entry.description = e["description"].get<std::string>();
    }
    out.push_back(std::move(entry));
  }
  return out;
}

std::string EntriesToJson(const std::vector<Entry>& entries) {
  std::string out = "{\"entries\":[";
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (i) out += ',';
    out += "{\"name\":" + Json(e.name).dump() + ",\"kind\":\"" +
           std::string(EntryKindName(e.kind)) + "\",\"value\":" + e.value_json;
    out += ",\"step\":" + (e.step ? std::to_string(*e.step) : std::string("null"));
    out += ",\"description\":" +
           Json(e.description).dump(-1, ' ', false, Json::error_handler_t::replace);
    out += ",\"timestamp\":" + (e.timestamp ? std::to_string(*e.timestamp) : "null") + "}";
  }
  out += "]}";
  return out;
}

}  // namespace trainyard::tracking
