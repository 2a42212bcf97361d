// The job folder's scripts. Everything that comes from the user (image, paths, names, values,
// the command) enters the scripts shell-quoted, or not at all: variable values live only in the
// 0600 env.sh and reach the container by name (`-e NAME`), never as process arguments.

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "trainyard/common/fs.h"
#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/util.h"
#include "trainyard/slurm/slurm.h"

namespace trainyard::slurm {
namespace {

constexpr char kHostfileInContainer[] = "/trainyard/hostfile";

// The variables the task script derives from SLURM_*, by distribution.
const std::vector<std::string> kTorchVars = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE",
                                             "RANK",        "LOCAL_RANK",  "NODE_RANK"};
const std::vector<std::string> kMpiVars = {
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_NODE_RANK"};
const std::vector<std::string> kTrainyardVars = {"TRAINYARD_NODE_RANK", "TRAINYARD_NODE_COUNT",
                                                 "TRAINYARD_PROCESSES", "TRAINYARD_DISTRIBUTION",
                                                 "TRAINYARD_HOSTFILE"};

bool IsShellName(std::string_view name) {
  if (name.empty()) return false;
  auto c0 = static_cast<unsigned char>(name[0]);
  if (!(std::isalpha(c0) || c0 == '_')) return false;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || u == '_')) return false;
  }
  return true;
}

Status Validate(const TaskSpec& task, const JobFiles& files) {
  if (files.dir.empty()) return InvalidArgument("the job folder is not set");
  if (task.runtime != "docker" && task.runtime != "podman") {
    return InvalidArgument("container runtime \"" + task.runtime +
                           "\" is not supported (docker or podman)");
  }
  if (task.image.empty()) return InvalidArgument("the task has no image");
  if (!IsValidName(task.container_prefix)) {
    return InvalidArgument("container prefix \"" + task.container_prefix +
                           "\" is not a valid name ([A-Za-z0-9][A-Za-z0-9._-]*)");
  }
  for (const auto& [name, value] : task.env) {
    if (!IsShellName(name)) {
      return InvalidArgument("environment variable \"" + name +
                             "\" is not a valid name ([A-Za-z_][A-Za-z0-9_]*)");
    }
  }
  for (const auto& [name, dir] : task.prepend_paths) {
    if (!IsShellName(name)) {
      return InvalidArgument("path variable \"" + name +
                             "\" is not a valid name ([A-Za-z_][A-Za-z0-9_]*)");
    }
  }
  const std::string& d = task.distribution;
  if (!d.empty() && d != "pytorch" && d != "mpi" && d != "tensorflow") {
    return InvalidArgument("distribution \"" + d + "\" is not pytorch, mpi or tensorflow");
  }
  if (task.tasks_per_node < 1) return InvalidArgument("tasks_per_node must be at least 1");
  if (task.gpus_per_node < 0) return InvalidArgument("gpus_per_node must not be negative");
  if (task.shm_size_bytes < 0) return InvalidArgument("shm_size_bytes must not be negative");
  if (task.stop_grace_seconds < 0) {
    return InvalidArgument("stop_grace_seconds must not be negative");
  }
  return Status::Ok();
}

std::string EnvScript(const TaskSpec& task) {
  std::ostringstream s;
  s << "#!/bin/sh\n"
    << "# shellcheck disable=SC2016\n"
    << "# The variables of trainyard run " << task.run_id << ", sourced by task.sh. Secret.\n";
  for (const auto& [name, value] : task.env) {
    if (name == "TRAINYARD_COMMAND") continue;
    s << "export " << name << "=" << ShellQuote(value) << "\n";
  }
  s << "export TRAINYARD_COMMAND=" << ShellQuote(task.command) << "\n";
  return s.str();
}

std::string AuthConfig(const docker::RegistryAuth& auth) {
  std::string address =
      auth.server_address.empty() ? "https://index.docker.io/v1/" : auth.server_address;
  nlohmann::json doc;
  doc["auths"][address]["auth"] = Base64Encode(auth.username + ":" + auth.password);
  return doc.dump() + "\n";
}

