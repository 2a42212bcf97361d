#include "trainyard/spec/definition.h"

#include "trainyard/common/sha256.h"

namespace trainyard::spec {
namespace {

using json = nlohmann::json;

// Reads optional fields with type checks; the first error wins and names the field.
class Reader {
 public:
  Reader(const json& j, std::string context) : j_(j), context_(std::move(context)) {
    if (!j_.is_object()) error_ = InvalidArgument(context_ + " must be a JSON object");
  }

  void Str(const char* key, std::string* out) {
    if (!error_.ok() || !j_.contains(key) || j_[key].is_null()) return;
    if (!j_[key].is_string()) return Fail(key, "a string");
    *out = j_[key].get<std::string>();
  }
  void Bool(const char* key, bool* out) {
    if (!error_.ok() || !j_.contains(key) || j_[key].is_null()) return;
    if (!j_[key].is_boolean()) return Fail(key, "a boolean");
    *out = j_[key].get<bool>();
  }
  void Int(const char* key, std::optional<std::int64_t>* out) {
    if (!error_.ok() || !j_.contains(key) || j_[key].is_null()) return;
    if (!j_[key].is_number_integer()) return Fail(key, "an integer");
    *out = j_[key].get<std::int64_t>();
  }
  void Int(const char* key, int* out) {
    std::optional<std::int64_t> v;
    Int(key, &v);
    if (v) *out = static_cast<int>(*v);
  }
  void StrMap(const char* key, std::map<std::string, std::string>* out) {
    if (!error_.ok() || !j_.contains(key) || j_[key].is_null()) return;
    if (!j_[key].is_object()) return Fail(key, "an object of strings");
    for (const auto& [k, v] : j_[key].items()) {
      if (!v.is_string()) return Fail(key, "an object of strings");
      (*out)[k] = v.get<std::string>();
    }
  }
  void StrList(const char* key, std::vector<std::string>* out) {
    if (!error_.ok() || !j_.contains(key) || j_[key].is_null()) return;
    if (!j_[key].is_array()) return Fail(key, "an array of strings");
    for (const auto& v : j_[key]) {
      if (!v.is_string()) return Fail(key, "an array of strings");
      out->push_back(v.get<std::string>());
    }
  }
  const json* Sub(const char* key) {
    if (!error_.ok() || !j_.contains(key) || j_[key].is_null()) return nullptr;
    return &j_[key];
  }
  void Merge(const Status& s) {
    if (error_.ok() && !s.ok()) error_ = s;
  }
  const Status& status() const { return error_; }

