// Compute targets: the definition's JSON wire form, its checks, the default `local` compute and
// compute YAML files (docs/compute.md).

#include "trainyard/spec/compute.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string_view>
#include <thread>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/spec.h"
#include "trainyard/spec/spec_internal.h"

namespace trainyard::spec {
namespace {

using json = nlohmann::json;
using internal::Entry;
using internal::Mapping;
using internal::SourceFile;

constexpr int kMaxNodes = 10000;
constexpr int kMaxGpus = 64;
constexpr std::int64_t kMinMemoryBytes = 6LL << 20;  // Docker refuses a smaller memory limit

// clang-format off
constexpr std::array<std::string_view, 20> kComputeKeys = {
    "$schema", "name", "type", "description", "max_nodes", "max_instances", "min_instances",
    "node_cpus", "node_memory", "node_gpus", "idle_seconds", "idle_time_before_scale_down",
    "partition", "account", "qos", "gpus_per_node", "container_runtime", "sbatch_args",
    "registry", "shared_dir"};
constexpr std::array<std::string_view, 15> kJsonKeys = {
    "name", "type", "max_nodes", "node_cpus", "node_memory_bytes", "node_gpus", "idle_seconds",
    "partition", "account", "qos", "gpus_per_node", "container_runtime", "sbatch_args",
    "registry", "shared_dir"};
constexpr std::array<std::string_view, 3> kRegistryKeys = {"address", "username", "password"};
constexpr const char* kRuntimes = "docker or podman";
// clang-format on

// "2", "0.5": a finite decimal number, nothing else.
bool ParseNumber(const std::string& text, double* out) {
  if (text.empty() || Trim(text).size() != text.size()) return false;
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(v)) return false;
  // strtod also takes hex floats, "inf" and "nan"; a CPU count is written in decimal.
  if (text.find_first_not_of("+-.0123456789eE") != std::string::npos) return false;
  *out = v;
  return true;
}

// An error at the later key when `m` gives a setting under both our name and Azure's.
Status EitherNotBoth(const SourceFile& file, const Mapping& m, std::string_view ours,
                     std::string_view azure) {
  const Entry* a = m.Find(ours);
  const Entry* b = m.Find(azure);
  if (a == nullptr || b == nullptr) return Status::Ok();
  const Entry* later = a->key_node.Mark().pos > b->key_node.Mark().pos ? a : b;
  return file.ErrorAt(later->key_node.Mark(), "give either '" + std::string(ours) + "' or '" +
                                                  std::string(azure) + "', not both");
}

// The `slurm` keys: partition, account, qos, gpus_per_node, container_runtime, sbatch_args (a
// list of strings), registry {address, username, password} (values may be ${{env.VAR}}
// references) and shared_dir.
Status ParseSlurmKeys(const SourceFile& file, const Mapping& top, ComputeDefinition* def) {
  const bool slurm = def->type == "slurm";
  for (std::string_view key : {"partition", "account", "qos", "gpus_per_node", "container_runtime",
                               "sbatch_args", "registry", "shared_dir"}) {
    const Entry* e = top.Find(key);
    if (e != nullptr && !slurm) {
      return file.ErrorAt(e->key_node.Mark(), "'" + std::string(key) +
                                                  "' is a setting of slurm computes (type: "
                                                  "slurm), not of type " +
                                                  def->type);
    }
  }
  if (!slurm) return Status::Ok();
  std::string* strings[] = {&def->partition, &def->account, &def->qos, &def->container_runtime,
                            &def->shared_dir};
  const char* string_keys[] = {"partition", "account", "qos", "container_runtime", "shared_dir"};
  for (std::size_t i = 0; i < std::size(string_keys); ++i) {
    if (const Entry* e = top.Find(string_keys[i])) {
      TY_ASSIGN_OR_RETURN(*strings[i], internal::ReadNonEmptyString(file, *e));
    }
  }
  if (def->partition.empty()) {
    return file.ErrorAt(top.mark(),
                        "a slurm compute needs 'partition' (the Slurm partition its jobs go to, "
                        "e.g. gpu)");
  }
  if (const Entry* e = top.Find("container_runtime");
      e != nullptr && def->container_runtime != "docker" && def->container_runtime != "podman") {
    return file.ErrorAt(e->mark(), "'container_runtime' must be " + std::string(kRuntimes) +
                                       ", got " + internal::Describe(e->value));
  }
  if (const Entry* e = top.Find("shared_dir");
      e != nullptr && !std::filesystem::path(def->shared_dir).is_absolute()) {
    return file.ErrorAt(e->mark(),
                        "'shared_dir' must be an absolute path (the folder every "
                        "node sees at the same path), got " +
                            internal::Describe(e->value));
  }
  if (const Entry* e = top.Find("gpus_per_node")) {
    TY_ASSIGN_OR_RETURN(
        std::int64_t gpus,
        internal::ReadInteger(file, *e, 0, "an integer from 0 to " + std::to_string(kMaxGpus)));
    if (gpus > kMaxGpus) {
      return file.ErrorAt(e->mark(), "'gpus_per_node' must be at most " + std::to_string(kMaxGpus) +
                                         ", got " + internal::Describe(e->value));
    }
    def->gpus_per_node = static_cast<int>(gpus);
  }
  if (const Entry* e = top.Find("sbatch_args")) {
    if (!e->value.IsSequence()) {
      return file.ErrorAt(e->mark(),
                          "'sbatch_args' must be a list of sbatch options, like "
                          "[\"--exclusive\", \"--constraint=a100\"], got " +
                              internal::Describe(e->value));
    }
    for (const auto& item : e->value) {
      if (!item.IsScalar() || item.Scalar().empty()) {
        return file.ErrorAt(item.Mark(), "each of 'sbatch_args' must be a non-empty string, got " +
                                             internal::Describe(item));
      }
      def->sbatch_args.push_back(item.Scalar());
    }
  }
  if (const Entry* e = top.Find("registry")) {
    TY_ASSIGN_OR_RETURN(def->registry, internal::ReadRegistry(file, *e));
  }
  return Status::Ok();
}

StatusOr<ComputeDefinition> ParseCompute(const SourceFile& file, const YAML::Node& root) {
  // Azure's `size` names a VM size, which means nothing here: say what to write instead.
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it->first.IsScalar() && it->first.Scalar() == "size") {
      return file.ErrorAt(it->first.Mark(),
                          "'size' (an Azure VM size) is not supported; give the node's size as "
                          "node_cpus, node_memory and node_gpus");
    }
  }
  TY_ASSIGN_OR_RETURN(Mapping top, Mapping::Read(file, root, "", "compute", kComputeKeys));
  TY_RETURN_IF_ERROR(EitherNotBoth(file, top, "max_nodes", "max_instances"));
  TY_RETURN_IF_ERROR(EitherNotBoth(file, top, "idle_seconds", "idle_time_before_scale_down"));
  ComputeDefinition def;
  if (const Entry* e = top.Find("$schema")) {
    TY_ASSIGN_OR_RETURN(std::string schema, internal::ReadString(file, *e));
    (void)schema;  // informational: editors use it for completion
  }
  if (const Entry* e = top.Find("description")) {
    TY_ASSIGN_OR_RETURN(std::string description, internal::ReadString(file, *e));
    (void)description;  // accepted for Azure files; not stored
  }
  const Entry* name = top.Find("name");
  if (name == nullptr) {
    return file.ErrorAt(top.mark(),
                        "missing required key 'name' in compute (the name jobs use "
                        "in 'compute:', e.g. cpu-cluster)");
  }
  TY_ASSIGN_OR_RETURN(def.name, internal::ReadNonEmptyString(file, *name));
  if (!IsValidName(def.name)) {
    return file.ErrorAt(name->mark(),
                        "'name' must be a name of letters, digits, '.', '_' and '-' starting "
                        "with a letter or digit, got " +
                            internal::Describe(name->value));
  }
  if (const Entry* e = top.Find("type")) {
    TY_ASSIGN_OR_RETURN(std::string type, internal::ReadString(file, *e));
    if (type == "amlcompute") type = "docker";
    if (type != "docker" && type != "process" && type != "slurm") {
      return file.ErrorAt(e->mark(),
                          "'type' must be docker, process, slurm or amlcompute (= docker), "
                          "got " +
                              internal::Describe(e->value));
    }
    def.type = type;
  }
  const Entry* max_nodes = top.Find("max_nodes");
  if (max_nodes == nullptr) max_nodes = top.Find("max_instances");
  if (max_nodes != nullptr) {
    TY_ASSIGN_OR_RETURN(
        std::int64_t n,
        internal::ReadInteger(file, *max_nodes, 1,
                              "an integer from 1 to " + std::to_string(kMaxNodes) + " (nodes)"));
    if (n > kMaxNodes) {
      return file.ErrorAt(max_nodes->mark(), "'" + max_nodes->path + "' must be at most " +
                                                 std::to_string(kMaxNodes) + ", got " +
                                                 internal::Describe(max_nodes->value));
    }
    def.max_nodes = static_cast<int>(n);
  }
  if (const Entry* e = top.Find("min_instances")) {
    std::int64_t n = -1;
    StatusOr<std::int64_t> read = internal::ReadInteger(file, *e, 0, "0");
    if (read.ok()) n = *read;
    if (n != 0) {
      return file.ErrorAt(e->mark(),
                          "'min_instances' must be 0 (nodes start when runs need "
                          "them), got " +
                              internal::Describe(e->value));
    }
  }
  if (const Entry* e = top.Find("node_cpus")) {
    double cpus = -1;
    if (!e->value.IsScalar() || !ParseNumber(e->value.Scalar(), &cpus) || cpus < 0) {
      return file.ErrorAt(e->mark(),
                          "'node_cpus' must be a number of CPUs like 2 or 0.5 (0: "
                          "the machine's), got " +
                              internal::Describe(e->value));
    }
    def.node_cpus = cpus;
  }
  if (const Entry* e = top.Find("node_memory")) {
    StatusOr<std::int64_t> bytes = e->value.IsScalar()
                                       ? ParseByteSize(e->value.Scalar())
                                       : StatusOr<std::int64_t>(InvalidArgument("not a scalar"));
    if (!bytes.ok() || (*bytes != 0 && *bytes < kMinMemoryBytes)) {
      return file.ErrorAt(e->mark(),
                          "'node_memory' must be a size like 4g or 512m (at least "
                          "6m; 0: the machine's), got " +
                              internal::Describe(e->value));
    }
    def.node_memory_bytes = *bytes;
  }
  if (const Entry* e = top.Find("node_gpus")) {
    TY_ASSIGN_OR_RETURN(
        std::int64_t gpus,
        internal::ReadInteger(file, *e, 0, "an integer from 0 to " + std::to_string(kMaxGpus)));
    if (gpus > kMaxGpus) {
      return file.ErrorAt(e->mark(), "'node_gpus' must be at most " + std::to_string(kMaxGpus) +
                                         ", got " + internal::Describe(e->value));
    }
    if (gpus > 0 && def.type == "process") {
      return file.ErrorAt(e->mark(),
                          "'node_gpus' must be 0 for a process compute (it runs "
                          "commands on the host, without GPU assignment)");
    }
    def.node_gpus = static_cast<int>(gpus);
  }
  const Entry* idle = top.Find("idle_seconds");
  if (idle == nullptr) idle = top.Find("idle_time_before_scale_down");
  if (idle != nullptr) {
    TY_ASSIGN_OR_RETURN(def.idle_seconds,
                        internal::ReadInteger(file, *idle, 0, "an integer >= 0 (seconds)"));
  }
  TY_RETURN_IF_ERROR(ParseSlurmKeys(file, top, &def));
  // Every field was checked where it was read; this catches a rule added to Validate only.
  if (Status valid = def.Validate(); !valid.ok()) {
    return file.ErrorAt(top.mark(), valid.message());
  }
  return def;
}

}  // namespace

