#pragma once

// `Engine` over the Docker Engine API (a real dockerd), spoken with libcurl on the engine's unix
// socket: http://localhost/<api_version>/... with CURLOPT_UNIX_SOCKET_PATH.

#include <string>
#include <vector>

#include "trainyard/common/mutex.h"
#include "trainyard/docker/engine.h"

namespace trainyard::docker {

// The engine's socket: the path of DOCKER_HOST when it is "unix://PATH", else
// "/var/run/docker.sock". (A tcp:// DOCKER_HOST is not supported and is ignored.)
std::string DefaultDockerSocketPath();

// Thread-safe. Each call borrows a libcurl handle from a small pool (so connections to the
// engine are reused) and returns it when done; long calls (WaitContainer, FollowLogs, builds and
// pulls) hold theirs for as long as they run and have no timeout.
//
// Errors, for every method: Unavailable("cannot reach the Docker engine at SOCKET: ...") when the
// socket does not answer; otherwise the engine's HTTP status mapped as 400 InvalidArgument,
// 401 Unauthenticated, 403 PermissionDenied, 404 NotFound, 409 FailedPrecondition, 503
// Unavailable, anything else Internal, with the engine's "message" in the text. Exceptions to
// that mapping are noted below.
//
// - PullImage and PushImage: registry errors are classified by their text (see Engine::PullImage
//   and Engine::PushImage); the password is redacted from every message and progress line.
//   PushImage takes a tag, not a digest (InvalidArgument), and always sends X-Registry-Auth
//   (empty credentials when `auth` is not given), as the engine requires it.
// - TagImage: InvalidArgument for a `target` that is not a valid REPOSITORY[:TAG].
// - BuildImage: a failing step, a bad Dockerfile or a missing FROM image is InvalidArgument with
//   the engine's message; a registry refusing credentials for a FROM image is Unauthenticated
//   ("unauthorized: building TAG: ..."). Progress of FROM pulls is passed to `output` as well.
// - FollowLogs expects a container created without a TTY (as CreateContainer makes them).
// - StopContainer and KillContainer are OK for a container that is not running.
// - RemoveImage is NotFound for an unknown image, FailedPrecondition when a container uses it.
class HttpEngine : public Engine {
 public:
  explicit HttpEngine(std::string socket_path = "/var/run/docker.sock",
                      std::string api_version = "v1.41");
  ~HttpEngine() override;
  HttpEngine(const HttpEngine&) = delete;
  HttpEngine& operator=(const HttpEngine&) = delete;

  const std::string& socket_path() const { return socket_path_; }

  Status Ping() override;
  StatusOr<std::optional<ImageInfo>> InspectImage(const std::string& ref) override;
  Status PullImage(const std::string& ref, const std::optional<RegistryAuth>& auth,
                   const TextSink& progress) override;
  Status BuildImage(const BuildRequest& request, const TextSink& output) override;
  Status RemoveImage(const std::string& ref, bool force) override;
  Status TagImage(const std::string& source, const std::string& target) override;
  Status PushImage(const std::string& ref, const std::optional<RegistryAuth>& auth,
                   const TextSink& progress) override;
  StatusOr<std::string> CreateContainer(const ContainerConfig& config) override;
  Status StartContainer(const std::string& id) override;
  using Engine::FollowLogs;
  Status FollowLogsFrom(const std::string& id, const LogPosition& from,
                        const PositionedSink& sink) override;
  StatusOr<int> WaitContainer(const std::string& id) override;
  Status StopContainer(const std::string& id, int grace_seconds) override;
  Status KillContainer(const std::string& id) override;
  Status RemoveContainer(const std::string& id, bool force) override;
  StatusOr<ContainerState> InspectContainer(const std::string& id) override;
  Status CreateNetwork(const std::string& name,
                       const std::map<std::string, std::string>& labels) override;
  Status RemoveNetwork(const std::string& name) override;
  StatusOr<std::vector<ContainerSummary>> ListContainers(const std::string& key,
                                                         const std::string& value) override;

 private:
  struct Request;
  struct Response;

  // Sends one request. An HTTP error status is not an error here: the caller maps it.
  StatusOr<Response> Send(const Request& request);
  // Sends a pull or a push: `auth` (when given) goes in X-Registry-Auth, the JSON message stream
  // of the answer goes to `progress`, and a failure (an HTTP error status or an error in the
  // stream) is classified by its text as "ACTION: TEXT" (see RegistryError in the .cc), with
  // the password redacted everywhere.
  Status SendRegistryStream(Request request, const std::optional<RegistryAuth>& auth,
                            const TextSink& progress, const std::string& action);
  void* AcquireHandle();
  void ReleaseHandle(void* handle);

  const std::string socket_path_;
  const std::string api_version_;
  Mutex pool_mutex_;
  std::vector<void*> idle_handles_ GUARDED_BY(pool_mutex_);  // CURL*
};

}  // namespace trainyard::docker