std::string BatchScript(const TaskSpec& task, const std::string& dir) {
  // srun's --output expands %-patterns: a literal % in the folder is written %%.
  std::string out_dir;
  for (char c : dir) {
    out_dir += c;
    if (c == '%') out_dir += '%';
  }
  std::ostringstream s;
  s << "#!/bin/sh\n"
    << "# The batch script of trainyard run " << task.run_id << " (written by trainyard).\n"
    << "set -u\n"
    << "dir=" << ShellQuote(dir) << "\n"
    << R"SH(
# sbatch passed on only the base variables it was given (never the daemon's others); the script
# makes sure of a PATH, and its job steps get the script's environment.
: "${PATH:=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"
export PATH
SLURM_EXPORT_ENV=ALL
export SLURM_EXPORT_ENV

# How the batch script ended, "<code> <phase>", written whole (a temp file renamed).
finish() {
  printf '%s %s\n' "$1" "$2" >"$dir/exit.tmp" && mv -f "$dir/exit.tmp" "$dir/exit"
  exit "$1"
}

# scancel and the time limit send SIGTERM: it goes on to the running step, and the script
# waits until that step is really gone.
step=
# shellcheck disable=SC2317  # invoked by the trap
forward() {
  if [ -n "$step" ]; then kill -TERM "$step" 2>/dev/null; fi
}
trap forward TERM INT

run_step() {
  "$@" &
  step=$!
  while :; do
    wait "$step"
    rc=$?
    # A trapped signal interrupts wait; the step may still run.
    kill -0 "$step" 2>/dev/null || break
  done
  step=
  return "$rc"
}
)SH";
  if (task.pull_auth) {
    s << "\n# Pull the image once on every node, with the credentials of the auth file.\n";
    std::string pull = task.runtime == "podman"
                           ? "podman pull --authfile \"$dir/auth/config.json\" "
                           : "docker --config \"$dir/auth\" pull ";
    s << "run_step srun --ntasks-per-node=1 --ntasks=\"$SLURM_JOB_NUM_NODES\" "
         "--kill-on-bad-exit=1 "
      << pull << ShellQuote(task.image) << "\n"
      << "rc=$?\n"
      << "rm -rf \"$dir/auth\"\n"
      << "if [ \"$rc\" -ne 0 ]; then finish \"$rc\" pull; fi\n";
  }
  s << R"SH(
# The hostfile: one "HOST slots=P" line per node of the job.
scontrol show hostnames "$SLURM_JOB_NODELIST" | while IFS= read -r host; do
  printf '%s slots=%s\n' "$host" )SH"
    << task.tasks_per_node << R"SH(
done >"$dir/hostfile.tmp" && mv -f "$dir/hostfile.tmp" "$dir/hostfile"

if [ "${SLURM_JOB_NUM_NODES:-1}" -eq 1 ] && [ "${SLURM_NTASKS:-1}" -eq 1 ]; then
  # One task: this script is already on its node, with its SLURM_* (a job step would only add
  # its start-up time). A TERM reaches task.sh through run_step.
  run_step "$dir/task.sh" >>"$dir/node-0.log" 2>&1
else
  run_step srun --kill-on-bad-exit=1 --output=)SH"
    << ShellQuote(out_dir + "/node-%n.log") << R"SH( "$dir/task.sh"
fi
finish "$?" run
)SH";
  return s.str();
}

std::string JoinExports(const std::vector<std::string>& names) {
  std::string s = "export";
  for (const std::string& n : names) s += " " + n;
  return s;
}

