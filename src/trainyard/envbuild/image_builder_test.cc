#include "trainyard/envbuild/image_builder.h"

#include <gtest/gtest.h>

#include <thread>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/docker/fake_engine.h"

namespace trainyard::envbuild {
namespace {

class ImageBuilderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("ty-envbuild-" + RandomHex(4));
    ASSERT_TRUE(MakeDirs(root_ / "tmp").ok());
    objects_ = std::make_unique<cas::ObjectStore>(root_ / "cas");
    snapshots_ = std::make_unique<cas::Snapshotter>(*objects_, root_ / "snapshots");
    builder_ = std::make_unique<ImageBuilder>(engine_, *snapshots_, root_ / "tmp",
                                              root_ / "no-docker-config.json");
  }
  void TearDown() override { (void)RemoveTree(root_); }

  StatusOr<ImageBuilder::Result> Ensure(const spec::EnvironmentDefinition& def) {
    return builder_->EnsureImage(def, [this](std::string_view t) { log_ += t; });
  }

  static spec::EnvironmentDefinition DockerfileEnv() {
    spec::EnvironmentDefinition d;
    d.name = "e";
    d.dockerfile = "FROM python:3.11-slim\nRUN echo hi\n";
    return d;
  }

  fs::path root_;
  docker::FakeEngine engine_;
  std::unique_ptr<cas::ObjectStore> objects_;
  std::unique_ptr<cas::Snapshotter> snapshots_;
  std::unique_ptr<ImageBuilder> builder_;
  std::string log_;
};

TEST(PlanImageTest, NameAndVersionDoNotChangeTheHashButADockerfileByteDoes) {
  spec::EnvironmentDefinition a;
  a.name = "one";
  a.version = "1";
  a.dockerfile = "FROM debian:bookworm-slim\n";
  spec::EnvironmentDefinition b = a;
  b.name = "two";
  b.version = "7";
  b.description = "other";
  b.environment_variables = {{"X", "1"}};  // set at run time, not in the image
  EXPECT_EQ(PlanImage(a).image_hash, PlanImage(b).image_hash);
  b.dockerfile += " ";
  EXPECT_NE(PlanImage(a).image_hash, PlanImage(b).image_hash);
}

TEST(PlanImageTest, DependencyLayerKeepsTheBaseHash) {
  spec::EnvironmentDefinition a;
  a.dockerfile = "FROM python:3.11-slim\n";
  a.pip_requirements = {"numpy"};
  spec::EnvironmentDefinition b = a;
  b.pip_requirements = {"numpy", "pandas"};
  auto pa = PlanImage(a), pb = PlanImage(b);
  EXPECT_TRUE(pa.dependency_layer);
  EXPECT_EQ(pa.base_hash, pb.base_hash);
  EXPECT_NE(pa.image_hash, pb.image_hash);
  EXPECT_EQ(pa.final_image, "trainyard/env:" + pa.image_hash);
  // User-managed: no layer, the base is what runs.
  spec::EnvironmentDefinition c;
  c.image = "python:3.11-slim";
  c.user_managed_dependencies = true;
  auto pc = PlanImage(c);
  EXPECT_FALSE(pc.dependency_layer);
  EXPECT_EQ(pc.final_image, "python:3.11-slim");
}

TEST(PlanImageTest, RenderedDependencyLayerInstallsIntoAVenv) {
  spec::EnvironmentDefinition d;
  d.image = "python:3.11-slim";
  d.pip_requirements = {"scikit-learn==1.2"};
  std::string df = RenderDependencyDockerfile("python:3.11-slim", d);
  EXPECT_NE(df.find("FROM python:3.11-slim\n"), std::string::npos);
  EXPECT_NE(df.find("-m venv --system-site-packages /opt/trainyard/venv"), std::string::npos);
  EXPECT_NE(df.find("-r /opt/trainyard/requirements.txt"), std::string::npos);
  EXPECT_NE(df.find("PATH=/opt/trainyard/venv/bin:$PATH"), std::string::npos);
}

