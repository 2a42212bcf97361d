#include "trainyard/docker/fake_engine.h"

#include <algorithm>
#include <utility>

#include "trainyard/common/mutex.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::docker {

struct FakeEngine::Container {
  std::string id;
  ContainerConfig config;
  std::string status = "created";  // "created", "running", "exited"
  bool stop_requested = false;     // for the current run
  bool removed = false;
  int run = 0;  // incremented by each start, so a runner of an earlier start cannot interfere
  int exit_code = 0;
  std::string log;
  std::string started_at;
  std::string finished_at;
};

// What a runner thread knows about itself, for StopRequested()/WaitForStop().
struct FakeEngine::RunnerContext {
  FakeEngine* engine = nullptr;
  std::shared_ptr<Container> container;
  int run = 0;

  // Requires engine->mutex_.
  bool Stopped() const { return container->run != run || container->stop_requested; }
};

namespace {

thread_local const void* current_runner = nullptr;  // a FakeEngine::RunnerContext*

// One key per image however it is spelled: "python" = "python:latest" = "library/python" =
// "docker.io/library/python:latest", as Docker resolves them.
std::string NormalizeRef(const std::string& ref) {
  StatusOr<ImageRef> parsed = ParseImageRef(ref);
  if (!parsed.ok()) return ref;
  std::string key = parsed->ToString();
  if (parsed->registry == "docker.io") {
    if (StartsWith(key, "docker.io/")) key.erase(0, std::string_view("docker.io/").size());
    if (StartsWith(key, "library/")) key.erase(0, std::string_view("library/").size());
  }
  return key;
}

std::string Now() { return FormatTimeIso(NowMillis()); }

}  // namespace

FakeEngine::FakeEngine() = default;

FakeEngine::~FakeEngine() {
  std::vector<std::thread> threads;
  {
    MutexLock lock(mutex_);
    for (auto& [id, c] : containers_) {
      if (c->status == "running") FinishLocked(*c, 137);
      c->stop_requested = true;
    }
    threads.swap(threads_);
  }
  changed_.notify_all();
  for (std::thread& t : threads) t.join();
}

void FakeEngine::AddImage(const std::string& ref, std::map<std::string, std::string> labels) {
  MutexLock lock(mutex_);
  std::string key = NormalizeRef(ref);
  ImageInfo& info = images_[key];
  info.id = "sha256:" + Sha256Hex(key);
  info.repo_tags = {key};
  info.labels = std::move(labels);
}

void FakeEngine::SetImageEnv(const std::string& ref, std::vector<std::string> env) {
  MutexLock lock(mutex_);
  images_[NormalizeRef(ref)].env = std::move(env);
}

void FakeEngine::AddRemoteImage(const std::string& ref) {
  MutexLock lock(mutex_);
  remote_images_.insert(NormalizeRef(ref));
}

void FakeEngine::SetRegistryCredentials(const std::string& registry, const std::string& username,
                                        const std::string& password) {
  MutexLock lock(mutex_);
  credentials_[registry] = {username, password};
}

Status FakeEngine::CreateNetwork(const std::string& name,
                                 const std::map<std::string, std::string>&) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  networks_.insert(name);
  return Status::Ok();
}

Status FakeEngine::RemoveNetwork(const std::string& name) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  networks_.erase(name);
  return Status::Ok();
}

std::set<std::string> FakeEngine::Networks() const {
  MutexLock lock(mutex_);
  return networks_;
}

void FakeEngine::SetBuildHook(std::function<void()> hook) {
  MutexLock lock(mutex_);
  build_hook_ = std::move(hook);
}

void FakeEngine::SetBuildFailure(std::optional<std::string> message) {
  MutexLock lock(mutex_);
  build_failure_ = std::move(message);
}

void FakeEngine::SetBuildOutput(std::vector<std::string> lines) {
  MutexLock lock(mutex_);
  build_output_ = std::move(lines);
}

void FakeEngine::SetRunner(Runner runner) {
  MutexLock lock(mutex_);
  runner_ = std::move(runner);
}

