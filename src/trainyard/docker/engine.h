#pragma once

// The Docker Engine, behind a narrow interface. `HttpEngine` (http_engine.h) talks to a real
// dockerd over its unix socket with the Engine API; `FakeEngine` (fake_engine.h) is the
// in-memory twin for unit tests (the trainyard_docker_testing library, linked into tests only).

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::docker {

// Credentials for one registry, as sent in X-Registry-Auth.
struct RegistryAuth {
  std::string username;
  std::string password;
  std::string server_address;  // "127.0.0.1:5000"; Docker Hub: "https://index.docker.io/v1/"
};

// A reference split into parts: "127.0.0.1:5000/team/img:tag" -> registry "127.0.0.1:5000",
// repository "127.0.0.1:5000/team/img", tag "tag". Docker Hub names get registry "docker.io".
struct ImageRef {
  std::string registry;
  std::string repository;        // what Docker's fromImage takes, including the registry part
  std::string tag;               // "latest" when absent and no digest
  std::string digest;            // "sha256:..." when pinned with @
  std::string ToString() const;  // repository + (":" tag | "@" digest)
};
StatusOr<ImageRef> ParseImageRef(std::string_view ref);

struct ImageInfo {
  std::string id;  // "sha256:..."
  std::vector<std::string> repo_tags;
  std::map<std::string, std::string> labels;
  std::vector<std::string> env;  // The image's own environment, "KEY=VALUE" (Config.Env).
};

struct BuildRequest {
  std::string context_tar;                // an uncompressed tar of the build context
  std::string dockerfile = "Dockerfile";  // path inside the context
  std::string tag;                        // "trainyard/env:<hash>"
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> build_args;
  std::vector<RegistryAuth> registry_auth;  // sent as X-Registry-Config for FROM pulls
  bool pull = false;                        // always try to pull a newer FROM image
};

struct Mount {
  std::string source;  // host path
  std::string target;  // container path
  bool read_only = false;
};

// GPU devices to ask the engine for (DeviceRequests with the "gpu" capability).
struct GpuRequest {
  int count = 0;                        // -1: all
  std::vector<std::string> device_ids;  // when non-empty, used instead of count
};

struct ContainerConfig {
  std::string name;  // optional container name
  std::string image;
  std::vector<std::string> cmd;
  std::optional<std::vector<std::string>> entrypoint;  // set: overrides the image's
  std::vector<std::string> env;                        // "KEY=VALUE"
  std::string working_dir;
  std::string user;  // empty: the image's
  std::map<std::string, std::string> labels;
  std::vector<Mount> mounts;
  std::int64_t shm_size_bytes = 0;  // 0: engine default
  std::int64_t memory_bytes = 0;    // 0: no limit
  std::int64_t nano_cpus = 0;       // 0: no limit
  std::int64_t pids_limit = 0;      // processes and threads at once; 0: engine default
  // The engine's own log of the output: json-file rotated at log_max_bytes, keeping
  // log_max_files files. 0: the engine's default driver and options.
  std::int64_t log_max_bytes = 0;
  int log_max_files = 0;
  std::string network_mode;  // empty: default bridge
  // Run the engine's init (tini) as PID 1: it forwards signals and reaps zombies, so a command
  // that never installed a SIGTERM handler still stops on SIGTERM.
  bool init = false;
  std::string hostname;
  std::vector<std::string> network_aliases;
  std::optional<GpuRequest> gpus;
};

struct ContainerState {
  std::string status;  // "created", "running", "exited", ...
  bool running = false;
  int exit_code = 0;
  bool oom_killed = false;
  std::string error;
  std::string started_at;
  std::string finished_at;
  std::map<std::string, std::string> labels;  // as created (Config.Labels)
};

struct ContainerSummary {
  std::string id;
  std::string image;
  std::string state;  // "running", "exited", ...
  std::map<std::string, std::string> labels;
};

// Receives text as it arrives: build output lines, pull progress lines, log bytes.
using TextSink = std::function<void(std::string_view)>;

// Where following a container's output got to, to resume there after a restart: the latest
// engine timestamp of the messages delivered (RFC 3339 with nanoseconds, UTC; empty: nothing
// yet) and how many messages bearing exactly that timestamp were delivered. It never moves
// back: stdout and stderr are stamped separately, so a message may follow one with a later
// timestamp; a resume skips what lies at or before the position, and so can miss such a message
// only when it was not yet delivered at the moment the position was taken (a window of the
// streams' skew, microseconds).
struct LogPosition {
  std::string time;
  std::uint64_t messages_at_time = 0;

  // "TIME COUNT", or "" for the start; Parse reads it back (nullopt when malformed).
  std::string ToString() const;
  static std::optional<LogPosition> Parse(std::string_view text);
};

// Receives output with the position just after it.
using PositionedSink = std::function<void(std::string_view data, const LogPosition& after)>;

// Thread-safe: calls may come from many threads at once.
class Engine {
 public:
  virtual ~Engine() = default;

  // OK when the engine answers. Unavailable otherwise, naming the socket.
  virtual Status Ping() = 0;

  // The image, or nullopt when the engine does not have it.
  virtual StatusOr<std::optional<ImageInfo>> InspectImage(const std::string& ref) = 0;

  // Pulls `ref`, sending `auth` when given. Progress goes to `progress` one line at a time
  // ("Pulling from ...", "Downloading ...", "Status: ..."). A registry that refuses the
  // credentials is Unauthenticated with "unauthorized: pulling REF from REGISTRY"; an image that
  // does not exist is NotFound; no message ever contains the password.
  virtual Status PullImage(const std::string& ref, const std::optional<RegistryAuth>& auth,
                           const TextSink& progress) = 0;

  // Builds an image from a tar context. Each output line of the build goes to `output` as it
  // arrives. A failing step is InvalidArgument with the engine's error message (so are a bad
  // Dockerfile and a FROM image that cannot be had); a registry refusing the credentials for a
  // FROM image is Unauthenticated ("unauthorized: building TAG: ...").
  virtual Status BuildImage(const BuildRequest& request, const TextSink& output) = 0;

  virtual Status RemoveImage(const std::string& ref, bool force) = 0;

  // Tags the image `source` (a reference or an id) as `target` ("REPOSITORY[:TAG]"; no tag
  // means "latest"). NotFound when `source` does not exist.
  virtual Status TagImage(const std::string& source, const std::string& target) = 0;
  // Pushes `ref` to its registry, sending `auth` when given (the X-Registry-Auth header, like
  // PullImage). Progress goes to `progress` one line at a time. A registry refusing the
  // credentials is Unauthenticated "unauthorized: pushing REF to REGISTRY"; one that cannot be
  // reached is Unavailable naming it; other failures carry the engine's message. No message
  // ever contains the password.
  virtual Status PushImage(const std::string& ref, const std::optional<RegistryAuth>& auth,
                           const TextSink& progress) = 0;

  // Creates a container and returns its id.
  virtual StatusOr<std::string> CreateContainer(const ContainerConfig& config) = 0;
  virtual Status StartContainer(const std::string& id) = 0;

  // Streams the container's stdout and stderr (interleaved, demultiplexed) from just after
  // `from` (the start when empty) into `sink` until the container exits; each message comes with
  // the position after it. Returns when the stream ends. The engine may have rotated older
  // output away: resuming from a position is how a follower loses none of what it already had.
  virtual Status FollowLogsFrom(const std::string& id, const LogPosition& from,
                                const PositionedSink& sink) = 0;
  // FollowLogsFrom from the first byte, without positions.
  Status FollowLogs(const std::string& id, const TextSink& sink) {
    return FollowLogsFrom(id, LogPosition{}, [&sink](std::string_view data, const LogPosition&) {
      if (sink) sink(data);
    });
  }

  // Blocks until the container exits and returns its exit code.
  virtual StatusOr<int> WaitContainer(const std::string& id) = 0;

  // SIGTERM, then SIGKILL after `grace_seconds`. OK when the container is already stopped.
  virtual Status StopContainer(const std::string& id, int grace_seconds) = 0;
  // SIGKILL. OK when the container is not running.
  virtual Status KillContainer(const std::string& id) = 0;
  // Removes the container and its anonymous volumes; `force` kills it first when running
  // (without it, a running container is FailedPrecondition). OK when it does not exist.
  virtual Status RemoveContainer(const std::string& id, bool force) = 0;
  virtual StatusOr<ContainerState> InspectContainer(const std::string& id) = 0;

  // Creates a bridge network of that name with `labels` (containers on it reach each other by
  // name and alias); OK when one of that name exists already.
  virtual Status CreateNetwork(const std::string& name,
                               const std::map<std::string, std::string>& labels) = 0;
  // Removes the network; OK when it does not exist. FailedPrecondition while containers use it.
  virtual Status RemoveNetwork(const std::string& name) = 0;

  // Containers (running or not) that carry label `key` (any value, when `value` is empty).
  virtual StatusOr<std::vector<ContainerSummary>> ListContainers(const std::string& key,
                                                                 const std::string& value) = 0;
};

}  // namespace trainyard::docker
