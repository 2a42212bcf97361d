#pragma once

// Internals shared by the spec parsers (not part of the module's contract; include only from
// src/trainyard/spec/*.cc and the module's tests): one YAML document loaded with duplicate-key
// detection, "FILE:LINE:COL: message" errors, and typed reads of mappings and scalars that name
// the offending key and value.

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/spec/spec.h"

namespace trainyard::spec::internal {

// One YAML file being parsed: the name used in messages, the folder its relative paths are
// resolved against, and the parse options. Borrows `options`, which must outlive it.
class SourceFile {
 public:
  SourceFile(std::string name, std::filesystem::path base_dir, const ParseOptions& options);

  const std::string& name() const { return name_; }
  const std::filesystem::path& base_dir() const { return base_dir_; }
  const ParseOptions& options() const { return options_; }

  // InvalidArgument "NAME:LINE:COL: message"; `mark` is yaml-cpp's 0-based position.
  Status ErrorAt(const YAML::Mark& mark, std::string_view message) const;

  // An absolute, lexically normal path for `path` as written in this file (relative paths are
  // taken from base_dir()); never ends with a separator.
  std::filesystem::path Resolve(std::string_view path) const;

  // The name to use in messages for a file that this file names by `path`: the path joined to
  // this file's own folder as this file was named, so that messages read like the user's paths.
  std::string DisplayNameOf(std::string_view path) const;

  // options().getenv, or the process environment when that is empty.
  std::optional<std::string> GetEnv(const std::string& name) const;

 private:
  std::string name_;
  std::filesystem::path base_dir_;
  const ParseOptions& options_;
};

// Loads `text` as exactly one YAML document whose top level is a mapping. `what` names the
// document in messages ("job", "environment", "conda environment"). Syntax errors, an empty
// document, several documents, a top level that is not a mapping, and a key that appears twice in
// any mapping of the document are InvalidArgument with a location. yaml-cpp exceptions stop here.
StatusOr<YAML::Node> LoadMappingDocument(const SourceFile& file, const std::string& text,
                                         std::string_view what);

// One `key: value` of a mapping.
struct Entry {
  std::string key;
  std::string path;  // dotted path for messages, e.g. "limits.timeout"
  YAML::Node key_node;
  YAML::Node value;
  // Where the value is, or the key when the value is null (yaml-cpp marks an implicit null at
  // the next token, which may be on another line).
  YAML::Mark mark() const;
};

// A mapping whose keys are strings from an allowed list, in document order.
class Mapping {
 public:
  // Reads `node` as a mapping. `path` is the dotted path of the mapping itself ("" for a file's
  // top level) and prefixes the entries' paths; `context` names it in messages ("job",
  // "limits", "inputs.data"). `allowed` empty means any key. Errors: not a mapping, a key that is
  // not a string, an unknown key (naming the allowed ones).
  static StatusOr<Mapping> Read(const SourceFile& file, const YAML::Node& node,
                                std::string_view path, std::string_view context,
                                std::span<const std::string_view> allowed);

  // The entry for `key`, or nullptr.
  const Entry* Find(std::string_view key) const;
  const std::vector<Entry>& entries() const { return entries_; }
  const YAML::Mark& mark() const { return mark_; }

 private:
  std::vector<Entry> entries_;
  YAML::Mark mark_;
};

// "'abc'" for a scalar (shortened when long), "a list", "a mapping", "nothing" for null.
std::string Describe(const YAML::Node& node);

// A scalar's text. Numbers and booleans are returned as written. Null, lists and mappings are
// errors ("'display_name' must be a string, got a list").
StatusOr<std::string> ReadString(const SourceFile& file, const Entry& entry);
// The same, and the text must not be empty or blank.
StatusOr<std::string> ReadNonEmptyString(const SourceFile& file, const Entry& entry);
// A decimal integer >= `min`; `description` completes "'PATH' must be ..." on error, e.g.
// "a positive integer (seconds)".
StatusOr<std::int64_t> ReadInteger(const SourceFile& file, const Entry& entry, std::int64_t min,
                                   std::string_view description);
// true/false (also True/TRUE/False/FALSE).
StatusOr<bool> ReadBool(const SourceFile& file, const Entry& entry);
// A list of scalars, each as text.
StatusOr<std::vector<std::string>> ReadStringList(const SourceFile& file, const Entry& entry);
// A mapping of string keys to scalars as text (numbers and booleans as written). With
// `env_names`, keys must be environment variable names and null values are errors; otherwise
// a null value is "".
StatusOr<std::map<std::string, std::string>> ReadStringMap(const SourceFile& file,
                                                           const Entry& entry, bool env_names);

// [A-Za-z_][A-Za-z0-9_]*: environment variable, input and output names.
bool IsIdentifier(std::string_view name);

// Parses an environment mapping: an environment file's top level (`path` "") or a job's inline
// `environment:` (`path` "environment"), with relative paths taken from `file`.
StatusOr<EnvironmentSpec> ParseEnvironmentNode(const SourceFile& file, const YAML::Node& node,
                                               std::string_view path);

// Reads and parses an environment file; `display_name` is used in messages.
StatusOr<EnvironmentSpec> ParseEnvironmentFileAs(const std::filesystem::path& path,
                                                 const std::string& display_name,
                                                 const ParseOptions& options);

// Replaces each `${{env.NAME}}` in `text` with the variable's value. `field` names the field
// in messages ("image_registry.password"); the text itself is never quoted in a message, as it
// may be a secret. Errors: an unset variable, any other `${{...}}` expression, an unterminated
// `${{`.
StatusOr<std::string> ResolveEnvReferences(const SourceFile& file, const Entry& entry,
                                           const std::string& text);

// A registry's `{address, username, password}` mapping (values may be `${{env.VAR}}`
// references), each one a non-empty string.
StatusOr<RegistryCredentials> ReadRegistry(const SourceFile& file, const Entry& entry);

}  // namespace trainyard::spec::internal
