#pragma once

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "trainyard/cas/snapshot.h"
#include "trainyard/common/mutex.h"
#include "trainyard/common/status.h"
#include "trainyard/docker/engine.h"
#include "trainyard/spec/definition.h"

namespace trainyard::envbuild {

// How an environment becomes an image. Two layers: the base (a pulled image, or one built from
// a Dockerfile or build context) and, when the environment declares managed Python dependencies,
// a dependency layer on top. Each is named by a hash of what shapes it — never the environment's
// name or version — so a one-line requirements change rebuilds only the dependency layer.
struct ImagePlan {
  std::string base_hash;    // shapes the base: image ref | Dockerfile text | context digest
  std::string image_hash;   // shapes the final image; == base_hash without managed dependencies
  std::string base_image;   // the base's reference: the user's image, or trainyard/env:<base_hash>
  std::string final_image;  // what runs: base_image, or trainyard/env:<image_hash>
  bool build_base = false;  // the base comes from a Dockerfile (inline or context)
  bool dependency_layer = false;
};

ImagePlan PlanImage(const spec::EnvironmentDefinition& def);

// The Dockerfile of the dependency layer: a virtual environment (seeing the image's own
// packages) at /opt/trainyard/venv, with the pip requirements installed, first on PATH.
std::string RenderDependencyDockerfile(const std::string& base_image,
                                       const spec::EnvironmentDefinition& def);

// The tag prefix of every image trainyard builds.
inline constexpr const char* kEnvImageRepo = "trainyard/env";
inline constexpr const char* kEnvHashLabel = "trainyard.env.hash";

// Makes environment images exist, building or pulling only what is missing. Thread-safe;
// concurrent requests for the same image share one build ("single flight").
class ImageBuilder {
 public:
  // `engine` and `snapshots` are borrowed and must outlive the builder. `scratch_dir` holds
  // build contexts while they are packed. `docker_config` is the user's Docker config.json
  // whose credentials are used when an environment names none.
  ImageBuilder(docker::Engine& engine, const cas::Snapshotter& snapshots,
               std::filesystem::path scratch_dir, std::filesystem::path docker_config);

  struct Result {
    std::string image;  // the reference to run
    std::string image_hash;
    bool cache_hit = false;  // nothing was built or pulled
  };

  // Returns the image to run for `def`, building what is missing. Build output and pull
  // progress go to `log`. Errors: Unauthenticated for refused registry credentials
  // ("unauthorized: pulling IMAGE from REGISTRY"), NotFound for a missing image,
  // InvalidArgument for a failing build step (with the step's error) or a definition that
  // cannot work (conda packages without conda), Unavailable when the engine cannot be reached.
  StatusOr<Result> EnsureImage(const spec::EnvironmentDefinition& def, const docker::TextSink& log);

 private:
  struct Flight {
    bool done = false;
    Status status;
    std::condition_variable cv;
  };

  // Runs `work` unless another thread already runs it for `key`, in which case it waits and
  // returns that thread's result.
  Status SingleFlight(const std::string& key, const docker::TextSink& log,
                      const std::function<Status()>& work);
  Status EnsureBase(const spec::EnvironmentDefinition& def, const ImagePlan& plan,
                    const docker::TextSink& log);
  Status BuildDependencyLayer(const spec::EnvironmentDefinition& def, const ImagePlan& plan,
                              const docker::TextSink& log);
  Status CheckConda(const spec::EnvironmentDefinition& def, const ImagePlan& plan);
  std::optional<docker::RegistryAuth> AuthFor(const spec::EnvironmentDefinition& def,
                                              const std::string& image_ref);
  StatusOr<bool> HaveImage(const std::string& ref);

  docker::Engine& engine_;
  const cas::Snapshotter& snapshots_;
  std::filesystem::path scratch_dir_;
  std::filesystem::path docker_config_;
  Mutex mu_;
  // A Flight's `done` and `status` are guarded by mu_ too.
  std::map<std::string, std::shared_ptr<Flight>> flights_ GUARDED_BY(mu_);
};

}  // namespace trainyard::envbuild