std::string TaskScript(const TaskSpec& task, const std::string& dir) {
  const std::string& dist = task.distribution;
  const std::string& rt = task.runtime;
  std::ostringstream s;
  s << "#!/bin/sh\n"
    << "# One task of trainyard run " << task.run_id
    << ": srun starts it once per task (written by trainyard).\n"
    << "set -u\n"
    << "dir=" << ShellQuote(dir) << "\n"
    << "runtime=" << ShellQuote(rt) << "\n"
    << "name=" << ShellQuote(task.container_prefix) << "-\"$SLURM_PROCID\"\n"
    << "\n# Only this script sets the distributed variables (the submitter's may be inherited).\n"
    << "unset";
  for (const auto* list : {&kTorchVars, &kMpiVars, &kTrainyardVars}) {
    for (const std::string& n : *list) s << " " << n;
  }
  s << " TF_CONFIG\n"
    << "# shellcheck source=/dev/null\n"
    << ". \"$dir/env.sh\"\n";

  // The names the container gets with -e NAME (unset ones are not passed by the runtime).
  std::vector<std::string> pass;
  std::set<std::string> seen;
  auto add_pass = [&](const std::string& n) {
    if (seen.insert(n).second) pass.push_back(n);
  };
  for (const auto& [name, value] : task.env) add_pass(name);
  add_pass("TRAINYARD_COMMAND");

  if (dist == "mpi") {
    s << "\nOMPI_COMM_WORLD_RANK=$SLURM_PROCID\n"
      << "OMPI_COMM_WORLD_SIZE=$SLURM_NTASKS\n"
      << "OMPI_COMM_WORLD_LOCAL_RANK=$SLURM_LOCALID\n"
      << "OMPI_COMM_WORLD_LOCAL_SIZE=" << task.tasks_per_node << "\n"
      << "OMPI_COMM_WORLD_NODE_RANK=$SLURM_NODEID\n"
      << JoinExports(kMpiVars) << "\n";
    for (const std::string& n : kMpiVars) add_pass(n);
  } else {
    bool always = dist == "pytorch";
    s << "\n";
    std::string indent = always ? "" : "  ";
    if (!always) s << "if [ \"${SLURM_NTASKS:-1}\" -gt 1 ]; then\n";
    s << indent << "MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n";
    if (task.env.count("MASTER_PORT") == 0) {
      s << indent << "MASTER_PORT=" << task.master_port << "\n";
    }
    s << indent << "WORLD_SIZE=$SLURM_NTASKS\n"
      << indent << "RANK=$SLURM_PROCID\n"
      << indent << "LOCAL_RANK=$SLURM_LOCALID\n"
      << indent << "NODE_RANK=$SLURM_NODEID\n"
      << indent << JoinExports(kTorchVars) << "\n";
    if (!always) s << "fi\n";
    for (const std::string& n : kTorchVars) add_pass(n);
  }
  if (dist == "tensorflow" && task.tensorflow_parameter_servers <= 0) {
    s << "\nworkers=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | sed 's/.*/\"&:"
      << task.tensorflow_port << "\"/' | paste -sd , -)\n"
      << "TF_CONFIG=$(printf '{\"cluster\":{\"worker\":[%s]},\"task\":{\"type\":\"worker\","
         "\"index\":%s},\"environment\":\"cloud\"}' \"$workers\" \"$SLURM_NODEID\")\n"
      << "export TF_CONFIG\n";
    add_pass("TF_CONFIG");
  } else if (dist == "tensorflow") {
    // The last nodes of the allocation are the parameter servers.
    s << "\nhosts=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | sed 's/.*/\"&:"
      << task.tensorflow_port << "\"/')\n"
      << "worker_count=$(( $(printf '%s\\n' \"$hosts\" | wc -l) - "
      << task.tensorflow_parameter_servers << " ))\n"
      << "workers=$(printf '%s\\n' \"$hosts\" | head -n \"$worker_count\" | paste -sd , -)\n"
      << "servers=$(printf '%s\\n' \"$hosts\" | tail -n +$((worker_count + 1)) | paste -sd , -)\n"
      << "if [ \"$SLURM_NODEID\" -lt \"$worker_count\" ]; then task_type=\"worker\"; "
         "task_index=$SLURM_NODEID; else task_type=\"ps\"; "
         "task_index=$((SLURM_NODEID - worker_count)); fi\n"
      << "TF_CONFIG=$(printf '{\"cluster\":{\"worker\":[%s],\"ps\":[%s]},\"task\":{\"type\":"
         "\"%s\",\"index\":%s},\"environment\":\"cloud\"}' \"$workers\" \"$servers\" "
         "\"$task_type\" \"$task_index\")\n"
      << "export TF_CONFIG\n";
    add_pass("TF_CONFIG");
  }

  s << "\nhostfile_mount=0\n";
  {
    bool always = !dist.empty();
    std::string indent = always ? "" : "  ";
    if (!always) s << "if [ \"${SLURM_JOB_NUM_NODES:-1}\" -gt 1 ]; then\n";
    s << indent << "TRAINYARD_NODE_RANK=$SLURM_NODEID\n"
      << indent << "TRAINYARD_NODE_COUNT=$SLURM_JOB_NUM_NODES\n"
      << indent << "TRAINYARD_PROCESSES=" << task.tasks_per_node << "\n"
      << indent << "TRAINYARD_DISTRIBUTION=" << ShellQuote(dist) << "\n"
      << indent << "TRAINYARD_HOSTFILE=" << kHostfileInContainer << "\n"
      << indent << JoinExports(kTrainyardVars) << "\n"
      << indent << "hostfile_mount=1\n";
    if (!always) s << "fi\n";
    for (const std::string& n : kTrainyardVars) add_pass(n);
  }
  // The node's index and the head node under the names the cloud service's v1 runtime gives
  // them, for scripts that read them (as on local computes: itself when the job has one node).
  s << "AZ_BATCHAI_TASK_INDEX=${SLURM_NODEID:-0}\n"
    << "if [ \"${SLURM_JOB_NUM_NODES:-1}\" -gt 1 ]; then\n"
    << "  AZ_BATCHAI_MPI_MASTER_NODE=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n "
       "1)\n"
    << "else\n"
    << "  AZ_BATCHAI_MPI_MASTER_NODE=127.0.0.1\n"
    << "fi\n"
    << "export AZ_BATCHAI_TASK_INDEX AZ_BATCHAI_MPI_MASTER_NODE\n";
  add_pass("AZ_BATCHAI_TASK_INDEX");
  add_pass("AZ_BATCHAI_MPI_MASTER_NODE");

  if (task.gpus_per_node > 0) {
    s << R"SH(
# The GPUs Slurm gave this job on this node; inside the container they are 0..n-1.
gpu_ids=
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  gpu_ids=$CUDA_VISIBLE_DEVICES
  CUDA_VISIBLE_DEVICES=$(printf '%s\n' "$gpu_ids" | awk -F , '{ for (i = 1; i <= NF; i++) printf "%s%d", (i > 1 ? "," : ""), i - 1 }')
  export CUDA_VISIBLE_DEVICES
fi
)SH";
    add_pass("CUDA_VISIBLE_DEVICES");
  }

  s << "\n# The container's arguments.\n"
    << "set -- --name \"$name\" --network host\n";
  if (rt != "podman") {
    // The engine's init runs as PID 1 and passes SIGTERM on: a script running as PID 1 would
    // ignore it, and every cancel or timeout would wait out the whole grace period.
    s << "set -- \"$@\" --init\n";
  }
  if (task.shm_size_bytes > 0) s << "set -- \"$@\" --shm-size=" << task.shm_size_bytes << "\n";
  for (const docker::Mount& m : task.mounts) {
    s << "set -- \"$@\" -v " << ShellQuote(m.source + ":" + m.target + (m.read_only ? ":ro" : ""))
      << "\n";
  }
  s << "if [ \"$hostfile_mount\" = 1 ]; then\n"
    << "  set -- \"$@\" -v \"$dir/hostfile:" << kHostfileInContainer << ":ro\"\n"
    << "fi\n";
  if (!task.working_dir.empty()) s << "set -- \"$@\" -w " << ShellQuote(task.working_dir) << "\n";
  s << "set -- \"$@\"";
  for (const std::string& n : pass) s << " -e " << n;
  s << "\n";
  if (task.gpus_per_node > 0) {
    s << "if [ -n \"$gpu_ids\" ]; then\n";
    if (rt == "podman") {
      s << "  for id in $(printf '%s\\n' \"$gpu_ids\" | tr , ' '); do\n"
        << "    set -- \"$@\" --device \"nvidia.com/gpu=$id\"\n"
        << "  done\n";
    } else {
      // The value is CSV for the docker CLI: quotes keep "device=0,1" one field.
      s << "  set -- \"$@\" --gpus \"\\\"device=$gpu_ids\\\"\"\n";
    }
    s << "fi\n";
  }
  std::string inner;
  for (const auto& [var, path_dir] : task.prepend_paths) {
    inner += "export " + var + "=" + ShellQuote(path_dir) + "\"${" + var + ":+:$" + var + "}\"; ";
  }
  inner += "exec /bin/sh -c \"$TRAINYARD_COMMAND\"";
  s << "# shellcheck disable=SC2016\n"
    << "set -- \"$@\" " << ShellQuote(task.image) << " /bin/sh -c " << ShellQuote(inner) << "\n";

  s << R"SH(