 private:
  void Fail(const char* key, const char* what) {
    error_ = InvalidArgument(context_ + "." + key + " must be " + what);
  }
  const json& j_;
  std::string context_;
  Status error_;
};

json CondaToJson(const CondaSpec& c) {
  return json{{"text", c.text},
              {"channels", c.channels},
              {"conda_packages", c.conda_packages},
              {"pip", c.pip}};
}

StatusOr<CondaSpec> CondaFromJson(const json& j) {
  // A client without a YAML parser (the Python SDK) may send the file's text alone: it is
  // parsed here, with the CLI's rules and messages.
  if (j.is_object() && j.contains("text") && j["text"].is_string() && !j.contains("channels") &&
      !j.contains("conda_packages") && !j.contains("pip")) {
    return ParseCondaYaml(j["text"].get<std::string>(), "environment.conda.text");
  }
  CondaSpec c;
  Reader r(j, "environment.conda");
  r.Str("text", &c.text);
  r.StrList("channels", &c.channels);
  r.StrList("conda_packages", &c.conda_packages);
  r.StrList("pip", &c.pip);
  if (!r.status().ok()) return r.status();
  return c;
}

const char* InputKindName(InputSpec::Kind k) {
  switch (k) {
    case InputSpec::Kind::kLiteral:
      return "literal";
    case InputSpec::Kind::kUriFile:
      return "uri_file";
    case InputSpec::Kind::kUriFolder:
      return "uri_folder";
  }
  return "literal";
}

}  // namespace

json RegistryToJson(const RegistryCredentials& registry, SecretMode mode) {
  const std::string password =
      mode == SecretMode::kRedact && !registry.password.empty() ? "***" : registry.password;
  return json{
      {"address", registry.address}, {"username", registry.username}, {"password", password}};
}

json EnvironmentDefinition::ToJson(SecretMode mode) const {
  json j{{"name", name},
         {"version", version},
         {"description", description},
         {"image", image},
         {"build_context", build_context},
         {"dockerfile", dockerfile},
         {"dockerfile_path", dockerfile_path},
         {"pip_requirements", pip_requirements},
         {"user_managed_dependencies", user_managed_dependencies},
         {"environment_variables", environment_variables},
         {"platform", platform},
         {"tags", tags}};
  j["conda"] = conda ? CondaToJson(*conda) : json(nullptr);
  j["image_registry"] = registry ? RegistryToJson(*registry, mode) : json(nullptr);
  return j;
}

StatusOr<EnvironmentDefinition> EnvironmentDefinition::FromJson(const json& j) {
  EnvironmentDefinition d;
  Reader r(j, "environment");
  r.Str("name", &d.name);
  r.Str("version", &d.version);
  r.Str("description", &d.description);
  r.Str("image", &d.image);
  r.Str("build_context", &d.build_context);
  r.Str("dockerfile", &d.dockerfile);
  r.Str("dockerfile_path", &d.dockerfile_path);
  r.StrList("pip_requirements", &d.pip_requirements);
  r.Bool("user_managed_dependencies", &d.user_managed_dependencies);
  r.StrMap("environment_variables", &d.environment_variables);
  r.Str("platform", &d.platform);
  r.StrMap("tags", &d.tags);
  if (const json* c = r.Sub("conda")) {
    auto conda = CondaFromJson(*c);
    r.Merge(conda.status());
    if (conda.ok()) d.conda = std::move(conda).value();
  }
  if (const json* reg = r.Sub("image_registry")) {
    RegistryCredentials creds;
    Reader rr(*reg, "environment.image_registry");
    rr.Str("address", &creds.address);
    rr.Str("username", &creds.username);
    rr.Str("password", &creds.password);
    r.Merge(rr.status());
    d.registry = creds;
  }
  if (!r.status().ok()) return r.status();
  int sources = !d.image.empty() + !d.build_context.empty() + !d.dockerfile.empty();
  if (sources != 1) {
    return InvalidArgument(
        "environment must have exactly one of image, build_context or dockerfile");
  }
  if (!d.build_context.empty() && !IsSha256Hex(d.build_context)) {
    return InvalidArgument("environment.build_context must be a snapshot id (64 hex digits)");
  }
  if (d.user_managed_dependencies && d.HasManagedDependencies()) {
    return InvalidArgument(
        "environment has pip or conda dependencies but user_managed_dependencies is true");
  }
  return d;
}

std::string EnvironmentDefinition::DefinitionHash() const {
  json j = ToJson(SecretMode::kPlain);
  for (const char* k : {"name", "version", "description", "tags"}) j.erase(k);
  if (j["image_registry"].is_object()) j["image_registry"].erase("password");
  return Sha256Hex(j.dump());
}

bool EnvironmentDefinition::HasManagedDependencies() const {
  return !pip_requirements.empty() ||
         (conda && (!conda->pip.empty() || !conda->conda_packages.empty()));
}

std::vector<std::string> EnvironmentDefinition::ManagedPipRequirements() const {
  std::vector<std::string> out;
  if (conda) out = conda->pip;
  out.insert(out.end(), pip_requirements.begin(), pip_requirements.end());
  return out;
}

EnvironmentDefinition DefinitionFromSpec(const EnvironmentSpec& spec,
                                         const std::string& build_context_snapshot) {
  EnvironmentDefinition d;
  d.name = spec.name;
  d.version = spec.version;
  d.description = spec.description;
  d.image = spec.image;
  if (spec.build) {
    d.build_context = build_context_snapshot;
    d.dockerfile_path = spec.build->dockerfile_path;
  }
  d.dockerfile = spec.dockerfile;
  d.conda = spec.conda;
  d.pip_requirements = spec.pip_requirements;
  d.user_managed_dependencies = spec.user_managed_dependencies;
  d.environment_variables = spec.environment_variables;
  d.registry = spec.registry;
  d.platform = spec.platform;
  d.tags = spec.tags;
  return d;
}

json RunRequest::ToJson(SecretMode mode) const {
  json j{{"name", name},
         {"experiment_name", experiment_name},
         {"display_name", display_name},
         {"description", description},
         {"tags", tags},
         {"command", command},
         {"snapshot_id", snapshot_id},
         {"code_copy", code_copy},
         {"environment_name", environment_name},
         {"environment_version", environment_version},
         {"environment_registry", environment_registry},
         {"environment_variables", environment_variables},
         {"instance_count", instance_count},
         {"priority", priority},
         {"compute", compute}};
  j["environment"] = environment ? environment->ToJson(mode) : json(nullptr);
  json in = json::object();
  for (const auto& [k, v] : inputs) {
    in[k] = {{"kind", InputKindName(v.kind)},
             {"value", v.value},
             {"path", v.path},
             {"mode", v.mode},
             {"type", v.type}};
  }
  j["inputs"] = in;
  json out = json::object();
  for (const auto& [k, v] : outputs) {
    out[k] = {{"type", v.type},
              {"mode", v.mode},
              {"path", v.path},
              {"name", v.name},
              {"version", v.version}};
  }
  j["outputs"] = out;
  j["timeout_seconds"] = timeout_seconds ? json(*timeout_seconds) : json(nullptr);
  j["shm_size_bytes"] = shm_size_bytes ? json(*shm_size_bytes) : json(nullptr);
  j["distribution"] =
      distribution ? json{{"type", distribution->type},
                          {"process_count_per_instance", distribution->process_count_per_instance},
                          {"parameter_server_count", distribution->parameter_server_count}}
                   : json(nullptr);
  return j;
}

namespace {

// [A-Za-z_][A-Za-z0-9_]*: input, output and environment variable names.
bool IsIdentifier(const std::string& s) {
  if (s.empty() || s.size() > 255) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && (i == 0 || c < '0' || c > '9')) return false;
  }
  return true;
}

