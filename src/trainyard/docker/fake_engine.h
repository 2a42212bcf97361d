#pragma once

// An in-memory `Engine` for unit tests of the code above it (builder, executors, scheduler):
// images are names in a set, builds and pulls are counted, and a container's "process" is a
// C++ function (the runner) run on a thread of its own.

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "trainyard/common/mutex.h"
#include "trainyard/docker/engine.h"

namespace trainyard::docker {

// Thread-safe. Behaves like HttpEngine where tests can tell: the same status codes and, for pull
// and push authentication failures, the same message prefixes ("unauthorized: pulling REF from
// REGISTRY", "unauthorized: pushing REF to REGISTRY").
//
// Registries: a push of a local image makes it pullable (AddRemoteImage) and is recorded.
//
// Containers: StartContainer runs the runner on a new thread and returns at once. What the runner
// writes to its `log` sink is what FollowLogs delivers; its return value is the exit code. Stop
// and Kill end a running container at once with exit code 137 (its later output is dropped); the
// runner should notice with StopRequested()/WaitForStop() and return. The destructor kills every
// running container and joins the runner threads, so a runner that ignores being killed would
// make it hang.
class FakeEngine : public Engine {
 public:
  using Runner = std::function<int(const ContainerConfig& config, const TextSink& log)>;

  FakeEngine();
  ~FakeEngine() override;
  FakeEngine(const FakeEngine&) = delete;
  FakeEngine& operator=(const FakeEngine&) = delete;

  // --- Setup ---
  // Makes `ref` present locally (InspectImage finds it, containers can use it).
  void AddImage(const std::string& ref, std::map<std::string, std::string> labels = {});
  // Sets the image's own environment (ImageInfo::env) of an added image.
  void SetImageEnv(const std::string& ref, std::vector<std::string> env);
  // Makes `ref` pullable from its registry (otherwise a pull is NotFound).
  void AddRemoteImage(const std::string& ref);
  // Pulls from and pushes to `registry` ("127.0.0.1:5000", "docker.io") then need exactly these
  // credentials; anything else is Unauthenticated. Registries without an entry allow anonymous
  // pulls and pushes.
  void SetRegistryCredentials(const std::string& registry, const std::string& username,
                              const std::string& password);
  // Called (outside the engine's lock) as each build starts, e.g. to hold builds back.
  void SetBuildHook(std::function<void()> hook);
  // While set, every build fails with InvalidArgument carrying `message` (after the output).
  void SetBuildFailure(std::optional<std::string> message);
  // Lines a build writes to its output (default: a "Step" line and "Successfully tagged TAG").
  void SetBuildOutput(std::vector<std::string> lines);
  // The process of every container started from now on (default: exits 0 without output).
  void SetRunner(Runner runner);
  // While false, every call is Unavailable as when dockerd is down; log streams and waits under
  // way end Unavailable at once.
  void SetAvailable(bool available);

  // --- For runners (call only from a runner's own thread) ---
  // True once the container this runner plays has been stopped or killed.
  static bool StopRequested();
  // Blocks until the container is stopped or killed (returns true) or `timeout` passes (false).
  static bool WaitForStop(std::chrono::milliseconds timeout = std::chrono::hours(24));

  // --- Observation ---
  int builds() const;
  int pulls() const;
  // Push attempts, failed ones included.
  int pushes() const;
  int creates() const;
  int starts() const;
  std::optional<BuildRequest> last_build() const;
  std::optional<ContainerConfig> last_container_config() const;
  std::optional<RegistryAuth> last_pull_auth() const;
  std::optional<RegistryAuth> last_push_auth() const;
  // The references pushed successfully, normalised, in order.
  std::vector<std::string> pushed() const;
  bool HasImage(const std::string& ref) const;
  // Names of the networks that exist.
  std::set<std::string> Networks() const;
  // Ids of containers that exist (created and not removed).
  std::vector<std::string> ContainerIds() const;
  // Blocks until the container with this id or name is running; false after `timeout`.
  bool WaitUntilRunning(const std::string& id,
                        std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // --- Engine ---
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
  // Positions are byte offsets into the fake's log (`messages_at_time`, with time "fake").
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
  struct Container;
  struct RunnerContext;

  // Requires mutex_. The container by id, name or unique id prefix; nullptr when none.
  std::shared_ptr<Container> FindLocked(const std::string& id) const REQUIRES(mutex_);
  // Requires mutex_. Ends a running container with `exit_code`.
  void FinishLocked(Container& c, int exit_code) REQUIRES(mutex_);
  Status CheckAvailableLocked() const REQUIRES(mutex_);
  // Requires mutex_. Unauthenticated ("unauthorized: ACTION: ...") unless `auth` matches what
  // SetRegistryCredentials asked of `registry`.
  Status CheckCredentialsLocked(const std::string& registry,
                                const std::optional<RegistryAuth>& auth,
                                const std::string& action) const REQUIRES(mutex_);

  mutable Mutex mutex_;
  std::condition_variable changed_;
  bool available_ GUARDED_BY(mutex_) = true;
  std::map<std::string, ImageInfo> images_ GUARDED_BY(mutex_);  // normalised ref -> info
  std::set<std::string> remote_images_ GUARDED_BY(mutex_);      // normalised refs
  std::map<std::string, std::pair<std::string, std::string>> credentials_
      GUARDED_BY(mutex_);  // registry -> (u, p)
  std::optional<std::string> build_failure_ GUARDED_BY(mutex_);
  std::function<void()> build_hook_ GUARDED_BY(mutex_);
  std::set<std::string> networks_ GUARDED_BY(mutex_);
  std::optional<std::vector<std::string>> build_output_ GUARDED_BY(mutex_);
  Runner runner_ GUARDED_BY(mutex_);
  std::map<std::string, std::shared_ptr<Container>> containers_
      GUARDED_BY(mutex_);  // by id; shared with runners
  std::vector<std::thread> threads_ GUARDED_BY(mutex_);
  int builds_ GUARDED_BY(mutex_) = 0;
  int pulls_ GUARDED_BY(mutex_) = 0;
  int pushes_ GUARDED_BY(mutex_) = 0;
  int creates_ GUARDED_BY(mutex_) = 0;
  int starts_ GUARDED_BY(mutex_) = 0;
  std::optional<BuildRequest> last_build_ GUARDED_BY(mutex_);
  std::optional<ContainerConfig> last_container_config_ GUARDED_BY(mutex_);
  std::optional<RegistryAuth> last_pull_auth_ GUARDED_BY(mutex_);
  std::optional<RegistryAuth> last_push_auth_ GUARDED_BY(mutex_);
  std::vector<std::string> pushed_ GUARDED_BY(mutex_);  // normalised refs
};

}  // namespace trainyard::docker