void FakeEngine::SetAvailable(bool available) {
  {
    MutexLock lock(mutex_);
    available_ = available;
  }
  changed_.notify_all();  // streams and waits break, as their connections would
}

bool FakeEngine::StopRequested() {
  auto* ctx = static_cast<const RunnerContext*>(current_runner);
  if (ctx == nullptr) return false;
  MutexLock lock(ctx->engine->mutex_);
  return ctx->Stopped();
}

bool FakeEngine::WaitForStop(std::chrono::milliseconds timeout) {
  auto* ctx = static_cast<const RunnerContext*>(current_runner);
  if (ctx == nullptr) return false;
  MutexLock lock(ctx->engine->mutex_);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!ctx->Stopped()) {
    if (!lock.WaitUntil(ctx->engine->changed_, deadline)) return ctx->Stopped();
  }
  return true;
}

int FakeEngine::builds() const {
  MutexLock lock(mutex_);
  return builds_;
}

int FakeEngine::pulls() const {
  MutexLock lock(mutex_);
  return pulls_;
}

int FakeEngine::pushes() const {
  MutexLock lock(mutex_);
  return pushes_;
}

int FakeEngine::creates() const {
  MutexLock lock(mutex_);
  return creates_;
}

int FakeEngine::starts() const {
  MutexLock lock(mutex_);
  return starts_;
}

std::optional<BuildRequest> FakeEngine::last_build() const {
  MutexLock lock(mutex_);
  return last_build_;
}

std::optional<ContainerConfig> FakeEngine::last_container_config() const {
  MutexLock lock(mutex_);
  return last_container_config_;
}

std::optional<RegistryAuth> FakeEngine::last_pull_auth() const {
  MutexLock lock(mutex_);
  return last_pull_auth_;
}

std::optional<RegistryAuth> FakeEngine::last_push_auth() const {
  MutexLock lock(mutex_);
  return last_push_auth_;
}

std::vector<std::string> FakeEngine::pushed() const {
  MutexLock lock(mutex_);
  return pushed_;
}

bool FakeEngine::HasImage(const std::string& ref) const {
  MutexLock lock(mutex_);
  return images_.count(NormalizeRef(ref)) != 0;
}

std::vector<std::string> FakeEngine::ContainerIds() const {
  MutexLock lock(mutex_);
  std::vector<std::string> ids;
  for (const auto& [id, c] : containers_) ids.push_back(id);
  return ids;
}

bool FakeEngine::WaitUntilRunning(const std::string& id, std::chrono::milliseconds timeout) {
  MutexLock lock(mutex_);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto running = [&]() REQUIRES(mutex_) {
    std::shared_ptr<Container> c = FindLocked(id);
    return c != nullptr && c->status == "running";
  };
  while (!running()) {
    if (!lock.WaitUntil(changed_, deadline)) return running();
  }
  return true;
}

std::shared_ptr<FakeEngine::Container> FakeEngine::FindLocked(const std::string& id) const {
  if (id.empty()) return nullptr;
  if (auto it = containers_.find(id); it != containers_.end()) return it->second;
  std::shared_ptr<Container> match;
  for (const auto& [cid, c] : containers_) {
    if (c->config.name == id) return c;
    if (StartsWith(cid, id)) {
      if (match != nullptr) return nullptr;  // ambiguous prefix
      match = c;
    }
  }
  return match;
}

void FakeEngine::FinishLocked(Container& c, int exit_code) {
  c.status = "exited";
  c.exit_code = exit_code;
  c.finished_at = Now();
  changed_.notify_all();
}

Status FakeEngine::CheckAvailableLocked() const {
  if (available_) return Status::Ok();
  return Unavailable("cannot reach the Docker engine at fake://docker.sock: connection refused");
}

