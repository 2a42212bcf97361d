// Environment files and inline environments: image | build | dockerfile, dependencies, registry.

#include <array>
#include <cctype>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/spec.h"
#include "trainyard/spec/spec_internal.h"

namespace trainyard::spec {
namespace internal {
namespace {

// clang-format off
constexpr std::array<std::string_view, 15> kEnvironmentKeys = {
    "$schema", "name", "version", "description", "image", "build", "dockerfile", "conda_file",
    "pip_requirements", "user_managed_dependencies", "environment_variables", "image_registry",
    "os_type", "platform", "tags"};
// clang-format on
constexpr std::array<std::string_view, 2> kBuildKeys = {"path", "dockerfile_path"};
constexpr std::array<std::string_view, 3> kRegistryKeys = {"address", "username", "password"};

// Refuses URLs and asset references where trainyard needs a local path.
Status CheckLocalPath(const SourceFile& file, const Entry& entry, std::string_view value,
                      std::string_view kind) {
  if (value.find("://") != std::string_view::npos || StartsWith(value, "azureml:")) {
    return file.ErrorAt(entry.mark(), "'" + entry.path + "' must be a local " + std::string(kind) +
                                          " path, got '" + std::string(value) + "'");
  }
  return Status::Ok();
}

// A regular file named by `entry`, resolved against the file's folder; errors name the key and
// the resolved path.
StatusOr<std::filesystem::path> ExistingFile(const SourceFile& file, const Entry& entry,
                                             const std::string& value) {
  TY_RETURN_IF_ERROR(CheckLocalPath(file, entry, value, "file"));
  std::filesystem::path resolved = file.Resolve(value);
  std::error_code ec;
  auto status = std::filesystem::status(resolved, ec);
  if (!std::filesystem::exists(status)) {
    return file.ErrorAt(entry.mark(),
                        "'" + entry.path + "': file " + resolved.string() + " does not exist");
  }
  if (!std::filesystem::is_regular_file(status)) {
    return file.ErrorAt(entry.mark(),
                        "'" + entry.path + "': " + resolved.string() + " is not a regular file");
  }
  return resolved;
}

StatusOr<std::string> ReadNamedFile(const SourceFile& file, const Entry& entry,
                                    const std::filesystem::path& path) {
  StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) {
    return file.ErrorAt(entry.mark(), "'" + entry.path + "': " + text.status().message());
  }
  return text;
}

// Why `image` is not a usable image reference, or "" when it is. Follows Docker's grammar
// loosely: [host[:port]/]path[:tag][@digest], path components lower-case.
std::string ImageReferenceProblem(std::string_view image) {
  for (char c : image) {
    if (std::isspace(static_cast<unsigned char>(c)) ||
        std::iscntrl(static_cast<unsigned char>(c))) {
      return "contains whitespace";
    }
  }
  std::string_view name = image;
  size_t at = name.find('@');
  if (at != std::string_view::npos) {
    std::string_view digest = name.substr(at + 1);
    size_t colon = digest.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == digest.size()) {
      return "the digest after '@' must look like sha256:<hex>";
    }
    name = name.substr(0, at);
  }
  size_t slash = name.rfind('/');
  size_t colon = name.find(':', slash == std::string_view::npos ? 0 : slash);
  if (colon != std::string_view::npos) {
    std::string_view tag = name.substr(colon + 1);
    if (tag.empty() || tag.size() > 128) return "the tag after ':' must have 1 to 128 characters";
    for (char c : tag) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') {
        return "the tag may only contain letters, digits, '_', '.' and '-'";
      }
    }
    name = name.substr(0, colon);
  }
  if (name.empty()) return "the repository name is empty";
  std::vector<std::string> parts = Split(name, '/');
  size_t first = 0;
  if (parts.size() > 1 &&
      (parts[0].find_first_of(".:") != std::string::npos || parts[0] == "localhost")) {
    first = 1;  // a registry host, which may have upper case and a port
  }
  for (size_t i = first; i < parts.size(); ++i) {
    if (parts[i].empty()) return "the repository name has an empty component";
    for (char c : parts[i]) {
      if (c >= 'A' && c <= 'Z') return "repository names must be lower-case";
      if (!(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '.' && c != '_' && c != '-') {
        return "the repository name may only contain a-z, 0-9, '.', '_', '-' and '/'";
      }
    }
  }
  return "";
}

bool HasFromInstruction(std::string_view dockerfile) {
  for (const std::string& raw : Split(dockerfile, '\n')) {
    std::string_view line = Trim(raw);
    if (line.size() < 5) continue;
    std::string word(line.substr(0, 4));
    for (char& c : word) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (word == "FROM" && (line[4] == ' ' || line[4] == '\t')) return true;
  }
  return false;
}

