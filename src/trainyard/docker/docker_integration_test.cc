// HttpEngine against the real dockerd (/var/run/docker.sock, or DOCKER_HOST=unix://PATH), and a
// real private registry with htpasswd auth started by scripts/registry.sh, found through the env
// file it writes (/var/lib/trainyard-test/registry.env, or $TRAINYARD_REGISTRY_ENV). A missing
// service fails the test when CI=true or TRAINYARD_REQUIRE_SERVICES=1, and skips it (with the
// reason) otherwise. Every container and image made here carries a random name or label and is
// removed at the end.

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/docker/http_engine.h"
#include "trainyard/docker/tar.h"

namespace trainyard::docker {
namespace {

constexpr char kBaseImage[] = "debian:bookworm-slim";

// The env file scripts/registry.sh writes; TRAINYARD_REGISTRY_ENV may point elsewhere.
std::string RegistryEnvPath() {
  const char* path = std::getenv("TRAINYARD_REGISTRY_ENV");
  return path != nullptr && *path != '\0' ? path : "/var/lib/trainyard-test/registry.env";
}

bool ServicesRequired() {
  const char* ci = std::getenv("CI");
  const char* req = std::getenv("TRAINYARD_REQUIRE_SERVICES");
  return (ci != nullptr && std::string(ci) == "true") ||
         (req != nullptr && std::string(req) == "1");
}

// Fails or skips the current test, per the rule in the file comment.
#define TY_SERVICE_MISSING(reason)                                           \
  do {                                                                       \
    if (ServicesRequired()) {                                                \
      FAIL() << "required service missing: " << (reason);                    \
    } else {                                                                 \
      GTEST_SKIP() << "service missing (set CI=true to fail): " << (reason); \
    }                                                                        \
  } while (0)

// Reads KEY=VALUE lines of a shell env file ("export " and quotes allowed).
std::map<std::string, std::string> ReadEnvFile(const std::string& text) {
  std::map<std::string, std::string> out;
  for (const std::string& raw : Split(text, '\n')) {
    std::string_view line = Trim(raw);
    if (line.empty() || line.front() == '#') continue;
    if (StartsWith(line, "export ")) line = Trim(line.substr(7));
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view value = line.substr(eq + 1);
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    out[std::string(line.substr(0, eq))] = std::string(value);
  }
  return out;
}

// The settings scripts/registry.sh writes: REGISTRY, REGISTRY_USER, REGISTRY_PASSWORD,
// REGISTRY_IMAGE. The file's read error when it cannot be read (the registry is missing);
// InvalidArgument when it lacks one of them.
StatusOr<std::map<std::string, std::string>> ReadRegistryEnv() {
  const std::string path = RegistryEnvPath();
  TY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::map<std::string, std::string> env = ReadEnvFile(text);
  for (const char* key : {"REGISTRY", "REGISTRY_USER", "REGISTRY_PASSWORD", "REGISTRY_IMAGE"}) {
    if (env[key].empty()) return InvalidArgument(std::string(key) + " missing from " + path);
  }
  return env;
}

class DockerIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Status ping = engine_.Ping();
    if (!ping.ok()) {
      TY_SERVICE_MISSING("dockerd: " + ping.ToString() + " (start it with scripts/dockerd.sh)");
    }
    auto base = engine_.InspectImage(kBaseImage);
    if (!base.ok() || !base->has_value()) {
      TY_SERVICE_MISSING(std::string(kBaseImage) +
                         " is not in the local engine (scripts/base-images.sh makes it)");
    }
    nonce_ = RandomHex(6);
  }

  // The registry's settings (ReadRegistryEnv) into `env`. A registry that is not there fails or
  // skips the test (TY_SERVICE_MISSING); a settings file without every setting fails it.
  void LoadRegistryEnv(std::map<std::string, std::string>* env) {
    StatusOr<std::map<std::string, std::string>> registry_env = ReadRegistryEnv();
    if (!registry_env.ok() && registry_env.status().code() != StatusCode::kInvalidArgument) {
      TY_SERVICE_MISSING(RegistryEnvPath() + ": " + registry_env.status().message() +
                         " (run scripts/registry.sh)");
    }
    ASSERT_TRUE(registry_env.ok()) << registry_env.status().ToString();
    *env = std::move(registry_env).value();
  }