Status FakeEngine::CheckCredentialsLocked(const std::string& registry,
                                          const std::optional<RegistryAuth>& auth,
                                          const std::string& action) const {
  auto it = credentials_.find(registry);
  if (it == credentials_.end()) return Status::Ok();
  if (auth && auth->username == it->second.first && auth->password == it->second.second) {
    return Status::Ok();
  }
  return Unauthenticated(
      "unauthorized: " + action + ": " +
      (auth ? "unauthorized: authentication required" : "no basic auth credentials"));
}

Status FakeEngine::Ping() {
  MutexLock lock(mutex_);
  return CheckAvailableLocked();
}

StatusOr<std::optional<ImageInfo>> FakeEngine::InspectImage(const std::string& ref) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  if (auto it = images_.find(NormalizeRef(ref)); it != images_.end()) {
    return std::optional<ImageInfo>(it->second);
  }
  for (const auto& [key, info] : images_) {
    if (info.id == ref) return std::optional<ImageInfo>(info);
  }
  return std::optional<ImageInfo>();
}

Status FakeEngine::PullImage(const std::string& ref, const std::optional<RegistryAuth>& auth,
                             const TextSink& progress) {
  TY_ASSIGN_OR_RETURN(ImageRef parsed, ParseImageRef(ref));
  const std::string key = parsed.ToString();
  std::vector<std::string> lines;
  {
    MutexLock lock(mutex_);
    TY_RETURN_IF_ERROR(CheckAvailableLocked());
    ++pulls_;
    last_pull_auth_ = auth;
    const std::string where = key + " from " + parsed.registry;
    TY_RETURN_IF_ERROR(CheckCredentialsLocked(parsed.registry, auth, "pulling " + where));
    if (remote_images_.count(key) == 0) return NotFound("pulling " + where + ": manifest unknown");
    ImageInfo& info = images_[key];
    info.id = "sha256:" + Sha256Hex(key);
    info.repo_tags = {key};
    lines = {(parsed.digest.empty() ? parsed.tag : parsed.digest) + ": Pulling from " +
                 parsed.repository,
             "Digest: " + info.id, "Status: Downloaded newer image for " + key};
  }
  if (progress) {
    for (const std::string& line : lines) progress(line);
  }
  return Status::Ok();
}

Status FakeEngine::BuildImage(const BuildRequest& request, const TextSink& output) {
  std::vector<std::string> lines;
  std::optional<std::string> failure;
  std::function<void()> hook;
  {
    MutexLock lock(mutex_);
    hook = build_hook_;
  }
  if (hook) hook();
  {
    MutexLock lock(mutex_);
    TY_RETURN_IF_ERROR(CheckAvailableLocked());
    ++builds_;
    last_build_ = request;
    failure = build_failure_;
    lines = build_output_.value_or(
        std::vector<std::string>{"Step 1/1 : FROM scratch", "Successfully tagged " + request.tag});
  }
  if (output) {
    for (const std::string& line : lines) output(line);
  }
  std::string what = "building " + (request.tag.empty() ? std::string("image") : request.tag);
  if (failure) return InvalidArgument(what + " failed: " + *failure);
  if (!request.tag.empty()) AddImage(request.tag, request.labels);
  return Status::Ok();
}

Status FakeEngine::RemoveImage(const std::string& ref, bool force) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  auto it = images_.find(NormalizeRef(ref));
  if (it == images_.end()) return NotFound("remove image " + ref + ": No such image: " + ref);
  if (!force) {
    for (const auto& [id, c] : containers_) {
      if (NormalizeRef(c->config.image) == it->first) {
        return FailedPrecondition(
            "remove image " + ref + ": conflict: unable to remove repository reference \"" + ref +
            "\" (must force) - container " + id.substr(0, 12) + " is using its referenced image");
      }
    }
  }
  const ImageInfo removed = std::move(it->second);
  images_.erase(it);
  // Other names of the same image no longer list this one.
  const std::string name = NormalizeRef(ref);
  for (auto& [key, info] : images_) {
    if (info.id != removed.id) continue;
    std::erase(info.repo_tags, name);
  }
  return Status::Ok();
}