// The requirement lines of a requirements.txt: comments and blank lines dropped.
StatusOr<std::vector<std::string>> ParseRequirementsText(const std::string& text,
                                                         const std::string& display_name) {
  std::vector<std::string> out;
  std::vector<std::string> lines = Split(text, '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    if (StartsWith(Trim(line), "#")) continue;
    for (size_t pos = line.find('#'); pos != std::string_view::npos;
         pos = line.find('#', pos + 1)) {
      if (pos > 0 && (line[pos - 1] == ' ' || line[pos - 1] == '\t')) {
        line = line.substr(0, pos);
        break;
      }
    }
    line = Trim(line);
    if (line.empty()) continue;
    if (StartsWith(line, "-r ") || StartsWith(line, "-c ") || StartsWith(line, "--requirement") ||
        StartsWith(line, "--constraint")) {
      return InvalidArgument(display_name + ":" + std::to_string(i + 1) +
                             ":1: includes of other files (-r, -c) are not supported in "
                             "pip_requirements; list the packages in this file");
    }
    out.emplace_back(line);
  }
  return out;
}

Status ParseBuild(const SourceFile& file, const Entry& entry, EnvironmentSpec* env) {
  TY_ASSIGN_OR_RETURN(Mapping build,
                      Mapping::Read(file, entry.value, entry.path, entry.path, kBuildKeys));
  const Entry* path_entry = build.Find("path");
  if (path_entry == nullptr) {
    return file.ErrorAt(entry.mark(), "missing required key 'path' in " + entry.path +
                                          " (the build context folder)");
  }
  TY_ASSIGN_OR_RETURN(std::string path, ReadNonEmptyString(file, *path_entry));
  TY_RETURN_IF_ERROR(CheckLocalPath(file, *path_entry, path, "folder"));
  std::filesystem::path context = file.Resolve(path);
  std::error_code ec;
  if (!std::filesystem::exists(context, ec)) {
    return file.ErrorAt(path_entry->mark(), "'" + path_entry->path + "': build context folder " +
                                                context.string() + " does not exist");
  }
  if (!std::filesystem::is_directory(context, ec)) {
    return file.ErrorAt(path_entry->mark(),
                        "'" + path_entry->path + "': " + context.string() + " is not a folder");
  }
  BuildContextSpec spec;
  spec.path = context.string();
  const Entry* dockerfile_entry = build.Find("dockerfile_path");
  const YAML::Mark dockerfile_mark =
      dockerfile_entry != nullptr ? dockerfile_entry->mark() : entry.mark();
  const std::string dockerfile_key = entry.path + ".dockerfile_path";
  if (dockerfile_entry != nullptr) {
    TY_ASSIGN_OR_RETURN(spec.dockerfile_path, ReadNonEmptyString(file, *dockerfile_entry));
  }
  StatusOr<std::filesystem::path> dockerfile = ResolveUnder(context, spec.dockerfile_path);
  if (!dockerfile.ok()) {
    return file.ErrorAt(dockerfile_mark, "'" + dockerfile_key + "' '" + spec.dockerfile_path +
                                             "' escapes the build context " + context.string() +
                                             "; the Dockerfile must be inside it");
  }
  if (!std::filesystem::is_regular_file(*dockerfile, ec)) {
    if (dockerfile_entry == nullptr) {
      return file.ErrorAt(dockerfile_mark, "'" + entry.path + "': the build context has no " +
                                               dockerfile->string() +
                                               "; add it, or name another file with "
                                               "dockerfile_path");
    }
    return file.ErrorAt(dockerfile_mark, "'" + dockerfile_key + "': Dockerfile " +
                                             dockerfile->string() + " does not exist");
  }
  // A symlink inside the context may still point outside it.
  auto real_context = std::filesystem::canonical(context, ec);
  auto real_dockerfile = std::filesystem::canonical(*dockerfile, ec);
  if (ec || !IsWithin(real_context, real_dockerfile)) {
    return file.ErrorAt(dockerfile_mark, "'" + dockerfile_key + "' '" + spec.dockerfile_path +
                                             "' leads outside the build context " +
                                             context.string() + " (through a symlink)");
  }
  spec.dockerfile_path = dockerfile->lexically_relative(context).string();
  env->build = std::move(spec);
  return Status::Ok();
}

}  // namespace