# The container runs in the background; SIGTERM/SIGINT (scancel, the time limit, a failed task
# elsewhere) stop it with a grace period, and the script waits until it is really gone. Only
# the container this attempt created is ever stopped, inspected or removed: `run` writes its id
# to the cid file, and a container that merely holds the name is someone else's.
stop_requested=0
pid=
stopper=
cid=
cidfile="$dir/cid-$SLURM_PROCID"
# shellcheck disable=SC2317  # invoked by the stopper
stop_container() {
  c=$(cat "$cidfile" 2>/dev/null) || c=
  [ -n "$c" ] || return 0
  "$runtime" stop -t )SH"
    << task.stop_grace_seconds << R"SH( "$c" >/dev/null 2>&1
}
# Asks the container to stop for as long as the attached client lives: a stop that comes while
# the engine is still creating or starting it does nothing, and the next one does.
# shellcheck disable=SC2317  # invoked by the trap
start_stopper() {
  if [ -n "$pid" ] && [ -z "$stopper" ]; then
    (
      while kill -0 "$pid" 2>/dev/null; do
        stop_container
        sleep 0.2
      done
    ) &
    stopper=$!
  fi
}
# shellcheck disable=SC2317  # invoked by the trap
on_signal() {
  stop_requested=1
  start_stopper
}
trap on_signal TERM INT