Status FakeEngine::TagImage(const std::string& source, const std::string& target) {
  const std::string what = "tag image " + source + " as " + target;
  StatusOr<ImageRef> parsed = ParseImageRef(target);
  if (!parsed.ok()) return InvalidArgument(what + ": " + parsed.status().message());
  if (!parsed->digest.empty()) return InvalidArgument(what + ": a tag cannot be a digest");
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  auto it = images_.find(NormalizeRef(source));
  if (it == images_.end()) {
    it = std::find_if(images_.begin(), images_.end(),
                      [&](const auto& entry) { return entry.second.id == source; });
  }
  if (it == images_.end()) return NotFound(what + ": No such image: " + source);
  const std::string key = NormalizeRef(target);
  if (it->first == key) return Status::Ok();
  if (auto old = images_.find(key); old != images_.end()) {  // the name moves to this image
    const std::string old_id = old->second.id;
    images_.erase(old);
    for (auto& [name, info] : images_) {
      if (info.id == old_id) std::erase(info.repo_tags, key);
    }
  }
  ImageInfo copy = it->second;
  images_[key] = std::move(copy);
  // Every name of the image lists all of its names, as RepoTags does.
  std::vector<std::string> tags;
  for (const auto& [name, info] : images_) {
    if (info.id == it->second.id) tags.push_back(name);
  }
  for (auto& [name, info] : images_) {
    if (info.id == it->second.id) info.repo_tags = tags;
  }
  return Status::Ok();
}

Status FakeEngine::PushImage(const std::string& ref, const std::optional<RegistryAuth>& auth,
                             const TextSink& progress) {
  TY_ASSIGN_OR_RETURN(ImageRef parsed, ParseImageRef(ref));
  const std::string key = NormalizeRef(ref);
  const std::string action = "pushing " + parsed.ToString() + " to " + parsed.registry;
  std::vector<std::string> lines;
  {
    MutexLock lock(mutex_);
    TY_RETURN_IF_ERROR(CheckAvailableLocked());
    ++pushes_;
    last_push_auth_ = auth;
    if (!parsed.digest.empty()) {
      return InvalidArgument(action + ": a digest cannot be pushed, only a tag");
    }
    auto it = images_.find(key);
    if (it == images_.end()) {
      return NotFound(action + ": An image does not exist locally with the tag: " + ref);
    }
    TY_RETURN_IF_ERROR(CheckCredentialsLocked(parsed.registry, auth, action));
    remote_images_.insert(key);
    pushed_.push_back(key);
    lines = {"The push refers to repository [" + parsed.repository + "]",
             parsed.tag + ": digest: " + it->second.id + " size: 528"};
  }
  if (progress) {
    for (const std::string& line : lines) progress(line);
  }
  return Status::Ok();
}

StatusOr<std::string> FakeEngine::CreateContainer(const ContainerConfig& config) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  ++creates_;
  last_container_config_ = config;
  if (images_.count(NormalizeRef(config.image)) == 0) {
    return NotFound("create container from " + config.image + ": No such image: " + config.image);
  }
  if (!config.name.empty()) {
    for (const auto& [id, c] : containers_) {
      if (c->config.name == config.name) {
        return FailedPrecondition("create container from " + config.image +
                                  ": Conflict. The container name \"/" + config.name +
                                  "\" is already in use by container \"" + id + "\"");
      }
    }
  }
  auto c = std::make_shared<Container>();
  c->id = RandomHex(32);
  c->config = config;
  containers_[c->id] = c;
  return c->id;
}

Status FakeEngine::StartContainer(const std::string& id) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  std::shared_ptr<Container> c = FindLocked(id);
  if (c == nullptr) return NotFound("start container " + id + ": No such container: " + id);
  if (c->status == "running") return Status::Ok();
  // A restarted container keeps its log, as with Docker.
  ++starts_;
  c->stop_requested = false;
  c->status = "running";
  c->started_at = Now();
  const int run = ++c->run;
  Runner runner = runner_;
  threads_.emplace_back([this, c, run, runner = std::move(runner)] {
    RunnerContext ctx{this, c, run};
    current_runner = &ctx;
    TextSink log = [this, &ctx](std::string_view text) {
      MutexLock lock(mutex_);
      if (ctx.Stopped()) return;  // killed: later output is lost, as with SIGKILL
      ctx.container->log.append(text);
      changed_.notify_all();
    };
    int exit_code = runner ? runner(c->config, log) : 0;
    current_runner = nullptr;
    MutexLock lock(mutex_);
    if (!ctx.Stopped() && c->status == "running") FinishLocked(*c, exit_code);
  });
  changed_.notify_all();
  return Status::Ok();
}