  void TearDown() override {
    for (const std::string& id : containers_) {
      Status s = engine_.RemoveContainer(id, /*force=*/true);
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
    for (const std::string& tag : images_) {
      Status s = engine_.RemoveImage(tag, /*force=*/true);
      EXPECT_TRUE(s.ok() || s.code() == StatusCode::kNotFound) << s.ToString();
    }
  }

  // Creates a container from the base image that runs `sh -c script`, labelled for this test.
  std::string Create(const std::string& script) {
    ContainerConfig c;
    c.image = kBaseImage;
    c.cmd = {"sh", "-c", script};
    c.labels = {{"trainyard.test", nonce_}};
    StatusOr<std::string> id = engine_.CreateContainer(c);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    if (!id.ok()) return "";
    containers_.push_back(*id);
    return *id;
  }

  HttpEngine engine_{DefaultDockerSocketPath()};
  std::string nonce_;
  std::vector<std::string> containers_;
  std::vector<std::string> images_;
};

TEST_F(DockerIntegrationTest, Ping) { EXPECT_TRUE(engine_.Ping().ok()); }

TEST_F(DockerIntegrationTest, BuildStreamsOutputAndTagsImage) {
  const std::string tag = "trainyard-test/docker-it:" + nonce_;
  images_.push_back(tag);
  BuildRequest req;
  // The nonce defeats the build cache, so the RUN step really runs and prints.
  StatusOr<std::string> tar = TarFiles(
      {{"Dockerfile", "FROM debian:bookworm-slim\nARG NONCE\nRUN echo hello-from-build $NONCE\n"}});
  ASSERT_TRUE(tar.ok());
  req.context_tar = *tar;
  req.tag = tag;
  req.labels = {{"trainyard.test", nonce_}};
  req.build_args = {{"NONCE", nonce_}};
  std::vector<std::string> lines;
  Status s = engine_.BuildImage(req, [&](std::string_view l) { lines.emplace_back(l); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  bool saw_hello = false;
  for (const std::string& l : lines) {
    EXPECT_EQ(l.find('\n'), std::string::npos) << "one line per call";
    if (l == "hello-from-build " + nonce_) saw_hello = true;
  }
  EXPECT_TRUE(saw_hello) << "build output:\n"
                         << [&] {
                              std::string all;
                              for (const std::string& l : lines) all += l + "\n";
                              return all;
                            }();

  auto info = engine_.InspectImage(tag);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  ASSERT_TRUE(info->has_value());
  EXPECT_TRUE(StartsWith((*info)->id, "sha256:"));
  EXPECT_EQ((*info)->labels["trainyard.test"], nonce_);
  bool tagged = false;
  for (const std::string& t : (*info)->repo_tags) tagged |= t == tag;
  EXPECT_TRUE(tagged);

  ASSERT_TRUE(engine_.RemoveImage(tag, true).ok());
  auto gone = engine_.InspectImage(tag);
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
  EXPECT_EQ(engine_.RemoveImage(tag, false).code(), StatusCode::kNotFound);
}

TEST_F(DockerIntegrationTest, FailingBuildStepIsInvalidArgument) {
  const std::string tag = "trainyard-test/docker-it-fail:" + nonce_;
  images_.push_back(tag);
  BuildRequest req;
  req.context_tar = *TarFiles({{"Dockerfile", "FROM debian:bookworm-slim\nRUN echo about-to-fail-" +
                                                  nonce_ + " && exit 7\n"}});
  req.tag = tag;
  std::vector<std::string> lines;
  Status s = engine_.BuildImage(req, [&](std::string_view l) { lines.emplace_back(l); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("returned a non-zero code: 7"), std::string::npos) << s.message();
  bool saw = false;
  for (const std::string& l : lines) saw |= l == "about-to-fail-" + nonce_;
  EXPECT_TRUE(saw);
  auto info = engine_.InspectImage(tag);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->has_value());

  req.context_tar = *TarFiles({{"Dockerfile", "FROM debian:bookworm-slim\nNOTANINSTRUCTION x\n"}});
  Status parse = engine_.BuildImage(req, nullptr);
  EXPECT_EQ(parse.code(), StatusCode::kInvalidArgument) << parse.ToString();

  req.context_tar =
      *TarFiles({{"Dockerfile", "FROM trainyard-test/no-such-base:" + nonce_ + "\n"}});
  Status missing_base = engine_.BuildImage(req, nullptr);
  EXPECT_FALSE(missing_base.ok());
  RecordProperty("missing_base", missing_base.ToString());
  RecordProperty("parse", parse.ToString());

  req.dockerfile = "no/such/Dockerfile";
  Status no_dockerfile = engine_.BuildImage(req, nullptr);
  EXPECT_EQ(no_dockerfile.code(), StatusCode::kInvalidArgument) << no_dockerfile.ToString();
  RecordProperty("no_dockerfile", no_dockerfile.ToString());
}

TEST_F(DockerIntegrationTest, ContainerLogsBothStreamsAndExitCode) {
  std::string id = Create("echo to-stdout; echo to-stderr >&2; exit 3");
  ASSERT_FALSE(id.empty());
  StatusOr<ContainerState> created = engine_.InspectContainer(id);
  ASSERT_TRUE(created.ok());
  EXPECT_EQ(created->status, "created");
  ASSERT_TRUE(engine_.StartContainer(id).ok());
  std::string logs;
  Status follow = engine_.FollowLogs(id, [&](std::string_view s) { logs.append(s); });
  ASSERT_TRUE(follow.ok()) << follow.ToString();
  StatusOr<int> code = engine_.WaitContainer(id);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 3);
  EXPECT_NE(logs.find("to-stdout\n"), std::string::npos) << logs;
  EXPECT_NE(logs.find("to-stderr\n"), std::string::npos) << logs;
  StatusOr<ContainerState> state = engine_.InspectContainer(id);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->status, "exited");
  EXPECT_FALSE(state->running);
  EXPECT_EQ(state->exit_code, 3);
  EXPECT_FALSE(state->finished_at.empty());

  ASSERT_TRUE(engine_.RemoveContainer(id, false).ok());
  EXPECT_EQ(engine_.InspectContainer(id).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(engine_.RemoveContainer(id, false).ok());
  EXPECT_EQ(engine_.StartContainer(id).code(), StatusCode::kNotFound);
}

TEST_F(DockerIntegrationTest, LogsStreamWhileRunningAndStopEndsContainer) {
  std::string id = Create("echo first-line; exec sleep 100");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(engine_.StartContainer(id).ok());

  std::mutex mu;
  std::condition_variable cv;
  std::string logs;
  Status follow_status = Internal("not finished");
  bool follow_done = false;
  std::thread follower([&] {
    Status s = engine_.FollowLogs(id, [&](std::string_view chunk) {
      std::lock_guard<std::mutex> lock(mu);
      logs.append(chunk);
      cv.notify_all();
    });
    std::lock_guard<std::mutex> lock(mu);
    follow_status = s;
    follow_done = true;
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] {
      return logs.find("first-line\n") != std::string::npos;
    })) << "log line did not arrive while the container runs";
    EXPECT_FALSE(follow_done);
  }

