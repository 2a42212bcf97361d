#include "trainyard/spec/spec_internal.h"

#include <yaml-cpp/anchor.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/emitterstyle.h>
#include <yaml-cpp/eventhandler.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <exception>
#include <set>
#include <sstream>
#include <utility>

#include "trainyard/common/util.h"

namespace trainyard::spec::internal {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxQuotedValue = 60;

// Levenshtein distance, for "did you mean" hints on unknown keys.
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + cost});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Walks every mapping of a document once (aliases share nodes; a set of visited collections
// keeps a document full of aliases from being walked exponentially often).
class DuplicateKeyChecker {
 public:
  explicit DuplicateKeyChecker(const SourceFile& file) : file_(file) {}

  Status Check(const YAML::Node& node) {
    if (!node.IsMap() && !node.IsSequence()) return Status::Ok();
    auto id = std::make_pair(node.Mark().pos, static_cast<int>(node.Type()));
    if (!visited_.insert(id).second) return Status::Ok();
    if (node.IsSequence()) {
      for (const auto& item : node) TY_RETURN_IF_ERROR(Check(item));
      return Status::Ok();
    }
    std::map<std::string, YAML::Mark> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key = it->first;
      const YAML::Node value = it->second;
      if (key.IsScalar()) {
        auto [pos, inserted] = seen.emplace(key.Scalar(), key.Mark());
        if (!inserted) {
          return file_.ErrorAt(key.Mark(), "duplicate key '" + key.Scalar() +
                                               "' (first given at line " +
                                               std::to_string(pos->second.line + 1) + ")");
        }
      }
      TY_RETURN_IF_ERROR(Check(key));
      TY_RETURN_IF_ERROR(Check(value));
    }
    return Status::Ok();
  }

 private:
  const SourceFile& file_;
  std::set<std::pair<int, int>> visited_;
};

constexpr int kMaxDocuments = 1000;

// Records where a document starts and whether it holds anything but an implicit null.
class DocumentScan : public YAML::EventHandler {
 public:
  const YAML::Mark& start() const { return start_; }
  bool has_content() const { return has_content_; }
  void Reset() { has_content_ = false; }

  void OnDocumentStart(const YAML::Mark& mark) override { start_ = mark; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { has_content_ = true; }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    has_content_ = true;
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    has_content_ = true;
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    has_content_ = true;
  }
  void OnMapEnd() override {}

 private:
  YAML::Mark start_;
  bool has_content_ = false;
};

bool ParseDecimal(std::string_view text, std::int64_t* out) {
  if (text.empty()) return false;
  if (text[0] == '+') text.remove_prefix(1);
  if (text.empty() || text[0] == '+') return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

}  // namespace

SourceFile::SourceFile(std::string name, std::filesystem::path base_dir,
                       const ParseOptions& options)
    : name_(std::move(name)), base_dir_(std::move(base_dir)), options_(options) {}

Status SourceFile::ErrorAt(const YAML::Mark& mark, std::string_view message) const {
  int line = mark.line >= 0 ? mark.line + 1 : 1;
  int column = mark.column >= 0 ? mark.column + 1 : 1;
  return InvalidArgument(name_ + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " +
                         std::string(message));
}

fs::path SourceFile::Resolve(std::string_view path) const {
  fs::path joined = fs::path(path).is_absolute() ? fs::path(path) : base_dir_ / fs::path(path);
  fs::path normal = fs::absolute(joined).lexically_normal();
  if (normal.has_relative_path() && !normal.has_filename()) normal = normal.parent_path();
  return normal;
}

std::string SourceFile::DisplayNameOf(std::string_view path) const {
  if (fs::path(path).is_absolute()) return fs::path(path).lexically_normal().string();
  return (fs::path(name_).parent_path() / fs::path(path)).lexically_normal().string();
}