Status FakeEngine::FollowLogsFrom(const std::string& id, const LogPosition& from,
                                  const PositionedSink& sink) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  std::shared_ptr<Container> c = FindLocked(id);
  if (c == nullptr) return NotFound("logs of container " + id + ": No such container: " + id);
  size_t sent = from.time.empty() ? 0 : static_cast<size_t>(from.messages_at_time);
  for (;;) {
    if (sent < c->log.size()) {
      std::string chunk = c->log.substr(sent);
      sent = c->log.size();
      const LogPosition after{"fake", sent};
      lock.Unlock();
      if (sink) sink(chunk, after);
      lock.Lock();
      continue;
    }
    if (c->status != "running" || c->removed) return Status::Ok();
    TY_RETURN_IF_ERROR(CheckAvailableLocked());
    lock.Wait(changed_);
  }
}

StatusOr<int> FakeEngine::WaitContainer(const std::string& id) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  std::shared_ptr<Container> c = FindLocked(id);
  if (c == nullptr) return NotFound("wait for container " + id + ": No such container: " + id);
  while (c->status == "running" && !c->removed && available_) lock.Wait(changed_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  return c->exit_code;
}

Status FakeEngine::StopContainer(const std::string& id, int /*grace_seconds*/) {
  return KillContainer(id);
}

Status FakeEngine::KillContainer(const std::string& id) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  std::shared_ptr<Container> c = FindLocked(id);
  if (c == nullptr) return NotFound("kill container " + id + ": No such container: " + id);
  if (c->status != "running") return Status::Ok();
  c->stop_requested = true;
  FinishLocked(*c, 137);
  return Status::Ok();
}

Status FakeEngine::RemoveContainer(const std::string& id, bool force) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  std::shared_ptr<Container> c = FindLocked(id);
  if (c == nullptr) return Status::Ok();
  if (c->status == "running") {
    if (!force) {
      return FailedPrecondition("remove container " + id + ": You cannot remove a running " +
                                "container " + c->id + ". Stop the container before attempting " +
                                "removal or force remove");
    }
    c->stop_requested = true;
    FinishLocked(*c, 137);
  }
  c->removed = true;
  containers_.erase(c->id);
  changed_.notify_all();
  return Status::Ok();
}

StatusOr<ContainerState> FakeEngine::InspectContainer(const std::string& id) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  std::shared_ptr<Container> c = FindLocked(id);
  if (c == nullptr) return NotFound("inspect container " + id + ": No such container: " + id);
  ContainerState s;
  s.status = c->status;
  s.running = c->status == "running";
  s.exit_code = c->exit_code;
  s.started_at = c->started_at.empty() ? "0001-01-01T00:00:00Z" : c->started_at;
  s.finished_at = c->finished_at.empty() ? "0001-01-01T00:00:00Z" : c->finished_at;
  s.labels = c->config.labels;
  return s;
}

StatusOr<std::vector<ContainerSummary>> FakeEngine::ListContainers(const std::string& key,
                                                                   const std::string& value) {
  MutexLock lock(mutex_);
  TY_RETURN_IF_ERROR(CheckAvailableLocked());
  std::vector<ContainerSummary> out;
  for (const auto& [id, c] : containers_) {
    auto it = c->config.labels.find(key);
    if (it == c->config.labels.end() || (!value.empty() && it->second != value)) continue;
    out.push_back({id, c->config.image, c->status, c->config.labels});
  }
  return out;
}

}  // namespace trainyard::docker