Status CheckNames(const RunRequest& q) {
  for (const auto& [k, v] : q.inputs) {
    if (!IsIdentifier(k)) return InvalidArgument("job.inputs: invalid input name '" + k + "'");
  }
  for (const auto& [k, v] : q.outputs) {
    if (!IsIdentifier(k)) return InvalidArgument("job.outputs: invalid output name '" + k + "'");
  }
  for (const auto& [k, v] : q.environment_variables) {
    if (!IsIdentifier(k)) {
      return InvalidArgument("job.environment_variables: invalid variable name '" + k + "'");
    }
  }
  if (q.environment) {
    for (const auto& [k, v] : q.environment->environment_variables) {
      if (!IsIdentifier(k)) {
        return InvalidArgument("environment.environment_variables: invalid variable name '" + k +
                               "'");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<RunRequest> RunRequest::FromJson(const json& j) {
  RunRequest q;
  Reader r(j, "job");
  r.Str("name", &q.name);
  r.Str("experiment_name", &q.experiment_name);
  r.Str("display_name", &q.display_name);
  r.Str("description", &q.description);
  r.StrMap("tags", &q.tags);
  r.Str("command", &q.command);
  r.Str("snapshot_id", &q.snapshot_id);
  r.Bool("code_copy", &q.code_copy);
  r.Str("environment_name", &q.environment_name);
  r.Str("environment_version", &q.environment_version);
  r.Str("environment_registry", &q.environment_registry);
  r.StrMap("environment_variables", &q.environment_variables);
  r.Int("instance_count", &q.instance_count);
  r.Int("priority", &q.priority);
  r.Str("compute", &q.compute);
  r.Int("timeout_seconds", &q.timeout_seconds);
  r.Int("shm_size_bytes", &q.shm_size_bytes);
  if (const json* e = r.Sub("environment")) {
    auto env = EnvironmentDefinition::FromJson(*e);
    r.Merge(env.status());
    if (env.ok()) q.environment = std::move(env).value();
  }
  static const json kEmpty = json::object();
  if (const json* in = r.Sub("inputs")) {
    if (!in->is_object()) r.Merge(InvalidArgument("job.inputs must be an object"));
    for (const auto& [k, v] : (in->is_object() ? *in : kEmpty).items()) {
      InputSpec spec;
      std::string kind = "literal";
      Reader ir(v, "job.inputs." + k);
      ir.Str("kind", &kind);
      ir.Str("value", &spec.value);
      ir.Str("path", &spec.path);
      ir.Str("mode", &spec.mode);
      ir.Str("type", &spec.type);
      r.Merge(ir.status());
      if (kind == "literal") {
        spec.kind = InputSpec::Kind::kLiteral;
      } else if (kind == "uri_file") {
        spec.kind = InputSpec::Kind::kUriFile;
      } else if (kind == "uri_folder") {
        spec.kind = InputSpec::Kind::kUriFolder;
      } else {
        r.Merge(InvalidArgument("job.inputs." + k + ".kind '" + kind + "' is unknown"));
      }
      q.inputs[k] = spec;
    }
  }
  if (const json* out = r.Sub("outputs")) {
    if (!out->is_object()) r.Merge(InvalidArgument("job.outputs must be an object"));
    for (const auto& [k, v] : (out->is_object() ? *out : kEmpty).items()) {
      OutputSpec spec;
      Reader orr(v, "job.outputs." + k);
      orr.Str("type", &spec.type);
      orr.Str("mode", &spec.mode);
      orr.Str("path", &spec.path);
      orr.Str("name", &spec.name);
      orr.Str("version", &spec.version);
      r.Merge(orr.status());
      q.outputs[k] = spec;
    }
  }
  if (const json* d = r.Sub("distribution")) {
    DistributionSpec dist;
    Reader dr(*d, "job.distribution");
    dr.Str("type", &dist.type);
    dr.Int("process_count_per_instance", &dist.process_count_per_instance);
    dr.Int("parameter_server_count", &dist.parameter_server_count);
    r.Merge(dr.status());
    q.distribution = dist;
  }
  if (!r.status().ok()) return r.status();
  if (q.command.empty()) return InvalidArgument("job.command is required");
  if (q.environment && !q.environment_name.empty()) {
    return InvalidArgument("job has both an inline environment and environment_name");
  }
  if (!q.environment && q.environment_name.empty()) {
    return InvalidArgument("job needs an environment (inline or environment_name)");
  }
  if (!q.snapshot_id.empty() && !IsSha256Hex(q.snapshot_id)) {
    return InvalidArgument("job.snapshot_id must be a snapshot id (64 hex digits)");
  }
  if (q.instance_count < 1) return InvalidArgument("job.instance_count must be at least 1");
  TY_RETURN_IF_ERROR(CheckNames(q));
  return q;
}

RunRequest RequestFromJob(const JobSpec& job, const std::string& code_snapshot,
                          std::optional<EnvironmentDefinition> inline_env) {
  RunRequest q;
  q.name = job.name;
  q.experiment_name = job.experiment_name.empty() ? "Default" : job.experiment_name;
  q.display_name = job.display_name;
  q.description = job.description;
  q.tags = job.tags;
  q.command = job.command;
  q.snapshot_id = code_snapshot;
  q.code_copy = job.code_copy;
  if (job.environment.kind == EnvironmentRef::Kind::kRegistered) {
    q.environment_name = job.environment.name;
    q.environment_version = job.environment.version;
    q.environment_registry = job.environment.registry;
  } else {
    q.environment = std::move(inline_env);
  }
  q.environment_variables = job.environment_variables;
  q.inputs = job.inputs;
  q.outputs = job.outputs;
  q.timeout_seconds = job.timeout_seconds;
  q.shm_size_bytes = job.shm_size_bytes;
  q.instance_count = job.instance_count;
  q.priority = job.priority;
  q.compute = job.compute;
  q.distribution = job.distribution;
  return q;
}

}  // namespace trainyard::spec