# A container of this name can only be left by an earlier attempt of this job (Slurm requeued
# it): only then is it removed first, which would otherwise cost every run a call to the engine.
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
  "$runtime" rm -f "$name" >/dev/null 2>&1
fi
oom=false
rc=143
attempts=0
# One `run` creates, starts and attaches (one call, not create + start -a). When it created
# nothing because a stale container holds the name, that one is removed and `run` tried again.
while [ "$stop_requested" = 0 ] && [ "$attempts" -lt 2 ]; do
  attempts=$((attempts + 1))
  rm -f "$cidfile"
  "$runtime" run --cidfile "$cidfile" "$@" &
  pid=$!
  # A signal that came after the loop's test but before pid was known.
  if [ "$stop_requested" = 1 ]; then start_stopper; fi
  while :; do
    wait "$pid"
    rc=$?
    # A trapped signal interrupts wait; the client may still run.
    kill -0 "$pid" 2>/dev/null || break
  done
  cid=$(cat "$cidfile" 2>/dev/null) || cid=
  if [ -z "$cid" ] && [ "$rc" -eq 125 ] && [ "$attempts" -eq 1 ] && [ "$stop_requested" = 0 ]; then
    case "$("$runtime" inspect -f '{{.State.Status}}' "$name" 2>/dev/null)" in
      created | exited | dead | stopped)
        "$runtime" rm -f "$name" >/dev/null 2>&1
        continue
        ;;
    esac
  fi
  break
done
if [ -n "$cid" ]; then
  if [ "$stop_requested" = 1 ]; then
    # The attached client ends as soon as it is signalled itself (Slurm signals every process of
    # the job), while the container may take its grace period to stop: it is asked to until it
    # has, and what it printed after the client left is read back from its log, so a run's last
    # words are kept.
    client_end=$(date +%s.%N)
    if [ -n "$stopper" ]; then wait "$stopper"; fi
    while [ "$("$runtime" inspect -f '{{.State.Running}}' "$cid" 2>/dev/null)" = true ]; do
      stop_container
      sleep 0.2
    done
    "$runtime" logs --since "$client_end" "$cid" 2>&1
  fi
  # The attached client exits with the container's code; a run that failed, or was stopped, is
  # asked of the engine, which also says whether the OOM killer struck (a run that succeeded
  # costs no call).
  if [ "$stop_requested" = 1 ] || [ "$rc" -ne 0 ]; then
    if state=$("$runtime" inspect -f '{{.State.ExitCode}} {{.State.OOMKilled}}' "$cid" 2>/dev/null); then
      rc=${state%% *}
      oom=${state##* }
    fi
  fi
  "$runtime" rm -f "$cid" >/dev/null 2>&1
fi
rm -f "$cidfile"

exit_file="$dir/task-$SLURM_PROCID.exit"
printf '%s %s %s %s\n' "$rc" "$oom" "$SLURM_NODEID" "$(date +%s%N)" >"$exit_file.tmp" &&
  mv -f "$exit_file.tmp" "$exit_file"
exit "$rc"
)SH";
  return s.str();
}

