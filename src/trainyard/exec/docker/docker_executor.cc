#include "trainyard/exec/docker/docker_executor.h"

#include <optional>

namespace trainyard::exec {

StatusOr<std::string> DockerExecutor::Launch(const LaunchSpec& spec) {
  docker::ContainerConfig c;
  c.name = spec.name;
  c.image = spec.image;
  // The command runs as given: the image's entrypoint would otherwise wrap it.
  c.entrypoint = std::vector<std::string>{spec.argv.empty() ? "/bin/sh" : spec.argv.front()};
  if (spec.argv.size() > 1) c.cmd.assign(spec.argv.begin() + 1, spec.argv.end());
  c.env = spec.env;
  if (!spec.prepend_paths.empty()) {
    // The image's own value counts unless the job sets the variable itself.
    std::vector<std::string> image_env;
    if (auto info = engine_.InspectImage(spec.image); info.ok() && info->has_value()) {
      image_env = (*info)->env;
    }
    auto value_in = [](const std::vector<std::string>& env,
                       const std::string& var) -> std::optional<std::string> {
      for (const std::string& kv : env) {
        if (kv.size() > var.size() && kv.compare(0, var.size(), var) == 0 &&
            kv[var.size()] == '=') {
          return kv.substr(var.size() + 1);
        }
      }
      return std::nullopt;
    };
    for (const auto& [var, dir] : spec.prepend_paths) {
      std::optional<std::string> current = value_in(c.env, var);
      if (!current) current = value_in(image_env, var);
      const std::string prefix = var + "=";  // (clang 14 cannot capture a structured binding)
      std::erase_if(c.env, [&prefix](const std::string& kv) { return kv.rfind(prefix, 0) == 0; });
      c.env.push_back(var + "=" + dir + (current && !current->empty() ? ":" + *current : ""));
    }
  }
  c.working_dir = spec.working_dir;
  c.labels = spec.labels;
  c.mounts = spec.mounts;
  c.shm_size_bytes = spec.shm_size_bytes;
  c.nano_cpus = spec.nano_cpus;
  c.memory_bytes = spec.memory_bytes;
  c.pids_limit = spec.pids_limit;
  // The engine's copy of the output is bounded (trainyard keeps the run's log itself, and
  // re-attaching resumes where that log stopped, so rotation loses nothing).
  c.log_max_bytes = spec.engine_log_max_bytes;
  c.log_max_files = 4;
  if (!spec.gpu_device_ids.empty()) c.gpus = docker::GpuRequest{0, spec.gpu_device_ids};
  c.network_mode = spec.network;
  c.hostname = spec.hostname;
  c.network_aliases = spec.network_aliases;
  c.init = true;  // cancel and timeout stop the script with SIGTERM, not only after the grace
  TY_ASSIGN_OR_RETURN(std::string id, engine_.CreateContainer(c));
  Status s = engine_.StartContainer(id);
  if (!s.ok()) {
    (void)engine_.RemoveContainer(id, true);
    return s;
  }
  return id;
}

Status DockerExecutor::StreamLogs(const std::string& handle, const std::string& from,
                                  const PositionedSink& sink) {
  const std::optional<docker::LogPosition> position = docker::LogPosition::Parse(from);
  if (!position) return InvalidArgument("bad log position '" + from + "' for node " + handle);
  return engine_.FollowLogsFrom(handle, *position,
                                [&sink](std::string_view data, const docker::LogPosition& after) {
                                  sink(data, after.ToString());
                                });
}

StatusOr<ExitInfo> DockerExecutor::Wait(const std::string& handle) {
  TY_ASSIGN_OR_RETURN(int code, engine_.WaitContainer(handle));
  ExitInfo info{code, false};
  auto state = engine_.InspectContainer(handle);
  if (state.ok()) info.oom_killed = state->oom_killed;
  return info;
}

Status DockerExecutor::Stop(const std::string& handle, int grace_seconds) {
  return engine_.StopContainer(handle, grace_seconds);
}

StatusOr<bool> DockerExecutor::IsRunning(const std::string& handle) {
  TY_ASSIGN_OR_RETURN(docker::ContainerState state, engine_.InspectContainer(handle));
  return state.running;
}

StatusOr<bool> DockerExecutor::HasEnded(const std::string& handle) {
  TY_ASSIGN_OR_RETURN(docker::ContainerState state, engine_.InspectContainer(handle));
  return state.status == "exited" || state.status == "dead";
}

StatusOr<NodeExecutor::NodeLabels> DockerExecutor::Labels(const std::string& handle) {
  TY_ASSIGN_OR_RETURN(docker::ContainerState state, engine_.InspectContainer(handle));
  return NodeLabels(std::move(state.labels));
}

Status DockerExecutor::Cleanup(const std::string& handle) {
  return engine_.RemoveContainer(handle, true);
}

Status DockerExecutor::CreateNetwork(const std::string& name,
                                     const std::map<std::string, std::string>& labels) {
  return engine_.CreateNetwork(name, labels);
}

Status DockerExecutor::RemoveNetwork(const std::string& name) {
  return engine_.RemoveNetwork(name);
}

}  // namespace trainyard::exec