std::optional<std::string> SourceFile::GetEnv(const std::string& name) const {
  if (options_.getenv) return options_.getenv(name);
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

StatusOr<YAML::Node> LoadMappingDocument(const SourceFile& file, const std::string& text,
                                         std::string_view what) {
  // "a job file", "an environment file", "a conda environment file".
  const std::string kind =
      std::string(what.empty() || std::string_view("aeiou").find(what[0]) == std::string_view::npos
                      ? "a "
                      : "an ") +
      std::string(what) + " file";
  YAML::Node root;
  try {
    // First the document structure, from parser events. yaml-cpp 0.7's LoadAll never returns on
    // some inputs (a stray ',' outside flow collections: the parser reports an empty document
    // without consuming anything); watching the document start positions catches that.
    std::istringstream stream(text);
    YAML::Parser parser(stream);
    DocumentScan scan;
    int documents = 0;
    int last_start = -1;
    while (parser.HandleNextDocument(scan)) {
      const YAML::Mark start = scan.start();
      if (start.pos == last_start) {
        std::string at = start.pos >= 0 && static_cast<size_t>(start.pos) < text.size()
                             ? " '" + std::string(1, text[static_cast<size_t>(start.pos)]) + "'"
                             : "";
        return file.ErrorAt(start, "YAML syntax error: unexpected" + at +
                                       " (',' is only allowed inside [...] and {...})");
      }
      last_start = start.pos;
      ++documents;
      if (documents > 1 && scan.has_content()) {
        return file.ErrorAt(start, kind + " holds one YAML document; found another one here");
      }
      if (documents > kMaxDocuments) {
        return file.ErrorAt(start, "too many YAML documents in " + kind);
      }
      scan.Reset();
    }
    root = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    return file.ErrorAt(e.mark, "YAML syntax error: nested more than " +
                                    std::to_string(e.depth() - 1) + " levels deep");
  } catch (const YAML::Exception& e) {
    return file.ErrorAt(e.mark, "YAML syntax error: " + e.msg);
  } catch (const std::exception& e) {
    return file.ErrorAt(YAML::Mark(), std::string("cannot read YAML: ") + e.what());
  }
  if (root.IsNull()) {
    return file.ErrorAt(YAML::Mark(),
                        "the file is empty; " + kind + " is a mapping (key: value lines)");
  }
  if (!root.IsMap()) {
    return file.ErrorAt(root.Mark(), "the top level of " + kind +
                                         " must be a mapping (key: value lines), got " +
                                         Describe(root));
  }
  DuplicateKeyChecker checker(file);
  TY_RETURN_IF_ERROR(checker.Check(root));
  return root;
}

YAML::Mark Entry::mark() const { return value.IsNull() ? key_node.Mark() : value.Mark(); }

StatusOr<Mapping> Mapping::Read(const SourceFile& file, const YAML::Node& node,
                                std::string_view path, std::string_view context,
                                std::span<const std::string_view> allowed) {
  if (!node.IsMap()) {
    return file.ErrorAt(node.Mark(), "'" + std::string(path.empty() ? context : path) +
                                         "' must be a mapping (key: value), got " + Describe(node));
  }
  Mapping mapping;
  mapping.mark_ = node.Mark();
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    if (!key.IsScalar() || key.Scalar().empty()) {
      return file.ErrorAt(key.Mark(), "keys in " + std::string(context) +
                                          " must be non-empty strings, got " + Describe(key));
    }
    const std::string& name = key.Scalar();
    if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string message =
          "unknown key '" + name + "' in " + std::string(context) + "; allowed keys: ";
      std::string_view closest;
      size_t best = 3;  // hint only for close misspellings
      for (size_t i = 0; i < allowed.size(); ++i) {
        if (i > 0) message += ", ";
        message += allowed[i];
        size_t d = EditDistance(name, allowed[i]);
        if (d < best) {
          best = d;
          closest = allowed[i];
        }
      }
      if (!closest.empty()) message += "; did you mean '" + std::string(closest) + "'?";
      return file.ErrorAt(key.Mark(), message);
    }
    Entry entry;
    entry.key = name;
    entry.path = path.empty() ? name : std::string(path) + "." + name;
    entry.key_node = key;
    entry.value = value;
    mapping.entries_.push_back(std::move(entry));
  }
  return mapping;
}

const Entry* Mapping::Find(std::string_view key) const {
  for (const Entry& e : entries_) {
    if (e.key == key) return &e;
  }
  return nullptr;
}

std::string Describe(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  std::string text = node.Scalar();
  if (text.size() > kMaxQuotedValue) text = text.substr(0, kMaxQuotedValue) + "...";
  return "'" + text + "'";
}

StatusOr<std::string> ReadString(const SourceFile& file, const Entry& entry) {
  if (!entry.value.IsScalar()) {
    return file.ErrorAt(entry.mark(),
                        "'" + entry.path + "' must be a string, got " + Describe(entry.value));
  }
  return entry.value.Scalar();
}