StatusOr<RegistryCredentials> ReadRegistry(const SourceFile& file, const Entry& entry) {
  TY_ASSIGN_OR_RETURN(Mapping registry,
                      Mapping::Read(file, entry.value, entry.path, entry.path, kRegistryKeys));
  std::string missing;
  for (std::string_view key : kRegistryKeys) {
    if (registry.Find(key) == nullptr) missing += (missing.empty() ? "" : ", ") + std::string(key);
  }
  if (!missing.empty()) {
    return file.ErrorAt(
        entry.mark(),
        "'" + entry.path + "' needs address, username and password; missing " + missing);
  }
  RegistryCredentials credentials;
  std::string* fields[] = {&credentials.address, &credentials.username, &credentials.password};
  for (size_t i = 0; i < kRegistryKeys.size(); ++i) {
    const Entry& field = *registry.Find(kRegistryKeys[i]);
    if (!field.value.IsScalar()) {
      return file.ErrorAt(field.mark(),
                          "'" + field.path + "' must be a string, got " + Describe(field.value));
    }
    TY_ASSIGN_OR_RETURN(*fields[i], ResolveEnvReferences(file, field, field.value.Scalar()));
    if (Trim(*fields[i]).empty()) {
      return file.ErrorAt(field.mark(), "'" + field.path + "' is empty");
    }
  }
  return credentials;
}