json ComputeDefinition::ToJson(SecretMode mode) const {
  json j{{"name", name},
         {"type", type},
         {"max_nodes", max_nodes},
         {"node_cpus", node_cpus},
         {"node_memory_bytes", node_memory_bytes},
         {"node_gpus", node_gpus},
         {"idle_seconds", idle_seconds}};
  if (type != "slurm") return j;
  j["partition"] = partition;
  j["account"] = account;
  j["qos"] = qos;
  j["gpus_per_node"] = gpus_per_node;
  j["container_runtime"] = container_runtime;
  j["sbatch_args"] = sbatch_args;
  j["shared_dir"] = shared_dir;
  j["registry"] = registry ? RegistryToJson(*registry, mode) : json(nullptr);
  return j;
}

StatusOr<ComputeDefinition> ComputeDefinition::FromJson(const json& j) {
  if (!j.is_object()) return InvalidArgument("a compute definition must be a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (std::find(kJsonKeys.begin(), kJsonKeys.end(), key) == kJsonKeys.end()) {
      std::string allowed;
      for (std::string_view k : kJsonKeys)
        allowed += (allowed.empty() ? "" : ", ") + std::string(k);
      return InvalidArgument("unknown field '" + key + "' in compute; allowed: " + allowed);
    }
  }
  ComputeDefinition d;
  auto bad = [](const char* key, const char* what) {
    return InvalidArgument(std::string("compute.") + key + " must be " + what);
  };
  auto present = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  auto integer = [&](const char* key, std::int64_t* out) -> Status {
    if (!present(key)) return Status::Ok();
    if (!j[key].is_number_integer()) return bad(key, "an integer");
    *out = j[key].get<std::int64_t>();
    return Status::Ok();
  };
  if (present("name")) {
    if (!j["name"].is_string()) return bad("name", "a string");
    d.name = j["name"].get<std::string>();
  }
  if (present("type")) {
    if (!j["type"].is_string()) return bad("type", "a string");
    d.type = j["type"].get<std::string>();
  }
  if (present("node_cpus")) {
    if (!j["node_cpus"].is_number()) return bad("node_cpus", "a number");
    d.node_cpus = j["node_cpus"].get<double>();
  }
  for (auto [key, out] :
       {std::pair{"partition", &d.partition}, std::pair{"account", &d.account},
        std::pair{"qos", &d.qos}, std::pair{"container_runtime", &d.container_runtime},
        std::pair{"shared_dir", &d.shared_dir}}) {
    if (!present(key)) continue;
    if (!j[key].is_string()) return bad(key, "a string");
    *out = j[key].get<std::string>();
  }
  if (present("sbatch_args")) {
    if (!j["sbatch_args"].is_array()) return bad("sbatch_args", "a list of strings");
    for (const auto& a : j["sbatch_args"]) {
      if (!a.is_string()) return bad("sbatch_args", "a list of strings");
      d.sbatch_args.push_back(a.get<std::string>());
    }
  }
  if (present("registry")) {
    const json& r = j["registry"];
    if (!r.is_object()) return bad("registry", "an object {address, username, password}");
    RegistryCredentials creds;
    std::string* fields[] = {&creds.address, &creds.username, &creds.password};
    for (std::size_t i = 0; i < kRegistryKeys.size(); ++i) {
      const std::string key(kRegistryKeys[i]);
      if (!r.contains(key) || !r[key].is_string()) {
        return InvalidArgument("compute.registry." + key + " must be a string");
      }
      *fields[i] = r[key].get<std::string>();
    }
    for (const auto& [key, value] : r.items()) {
      if (std::find(kRegistryKeys.begin(), kRegistryKeys.end(), key) == kRegistryKeys.end()) {
        return InvalidArgument("unknown field '" + key +
                               "' in compute.registry; allowed: address, username, password");
      }
    }
    d.registry = std::move(creds);
  }
  std::int64_t max_nodes = d.max_nodes, gpus = d.node_gpus, gpus_per_node = d.gpus_per_node;
  TY_RETURN_IF_ERROR(integer("gpus_per_node", &gpus_per_node));
  d.gpus_per_node = static_cast<int>(std::clamp<std::int64_t>(gpus_per_node, -1, kMaxGpus + 1));
  TY_RETURN_IF_ERROR(integer("max_nodes", &max_nodes));
  TY_RETURN_IF_ERROR(integer("node_memory_bytes", &d.node_memory_bytes));
  TY_RETURN_IF_ERROR(integer("node_gpus", &gpus));
  TY_RETURN_IF_ERROR(integer("idle_seconds", &d.idle_seconds));
  // Out-of-range values are kept out of range (clamped), so Validate names them.
  d.max_nodes = static_cast<int>(std::clamp<std::int64_t>(max_nodes, -1, kMaxNodes + 1));
  d.node_gpus = static_cast<int>(std::clamp<std::int64_t>(gpus, -1, kMaxGpus + 1));
  return d;
}

