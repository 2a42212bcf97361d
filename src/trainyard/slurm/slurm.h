#pragma once

// Slurm as a compute target (docs/slurm.md). trainyard drives an existing cluster through the
// commands every Slurm installation has: `sbatch --parsable` to submit, `squeue --json` and
// `sinfo --json` to observe, `sacct --json` for jobs slurmctld has forgotten (when the cluster
// keeps accounting), `scancel` to cancel. Only machine-readable output is parsed.
//
// A run is one batch job. The job's files live in a folder on the path the cluster shares
// (JobFiles::dir): the batch script, a task script that srun starts once per task, the
// variables of the run (a 0600 file, never process arguments), each node's output, and the
// exit status of the job and of every task, written atomically so a daemon that was down
// learns how the job ended even when slurmctld no longer knows it.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/docker/engine.h"

namespace trainyard::slurm {

// --- Talking to Slurm ------------------------------------------------------------------------

// One batch job to submit.
struct JobRequest {
  std::string name;     // --job-name
  std::string comment;  // --comment: carries the run id, to find the job again after a restart
  std::string partition;
  std::string account;     // empty: not passed
  std::string qos;         // empty: not passed
  int nodes = 1;           // --nodes
  int tasks_per_node = 1;  // --ntasks-per-node
  int gpus_per_node = 0;   // --gpus-per-node when > 0
  // --time, rounded up to whole minutes (Slurm's unit); 0: not passed (the partition's limit).
  std::int64_t time_limit_seconds = 0;
  std::vector<std::string> extra_args;  // the compute's --sbatch-arg values, passed as given
  std::filesystem::path script;         // the batch script
  std::filesystem::path output;         // --output (stdout and stderr of the batch script)
  std::filesystem::path working_dir;    // --chdir
};

// The argv of `sbatch` for `req` (without the program itself), e.g. {"--parsable",
// "--job-name=...", ..., script}.
std::vector<std::string> SbatchArgs(const JobRequest& req);

// A job as squeue or sacct reports it.
struct JobInfo {
  std::int64_t id = 0;
  std::string name;
  std::string comment;
  std::string partition;
  // The base state: PENDING, CONFIGURING, RUNNING, COMPLETING, COMPLETED, FAILED, CANCELLED,
  // TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, BOOT_FAIL, DEADLINE, SUSPENDED, ...
  std::string state;
  std::string reason;  // squeue's state_reason; "" for "None"
  // How the batch script ended, once it has: its exit code, or the signal that killed it.
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::string nodes;                    // the node list, e.g. "vm" or "gpu[01-04]"
  std::int64_t time_limit_minutes = 0;  // 0: none set
  std::int64_t submit_time = 0;         // unix seconds, 0 unknown
  std::int64_t start_time = 0;
  std::int64_t end_time = 0;
};

// True for states after which the job will not run again.
bool IsFinalState(const std::string& state);

// A node as sinfo reports it.
struct NodeInfo {
  std::string name;
  std::string state;  // "idle", "mixed", "allocated", "down", "drained", ...
  int cpus = 0;
  std::int64_t memory_mb = 0;
  int gpus = 0;  // from gres "gpu:4", "gpu:a100:4(S:0-1)", "gpu:2,gpu:t4:1" (summed)
  int alloc_cpus = 0;
  std::vector<std::string> partitions;
};

// Parses `squeue --json` / `sacct --json` output (the v0.0.38 shape of Slurm 22.05, where
// numbers are plain and job_state a string, and the later one, where numbers may be
// {"set","infinite","number"} objects, job_state an array and exit_code an object with
// "status"/"return_code"/"signal"). InvalidArgument for output that is not such JSON.
StatusOr<std::vector<JobInfo>> ParseJobs(const std::string& json);
// Parses `sinfo --json` output (both shapes as above).
StatusOr<std::vector<NodeInfo>> ParseNodes(const std::string& json);

// The cluster. Thread-safe.
class Client {
 public:
  virtual ~Client() = default;
  // Submits; returns the job id. InvalidArgument with sbatch's own message when Slurm refuses
  // the job (an unknown partition, account or QOS, too many nodes), Unavailable when the
  // controller cannot be reached.
  virtual StatusOr<std::int64_t> Submit(const JobRequest& req) = 0;
  // Every job slurmctld knows (pending, running, and finished within its MinJobAge).
  virtual StatusOr<std::vector<JobInfo>> ListJobs() = 0;
  // A job slurmctld no longer knows, from accounting: nullopt when accounting is disabled or
  // does not know it either.
  virtual StatusOr<std::optional<JobInfo>> AccountedJob(std::int64_t id) = 0;
  // scancel. OK when the job already ended.
  virtual Status Cancel(std::int64_t id) = 0;
  virtual StatusOr<std::vector<NodeInfo>> ListNodes() = 0;
};

struct CommandClientOptions {
  // Folder of sbatch, squeue, sacct, scancel and sinfo; empty: found on PATH.
  std::filesystem::path bin_dir;
  // A command that takes longer is killed and its call fails Unavailable.
  int timeout_seconds = 30;
};

// The Client that runs Slurm's commands (fork+exec with argv, no shell; stdout and stderr
// captured).
std::unique_ptr<Client> MakeCommandClient(CommandClientOptions options = {});

// --- What a job runs -------------------------------------------------------------------------

// The run as every task of its job starts it: one container per task.
struct TaskSpec {
  std::string run_id;
  std::string runtime = "docker";  // "docker" or "podman": the CLI on the nodes
  std::string image;
  // When set, each node first pulls `image` with these credentials (written into a 0600 auth
  // file in the job folder for the pull and removed right after it; never an argument).
  std::optional<docker::RegistryAuth> pull_auth;
  // Container of task k: "<container_prefix>-<k>".
  std::string container_prefix;
  // Variables every task's container gets, on top of the distributed ones below. Passed
  // through a 0600 file sourced by the task script and `-e NAME` flags: values never appear
  // in a process's arguments.
  std::map<std::string, std::string> env;
  // (VAR, DIR): inside the container VAR becomes DIR + ":" + its value there (the image's own).
  std::map<std::string, std::string> prepend_paths;
  std::vector<docker::Mount> mounts;
  std::string working_dir;
  std::string command;  // run by /bin/sh -c in the container
  std::int64_t shm_size_bytes = 0;
  int gpus_per_node = 0;  // the container gets the GPUs Slurm gave the job on its node
  // "", "pytorch", "mpi" or "tensorflow": which variables each task derives from SLURM_*:
  //  - every run on more than one task, and pytorch: MASTER_ADDR (first host of the job's node
  //    list), MASTER_PORT (kept when `env` sets it), WORLD_SIZE (SLURM_NTASKS), RANK
  //    (SLURM_PROCID), LOCAL_RANK (SLURM_LOCALID), NODE_RANK (SLURM_NODEID);
  //  - mpi: OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE,NODE_RANK} instead;
  //  - tensorflow: TF_CONFIG {"cluster":{"worker":[host:2222,...]},"task":{"type":"worker",
  //    "index":NODE_RANK},"environment":"cloud"};
  //  - with more than one node or a distribution: TRAINYARD_NODE_RANK, TRAINYARD_NODE_COUNT,
  //    TRAINYARD_PROCESSES, TRAINYARD_DISTRIBUTION, and TRAINYARD_HOSTFILE (a hostfile of
  //    "HOST slots=P" lines the batch script writes, mounted at /trainyard/hostfile).
  std::string distribution;
  int tasks_per_node = 1;
  int master_port = 6105;
  int tensorflow_port = 2222;
  // tensorflow: the last this many nodes are parameter servers ("ps" in TF_CONFIG).
  int tensorflow_parameter_servers = 0;
  int stop_grace_seconds = 10;  // SIGTERM to a task → its container stopped with this grace
};

// The job folder's files, relative to JobFiles::dir.
struct JobFiles {
  std::filesystem::path dir;
  std::filesystem::path BatchScript() const { return dir / "job.sh"; }
  std::filesystem::path TaskScript() const { return dir / "task.sh"; }
  std::filesystem::path EnvFile() const { return dir / "env.sh"; }  // 0600
  std::filesystem::path Hostfile() const { return dir / "hostfile"; }
  std::filesystem::path BatchLog() const { return dir / "batch.log"; }  // JobRequest::output
  // Output of node i of the job (srun --output=node-%n.log): every task on it.
  std::filesystem::path NodeLog(int node) const {
    return dir / ("node-" + std::to_string(node) + ".log");
  }
  // How the batch script ended, written when it does: "<code> pull\n" when pulling the image
  // failed on a node, else "<code> run\n".
  std::filesystem::path ExitFile() const { return dir / "exit"; }
  // Task k's end: "<exit code> <oom_killed true|false> <node id> <unix nanoseconds>\n".
  std::filesystem::path TaskExitFile(int task) const {
    return dir / ("task-" + std::to_string(task) + ".exit");
  }
};

// Writes the batch script, task script and variables file of `task` into `files.dir` (made if
// missing; files 0700/0600). The batch script: pulls the image on every node when
// `task.pull_auth` is set (then removes the auth file), writes the hostfile, runs the task
// script with `srun --kill-on-bad-exit=1 --output=<node-%n.log>`, and records its exit code in
// ExitFile(). The task script derives the distributed variables, runs the container in the
// background with --network host, stops it (`<runtime> stop -t grace`) on SIGTERM/SIGINT,
// records TaskExitFile(), removes the container and exits with its exit code.
Status WriteJobFiles(const TaskSpec& task, const JobFiles& files);

// How a task ended, read from its TaskExitFile(); nullopt when missing or malformed.
struct TaskExit {
  int task = 0;
  int exit_code = 0;
  bool oom_killed = false;
  int node = 0;
  std::int64_t ended_ns = 0;
};
std::optional<TaskExit> ReadTaskExit(const JobFiles& files, int task);
struct JobExit {
  int exit_code = 0;
  bool pull_failed = false;
};
// How the batch script ended, from ExitFile(); nullopt when it has not ended (or the file is
// malformed).
std::optional<JobExit> ReadJobExit(const JobFiles& files);

}  // namespace trainyard::slurm