StatusOr<EnvironmentSpec> ParseEnvironmentNode(const SourceFile& file, const YAML::Node& node,
                                               std::string_view path) {
  const std::string prefix(path);
  TY_ASSIGN_OR_RETURN(
      Mapping top,
      Mapping::Read(file, node, prefix, prefix.empty() ? "environment" : prefix, kEnvironmentKeys));
  const std::string where = prefix.empty() ? "an environment" : "'" + prefix + "'";
  EnvironmentSpec env;
  if (const Entry* e = top.Find("name")) {
    TY_ASSIGN_OR_RETURN(env.name, ReadString(file, *e));
    if (!IsValidName(env.name)) {
      return file.ErrorAt(e->mark(), "'" + e->path +
                                         "' must be a name of letters, digits, "
                                         "'.', '_' and '-' starting with a letter or digit, got " +
                                         Describe(e->value));
    }
  }
  if (const Entry* e = top.Find("version")) {
    TY_ASSIGN_OR_RETURN(env.version, ReadString(file, *e));
    if (!IsValidName(env.version)) {
      return file.ErrorAt(e->mark(), "'" + e->path + "' must be a version like 1 or 2.0, got " +
                                         Describe(e->value));
    }
  }
  if (const Entry* e = top.Find("description")) {
    TY_ASSIGN_OR_RETURN(env.description, ReadString(file, *e));
  }

  std::vector<const Entry*> bases;
  for (std::string_view key : {"image", "build", "dockerfile"}) {
    if (const Entry* e = top.Find(key)) bases.push_back(e);
  }
  if (bases.empty()) {
    return file.ErrorAt(top.mark(), where +
                                        " needs exactly one of image, build, dockerfile; got "
                                        "none");
  }
  if (bases.size() > 1) {
    std::string given = bases[0]->key + " and " + bases[1]->key;
    if (bases.size() == 3) given = bases[0]->key + ", " + bases[1]->key + " and " + bases[2]->key;
    return file.ErrorAt(bases[1]->key_node.Mark(),
                        where + " needs exactly one of image, build, dockerfile; got " + given);
  }
  if (const Entry* e = top.Find("image")) {
    TY_ASSIGN_OR_RETURN(env.image, ReadNonEmptyString(file, *e));
    std::string problem = ImageReferenceProblem(env.image);
    if (!problem.empty()) {
      return file.ErrorAt(e->mark(), "'" + e->path + "' is not a valid image reference (" +
                                         problem + "), got " + Describe(e->value));
    }
  }
  if (const Entry* e = top.Find("build")) TY_RETURN_IF_ERROR(ParseBuild(file, *e, &env));
  if (const Entry* e = top.Find("dockerfile")) {
    TY_ASSIGN_OR_RETURN(env.dockerfile, ReadNonEmptyString(file, *e));
    if (!HasFromInstruction(env.dockerfile)) {
      return file.ErrorAt(e->mark(), "'" + e->path +
                                         "' is the text of a Dockerfile and has no "
                                         "FROM line; to use a Dockerfile on disk write build: "
                                         "{path: FOLDER, dockerfile_path: FILE}");
    }
  }

  const Entry* conda_entry = top.Find("conda_file");
  if (conda_entry != nullptr) {
    TY_ASSIGN_OR_RETURN(std::string value, ReadNonEmptyString(file, *conda_entry));
    TY_ASSIGN_OR_RETURN(std::filesystem::path conda_path, ExistingFile(file, *conda_entry, value));
    TY_ASSIGN_OR_RETURN(std::string text, ReadNamedFile(file, *conda_entry, conda_path));
    TY_ASSIGN_OR_RETURN(env.conda, ParseCondaYaml(text, file.DisplayNameOf(value)));
  }
  const Entry* pip_entry = top.Find("pip_requirements");
  if (pip_entry != nullptr) {
    if (pip_entry->value.IsSequence()) {
      TY_ASSIGN_OR_RETURN(std::vector<std::string> items, ReadStringList(file, *pip_entry));
      for (const std::string& item : items) {
        std::string_view line = Trim(item);
        if (!line.empty() && !StartsWith(line, "#")) env.pip_requirements.emplace_back(line);
      }
    } else if (pip_entry->value.IsScalar()) {
      const std::string& value = pip_entry->value.Scalar();
      TY_ASSIGN_OR_RETURN(std::filesystem::path req_path, ExistingFile(file, *pip_entry, value));
      TY_ASSIGN_OR_RETURN(std::string text, ReadNamedFile(file, *pip_entry, req_path));
      TY_ASSIGN_OR_RETURN(env.pip_requirements,
                          ParseRequirementsText(text, file.DisplayNameOf(value)));
    } else {
      return file.ErrorAt(pip_entry->mark(), "'" + pip_entry->path +
                                                 "' must be a list of requirements or the path "
                                                 "of a requirements.txt file, got " +
                                                 Describe(pip_entry->value));
    }
  }
  if (const Entry* e = top.Find("user_managed_dependencies")) {
    TY_ASSIGN_OR_RETURN(env.user_managed_dependencies, ReadBool(file, *e));
    if (env.user_managed_dependencies && (conda_entry != nullptr || pip_entry != nullptr)) {
      std::string given = conda_entry != nullptr ? "conda_file" : "pip_requirements";
      if (conda_entry != nullptr && pip_entry != nullptr) given = "conda_file and pip_requirements";
      return file.ErrorAt(e->mark(), "'" + e->path +
                                         "' is true, so trainyard installs nothing, "
                                         "but " +
                                         given + " is given; remove " + given +
                                         " or set user_managed_dependencies: false");
    }
  }
  if (const Entry* e = top.Find("environment_variables")) {
    TY_ASSIGN_OR_RETURN(env.environment_variables, ReadStringMap(file, *e, /*env_names=*/true));
  }
  if (const Entry* e = top.Find("image_registry")) {
    TY_ASSIGN_OR_RETURN(env.registry, ReadRegistry(file, *e));
  }
  if (const Entry* e = top.Find("os_type")) {
    TY_ASSIGN_OR_RETURN(std::string os, ReadString(file, *e));
    if (os != "linux" && os != "Linux") {
      return file.ErrorAt(e->mark(), "'" + e->path +
                                         "' must be linux (trainyard runs Linux "
                                         "containers only), got " +
                                         Describe(e->value));
    }
  }
  if (const Entry* e = top.Find("platform")) {
    TY_ASSIGN_OR_RETURN(env.platform, ReadNonEmptyString(file, *e));
    std::vector<std::string> parts = Split(env.platform, '/');
    if (parts.size() < 2 || parts.size() > 3 || parts[0] != "linux" || parts[1].empty()) {
      return file.ErrorAt(e->mark(), "'" + e->path +
                                         "' must look like linux/amd64 or "
                                         "linux/arm64, got " +
                                         Describe(e->value));
    }
  }
  if (const Entry* e = top.Find("tags")) {
    TY_ASSIGN_OR_RETURN(env.tags, ReadStringMap(file, *e, /*env_names=*/false));
  }
  return env;
}

StatusOr<EnvironmentSpec> ParseEnvironmentFileAs(const std::filesystem::path& path,
                                                 const std::string& display_name,
                                                 const ParseOptions& options) {
  StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status().WithPrefix("environment file " + display_name);
  std::filesystem::path absolute = std::filesystem::absolute(path).lexically_normal();
  return ParseEnvironmentYaml(*text, display_name, absolute.parent_path(), options);
}

}  // namespace internal

StatusOr<EnvironmentSpec> ParseEnvironmentYaml(const std::string& yaml,
                                               const std::string& file_name,
                                               const std::string& base_dir,
                                               const ParseOptions& options) {
  internal::SourceFile file(file_name, base_dir, options);
  try {
    TY_ASSIGN_OR_RETURN(YAML::Node root, internal::LoadMappingDocument(file, yaml, "environment"));
    return internal::ParseEnvironmentNode(file, root, "");
  } catch (const YAML::Exception& e) {
    return file.ErrorAt(e.mark, "cannot read YAML: " + e.msg);
  }
}

StatusOr<EnvironmentSpec> ParseEnvironmentFile(const std::string& path,
                                               const ParseOptions& options) {
  return internal::ParseEnvironmentFileAs(path, path, options);
}

}  // namespace trainyard::spec