Status ComputeDefinition::Validate() const {
  if (!IsValidName(name)) {
    return InvalidArgument("compute name '" + name +
                           "' must be a name of letters, digits, '.', '_' and '-' starting with a "
                           "letter or digit");
  }
  if (type != "docker" && type != "process" && type != "slurm") {
    return InvalidArgument("compute " + name + ": type must be docker, process or slurm, got '" +
                           type + "'");
  }
  if (max_nodes < 1 || max_nodes > kMaxNodes) {
    return InvalidArgument("compute " + name + ": max_nodes must be from 1 to " +
                           std::to_string(kMaxNodes) + ", got " + std::to_string(max_nodes));
  }
  if (!std::isfinite(node_cpus) || node_cpus < 0) {
    return InvalidArgument("compute " + name +
                           ": node_cpus must be a number >= 0 (0: the "
                           "machine's), got " +
                           std::to_string(node_cpus));
  }
  if (node_memory_bytes < 0 || (node_memory_bytes > 0 && node_memory_bytes < kMinMemoryBytes)) {
    return InvalidArgument("compute " + name +
                           ": node_memory_bytes must be 0 (the machine's) "
                           "or at least 6 MiB (" +
                           std::to_string(kMinMemoryBytes) + "), got " +
                           std::to_string(node_memory_bytes));
  }
  if (node_gpus < 0 || node_gpus > kMaxGpus) {
    return InvalidArgument("compute " + name + ": node_gpus must be from 0 to " +
                           std::to_string(kMaxGpus) + ", got " + std::to_string(node_gpus));
  }
  if (type == "process" && node_gpus > 0) {
    return InvalidArgument("compute " + name +
                           ": node_gpus must be 0 for a process compute (it runs commands on "
                           "the host, without GPU assignment)");
  }
  if (idle_seconds < 0) {
    return InvalidArgument("compute " + name + ": idle_seconds must be >= 0, got " +
                           std::to_string(idle_seconds));
  }
  return ValidateSlurm();
}

