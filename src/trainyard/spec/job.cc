// Job files: the command, its environment, inputs and outputs, limits and resources.

#include <array>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/data_uri.h"
#include "trainyard/spec/spec.h"
#include "trainyard/spec/spec_internal.h"

namespace trainyard::spec {
namespace {

using internal::Entry;
using internal::Mapping;
using internal::SourceFile;

// clang-format off
constexpr std::array<std::string_view, 19> kJobKeys = {
    "$schema", "type", "name", "command", "code", "environment", "environment_variables",
    "inputs", "outputs", "experiment_name", "display_name", "description", "tags", "limits",
    "resources", "compute", "distribution", "snapshot", "queue_settings"};
// clang-format on
constexpr std::array<std::string_view, 6> kInputKeys = {"type",    "path", "value",
                                                        "default", "mode", "description"};
constexpr std::array<std::string_view, 5> kOutputKeys = {"type", "mode", "path", "name", "version"};
constexpr std::array<std::string_view, 1> kLimitsKeys = {"timeout"};
constexpr std::array<std::string_view, 2> kResourcesKeys = {"instance_count", "shm_size"};
constexpr std::array<std::string_view, 2> kQueueSettingsKeys = {"priority", "job_tier"};
constexpr std::array<std::string_view, 3> kSnapshotKeys = {"max_files", "max_size", "copy"};
constexpr std::array<std::string_view, 4> kDistributionKeys = {
    "type", "process_count_per_instance", "worker_count", "parameter_server_count"};

constexpr std::string_view kNameRule =
    "a name of letters, digits, '.', '_' and '-' starting with a letter or digit";

Status CheckName(const SourceFile& file, const Entry& entry, const std::string& name) {
  if (IsValidName(name)) return Status::Ok();
  return file.ErrorAt(entry.mark(), "'" + entry.path + "' must be " + std::string(kNameRule) +
                                        ", got " + internal::Describe(entry.value));
}

// A byte size greater than zero ("2g", "512m", bytes; see ParseByteSize); the error names the
// key and shows `examples`.
StatusOr<std::int64_t> ReadPositiveSize(const SourceFile& file, const Entry& entry,
                                        std::string_view examples) {
  StatusOr<std::int64_t> bytes = entry.value.IsScalar()
                                     ? ParseByteSize(entry.value.Scalar())
                                     : StatusOr<std::int64_t>(InvalidArgument("not a scalar"));
  if (!bytes.ok() || *bytes <= 0) {
    return file.ErrorAt(entry.mark(), "'" + entry.path +
                                          "' must be a size greater than zero like " +
                                          std::string(examples) + " or a number of bytes, got " +
                                          internal::Describe(entry.value));
  }
  return bytes;
}

// `environment: <string>`: a registered environment or `file:PATH`.
StatusOr<EnvironmentRef> ParseEnvironmentString(const SourceFile& file, const Entry& entry) {
  TY_ASSIGN_OR_RETURN(std::string raw, internal::ReadNonEmptyString(file, entry));
  std::string text(Trim(raw));
  EnvironmentRef ref;
  if (StartsWith(text, "file:")) {
    std::string relative = text.substr(5);
    if (StartsWith(relative, "//")) relative = relative.substr(2);
    if (relative.empty()) {
      return file.ErrorAt(entry.mark(), "'" + entry.path +
                                            "': file: needs a path, as in "
                                            "file:env.yml");
    }
    std::filesystem::path resolved = file.Resolve(relative);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(resolved, ec)) {
      return file.ErrorAt(entry.mark(), "'" + entry.path + "': environment file " +
                                            resolved.string() + " does not exist");
    }
    ref.kind = EnvironmentRef::Kind::kInline;
    TY_ASSIGN_OR_RETURN(
        ref.inline_spec,
        internal::ParseEnvironmentFileAs(resolved, file.DisplayNameOf(relative), file.options()));
    return ref;
  }
  if (StartsWith(text, "azureml://")) {
    // azureml://registries/<registry>/environments/<name>/(versions/<v> | labels/latest)
    const std::optional<RegistryRef> reg = ParseRegistryRef(text);
    if (!reg || reg->collection != "environments" ||
        (!reg->label.empty() && reg->label != "latest")) {
      return file.ErrorAt(entry.mark(),
                          "bad environment reference '" + text +
                              "': write azureml://registries/<registry>/environments/<name>/"
                              "versions/<version> or .../labels/latest (environments have no "
                              "other labels)");
    }
    ref.kind = EnvironmentRef::Kind::kRegistered;
    ref.registry = reg->registry;
    ref.name = reg->name;
    ref.version = reg->version;
    return ref;
  }
  std::string rest = StartsWith(text, "azureml:") ? text.substr(8) : text;
  std::string name = rest;
  std::string version;
  bool ok = true;
  if (size_t at = rest.find('@'); at != std::string::npos) {
    name = rest.substr(0, at);
    std::string label = rest.substr(at + 1);
    if (label != "latest") {
      return file.ErrorAt(entry.mark(), "environment label '@" + label +
                                            "' is not supported; use @latest or :VERSION");
    }
  } else if (size_t colon = rest.find(':'); colon != std::string::npos) {
    name = rest.substr(0, colon);
    version = rest.substr(colon + 1);
    ok = IsValidName(version);
  }
  if (!ok || !IsValidName(name)) {
    std::string message = "bad environment reference '" + text +
                          "': expected azureml:NAME:VERSION, azureml:NAME@latest, NAME or "
                          "file:PATH";
    if (text.find('/') != std::string::npos) {
      message += "; to run in a Docker image write environment: {image: " + text + "}";
    }
    return file.ErrorAt(entry.mark(), message);
  }
  ref.kind = EnvironmentRef::Kind::kRegistered;
  ref.name = name;
  ref.version = version;
  return ref;
}

// A uri_file / uri_folder input's path: a URI as written (checked for syntax; the daemon
// resolves it), or a local path, resolved and checked.
StatusOr<std::string> ParseInputPath(const SourceFile& file, const Entry& entry,
                                     InputSpec::Kind kind) {
  TY_ASSIGN_OR_RETURN(std::string raw, internal::ReadNonEmptyString(file, entry));
  std::string path(Trim(raw));
  if (LooksLikeUri(path) && !StartsWith(path, "file:")) {
    auto uri = ParseDataUri(path);
    if (!uri.ok())
      return file.ErrorAt(entry.mark(), "'" + entry.path + "': " + uri.status().message());
    if (uri->kind == DataUri::Kind::kHttp && kind == InputSpec::Kind::kUriFolder) {
      return file.ErrorAt(entry.mark(), "'" + entry.path +
                                            "': an http(s) URL names one file; give the input "
                                            "type: uri_file");
    }
    return path;
  }
  if (StartsWith(path, "file://")) {
    path = path.substr(7);
  } else if (StartsWith(path, "file:")) {
    path = path.substr(5);
  } else if (path.find("://") != std::string::npos) {
    return file.ErrorAt(entry.mark(), "'" + entry.path + "': remote paths (" +
                                          path.substr(0, path.find("://") + 3) +
                                          "...) are not supported; use a local path");
  }
  if (path.empty()) return file.ErrorAt(entry.mark(), "'" + entry.path + "' is empty");
  std::filesystem::path resolved = file.Resolve(path);
  std::error_code ec;
  auto status = std::filesystem::status(resolved, ec);
  const bool want_folder = kind == InputSpec::Kind::kUriFolder;
  if (!std::filesystem::exists(status)) {
    return file.ErrorAt(entry.mark(), "'" + entry.path +
                                          "': " + (want_folder ? "folder " : "file ") +
                                          resolved.string() + " does not exist");
  }
  if (want_folder && !std::filesystem::is_directory(status)) {
    return file.ErrorAt(entry.mark(), "'" + entry.path + "': " + resolved.string() +
                                          " is not a folder, but the input's type is uri_folder "
                                          "(use uri_file for a file)");
  }
  if (!want_folder && !std::filesystem::is_regular_file(status)) {
    return file.ErrorAt(entry.mark(), "'" + entry.path + "': " + resolved.string() +
                                          " is not a regular file, but the input's type is "
                                          "uri_file (use uri_folder for a folder)");
  }
  return resolved.string();
}

bool IsInteger(std::string_view text) {
  if (!text.empty() && (text[0] == '-' || text[0] == '+')) text.remove_prefix(1);
  if (text.empty()) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool IsNumber(const std::string& text) {
  if (text.empty() || Trim(text).size() != text.size()) return false;
  errno = 0;
  char* end = nullptr;
  std::strtod(text.c_str(), &end);
  return end == text.c_str() + text.size() && errno != ERANGE;
}

bool IsBoolean(std::string_view text) {
  return text == "true" || text == "false" || text == "True" || text == "False" || text == "TRUE" ||
         text == "FALSE";
}

StatusOr<InputSpec> ParseInput(const SourceFile& file, const Entry& entry) {
  InputSpec input;
  if (entry.value.IsNull()) {
    return file.ErrorAt(entry.mark(), "input '" + entry.key +
                                          "' has no value; give a literal "
                                          "or {type: ..., path: ...}");
  }
  if (entry.value.IsScalar()) {
    input.kind = InputSpec::Kind::kLiteral;
    input.value = entry.value.Scalar();
    return input;
  }
  if (!entry.value.IsMap()) {
    return file.ErrorAt(entry.mark(), "input '" + entry.key +
                                          "' must be a literal or a mapping "
                                          "{type, path, mode}, got " +
                                          internal::Describe(entry.value));
  }
  TY_ASSIGN_OR_RETURN(Mapping m,
                      Mapping::Read(file, entry.value, entry.path, entry.path, kInputKeys));
  const Entry* type_entry = m.Find("type");
  const Entry* path_entry = m.Find("path");
  const Entry* value_entry = m.Find("value");
  const Entry* default_entry = m.Find("default");
  const Entry* mode_entry = m.Find("mode");
  std::string type = path_entry != nullptr ? "uri_folder" : "string";
  if (type_entry != nullptr) {
    TY_ASSIGN_OR_RETURN(type, internal::ReadString(file, *type_entry));
    if (type != "uri_file" && type != "uri_folder" && type != "mlflow_model" &&
        type != "custom_model" && type != "string" && type != "integer" && type != "number" &&
        type != "boolean") {
      return file.ErrorAt(type_entry->mark(),
                          "'" + type_entry->path +
                              "' must be one of uri_file, uri_folder, mlflow_model, "
                              "custom_model, string, integer, number, boolean, got " +
                              internal::Describe(type_entry->value));
    }
  }
  if (type == "uri_file" || type == "uri_folder" || type == "mlflow_model" ||
      type == "custom_model") {
    input.kind = type == "uri_file" ? InputSpec::Kind::kUriFile : InputSpec::Kind::kUriFolder;
    input.type = type;
    for (const Entry* e : {value_entry, default_entry}) {
      if (e != nullptr) {
        return file.ErrorAt(e->key_node.Mark(), "'" + e->path + "' does not apply to a " + type +
                                                    " input; give its path");
      }
    }
    if (path_entry == nullptr) {
      return file.ErrorAt(m.mark(),
                          "missing required key 'path' in " + entry.path + " (a " + type +
                              " input needs a path: a local one, a datastore path or a URL)");
    }
    TY_ASSIGN_OR_RETURN(input.path, ParseInputPath(file, *path_entry, input.kind));
    if (mode_entry != nullptr) {
      TY_ASSIGN_OR_RETURN(input.mode, internal::ReadString(file, *mode_entry));
      if (input.mode == "eval_mount" || input.mode == "eval_download") {
        return file.ErrorAt(mode_entry->mark(), "'" + mode_entry->path + "': " + input.mode +
                                                    " is not supported; use ro_mount or "
                                                    "download");
      }
      if (input.mode != "ro_mount" && input.mode != "download" && input.mode != "direct") {
        return file.ErrorAt(mode_entry->mark(), "'" + mode_entry->path +
                                                    "' must be ro_mount, download or direct, got " +
                                                    internal::Describe(mode_entry->value));
      }
    }
    return input;
  }
  input.kind = InputSpec::Kind::kLiteral;
  for (const Entry* e : {path_entry, mode_entry}) {
    if (e != nullptr) {
      return file.ErrorAt(e->key_node.Mark(), "'" + e->path + "' does not apply to a " + type +
                                                  " input; give its value");
    }
  }
  if (value_entry != nullptr && default_entry != nullptr) {
    return file.ErrorAt(default_entry->key_node.Mark(),
                        "give either 'value' or 'default' in " + entry.path + ", not both");
  }
  const Entry* v = value_entry != nullptr ? value_entry : default_entry;
  if (v == nullptr) {
    return file.ErrorAt(m.mark(), "missing required key 'value' in " + entry.path + " (a " + type +
                                      " input needs a value)");
  }
  if (!v->value.IsScalar()) {
    return file.ErrorAt(v->mark(), "'" + v->path + "' must be a " + type + " value, got " +
                                       internal::Describe(v->value));
  }
  input.value = v->value.Scalar();
  bool valid = type == "string" || (type == "integer" && IsInteger(input.value)) ||
               (type == "number" && IsNumber(input.value)) ||
               (type == "boolean" && IsBoolean(input.value));
  if (!valid) {
    return file.ErrorAt(v->mark(), "'" + v->path + "' must be " +
                                       (type == "integer" ? "an integer" : "a " + type) + ", got " +
                                       internal::Describe(v->value));
  }
  return input;
}

StatusOr<OutputSpec> ParseOutput(const SourceFile& file, const Entry& entry) {
  OutputSpec output;
  if (entry.value.IsNull()) return output;
  if (!entry.value.IsMap()) {
    return file.ErrorAt(entry.mark(), "output '" + entry.key +
                                          "' must be empty or a mapping "
                                          "{type: uri_folder, mode: rw_mount|upload, path}, got " +
                                          internal::Describe(entry.value));
  }
  TY_ASSIGN_OR_RETURN(Mapping m,
                      Mapping::Read(file, entry.value, entry.path, entry.path, kOutputKeys));
  if (const Entry* e = m.Find("type")) {
    TY_ASSIGN_OR_RETURN(output.type, internal::ReadString(file, *e));
    if (output.type != "uri_folder" && !IsModelType(output.type)) {
      return file.ErrorAt(e->mark(), "'" + e->path +
                                         "' must be uri_folder, mlflow_model or custom_model (a "
                                         "folder the run writes), got " +
                                         internal::Describe(e->value));
    }
  }
  if (const Entry* e = m.Find("mode")) {
    TY_ASSIGN_OR_RETURN(output.mode, internal::ReadString(file, *e));
    if (output.mode != "rw_mount" && output.mode != "upload") {
      return file.ErrorAt(e->mark(), "'" + e->path + "' must be rw_mount or upload, got " +
                                         internal::Describe(e->value));
    }
  }
  if (const Entry* e = m.Find("path")) {
    TY_ASSIGN_OR_RETURN(std::string path, internal::ReadNonEmptyString(file, *e));
    auto uri = ParseDataUri(Trim(path));
    if (!uri.ok() || uri->kind != DataUri::Kind::kDatastore) {
      return file.ErrorAt(e->mark(), "'" + e->path +
                                         "' must be a datastore path, "
                                         "azureml://datastores/<datastore>/paths/<path>, got " +
                                         internal::Describe(e->value));
    }
    output.path = std::string(Trim(path));
  }
  // name (and version): registered as a data asset, or a model for a model type, when the run
  // completes.
  for (auto [key, field] :
       {std::pair{"name", &output.name}, std::pair{"version", &output.version}}) {
    if (const Entry* e = m.Find(key)) {
      TY_ASSIGN_OR_RETURN(*field, internal::ReadNonEmptyString(file, *e));
      if (!IsValidName(*field) || *field == "latest") {
        return file.ErrorAt(e->mark(), "'" + e->path + "' must be an asset " + key +
                                           " (letters, digits, '.', '_', '-'), got " +
                                           internal::Describe(e->value));
      }
    }
  }
  if (!output.version.empty() && output.name.empty()) {
    return file.ErrorAt(m.Find("version")->key_node.Mark(),
                        "'" + entry.path + ".version' needs a name: the asset to register");
  }
  return output;
}

// Reads `inputs:` / `outputs:`, a mapping of identifiers to `parse(entry)`.
template <typename T, typename Parse>
Status ParseNamed(const SourceFile& file, const Entry& entry, std::string_view kind, Parse parse,
                  std::map<std::string, T>* out) {
  if (entry.value.IsNull()) return Status::Ok();
  TY_ASSIGN_OR_RETURN(Mapping m, Mapping::Read(file, entry.value, entry.path, entry.path,
                                               std::span<const std::string_view>()));
  for (const Entry& e : m.entries()) {
    if (!internal::IsIdentifier(e.key)) {
      return file.ErrorAt(e.key_node.Mark(), std::string(kind) + " name '" + e.key +
                                                 "' must match [A-Za-z_][A-Za-z0-9_]*");
    }
    TY_ASSIGN_OR_RETURN(T value, parse(file, e));
    out->emplace(e.key, std::move(value));
  }
  return Status::Ok();
}

// The cloud service's retired preview job schema wrote some keys differently: an error at each
// such key that shows the current way to write it.
Status CheckPreviewSchema(const SourceFile& file, const YAML::Node& root) {
  auto sub = [&](const YAML::Node& map, const char* key) -> std::optional<YAML::Node> {
    if (!map.IsMap()) return std::nullopt;
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == key) return it->second;
    }
    return std::nullopt;
  };
  const std::string retired = "is the retired preview schema; ";
  if (auto code = sub(root, "code"); code && code->IsMap()) {
    auto local = sub(*code, "local_path");
    return file.ErrorAt(code->Mark(), "'code: {local_path: ...}' " + retired + "write code: " +
                                          (local && local->IsScalar() ? local->Scalar() : "./src") +
                                          " (the folder itself)");
  }
  if (auto env = sub(root, "environment"); env && env->IsMap()) {
    if (auto docker = sub(*env, "docker")) {
      return file.ErrorAt(docker->Mark(),
                          "'environment: {docker: {build: {dockerfile: file:...}}}' " + retired +
                              "write environment: {build: {path: ./docker-context}} (a folder "
                              "with the Dockerfile) or environment: {image: NAME}");
    }
  }
  if (auto compute = sub(root, "compute"); compute && compute->IsMap()) {
    auto target = sub(*compute, "target");
    std::string name = target && target->IsScalar() ? target->Scalar() : "NAME";
    if (StartsWith(name, "azureml:")) name = name.substr(8);
    return file.ErrorAt(compute->Mark(), "'compute: {target: ...}' " + retired +
                                             "write compute: azureml:" + name +
                                             " (and resources: {instance_count: N} for nodes)");
  }
  return Status::Ok();
}

