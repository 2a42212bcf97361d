#include "trainyard/cas/manifest.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::cas {
namespace {

constexpr int kManifestVersion = 1;

bool PathLess(const ManifestEntry& a, const ManifestEntry& b) { return a.path < b.path; }

void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  size_t plain = 0;  // Start of the current run of bytes that need no escaping.
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c != '"' && c != '\\' && c >= 0x20) continue;
    out.append(s.data() + plain, i - plain);
    plain = i + 1;
    if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    }
  }
  out.append(s.data() + plain, s.size() - plain);
  out += '"';
}

// Writes `"key":"value"`, or `"key_b64":"<base64>"` when value is not valid UTF-8.
void AppendBytesField(std::string& out, std::string_view key, std::string_view value) {
  out += '"';
  out += key;
  if (IsValidUtf8(value)) {
    out += "\":";
    AppendJsonString(out, value);
  } else {
    out += "_b64\":";
    AppendJsonString(out, Base64Encode(value));
  }
}

std::string ModeString(std::uint32_t mode) {
  if (mode == 0644) return "0644";
  if (mode == 0755) return "0755";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode));
  return buf;
}

Status CheckPath(std::string_view path) {
  if (path.empty()) return InvalidArgument("empty path");
  if (path.find('\0') != std::string_view::npos) return InvalidArgument("path has a NUL byte");
  size_t start = 0;
  for (;;) {
    size_t slash = path.find('/', start);
    std::string_view part = path.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgument("path '" + PrintablePath(path) +
                             "' is not a clean relative path (empty, '.' or '..' component, or "
                             "a leading or trailing '/')");
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return Status::Ok();
}

// Reads "key" or "key_b64" from an entry object into *out.
Status ReadBytesField(const nlohmann::json& obj, const std::string& key, bool required,
                      std::string* out, size_t index) {
  const std::string b64_key = key + "_b64";
  const bool has_plain = obj.contains(key);
  const bool has_b64 = obj.contains(b64_key);
  const std::string where = "entry " + std::to_string(index) + ": ";
  if (has_plain && has_b64) {
    return InvalidArgument(where + "has both '" + key + "' and '" + b64_key + "'");
  }
  if (has_plain) {
    if (!obj[key].is_string()) return InvalidArgument(where + "'" + key + "' must be a string");
    *out = obj[key].get<std::string>();
    return Status::Ok();
  }
  if (has_b64) {
    if (!obj[b64_key].is_string() || !Base64Decode(obj[b64_key].get<std::string>(), out)) {
      return InvalidArgument(where + "'" + b64_key + "' must be a base64 string");
    }
    return Status::Ok();
  }
  if (required) return InvalidArgument(where + "'" + key + "' is missing");
  return Status::Ok();
}

StatusOr<ManifestEntry> ParseEntry(const nlohmann::json& obj, size_t index) {
  const std::string where = "entry " + std::to_string(index) + ": ";
  if (!obj.is_object()) return InvalidArgument(where + "must be an object");
  ManifestEntry e;
  TY_RETURN_IF_ERROR(ReadBytesField(obj, "path", true, &e.path, index));
  if (!obj.contains("type") || !obj["type"].is_string()) {
    return InvalidArgument(where + "'type' must be \"file\" or \"symlink\"");
  }
  const std::string type = obj["type"].get<std::string>();
  if (type == "file") {
    e.type = ManifestEntry::Type::kFile;
    if (!obj.contains("mode") || !obj["mode"].is_string()) {
      return InvalidArgument(where + "'mode' must be \"0644\" or \"0755\"");
    }
    const std::string mode = obj["mode"].get<std::string>();
    if (mode == "0644") {
      e.mode = 0644;
    } else if (mode == "0755") {
      e.mode = 0755;
    } else {
      return InvalidArgument(where + "'mode' must be \"0644\" or \"0755\", not \"" + mode + "\"");
    }
    if (!obj.contains("size") || !obj["size"].is_number_unsigned()) {
      return InvalidArgument(where + "'size' must be a non-negative integer");
    }
    e.size = obj["size"].get<std::uint64_t>();
    if (!obj.contains("digest") || !obj["digest"].is_string()) {
      return InvalidArgument(where + "'digest' must be a string");
    }
    e.digest = obj["digest"].get<std::string>();
  } else if (type == "symlink") {
    e.type = ManifestEntry::Type::kSymlink;
    e.mode = 0;
    TY_RETURN_IF_ERROR(ReadBytesField(obj, "target", true, &e.link_target, index));
  } else {
    return InvalidArgument(where + "'type' must be \"file\" or \"symlink\", not \"" + type + "\"");
  }
  return e;
}

}  // namespace

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    std::uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return false;
    if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return false;
    i += len;
  }
  return true;
}