Status ComputeDefinition::ValidateSlurm() const {
  const std::string where = "compute " + name + ": ";
  if (type != "slurm") {
    if (!partition.empty() || !account.empty() || !qos.empty() || gpus_per_node != 0 ||
        container_runtime != "docker" || !sbatch_args.empty() || registry || !shared_dir.empty()) {
      return InvalidArgument(where +
                             "partition, account, qos, gpus_per_node, container_runtime, "
                             "sbatch_args, registry and shared_dir are settings of slurm "
                             "computes, not of type " +
                             type);
    }
    return Status::Ok();
  }
  if (partition.empty()) {
    return InvalidArgument(where + "a slurm compute needs a partition (--partition NAME)");
  }
  // The values travel as sbatch arguments (never through a shell) and into job scripts (quoted);
  // a name with a newline or NUL has no business in either.
  auto plain = [](const std::string& v) {
    return v.find_first_of(std::string("\n\r\0", 3)) == std::string::npos;
  };
  for (auto [key, value] : {std::pair{"partition", &partition}, std::pair{"account", &account},
                            std::pair{"qos", &qos}}) {
    if (!plain(*value) || value->find_first_of(" \t") != std::string::npos) {
      return InvalidArgument(where + key + " must be a Slurm name without spaces, got '" + *value +
                             "'");
    }
  }
  if (gpus_per_node < 0 || gpus_per_node > kMaxGpus) {
    return InvalidArgument(where + "gpus_per_node must be from 0 to " + std::to_string(kMaxGpus) +
                           ", got " + std::to_string(gpus_per_node));
  }
  if (container_runtime != "docker" && container_runtime != "podman") {
    return InvalidArgument(where + "container_runtime must be " + kRuntimes + ", got '" +
                           container_runtime + "'");
  }
  for (const auto& a : sbatch_args) {
    if (a.empty() || !plain(a) || a[0] != '-') {
      return InvalidArgument(where +
                             "each sbatch argument must be an option starting with '-' "
                             "(like --exclusive or --constraint=a100), got '" +
                             a + "'");
    }
  }
  if (!shared_dir.empty() &&
      (!std::filesystem::path(shared_dir).is_absolute() || !plain(shared_dir))) {
    return InvalidArgument(where + "shared_dir must be an absolute path, got '" + shared_dir + "'");
  }
  if (registry) {
    if (registry->address.empty() || registry->username.empty() || registry->password.empty()) {
      return InvalidArgument(where + "the registry needs an address, a username and a password");
    }
    if (!plain(registry->address) || registry->address.find_first_of(" /\t") != std::string::npos) {
      return InvalidArgument(where + "the registry address must be HOST[:PORT], got '" +
                             registry->address + "'");
    }
  }
  if (node_cpus != 0 || node_memory_bytes != 0 || node_gpus != 0) {
    return InvalidArgument(where +
                           "a slurm node's size is its partition's: leave node_cpus, "
                           "node_memory and node_gpus out (ask for GPUs with gpus_per_node, "
                           "for memory with an sbatch argument such as --mem=64G)");
  }
  return Status::Ok();
}