StatusOr<JobSpec> ParseJob(const SourceFile& file, const YAML::Node& root) {
  TY_RETURN_IF_ERROR(CheckPreviewSchema(file, root));
  TY_ASSIGN_OR_RETURN(Mapping top, Mapping::Read(file, root, "", "job", kJobKeys));
  JobSpec job;
  job.experiment_name = "Default";
  if (const Entry* e = top.Find("$schema")) {
    TY_ASSIGN_OR_RETURN(std::string schema, internal::ReadString(file, *e));
    (void)schema;  // informational: editors use it for completion
  }
  if (const Entry* e = top.Find("type")) {
    TY_ASSIGN_OR_RETURN(std::string type, internal::ReadString(file, *e));
    if (type != "command") {
      return file.ErrorAt(e->mark(), "job type " + internal::Describe(e->value) +
                                         " is not supported; 'type' must be command");
    }
  }
  if (const Entry* e = top.Find("name")) {
    TY_ASSIGN_OR_RETURN(job.name, internal::ReadString(file, *e));
    TY_RETURN_IF_ERROR(CheckName(file, *e, job.name));
  }
  const Entry* command = top.Find("command");
  if (command == nullptr) {
    return file.ErrorAt(top.mark(),
                        "missing required key 'command' in job (the command line "
                        "to run, e.g. python train.py)");
  }
  TY_ASSIGN_OR_RETURN(job.command, internal::ReadNonEmptyString(file, *command));
  if (const Entry* e = top.Find("code")) {
    TY_ASSIGN_OR_RETURN(std::string code, internal::ReadNonEmptyString(file, *e));
    if (code.find("://") != std::string::npos || StartsWith(code, "azureml:")) {
      return file.ErrorAt(e->mark(),
                          "'code' must be a local folder, got " + internal::Describe(e->value));
    }
    std::filesystem::path resolved = file.Resolve(code);
    std::error_code ec;
    if (!std::filesystem::exists(resolved, ec)) {
      return file.ErrorAt(e->mark(), "'code': folder " + resolved.string() + " does not exist");
    }
    if (!std::filesystem::is_directory(resolved, ec)) {
      return file.ErrorAt(e->mark(), "'code': " + resolved.string() +
                                         " is not a folder; code names the folder to snapshot");
    }
    job.code = resolved.string();
  }
  const Entry* environment = top.Find("environment");
  if (environment == nullptr) {
    return file.ErrorAt(top.mark(),
                        "missing required key 'environment' in job (an inline "
                        "{image: ...}, azureml:NAME:VERSION or file:PATH)");
  }
  if (environment->value.IsMap()) {
    job.environment.kind = EnvironmentRef::Kind::kInline;
    TY_ASSIGN_OR_RETURN(job.environment.inline_spec,
                        internal::ParseEnvironmentNode(file, environment->value, "environment"));
  } else if (environment->value.IsScalar()) {
    TY_ASSIGN_OR_RETURN(job.environment, ParseEnvironmentString(file, *environment));
  } else {
    return file.ErrorAt(environment->mark(),
                        "'environment' must be a reference (azureml:NAME:VERSION, file:PATH) or "
                        "a mapping {image: ...}, got " +
                            internal::Describe(environment->value));
  }
  if (const Entry* e = top.Find("environment_variables")) {
    TY_ASSIGN_OR_RETURN(job.environment_variables,
                        internal::ReadStringMap(file, *e, /*env_names=*/true));
  }
  if (const Entry* e = top.Find("inputs")) {
    TY_RETURN_IF_ERROR(ParseNamed<InputSpec>(file, *e, "input", ParseInput, &job.inputs));
  }
  if (const Entry* e = top.Find("outputs")) {
    TY_RETURN_IF_ERROR(ParseNamed<OutputSpec>(file, *e, "output", ParseOutput, &job.outputs));
  }
  // The command may only name declared inputs and outputs.
  std::map<std::string, std::string> input_placeholders;
  std::map<std::string, std::string> output_placeholders;
  for (const auto& [name, input] : job.inputs) input_placeholders[name] = "<" + name + ">";
  for (const auto& [name, output] : job.outputs) output_placeholders[name] = "<" + name + ">";
  StatusOr<std::string> substituted =
      SubstituteCommand(job.command, input_placeholders, output_placeholders);
  if (!substituted.ok()) {
    return file.ErrorAt(command->mark(), substituted.status().message());
  }
  if (const Entry* e = top.Find("experiment_name")) {
    TY_ASSIGN_OR_RETURN(job.experiment_name, internal::ReadString(file, *e));
    TY_RETURN_IF_ERROR(CheckName(file, *e, job.experiment_name));
  }
  if (const Entry* e = top.Find("display_name")) {
    TY_ASSIGN_OR_RETURN(job.display_name, internal::ReadString(file, *e));
  }
  if (const Entry* e = top.Find("description")) {
    TY_ASSIGN_OR_RETURN(job.description, internal::ReadString(file, *e));
  }
  if (const Entry* e = top.Find("tags")) {
    TY_ASSIGN_OR_RETURN(job.tags, internal::ReadStringMap(file, *e, /*env_names=*/false));
  }
  if (const Entry* e = top.Find("limits")) {
    TY_ASSIGN_OR_RETURN(Mapping limits,
                        Mapping::Read(file, e->value, "limits", "limits", kLimitsKeys));
    if (const Entry* t = limits.Find("timeout")) {
      TY_ASSIGN_OR_RETURN(job.timeout_seconds,
                          internal::ReadInteger(file, *t, 1, "a positive integer (seconds)"));
    }
  }
  bool resources_instance_count_given = false;
  if (const Entry* e = top.Find("resources")) {
    TY_ASSIGN_OR_RETURN(Mapping resources,
                        Mapping::Read(file, e->value, "resources", "resources", kResourcesKeys));
    if (const Entry* c = resources.Find("instance_count")) {
      TY_ASSIGN_OR_RETURN(std::int64_t count,
                          internal::ReadInteger(file, *c, 1, "an integer >= 1"));
      if (count > 100000) {
        return file.ErrorAt(c->mark(),
                            "'" + c->path + "' is too large, got " + internal::Describe(c->value));
      }
      job.instance_count = static_cast<int>(count);
      resources_instance_count_given = true;
    }
    if (const Entry* s = resources.Find("shm_size")) {
      TY_ASSIGN_OR_RETURN(job.shm_size_bytes, ReadPositiveSize(file, *s, "2g, 512m"));
    }
  }
  if (const Entry* e = top.Find("queue_settings")) {
    TY_ASSIGN_OR_RETURN(Mapping queue, Mapping::Read(file, e->value, "queue_settings",
                                                     "queue_settings", kQueueSettingsKeys));
    if (const Entry* p = queue.Find("priority")) {
      StatusOr<int> priority = p->value.IsScalar() ? ParsePriority(p->value.Scalar())
                                                   : StatusOr<int>(InvalidArgument("not a scalar"));
      if (!priority.ok()) {
        return file.ErrorAt(p->mark(), "'" + p->path +
                                           "' must be low, medium, high or an integer from "
                                           "-1000 to 1000, got " +
                                           internal::Describe(p->value));
      }
      job.priority = *priority;
    }
    if (const Entry* t = queue.Find("job_tier")) {
      TY_ASSIGN_OR_RETURN(std::string tier, internal::ReadString(file, *t));
      (void)tier;  // Azure's service tier (spot, basic, standard, premium): no meaning here
    }
  }
  if (const Entry* e = top.Find("snapshot")) {
    TY_ASSIGN_OR_RETURN(Mapping snapshot,
                        Mapping::Read(file, e->value, "snapshot", "snapshot", kSnapshotKeys));
    if (const Entry* f = snapshot.Find("max_files")) {
      TY_ASSIGN_OR_RETURN(std::int64_t files,
                          internal::ReadInteger(file, *f, 1, "an integer >= 1 (files)"));
      job.snapshot_max_files = static_cast<std::uint64_t>(files);
    }
    if (const Entry* s = snapshot.Find("max_size")) {
      TY_ASSIGN_OR_RETURN(std::int64_t bytes, ReadPositiveSize(file, *s, "500m, 2g"));
      job.snapshot_max_bytes = static_cast<std::uint64_t>(bytes);
    }
    if (const Entry* c = snapshot.Find("copy")) {
      TY_ASSIGN_OR_RETURN(job.code_copy, internal::ReadBool(file, *c));
    }
  }
  if (const Entry* e = top.Find("compute")) {
    TY_ASSIGN_OR_RETURN(std::string compute, internal::ReadNonEmptyString(file, *e));
    if (StartsWith(compute, "azureml:")) compute = compute.substr(8);
    if (!IsValidName(compute)) {
      return file.ErrorAt(e->mark(), "'compute' must be a compute target name (" +
                                         std::string(kNameRule) + "), got " +
                                         internal::Describe(e->value));
    }
    job.compute = compute;
  }
  if (const Entry* e = top.Find("distribution")) {
    TY_ASSIGN_OR_RETURN(Mapping distribution, Mapping::Read(file, e->value, "distribution",
                                                            "distribution", kDistributionKeys));
    DistributionSpec spec;
    const Entry* type = distribution.Find("type");
    if (type == nullptr) {
      return file.ErrorAt(distribution.mark(),
                          "missing required key 'type' in distribution "
                          "(pytorch, mpi or tensorflow)");
    }
    TY_ASSIGN_OR_RETURN(spec.type, internal::ReadString(file, *type));
    if (spec.type != "pytorch" && spec.type != "mpi" && spec.type != "tensorflow") {
      return file.ErrorAt(type->mark(),
                          "'distribution.type' must be pytorch, mpi or tensorflow, "
                          "got " +
                              internal::Describe(type->value));
    }
    if (const Entry* p = distribution.Find("process_count_per_instance")) {
      TY_ASSIGN_OR_RETURN(std::int64_t count,
                          internal::ReadInteger(file, *p, 1, "an integer >= 1"));
      if (count > 4096) {
        return file.ErrorAt(p->mark(),
                            "'" + p->path + "' is too large, got " + internal::Describe(p->value));
      }
      spec.process_count_per_instance = static_cast<int>(count);
    }
    // tensorflow: one task per node, `worker_count` workers and `parameter_server_count`
    // parameter servers (the cloud service's TensorFlowDistribution).
    const Entry* workers = distribution.Find("worker_count");
    const Entry* servers = distribution.Find("parameter_server_count");
    for (const Entry* tf : {workers, servers}) {
      if (tf != nullptr && spec.type != "tensorflow") {
        return file.ErrorAt(tf->key_node.Mark(), "'" + tf->path +
                                                     "' is a setting of tensorflow "
                                                     "distributions, not of " +
                                                     spec.type);
      }
    }
    if (servers != nullptr) {
      TY_ASSIGN_OR_RETURN(std::int64_t n,
                          internal::ReadInteger(file, *servers, 0, "an integer >= 0"));
      if (n > 1024) return file.ErrorAt(servers->mark(), "'" + servers->path + "' is too large");
      spec.parameter_server_count = static_cast<int>(n);
    }
    if (workers != nullptr) {
      TY_ASSIGN_OR_RETURN(std::int64_t n,
                          internal::ReadInteger(file, *workers, 1, "an integer >= 1"));
      if (n > 1024) return file.ErrorAt(workers->mark(), "'" + workers->path + "' is too large");
      const int nodes = static_cast<int>(n) + spec.parameter_server_count;
      if (resources_instance_count_given && job.instance_count != nodes) {
        return file.ErrorAt(workers->mark(), "worker_count + parameter_server_count (" +
                                                 std::to_string(nodes) +
                                                 ") must equal resources.instance_count (" +
                                                 std::to_string(job.instance_count) +
                                                 "): each node runs one TensorFlow task");
      }
      job.instance_count = nodes;
    } else if (spec.parameter_server_count >= job.instance_count) {
      return file.ErrorAt(servers->mark(), "'" + servers->path +
                                               "' leaves no worker: the run has " +
                                               std::to_string(job.instance_count) +
                                               " nodes (resources.instance_count), one task each");
    }
    job.distribution = spec;
  }
  return job;
}

}  // namespace