std::string PrintablePath(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 1;
    if (c >= 0x80) {
      // Keep a whole valid UTF-8 sequence; escape a byte that does not start one.
      len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      if (i + len > s.size() || !IsValidUtf8(s.substr(i, len))) len = 0;
    }
    if (len == 0 || c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
      ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

bool SymlinkStaysInside(std::string_view link_path, std::string_view target) {
  if (target.empty() || target[0] == '/') return false;
  // Depth of the folder holding the link.
  long depth = static_cast<long>(std::count(link_path.begin(), link_path.end(), '/'));
  size_t start = 0;
  for (;;) {
    size_t slash = target.find('/', start);
    std::string_view part = target.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part == "..") {
      if (--depth < 0) return false;
    } else if (!part.empty() && part != ".") {
      ++depth;
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return true;
}

std::string Manifest::ToJson() const {
  const std::vector<ManifestEntry>* list = &entries;
  std::vector<ManifestEntry> sorted;
  if (!std::is_sorted(entries.begin(), entries.end(), PathLess)) {
    sorted = entries;
    std::sort(sorted.begin(), sorted.end(), PathLess);
    list = &sorted;
  }
  std::string out;
  out.reserve(64 + list->size() * 160);
  out += "{\"version\":";
  out += std::to_string(kManifestVersion);
  out += ",\"entries\":[";
  bool first = true;
  for (const ManifestEntry& e : *list) {
    if (!first) out += ',';
    first = false;
    out += '{';
    AppendBytesField(out, "path", e.path);
    if (e.type == ManifestEntry::Type::kFile) {
      out += ",\"type\":\"file\",\"mode\":\"";
      out += ModeString(e.mode);
      out += "\",\"size\":";
      out += std::to_string(e.size);
      out += ",\"digest\":";
      AppendJsonString(out, e.digest);
    } else {
      out += ",\"type\":\"symlink\",";
      AppendBytesField(out, "target", e.link_target);
    }
    out += '}';
  }
  out += "]}";
  return out;
}

std::string Manifest::Id() const { return Sha256Hex(ToJson()); }

Manifest Manifest::OneFile(std::string path, std::string digest, std::uint64_t size,
                           std::uint32_t mode) {
  ManifestEntry e;
  e.path = std::move(path);
  e.digest = std::move(digest);
  e.size = size;
  e.mode = mode;
  Manifest m;
  m.entries.push_back(std::move(e));
  return m;
}

const ManifestEntry* Manifest::FindFile(std::string_view path) const {
  for (const ManifestEntry& e : entries) {
    if (e.path == path && e.type == ManifestEntry::Type::kFile) return &e;
  }
  return nullptr;
}

std::uint64_t Manifest::TotalBytes() const {
  std::uint64_t total = 0;
  for (const ManifestEntry& e : entries) {
    if (e.type != ManifestEntry::Type::kFile) continue;
    if (e.size > std::numeric_limits<std::uint64_t>::max() - total) {
      return std::numeric_limits<std::uint64_t>::max();
    }
    total += e.size;
  }
  return total;
}

StatusOr<Manifest> Manifest::FromJson(std::string_view json) {
  // nlohmann::json throws on some misuse; keep its exceptions inside this function.
  try {
    nlohmann::json doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return InvalidArgument("manifest is not valid JSON");
    if (!doc.is_object()) return InvalidArgument("manifest must be a JSON object");
    if (!doc.contains("version") || !doc["version"].is_number_integer() ||
        doc["version"].get<std::int64_t>() != kManifestVersion) {
      return InvalidArgument("manifest 'version' must be " + std::to_string(kManifestVersion));
    }
    if (!doc.contains("entries") || !doc["entries"].is_array()) {
      return InvalidArgument("manifest 'entries' must be an array");
    }
    Manifest m;
    const nlohmann::json& list = doc["entries"];
    m.entries.reserve(list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      TY_ASSIGN_OR_RETURN(ManifestEntry e, ParseEntry(list[i], i));
      m.entries.push_back(std::move(e));
    }
    TY_RETURN_IF_ERROR(m.Validate());
    return m;
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("manifest: ") + e.what());
  }
}

namespace {

// Resolves the symlink at `link_path` the way the kernel will once the snapshot is
// materialised, following the snapshot's other links on the way: false when the walk climbs
// above the root or follows more than 40 links.
bool ChainStaysInside(const std::map<std::string_view, std::string_view>& links,
                      std::string_view link_path) {
  constexpr int kMaxHops = 40;
  std::vector<std::string> cur;  // the resolved folder so far, as components below the root
  for (std::size_t start = 0, slash; (slash = link_path.find('/', start)) != std::string::npos;
       start = slash + 1) {
    cur.emplace_back(link_path.substr(start, slash - start));
  }
  std::deque<std::string> pending;
  auto push_front = [&](std::string_view target) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (;;) {
      const std::size_t slash = target.find('/', start);
      parts.emplace_back(target.substr(
          start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
      if (slash == std::string_view::npos) break;
      start = slash + 1;
    }
    pending.insert(pending.begin(), parts.begin(), parts.end());
  };
  push_front(links.at(link_path));
  int hops = 1;
  std::string joined;
  while (!pending.empty()) {
    std::string part = std::move(pending.front());
    pending.pop_front();
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (cur.empty()) return false;
      cur.pop_back();
      continue;
    }
    cur.push_back(std::move(part));
    joined.clear();
    for (const std::string& c : cur) joined += (joined.empty() ? "" : "/") + c;
    auto it = links.find(joined);
    if (it == links.end()) continue;
    if (++hops > kMaxHops || it->second.empty() || it->second[0] == '/') return false;
    cur.pop_back();  // a link resolves from the folder that holds it
    push_front(it->second);
  }
  return true;
}

}  // namespace

Status Manifest::Validate() const {
  std::set<std::string_view> folders;
  for (size_t i = 0; i < entries.size(); ++i) {
    const ManifestEntry& e = entries[i];
    if (Status s = CheckPath(e.path); !s.ok()) {
      return InvalidArgument("entry " + std::to_string(i) + ": " + s.message());
    }
    if (i > 0 && !(entries[i - 1].path < e.path)) {
      return InvalidArgument("entries are not sorted by path or repeat one: '" +
                             PrintablePath(entries[i - 1].path) + "' then '" +
                             PrintablePath(e.path) + "'");
    }
    if (e.type == ManifestEntry::Type::kFile) {
      if (!IsSha256Hex(e.digest)) {
        return InvalidArgument("file '" + PrintablePath(e.path) + "': digest '" + e.digest +
                               "' is not 64 lower-case hex digits");
      }
      if (e.mode != 0644 && e.mode != 0755) {
        return InvalidArgument("file '" + PrintablePath(e.path) + "': mode must be 0644 or 0755");
      }
    } else {
      if (e.link_target.find('\0') != std::string::npos ||
          !SymlinkStaysInside(e.path, e.link_target)) {
        return InvalidArgument("symlink '" + PrintablePath(e.path) + "' -> '" +
                               PrintablePath(e.link_target) + "' leaves the snapshot");
      }
    }
    for (size_t slash = e.path.find('/'); slash != std::string::npos;
         slash = e.path.find('/', slash + 1)) {
      folders.insert(std::string_view(e.path).substr(0, slash));
    }
  }
  std::map<std::string_view, std::string_view> links;
  for (const ManifestEntry& e : entries) {
    if (folders.count(e.path) != 0) {
      return InvalidArgument("'" + PrintablePath(e.path) +
                             "' is both a file or symlink and a folder holding other entries");
    }
    if (e.type == ManifestEntry::Type::kSymlink) links.emplace(e.path, e.link_target);
  }
  // Each link stays inside on its own (above); as a chain through the others it must too.
  for (const auto& [path, target] : links) {
    if (!ChainStaysInside(links, path)) {
      return InvalidArgument("symlink '" + PrintablePath(path) + "' -> '" + PrintablePath(target) +
                             "' leaves the snapshot through the snapshot's other links (or "
                             "follows more than 40 of them)");
    }
  }
  return Status::Ok();
}

}  // namespace trainyard::cas
