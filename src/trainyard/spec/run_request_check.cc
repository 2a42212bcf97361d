#include "trainyard/spec/run_request_check.h"

#include <map>
#include <string>

#include "trainyard/common/util.h"
#include "trainyard/spec/data_uri.h"
#include "trainyard/spec/spec.h"

namespace trainyard::spec {

Status CheckRunRequest(const RunRequest& request) {
  if (request.distribution) {
    const DistributionSpec& d = *request.distribution;
    if (d.type != "pytorch" && d.type != "mpi" && d.type != "tensorflow") {
      return InvalidArgument("distribution.type must be pytorch, mpi or tensorflow, not '" +
                             d.type + "'");
    }
    if (d.process_count_per_instance < 1 || d.process_count_per_instance > 1024) {
      return InvalidArgument("distribution.process_count_per_instance must be 1..1024, not " +
                             std::to_string(d.process_count_per_instance));
    }
    if (d.parameter_server_count != 0 && (d.type != "tensorflow" || d.parameter_server_count < 0 ||
                                          d.parameter_server_count >= request.instance_count)) {
      return InvalidArgument(
          "distribution.parameter_server_count must be a number of tensorflow parameter servers "
          "that leaves at least one of the run's " +
          std::to_string(request.instance_count) + " nodes to be a worker, not " +
          std::to_string(d.parameter_server_count));
    }
    if (d.type == "tensorflow" && d.process_count_per_instance != 1) {
      return InvalidArgument(
          "a tensorflow distribution runs one worker per node: process_count_per_instance must "
          "be 1 (ask for more nodes with resources.instance_count)");
    }
  }
  if (request.priority < -kMaxPriority || request.priority > kMaxPriority) {
    return InvalidArgument("priority must be between " + std::to_string(-kMaxPriority) + " and " +
                           std::to_string(kMaxPriority) + ", not " +
                           std::to_string(request.priority));
  }
  if (!IsValidName(request.experiment_name)) {
    return InvalidArgument("invalid experiment name '" + request.experiment_name + "'");
  }
  if (!request.name.empty() && !IsValidName(request.name)) {
    return InvalidArgument("invalid run name '" + request.name + "'");
  }
  if (request.timeout_seconds &&
      (*request.timeout_seconds <= 0 || *request.timeout_seconds > kMaxTimeoutSeconds)) {
    return InvalidArgument("limits.timeout must be a positive number of seconds, at most " +
                           std::to_string(kMaxTimeoutSeconds) + " (leave it out for no limit)");
  }
  for (const auto& [name, in] : request.inputs) {
    if (in.kind == InputSpec::Kind::kLiteral) continue;
    if (in.mode != "ro_mount" && in.mode != "download" && in.mode != "direct") {
      return InvalidArgument("input '" + name +
                             "': mode must be ro_mount, download or direct, not '" + in.mode + "'");
    }
    auto uri = ParseDataUri(in.path);
    if (!uri.ok()) return uri.status().WithPrefix("input '" + name + "'");
    if (uri->kind == DataUri::Kind::kHttp && in.kind == InputSpec::Kind::kUriFolder) {
      return InvalidArgument("input '" + name + "': an http(s) URL names one file (uri_file)");
    }
  }
  for (const auto& [name, out] : request.outputs) {
    if (out.mode != "rw_mount" && out.mode != "upload") {
      return InvalidArgument("output '" + name + "': mode must be rw_mount or upload, not '" +
                             out.mode + "'");
    }
    if (out.path.empty()) continue;
    auto uri = ParseDataUri(out.path);
    if (!uri.ok() || uri->kind != DataUri::Kind::kDatastore) {
      return InvalidArgument(
          "output '" + name +
          "': path must be azureml://datastores/<datastore>/paths/<path>, not '" + out.path + "'");
    }
  }
  // The command must substitute cleanly before the run is accepted.
  std::map<std::string, std::string> ins, outs;
  for (const auto& [k, v] : request.inputs) ins[k] = v.value.empty() ? v.path : v.value;
  for (const auto& [k, v] : request.outputs) outs[k] = k;
  return SubstituteCommand(request.command, ins, outs).status();
}

}  // namespace trainyard::spec