TEST_F(ImageBuilderTest, BuildsOnceThenHitsTheCache) {
  engine_.AddImage("python:3.11-slim");
  engine_.SetBuildOutput({"Step 1/2 : FROM python:3.11-slim", "Step 2/2 : RUN echo hi"});
  auto first = Ensure(DockerfileEnv());
  // The engine's lines come without newlines; the log has one line each.
  EXPECT_NE(log_.find("Step 1/2 : FROM python:3.11-slim\nStep 2/2 : RUN echo hi\n"),
            std::string::npos)
      << log_;
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_FALSE(first->cache_hit);
  EXPECT_EQ(engine_.builds(), 1);
  EXPECT_EQ(first->image, "trainyard/env:" + first->image_hash);
  auto second = Ensure(DockerfileEnv());
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->cache_hit);
  EXPECT_EQ(engine_.builds(), 1) << "an unchanged environment must never be rebuilt";
}

TEST_F(ImageBuilderTest, PipChangeRebuildsOnlyTheDependencyLayer) {
  auto def = DockerfileEnv();
  def.pip_requirements = {"tyalpha"};
  ASSERT_TRUE(Ensure(def).ok());
  EXPECT_EQ(engine_.builds(), 2);  // base + dependency layer
  def.pip_requirements = {"tyalpha", "tybeta"};
  auto r = Ensure(def);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(engine_.builds(), 3);  // only the new dependency layer
  ASSERT_TRUE(engine_.last_build().has_value());
  EXPECT_EQ(engine_.last_build()->tag, r->image);
}

TEST_F(ImageBuilderTest, PullsAMissingImageWithTheEnvironmentsCredentials) {
  engine_.AddRemoteImage("127.0.0.1:5000/team/img:1");
  engine_.SetRegistryCredentials("127.0.0.1:5000", "u", "right");
  spec::EnvironmentDefinition d;
  d.image = "127.0.0.1:5000/team/img:1";
  d.user_managed_dependencies = true;
  d.registry = spec::RegistryCredentials{"127.0.0.1:5000", "u", "wrong-pw-123"};
  auto bad = Ensure(d);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kUnauthenticated);
  EXPECT_TRUE(StartsWith(bad.status().message(), "unauthorized: pulling"))
      << bad.status().message();
  EXPECT_EQ(bad.status().message().find("wrong-pw-123"), std::string::npos);
  EXPECT_EQ(log_.find("wrong-pw-123"), std::string::npos);
  d.registry->password = "right";
  auto good = Ensure(d);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ(engine_.last_pull_auth()->password, "right");
  EXPECT_EQ(good->image, "127.0.0.1:5000/team/img:1");
}

TEST_F(ImageBuilderTest, CondaPackagesWithoutCondaFailBeforeAnyBuild) {
  auto def = DockerfileEnv();
  def.conda = spec::CondaSpec{"", {}, {"numpy=1.26"}, {"requests"}};
  auto r = Ensure(def);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("numpy=1.26"), std::string::npos);
  EXPECT_EQ(engine_.builds(), 0);
}

TEST_F(ImageBuilderTest, ConcurrentRequestsShareOneBuild) {
  engine_.AddImage("python:3.11-slim");
  engine_.SetBuildOutput({"Step 1/1 : slow"});
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&] {
      auto r = builder_->EnsureImage(DockerfileEnv(), [](std::string_view) {});
      if (r.ok()) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 6);
  // Builds that started after the first finished see the image and skip; concurrent ones wait.
  EXPECT_EQ(engine_.builds(), 1);
}

TEST_F(ImageBuilderTest, FailedBuildReportsTheStep) {
  engine_.SetBuildFailure("The command '/bin/sh -c exit 7' returned a non-zero code: 7");
  auto r = Ensure(DockerfileEnv());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("non-zero code: 7"), std::string::npos);
}

}  // namespace
}  // namespace trainyard::envbuild
