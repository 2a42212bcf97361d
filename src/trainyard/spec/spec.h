#pragma once

// Job and environment specifications: the validated form of the YAML files users write
// (CLI v2 style, see REFERENCE.md). Parsing resolves every local path relative to the YAML file
// and reads the files it names (Dockerfile, conda file, pip requirements), so a parsed spec
// carries contents, not paths, except for folders (code, build context, inputs).

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::spec {

// Credentials of a private registry. `password` is the resolved secret (after ${{env.VAR}}).
struct RegistryCredentials {
  std::string address;  // "127.0.0.1:5000", "myregistry.example:443"
  std::string username;
  std::string password;
};

// A build context: a folder with a Dockerfile (CLI v2 `build: {path, dockerfile_path}`).
struct BuildContextSpec {
  std::string path;                            // absolute folder path
  std::string dockerfile_path = "Dockerfile";  // relative to `path`, never escaping it
};

// The pip part and the conda packages of a conda environment file.
struct CondaSpec {
  std::string text;  // the file's contents, verbatim
  std::vector<std::string> channels;
  // Conda packages other than `python` and `pip` (which any Python image satisfies). Non-empty
  // means the image must have conda.
  std::vector<std::string> conda_packages;
  std::vector<std::string> pip;  // the `- pip: [...]` entries, in order
};

// Where and with what a script runs.
struct EnvironmentSpec {
  std::string name;     // empty for an inline (anonymous) environment
  std::string version;  // empty: the next version is assigned at registration
  std::string description;
  // Exactly one of: image, build, dockerfile.
  std::string image;                          // base image reference, pulled if absent
  std::optional<BuildContextSpec> build;      // a build context folder
  std::string dockerfile;                     // an inline Dockerfile text (`dockerfile:` key)
  std::optional<CondaSpec> conda;             // `conda_file:` (path relative to the YAML)
  std::vector<std::string> pip_requirements;  // `pip_requirements:` list or file, in order
  // true: the image's own Python is used as is and no dependency layer is built.
  bool user_managed_dependencies = false;
  std::map<std::string, std::string> environment_variables;
  std::optional<RegistryCredentials> registry;  // `image_registry: {address, username, password}`
  std::string platform = "linux/amd64";
  std::map<std::string, std::string> tags;
};

// How a job names its environment.
struct EnvironmentRef {
  enum class Kind { kInline, kRegistered };
  Kind kind = Kind::kInline;
  EnvironmentSpec inline_spec;  // kInline (also for `file:env.yml`)
  std::string name;             // kRegistered: `azureml:NAME:VERSION` or `azureml:NAME@latest`
  std::string version;          // kRegistered: empty means latest
  // kRegistered from a registry: azureml://registries/<registry>/environments/<name>/
  // (versions/<version> | labels/latest).
  std::string registry;
};

struct InputSpec {
  enum class Kind { kLiteral, kUriFile, kUriFolder };
  Kind kind = Kind::kLiteral;
  std::string value;  // kLiteral: the value as text ("3", "0.01", "true", "abc")
  // kUriFile/kUriFolder: an absolute local path (it exists), or a URI as written
  // (azureml://datastores/..., azureml://jobs/..., https://, wasbs://, abfss://, s3://;
  // spec/data_uri.h), which the daemon resolves in Preparing.
  std::string path;
  // ro_mount: read-only, at a path of the run (a local folder mounted as is; remote data
  // downloaded into the workspace's data cache first); download: the same from the data cache
  // for any source; direct: the URI itself is passed to the script, nothing is fetched.
  std::string mode = "ro_mount";
  // As written: uri_file, uri_folder, mlflow_model or custom_model (models are folders).
  std::string type;
};

// mlflow_model or custom_model: an input or output type that is a model rather than data.
bool IsModelType(std::string_view type);

struct OutputSpec {
  std::string type = "uri_folder";
  std::string mode = "rw_mount";
  // Where the output goes when the run ends: azureml://datastores/<ds>/paths/<p>; empty: only
  // the run's own outputs.
  std::string path;
  // When set, the output is registered when the run completes: as a model for a model type,
  // else as a data asset; `version` empty: the next one.
  std::string name;
  std::string version;
};

struct DistributionSpec {
  std::string type;  // "pytorch", "mpi", "tensorflow"
  int process_count_per_instance = 1;
  // tensorflow: of the run's nodes (one task each), the last `parameter_server_count` are
  // parameter servers ("ps" in TF_CONFIG) and the others workers. The job file's worker_count
  // sets the node count to worker_count + parameter_server_count.
  int parameter_server_count = 0;
};

struct JobSpec {
  std::string source_file;  // absolute path of the YAML, for messages
  std::string name;         // `name:`: the requested run name (unique); empty: generated
  std::string command;      // as written, before ${{...}} substitution
  std::string code;         // absolute folder path; empty when the job has no code
  EnvironmentRef environment;
  std::map<std::string, std::string> environment_variables;
  std::map<std::string, InputSpec> inputs;
  std::map<std::string, OutputSpec> outputs;
  std::string experiment_name;  // default: "Default"
  std::string display_name;
  std::string description;
  std::map<std::string, std::string> tags;
  std::optional<std::int64_t> timeout_seconds;  // limits.timeout
  std::optional<std::int64_t> shm_size_bytes;   // resources.shm_size ("2g", "512m", bytes)
  int instance_count = 1;                       // resources.instance_count
  int priority = 0;  // queue_settings.priority: low -100, medium 0, high 100, or an integer
  std::string compute = "local";  // `azureml:` prefix removed
  std::optional<DistributionSpec> distribution;
  // `snapshot:` (a trainyard extension): limits on the code snapshot of this job, overriding
  // the workspace's, and whether the run gets a writable copy of its code instead of read-only
  // hard links to the snapshot's objects.
  std::optional<std::uint64_t> snapshot_max_files;  // snapshot.max_files
  std::optional<std::uint64_t> snapshot_max_bytes;  // snapshot.max_size ("1g", bytes)
  bool code_copy = false;                           // snapshot.copy
};

// What parsing may consult besides the file system.
struct ParseOptions {
  // Looks up an environment variable for `${{env.NAME}}`; nullopt when unset. Defaults to
  // the process environment when empty.
  std::function<std::optional<std::string>(const std::string&)> getenv;
};

// Parses a job YAML file. Errors are InvalidArgument with "FILE:LINE:COL: message"; unknown
// keys name the allowed ones; missing files name the key and the resolved path. `command` and
// `environment` are required. A job file that cannot be read is its ReadFile error (NotFound).
StatusOr<JobSpec> ParseJobFile(const std::string& path, const ParseOptions& options = {});
// The same for YAML text; `file_name` is used in messages and `base_dir` resolves paths.
// JobSpec::source_file is then `base_dir` joined with the last component of `file_name`.
StatusOr<JobSpec> ParseJobYaml(const std::string& yaml, const std::string& file_name,
                               const std::string& base_dir, const ParseOptions& options = {});

// Parses an environment YAML file (name, version, image | build | dockerfile, conda_file,
// pip_requirements, user_managed_dependencies, environment_variables, image_registry, ...).
StatusOr<EnvironmentSpec> ParseEnvironmentFile(const std::string& path,
                                               const ParseOptions& options = {});
StatusOr<EnvironmentSpec> ParseEnvironmentYaml(const std::string& yaml,
                                               const std::string& file_name,
                                               const std::string& base_dir,
                                               const ParseOptions& options = {});

// Parses conda environment YAML text. `file_name` is used in messages.
StatusOr<CondaSpec> ParseCondaYaml(const std::string& text, const std::string& file_name);

// Queue priorities (JobSpec::priority, RunRequest::priority): higher starts first.
inline constexpr int kMinPriority = -1000;
inline constexpr int kMaxPriority = 1000;
inline constexpr int kPriorityLow = -100;
inline constexpr int kPriorityMedium = 0;
inline constexpr int kPriorityHigh = 100;

// Parses a queue priority (`queue_settings.priority`, `job create --priority`): low, medium,
// high (any case) or an integer from kMinPriority to kMaxPriority. InvalidArgument saying what is
// allowed otherwise.
StatusOr<int> ParsePriority(const std::string& text);

// Parses "2g", "512m", "64k", "1024" (bytes; units are powers of 1024, as Docker's).
// Units b, k, m, g, t, p in either case, optionally followed by "b" or "ib" ("2gb", "2GiB"), with
// at most one space before them. A fraction is allowed with a unit and rounds down to whole
// bytes ("1.5g" = 1610612736). Negative, garbage and values above INT64_MAX are InvalidArgument.
StatusOr<std::int64_t> ParseByteSize(const std::string& text);

// Substitutes `${{inputs.NAME}}` and `${{outputs.NAME}}` in a command. `inputs` maps each given
// input to its value as seen in the run (a literal or a container path); `outputs` likewise.
// A part in `$[[ ... ]]` is kept (without the brackets) when every input it references is given,
// and dropped otherwise (outputs it references count the same way). A reference to an
// undeclared input or output outside `$[[ ]]`, or any other `${{...}}` expression, is
// InvalidArgument naming it; so are an unterminated `${{` or `$[[` and a `$[[` inside `$[[ ]]`.
// Whitespace inside the braces is allowed: `${{ inputs.x }}`.
StatusOr<std::string> SubstituteCommand(const std::string& command,
                                        const std::map<std::string, std::string>& inputs,
                                        const std::map<std::string, std::string>& outputs);

}  // namespace trainyard::spec