  auto listed = engine_.ListContainers("trainyard.test", nonce_);
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, id);
  EXPECT_EQ((*listed)[0].state, "running");
  EXPECT_EQ((*listed)[0].labels["trainyard.test"], nonce_);
  EXPECT_EQ(engine_.ListContainers("trainyard.test", "")->empty(), false);
  EXPECT_TRUE(engine_.ListContainers("trainyard.test", nonce_ + "-other")->empty());
  EXPECT_TRUE(engine_.InspectContainer(id)->running);
  EXPECT_EQ(engine_.RemoveContainer(id, false).code(), StatusCode::kFailedPrecondition);

  auto start = std::chrono::steady_clock::now();
  Status stop = engine_.StopContainer(id, 1);  // sleep as PID 1 ignores SIGTERM: SIGKILL after 1 s
  ASSERT_TRUE(stop.ok()) << stop.ToString();
  StatusOr<int> code = engine_.WaitContainer(id);
  auto elapsed = std::chrono::steady_clock::now() - start;
  follower.join();
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 137);
  EXPECT_LT(elapsed, std::chrono::seconds(30));
  EXPECT_TRUE(follow_status.ok()) << follow_status.ToString();
  EXPECT_FALSE(engine_.InspectContainer(id)->running);
  EXPECT_TRUE(engine_.StopContainer(id, 1).ok());  // already stopped
  EXPECT_TRUE(engine_.KillContainer(id).ok());     // not running

  ASSERT_TRUE(engine_.RemoveContainer(id, false).ok());
  EXPECT_TRUE(engine_.ListContainers("trainyard.test", nonce_)->empty());
}

TEST_F(DockerIntegrationTest, KillAndForceRemove) {
  std::string id = Create("exec sleep 100");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(engine_.StartContainer(id).ok());
  ASSERT_TRUE(engine_.StartContainer(id).ok());  // already started: OK
  ASSERT_TRUE(engine_.KillContainer(id).ok());
  StatusOr<int> code = engine_.WaitContainer(id);
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 137);

  std::string id2 = Create("exec sleep 100");
  ASSERT_TRUE(engine_.StartContainer(id2).ok());
  ASSERT_TRUE(engine_.RemoveContainer(id2, /*force=*/true).ok());
  EXPECT_EQ(engine_.InspectContainer(id2).status().code(), StatusCode::kNotFound);
}