StatusOr<std::string> ReadNonEmptyString(const SourceFile& file, const Entry& entry) {
  TY_ASSIGN_OR_RETURN(std::string text, ReadString(file, entry));
  if (Trim(text).empty()) return file.ErrorAt(entry.mark(), "'" + entry.path + "' is empty");
  return text;
}

StatusOr<std::int64_t> ReadInteger(const SourceFile& file, const Entry& entry, std::int64_t min,
                                   std::string_view description) {
  std::int64_t value = 0;
  if (!entry.value.IsScalar() || !ParseDecimal(entry.value.Scalar(), &value) || value < min) {
    return file.ErrorAt(entry.mark(), "'" + entry.path + "' must be " + std::string(description) +
                                          ", got " + Describe(entry.value));
  }
  return value;
}

StatusOr<bool> ReadBool(const SourceFile& file, const Entry& entry) {
  if (entry.value.IsScalar()) {
    const std::string& t = entry.value.Scalar();
    if (t == "true" || t == "True" || t == "TRUE") return true;
    if (t == "false" || t == "False" || t == "FALSE") return false;
  }
  return file.ErrorAt(entry.mark(),
                      "'" + entry.path + "' must be true or false, got " + Describe(entry.value));
}

StatusOr<std::vector<std::string>> ReadStringList(const SourceFile& file, const Entry& entry) {
  if (!entry.value.IsSequence()) {
    return file.ErrorAt(entry.mark(),
                        "'" + entry.path + "' must be a list, got " + Describe(entry.value));
  }
  std::vector<std::string> out;
  size_t index = 0;
  for (const auto& item : entry.value) {
    if (!item.IsScalar()) {
      return file.ErrorAt(item.Mark(), "'" + entry.path + "[" + std::to_string(index) +
                                           "]' must be a string, got " + Describe(item));
    }
    out.push_back(item.Scalar());
    ++index;
  }
  return out;
}

StatusOr<std::map<std::string, std::string>> ReadStringMap(const SourceFile& file,
                                                           const Entry& entry, bool env_names) {
  TY_ASSIGN_OR_RETURN(Mapping mapping, Mapping::Read(file, entry.value, entry.path, entry.path,
                                                     std::span<const std::string_view>()));
  std::map<std::string, std::string> out;
  for (const Entry& e : mapping.entries()) {
    if (env_names && !IsIdentifier(e.key)) {
      return file.ErrorAt(e.key_node.Mark(),
                          "'" + e.key + "' in " + entry.path +
                              " is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
    }
    if (e.value.IsNull()) {
      if (env_names) {
        return file.ErrorAt(e.mark(), "'" + e.path +
                                          "' has no value (write \"\" for an empty "
                                          "value)");
      }
      out[e.key] = "";
      continue;
    }
    if (!e.value.IsScalar()) {
      return file.ErrorAt(e.mark(), "'" + e.path + "' must be a string, number or boolean, got " +
                                        Describe(e.value));
    }
    out[e.key] = e.value.Scalar();
  }
  return out;
}

bool IsIdentifier(std::string_view name) {
  if (name.empty()) return false;
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (!alpha(name[0])) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return alpha(c) || (c >= '0' && c <= '9'); });
}

StatusOr<std::string> ResolveEnvReferences(const SourceFile& file, const Entry& entry,
                                           const std::string& text) {
  std::string out;
  size_t pos = 0;
  for (;;) {
    size_t open = text.find("${{", pos);
    if (open == std::string::npos) {
      out.append(text, pos, std::string::npos);
      return out;
    }
    out.append(text, pos, open - pos);
    size_t close = text.find("}}", open + 3);
    if (close == std::string::npos) {
      return file.ErrorAt(entry.mark(), "unterminated '${{' in " + entry.path);
    }
    std::string_view expression = Trim(std::string_view(text).substr(open + 3, close - open - 3));
    std::string_view name;
    if (StartsWith(expression, "env.")) name = expression.substr(4);
    if (!IsIdentifier(name)) {
      return file.ErrorAt(entry.mark(), "unsupported ${{...}} expression in " + entry.path +
                                            "; only ${{env.NAME}} is allowed there");
    }
    std::optional<std::string> value = file.GetEnv(std::string(name));
    if (!value) {
      return file.ErrorAt(entry.mark(), "environment variable " + std::string(name) +
                                            " is not set (needed by " + entry.path + ")");
    }
    out += *value;
    pos = close + 2;
  }
}

}  // namespace trainyard::spec::internal