bool ComputeDefinition::SameSettings(const ComputeDefinition& other) const {
  auto same_registry = [&] {
    if (registry.has_value() != other.registry.has_value()) return false;
    return !registry || (registry->address == other.registry->address &&
                         registry->username == other.registry->username &&
                         registry->password == other.registry->password);
  };
  return type == other.type && max_nodes == other.max_nodes && node_cpus == other.node_cpus &&
         node_memory_bytes == other.node_memory_bytes && node_gpus == other.node_gpus &&
         idle_seconds == other.idle_seconds && partition == other.partition &&
         account == other.account && qos == other.qos && gpus_per_node == other.gpus_per_node &&
         container_runtime == other.container_runtime && sbatch_args == other.sbatch_args &&
         shared_dir == other.shared_dir && same_registry();
}

MachineSize ThisMachine(const std::filesystem::path& nvidia_gpus_dir) {
  MachineSize m;
  m.cpus = static_cast<double>(std::max(1u, std::thread::hardware_concurrency()));
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page_size = ::sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) m.memory_bytes = static_cast<std::int64_t>(pages) * page_size;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(nvidia_gpus_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->is_directory(ec)) ++m.gpus;  // one folder per GPU, named by its PCI address
  }
  return m;
}

ComputeDefinition DefaultLocalCompute() {
  ComputeDefinition d;
  d.name = "local";
  d.type = "docker";
  d.max_nodes = 1;
  const MachineSize machine = ThisMachine();
  d.node_cpus = machine.cpus;
  d.node_memory_bytes = machine.memory_bytes;
  return d;
}

StatusOr<ComputeDefinition> ParseComputeYaml(const std::string& yaml,
                                             const std::string& file_name) {
  const ParseOptions options;
  SourceFile file(file_name, ".", options);  // a compute file names no paths
  try {
    TY_ASSIGN_OR_RETURN(YAML::Node root, internal::LoadMappingDocument(file, yaml, "compute"));
    return ParseCompute(file, root);
  } catch (const YAML::Exception& e) {
    return file.ErrorAt(e.mark, "cannot read YAML: " + e.msg);
  }
}

StatusOr<ComputeDefinition> ParseComputeFile(const std::string& path) {
  StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status().WithPrefix("compute file " + path);
  return ParseComputeYaml(*text, path);
}

}  // namespace trainyard::spec