TEST_F(DockerIntegrationTest, ContainerOptionsReachTheEngine) {
  const fs::path host_dir = fs::temp_directory_path() / ("trainyard-docker-it-" + nonce_);
  ASSERT_TRUE(MakeDirs(host_dir).ok());
  ASSERT_TRUE(WriteFileAtomic(host_dir / "input.txt", "from-the-host").ok());
  ContainerConfig c;
  c.name = "trainyard-it-" + nonce_;
  c.image = kBaseImage;
  c.entrypoint = std::vector<std::string>{"sh", "-c"};
  c.cmd = {
      "cat /in/input.txt; echo; echo $FOO; pwd; hostname; "
      "df -k /dev/shm | tail -1 | awk '{print $2}'; touch /in/x 2>/dev/null || echo ro"};
  c.env = {"FOO=bar baz"};
  c.working_dir = "/tmp";
  c.hostname = "node-" + nonce_;
  c.labels = {{"trainyard.test", nonce_}};
  c.mounts = {{host_dir.string(), "/in", true}};
  c.shm_size_bytes = 128 << 20;
  c.memory_bytes = 256 << 20;
  c.nano_cpus = 500'000'000;
  StatusOr<std::string> id = engine_.CreateContainer(c);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  containers_.push_back(*id);
  EXPECT_EQ(engine_.CreateContainer(c).status().code(), StatusCode::kFailedPrecondition)
      << "same name twice";
  ASSERT_TRUE(engine_.StartContainer(c.name).ok());
  std::string logs;
  ASSERT_TRUE(engine_.FollowLogs(*id, [&](std::string_view s) { logs.append(s); }).ok());
  EXPECT_EQ(*engine_.WaitContainer(*id), 0);
  EXPECT_EQ(logs, "from-the-host\nbar baz\n/tmp\nnode-" + nonce_ + "\n131072\nro\n");
  ASSERT_TRUE(RemoveTree(host_dir).ok());

  ContainerConfig missing;
  missing.image = "trainyard-test/no-such-image:" + nonce_;
  EXPECT_EQ(engine_.CreateContainer(missing).status().code(), StatusCode::kNotFound);
  auto no_image = engine_.InspectImage(missing.image);
  ASSERT_TRUE(no_image.ok());
  EXPECT_FALSE(no_image->has_value());
}

TEST_F(DockerIntegrationTest, PrivateRegistryPullWithAuth) {
  std::map<std::string, std::string> env;
  LoadRegistryEnv(&env);
  if (HasFatalFailure() || IsSkipped()) return;
  const std::string image = env["REGISTRY_IMAGE"];
  const std::string registry = env["REGISTRY"];
  const RegistryAuth good{env["REGISTRY_USER"], env["REGISTRY_PASSWORD"], registry};
  const std::string wrong_password = "wrong-" + RandomHex(8);
  const RegistryAuth bad{env["REGISTRY_USER"], wrong_password, registry};

  auto before = engine_.InspectImage(image);
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  const bool had_image = before->has_value();
  Status removed = engine_.RemoveImage(image, false);
  ASSERT_TRUE(removed.ok() || removed.code() == StatusCode::kNotFound) << removed.ToString();

  std::vector<std::string> progress;
  auto sink = [&](std::string_view l) { progress.emplace_back(l); };
  Status pulled = engine_.PullImage(image, good, sink);
  if (pulled.code() == StatusCode::kUnavailable) {
    TY_SERVICE_MISSING("registry " + registry + ": " + pulled.ToString());
  }
  ASSERT_TRUE(pulled.ok()) << pulled.ToString();
  EXPECT_FALSE(progress.empty());
  auto after = engine_.InspectImage(image);
  ASSERT_TRUE(after.ok() && after->has_value());

  ASSERT_TRUE(engine_.RemoveImage(image, false).ok());
  progress.clear();
  Status refused = engine_.PullImage(image, bad, sink);
  RecordProperty("refused", refused.ToString());
  EXPECT_EQ(refused.code(), StatusCode::kUnauthenticated) << refused.ToString();
  EXPECT_TRUE(StartsWith(refused.message(), "unauthorized: pulling")) << refused.message();
  EXPECT_NE(refused.message().find(registry), std::string::npos) << refused.message();
  EXPECT_EQ(refused.message().find(wrong_password), std::string::npos) << refused.message();
  for (const std::string& l : progress) EXPECT_EQ(l.find(wrong_password), std::string::npos) << l;
  auto still_absent = engine_.InspectImage(image);
  ASSERT_TRUE(still_absent.ok());
  EXPECT_FALSE(still_absent->has_value());

  Status anonymous = engine_.PullImage(image, std::nullopt, nullptr);
  EXPECT_EQ(anonymous.code(), StatusCode::kUnauthenticated) << anonymous.ToString();

  Status missing =
      engine_.PullImage(registry + "/trainyard-test/no-such-image:" + nonce_, good, nullptr);
  EXPECT_EQ(missing.code(), StatusCode::kNotFound) << missing.ToString();
  RecordProperty("anonymous", anonymous.ToString());
  RecordProperty("missing", missing.ToString());

  if (had_image) {
    Status restored = engine_.PullImage(image, good, nullptr);
    EXPECT_TRUE(restored.ok()) << restored.ToString();
  }
}