bool IsModelType(std::string_view type) { return type == "mlflow_model" || type == "custom_model"; }

StatusOr<JobSpec> ParseJobYaml(const std::string& yaml, const std::string& file_name,
                               const std::string& base_dir, const ParseOptions& options) {
  SourceFile file(file_name, base_dir, options);
  try {
    TY_ASSIGN_OR_RETURN(YAML::Node root, internal::LoadMappingDocument(file, yaml, "job"));
    TY_ASSIGN_OR_RETURN(JobSpec job, ParseJob(file, root));
    job.source_file =
        (std::filesystem::absolute(base_dir) / std::filesystem::path(file_name).filename())
            .lexically_normal()
            .string();
    return job;
  } catch (const YAML::Exception& e) {
    return file.ErrorAt(e.mark, "cannot read YAML: " + e.msg);
  }
}

StatusOr<JobSpec> ParseJobFile(const std::string& path, const ParseOptions& options) {
  StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status().WithPrefix("job file " + path);
  std::filesystem::path absolute = std::filesystem::absolute(path).lexically_normal();
  TY_ASSIGN_OR_RETURN(JobSpec job,
                      ParseJobYaml(*text, path, absolute.parent_path().string(), options));
  job.source_file = absolute.string();
  return job;
}

}  // namespace trainyard::spec