// Writes `data` and makes sure of the mode even when the file existed.
Status WriteWithMode(const fs::path& path, const std::string& data, unsigned mode) {
  TY_RETURN_IF_ERROR(WriteFileAtomic(path, data, mode));
  if (::chmod(path.c_str(), mode) != 0) {
    return Internal("chmod " + path.string() + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

// A small file of the job folder: never through a link, never blocking on a FIFO, never more
// than 4 KiB read.
std::optional<std::string> ReadSmall(const fs::path& path) {
  auto dir = RootedDir::Open(path.parent_path());
  if (!dir.ok()) return std::nullopt;
  auto text = dir->ReadFile(path.filename().string(), 4096);
  if (!text.ok()) return std::nullopt;
  return std::move(*text);
}

// Splits on single spaces; the files' lines end with exactly one newline.
std::optional<std::vector<std::string>> Fields(const std::string& text, size_t n) {
  if (text.empty() || text.back() != '\n') return std::nullopt;
  std::vector<std::string> f = Split(std::string_view(text).substr(0, text.size() - 1), ' ');
  if (f.size() != n) return std::nullopt;
  for (const std::string& x : f) {
    if (x.empty()) return std::nullopt;
  }
  return f;
}

template <typename T>
std::optional<T> ParseInt(const std::string& s) {
  const bool neg = s[0] == '-';
  size_t i = neg ? 1 : 0;
  if (i == s.size() || s.size() - i > 19) return std::nullopt;
  unsigned long long u = 0;  // 19 digits fit
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    u = u * 10 + static_cast<unsigned long long>(s[i] - '0');
  }
  if (u > static_cast<unsigned long long>(std::numeric_limits<T>::max())) return std::nullopt;
  T v = static_cast<T>(u);
  return neg ? -v : v;
}

}  // namespace

Status WriteJobFiles(const TaskSpec& task, const JobFiles& files) {
  TY_RETURN_IF_ERROR(Validate(task, files));
  std::error_code ec;
  fs::path dir = fs::absolute(files.dir, ec);
  if (ec) return Internal("job folder " + files.dir.string() + ": " + ec.message());
  TY_RETURN_IF_ERROR(MakeDirs(dir));
  JobFiles abs{dir};
  TY_RETURN_IF_ERROR(WriteWithMode(abs.EnvFile(), EnvScript(task), 0600));
  if (task.pull_auth) {
    fs::path auth = dir / "auth";
    TY_RETURN_IF_ERROR(MakeDirs(auth));
    if (::chmod(auth.c_str(), 0700) != 0) {
      return Internal("chmod " + auth.string() + ": " + std::strerror(errno));
    }
    TY_RETURN_IF_ERROR(WriteWithMode(auth / "config.json", AuthConfig(*task.pull_auth), 0600));
  }
  TY_RETURN_IF_ERROR(WriteWithMode(abs.TaskScript(), TaskScript(task, dir.string()), 0700));
  TY_RETURN_IF_ERROR(WriteWithMode(abs.BatchScript(), BatchScript(task, dir.string()), 0700));
  return Status::Ok();
}

std::optional<TaskExit> ReadTaskExit(const JobFiles& files, int task) {
  auto text = ReadSmall(files.TaskExitFile(task));
  if (!text) return std::nullopt;
  auto f = Fields(*text, 4);
  if (!f) return std::nullopt;
  auto code = ParseInt<int>((*f)[0]);
  auto node = ParseInt<int>((*f)[2]);
  auto ns = ParseInt<std::int64_t>((*f)[3]);
  if (!code || !node || !ns || ((*f)[1] != "true" && (*f)[1] != "false")) return std::nullopt;
  TaskExit e;
  e.task = task;
  e.exit_code = *code;
  e.oom_killed = (*f)[1] == "true";
  e.node = *node;
  e.ended_ns = *ns;
  return e;
}

std::optional<JobExit> ReadJobExit(const JobFiles& files) {
  auto text = ReadSmall(files.ExitFile());
  if (!text) return std::nullopt;
  auto f = Fields(*text, 2);
  if (!f) return std::nullopt;
  auto code = ParseInt<int>((*f)[0]);
  if (!code || ((*f)[1] != "pull" && (*f)[1] != "run")) return std::nullopt;
  return JobExit{*code, (*f)[1] == "pull"};
}

}  // namespace trainyard::slurm
