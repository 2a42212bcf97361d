#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "trainyard/docker/engine.h"

namespace trainyard::testing {

// Forwards to a real engine and records the calls that matter for cache assertions.
class CountingEngine : public docker::Engine {
 public:
  explicit CountingEngine(docker::Engine& real) : real_(real) {}

  int builds() const {
    std::lock_guard l(mu_);
    return static_cast<int>(build_tags_.size());
  }
  int pulls() const {
    std::lock_guard l(mu_);
    return pulls_;
  }
  std::vector<std::string> build_tags() const {
    std::lock_guard l(mu_);
    return build_tags_;
  }
  std::vector<std::string> build_dockerfiles() const {
    std::lock_guard l(mu_);
    return build_contexts_;
  }

  Status Ping() override { return real_.Ping(); }
  StatusOr<std::optional<docker::ImageInfo>> InspectImage(const std::string& ref) override {
    return real_.InspectImage(ref);
  }
  Status PullImage(const std::string& ref, const std::optional<docker::RegistryAuth>& auth,
                   const docker::TextSink& progress) override {
    {
      std::lock_guard l(mu_);
      ++pulls_;
    }
    return real_.PullImage(ref, auth, progress);
  }
  Status BuildImage(const docker::BuildRequest& request, const docker::TextSink& output) override {
    {
      std::lock_guard l(mu_);
      build_tags_.push_back(request.tag);
      build_contexts_.push_back(request.context_tar);
    }
    return real_.BuildImage(request, output);
  }
  Status RemoveImage(const std::string& ref, bool force) override {
    return real_.RemoveImage(ref, force);
  }
  Status TagImage(const std::string& source, const std::string& target) override {
    return real_.TagImage(source, target);
  }
  Status PushImage(const std::string& ref, const std::optional<docker::RegistryAuth>& auth,
                   const docker::TextSink& progress) override {
    return real_.PushImage(ref, auth, progress);
  }
  StatusOr<std::string> CreateContainer(const docker::ContainerConfig& config) override {
    return real_.CreateContainer(config);
  }
  Status StartContainer(const std::string& id) override { return real_.StartContainer(id); }
  using docker::Engine::FollowLogs;
  Status FollowLogsFrom(const std::string& id, const docker::LogPosition& from,
                        const docker::PositionedSink& sink) override {
    return real_.FollowLogsFrom(id, from, sink);
  }
  StatusOr<int> WaitContainer(const std::string& id) override { return real_.WaitContainer(id); }
  Status StopContainer(const std::string& id, int grace_seconds) override {
    return real_.StopContainer(id, grace_seconds);
  }
  Status KillContainer(const std::string& id) override { return real_.KillContainer(id); }
  Status RemoveContainer(const std::string& id, bool force) override {
    return real_.RemoveContainer(id, force);
  }
  Status CreateNetwork(const std::string& name,
                       const std::map<std::string, std::string>& labels) override {
    return real_.CreateNetwork(name, labels);
  }
  Status RemoveNetwork(const std::string& name) override { return real_.RemoveNetwork(name); }
  StatusOr<docker::ContainerState> InspectContainer(const std::string& id) override {
    return real_.InspectContainer(id);
  }
  StatusOr<std::vector<docker::ContainerSummary>> ListContainers(
      const std::string& key, const std::string& value) override {
    return real_.ListContainers(key, value);
  }

 private:
  docker::Engine& real_;
  mutable std::mutex mu_;
  int pulls_ = 0;
  std::vector<std::string> build_tags_;
  std::vector<std::string> build_contexts_;  // raw tar bytes of each build context
};

}  // namespace trainyard::testing