TEST_F(DockerIntegrationTest, PrivateRegistryTagPushAndPullBack) {
  std::map<std::string, std::string> env;
  LoadRegistryEnv(&env);
  if (HasFatalFailure() || IsSkipped()) return;
  const std::string registry = env["REGISTRY"];
  const RegistryAuth good{env["REGISTRY_USER"], env["REGISTRY_PASSWORD"], registry};
  const std::string wrong_password = "wrong-" + RandomHex(8);
  const RegistryAuth bad{env["REGISTRY_USER"], wrong_password, registry};
  // The tag stays in the registry (it shares the base image's layers); the local one is removed.
  const std::string pushed = registry + "/trainyard-test/pushed:" + nonce_;
  images_.push_back(pushed);

  EXPECT_EQ(engine_.TagImage("trainyard-test/no-such-image:" + nonce_, pushed).code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(engine_.TagImage(kBaseImage, pushed).ok());
  auto base = engine_.InspectImage(kBaseImage);
  auto tagged = engine_.InspectImage(pushed);
  ASSERT_TRUE(base.ok() && base->has_value() && tagged.ok() && tagged->has_value());
  EXPECT_EQ((*tagged)->id, (*base)->id);

  std::vector<std::string> progress;
  auto sink = [&](std::string_view l) { progress.emplace_back(l); };
  Status ok = engine_.PushImage(pushed, good, sink);
  if (ok.code() == StatusCode::kUnavailable) {
    TY_SERVICE_MISSING("registry " + registry + ": " + ok.ToString());
  }
  ASSERT_TRUE(ok.ok()) << ok.ToString();
  EXPECT_FALSE(progress.empty());
  for (const std::string& l : progress) {
    EXPECT_EQ(l.find('\n'), std::string::npos) << "one line per call";
    EXPECT_EQ(l.find(good.password), std::string::npos) << l;
  }

  // Gone locally (the base image keeps its own name), then back from the registry.
  ASSERT_TRUE(engine_.RemoveImage(pushed, false).ok());
  auto absent = engine_.InspectImage(pushed);
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->has_value());
  Status pulled = engine_.PullImage(pushed, good, nullptr);
  ASSERT_TRUE(pulled.ok()) << pulled.ToString();
  auto back = engine_.InspectImage(pushed);
  ASSERT_TRUE(back.ok() && back->has_value());
  EXPECT_EQ((*back)->id, (*base)->id);

  progress.clear();
  Status refused = engine_.PushImage(pushed, bad, sink);
  RecordProperty("refused", refused.ToString());
  EXPECT_EQ(refused.code(), StatusCode::kUnauthenticated) << refused.ToString();
  EXPECT_TRUE(StartsWith(refused.message(), "unauthorized: pushing " + pushed + " to " + registry))
      << refused.message();
  EXPECT_EQ(refused.message().find(wrong_password), std::string::npos) << refused.message();
  for (const std::string& l : progress) EXPECT_EQ(l.find(wrong_password), std::string::npos) << l;

  Status anonymous = engine_.PushImage(pushed, std::nullopt, nullptr);
  RecordProperty("anonymous", anonymous.ToString());
  EXPECT_EQ(anonymous.code(), StatusCode::kUnauthenticated) << anonymous.ToString();

  Status missing =
      engine_.PushImage(registry + "/trainyard-test/no-such-image:" + nonce_, good, nullptr);
  RecordProperty("missing", missing.ToString());
  EXPECT_EQ(missing.code(), StatusCode::kNotFound) << missing.ToString();
}

}  // namespace
}  // namespace trainyard::docker
