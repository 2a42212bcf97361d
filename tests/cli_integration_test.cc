// The `trainyard` binary end to end, as a user runs it: a job file, `job create --stream`, the
// daemon started by the CLI itself, `job list`, `job show`, `job download`, `env create`.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/test_env.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

namespace trainyard {
namespace {

using json = nlohmann::json;

using testing::CmdResult;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TY_REQUIRE_SERVICE(testing::DockerAvailable(), "dockerd at /var/run/docker.sock");
    home_ = fs::temp_directory_path() / ("ty-cli-" + RandomHex(4));
    project_ = home_ / "project";
    ASSERT_TRUE(MakeDirs(project_ / "src").ok());
  }

  void TearDown() override {
    testing::StopWorkspaceDaemon(home_ / "ws");  // the daemon the CLI started
    (void)RemoveTree(home_);
  }

  void Write(const std::string& rel, const std::string& text) {
    ASSERT_TRUE(MakeDirs((project_ / rel).parent_path()).ok());
    ASSERT_TRUE(WriteFileAtomic(project_ / rel, text).ok());
  }

  CmdResult Run(const std::string& args, const std::string& binary = testing::TrainyardBinary()) {
    return testing::RunTrainyard(project_.string(), (home_ / "ws").string(), args, binary);
  }

  fs::path home_, project_;
};

TEST_F(CliTest, JobCreateStreamsRunsAndDownloads) {
  Write("src/train.py",
        "import time\n"
        "for epoch in range(3):\n"
        "    print(f'epoch {epoch} accuracy 0.{epoch + 7}', flush=True)\n"
        "    time.sleep(0.2)\n"
        "open('outputs/model.bin', 'w').write('trained')\n"
        "open(b'outputs/caf\\xe9.txt', 'w').write('latin-1 name')\n");
  Write("src/.amlignore", "data/\n");
  Write("src/data/huge.bin", std::string(1000, 'x'));
  Write("job.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json\n"
        "command: python train.py\n"
        "code: ./src\n"
        "environment:\n"
        "  image: python:3.11-slim\n"
        "experiment_name: cli-test\n"
        "display_name: cli smoke\n"
        "tags: {team: vision}\n");
  CmdResult r = Run("job create -f job.yml --stream");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Run:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("http://127.0.0.1:"), std::string::npos);
  size_t log_header = r.output.find("--- run log");
  size_t epoch0 = r.output.find("epoch 0 accuracy 0.7");
  size_t epoch2 = r.output.find("epoch 2 accuracy 0.9");
  ASSERT_NE(epoch2, std::string::npos) << r.output;
  EXPECT_LT(log_header, epoch0);
  EXPECT_LT(epoch0, epoch2);
  EXPECT_NE(r.output.find("Execution summary"), std::string::npos);
  EXPECT_NE(r.output.find("Completed"), std::string::npos);
  EXPECT_NE(r.output.find("model.bin"), std::string::npos) << "outputs are listed in the summary";

  CmdResult list = Run("job list --output json");
  ASSERT_EQ(list.exit_code, 0) << list.output;
  auto runs = json::parse(list.output, nullptr, false);
  ASSERT_TRUE(runs.is_array()) << list.output;
  ASSERT_EQ(runs.size(), 1u);
  const std::string name = runs[0]["name"];
  EXPECT_EQ(runs[0]["status"], "Completed");
  EXPECT_EQ(runs[0]["experiment"], "cli-test");
  EXPECT_EQ(runs[0]["tags"]["team"], "vision");

  CmdResult show = Run("job show " + name);
  EXPECT_EQ(show.exit_code, 0);
  EXPECT_NE(show.output.find("History:"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("Running"), std::string::npos);

  CmdResult dl = Run("job download " + name + " --output '" + (home_ / "dl").string() + "'");
  ASSERT_EQ(dl.exit_code, 0) << dl.output;
  auto model = ReadFile(home_ / "dl" / name / "outputs" / "model.bin");
  ASSERT_TRUE(model.ok()) << dl.output;
  EXPECT_EQ(*model, "trained");
  EXPECT_TRUE(fs::exists(home_ / "dl" / name / "user_logs" / "std_log.txt"));
  EXPECT_NE(dl.output.find("; 2 checked against their digests"), std::string::npos) << dl.output;
  // A file name that is not UTF-8 arrives under its own bytes.
  auto latin1 = ReadFile(home_ / "dl" / name / "outputs" / "caf\xe9.txt");
  ASSERT_TRUE(latin1.ok()) << dl.output;
  EXPECT_EQ(*latin1, "latin-1 name");

  // A recorded output whose bytes changed behind the daemon's back (same size, old mtime) is
  // refused on download and not left on disk.
  const fs::path stored = home_ / "ws" / "runs" / name / "outputs" / "model.bin";
  const auto mtime = fs::last_write_time(stored);
  ASSERT_TRUE(WriteFileAtomic(stored, "tampere").ok());
  fs::last_write_time(stored, mtime);
  CmdResult bad = Run("job download " + name + " --output '" + (home_ / "dl2").string() + "'");
  EXPECT_NE(bad.exit_code, 0) << bad.output;
  EXPECT_NE(bad.output.find("does not match its recorded digest"), std::string::npos) << bad.output;
  EXPECT_FALSE(fs::exists(home_ / "dl2" / name / "outputs" / "model.bin"));

  // The snapshot honoured .amlignore: data/ never reached the run.
  EXPECT_FALSE(fs::exists(home_ / "ws" / "runs" / name / "code" / "data"));
  EXPECT_TRUE(fs::exists(home_ / "ws" / "runs" / name / "code" / "train.py"));

  // The CLI reused the daemon it started.
  auto info1 = ReadFile(home_ / "ws" / "server.json");
  ASSERT_TRUE(info1.ok());
  EXPECT_EQ(Run("job list").exit_code, 0);
  EXPECT_EQ(*ReadFile(home_ / "ws" / "server.json"), *info1);
  // The token file is private to the user.
  EXPECT_EQ(fs::status(home_ / "ws" / "server.json").permissions() & fs::perms::others_read,
            fs::perms::none);
}

TEST_F(CliTest, DaemonOfAnotherBuildIsReplaced) {
  // Two copies of the binary stand for an old and a new build.
  fs::path old_bin = home_ / "old" / "trainyard", new_bin = home_ / "new" / "trainyard";
  for (const auto& p : {old_bin, new_bin}) {
    ASSERT_TRUE(MakeDirs(p.parent_path()).ok());
    fs::copy_file(TRAINYARD_BINARY_DIR "/src/main/trainyard", p);
  }
  ASSERT_EQ(Run("job list", old_bin.string()).exit_code, 0);
  auto first = json::parse(*ReadFile(home_ / "ws" / "server.json"));
  EXPECT_EQ(first["exe"], old_bin.string());
  CmdResult r = Run("job list", new_bin.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto second = json::parse(*ReadFile(home_ / "ws" / "server.json"));
  EXPECT_EQ(second["exe"], new_bin.string());
  EXPECT_NE(second["pid"], first["pid"]);
  EXPECT_NE(::kill(first["pid"].get<int>(), 0), 0) << "the old daemon must have exited";
}

TEST_F(CliTest, CtrlCStopsStreamingNotTheRun) {
  Write("job.yml",
        "name: keeps-going\ncommand: echo started; sleep 300\n"
        "environment: {image: python:3.11-slim}\n");
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    ::close(out[0]);
    ::close(out[1]);
    if (::chdir(project_.c_str()) != 0) ::_exit(126);
    ::setenv("TRAINYARD_HOME", (home_ / "ws").c_str(), 1);
    ::execl(TRAINYARD_BINARY_DIR "/src/main/trainyard", "trainyard", "job", "create", "-f",
            "job.yml", "--stream", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  // Read until the run's first line has streamed, then press Ctrl-C.
  std::string seen;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (seen.find("started") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<size_t>(n));
  }
  ASSERT_NE(seen.find("started"), std::string::npos) << seen;
  ::kill(pid, SIGINT);
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) seen.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 130);
  EXPECT_NE(seen.find("The run goes on"), std::string::npos) << seen;
  EXPECT_NE(seen.find("trainyard job stream keeps-going"), std::string::npos) << seen;
  CmdResult show = Run("job show keeps-going --output json");
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_EQ(json::parse(show.output)["status"], "Running");
  CmdResult cancel = Run("job cancel keeps-going");
  EXPECT_EQ(cancel.exit_code, 0) << cancel.output;
  // Let the cancel finish before the daemon is stopped, so no container is left behind.
  std::string status;
  for (int i = 0; i < 300 && status != "Canceled"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto j = json::parse(Run("job show keeps-going --output json").output, nullptr, false);
    if (j.is_object()) status = j.value("status", "");
  }
  EXPECT_EQ(status, "Canceled");
}

TEST_F(CliTest, FailedRunExitsNonZeroWithTheReason) {
  Write("job.yml", "command: echo going down; exit 3\nenvironment: {image: python:3.11-slim}\n");
  CmdResult r = Run("job create -f job.yml --stream");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("going down"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("script exited with code 3"), std::string::npos) << r.output;
}

TEST_F(CliTest, BadSpecIsRejectedWithItsLocationBeforeAnythingStarts) {
  Write("job.yml", "command: python train.py\nenvironment: {image: python:3.11-slim}\ncomand: x\n");
  CmdResult r = Run("job create -f job.yml");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("job.yml:3:1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("comand"), std::string::npos);
  EXPECT_FALSE(fs::exists(home_ / "ws" / "server.json")) << "no daemon for a bad file";
}

TEST_F(CliTest, EnvironmentsAreVersionedAndReferencedFromJobs) {
  Write("env.yml",
        "name: tools\nimage: python:3.11-slim\nuser_managed_dependencies: true\n"
        "environment_variables: {GREETING: hello-from-env}\n");
  CmdResult c1 = Run("env create -f env.yml --output json");
  ASSERT_EQ(c1.exit_code, 0) << c1.output;
  EXPECT_EQ(json::parse(c1.output)["version"], "1");
  CmdResult c2 = Run("env create -f env.yml --output json");
  EXPECT_EQ(json::parse(c2.output)["version"], "1") << "unchanged definition, same version";
  Write("env.yml",
        "name: tools\nimage: python:3.11-slim\nuser_managed_dependencies: true\n"
        "environment_variables: {GREETING: hello-again}\n");
  CmdResult c3 = Run("env create -f env.yml --output json");
  EXPECT_EQ(json::parse(c3.output)["version"], "2");
  CmdResult show = Run("env show tools:1 --output json");
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_EQ(json::parse(show.output)["definition"]["environment_variables"]["GREETING"],
            "hello-from-env");
  CmdResult list = Run("env list");
  EXPECT_NE(list.output.find("tools"), std::string::npos);

  Write("job.yml", "command: echo $GREETING\nenvironment: azureml:tools:1\n");
  CmdResult run = Run("job create -f job.yml --stream");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("hello-from-env"), std::string::npos) << run.output;
  Write("job.yml", "command: echo $GREETING\nenvironment: azureml:tools@latest\n");
  run = Run("job create -f job.yml --stream");
  EXPECT_NE(run.output.find("hello-again"), std::string::npos) << run.output;
}

// A project pointed at a daemon by URL: the CLI hashes the code here and uploads only the
// objects the daemon lacks, so an unchanged folder uploads nothing.
TEST_F(CliTest, RemoteDaemonReceivesOnlyMissingObjects) {
  ASSERT_EQ(Run("env list").exit_code, 0);  // Starts the workspace's daemon.
  auto server_json = ReadFile(home_ / "ws" / "server.json");
  ASSERT_TRUE(server_json.ok()) << server_json.status().ToString();
  auto info = json::parse(*server_json);
  ASSERT_TRUE(info.contains("port")) << info.dump();
  const fs::path remote = home_ / "elsewhere";
  ASSERT_TRUE(MakeDirs(remote / ".trainyard").ok());
  const std::string url = "http://127.0.0.1:" + std::to_string(info["port"].get<int>());
  ASSERT_TRUE(
      WriteFileAtomic(remote / ".trainyard" / "config.json", json{{"url", url}}.dump()).ok());
  ASSERT_TRUE(MakeDirs(remote / "src").ok());
  ASSERT_TRUE(
      WriteFileAtomic(remote / "src" / "train.py", "print(open('data.txt').read())\n").ok());
  ASSERT_TRUE(WriteFileAtomic(remote / "src" / "data.txt", "remote-bytes-1").ok());
  ASSERT_TRUE(WriteFileAtomic(remote / "src" / "big.bin", std::string(300000, 'b')).ok());
  ASSERT_TRUE(WriteFileAtomic(remote / "job.yml",
                              "command: python train.py\ncode: ./src\n"
                              "environment: {image: python:3.11-slim}\n")
                  .ok());
  // The stat cache of remote snapshots goes to $XDG_CACHE_HOME and the token to
  // $XDG_CONFIG_HOME, both kept inside the test folder.
  const std::string cli = "env XDG_CACHE_HOME='" + (home_ / "cache").string() +
                          "' XDG_CONFIG_HOME='" + (home_ / "config").string() + "' " +
                          testing::TrainyardBinary();
  CmdResult no_login =
      testing::RunTrainyard(remote.string(), (home_ / "none").string(), "job list", cli);
  EXPECT_NE(no_login.exit_code, 0) << no_login.output;
  EXPECT_NE(no_login.output.find("trainyard login " + url), std::string::npos) << no_login.output;
  CmdResult login = testing::RunShell("printf '%s\\n' '" + info["token"].get<std::string>() +
                                      "' | " + cli + " login " + url);
  ASSERT_EQ(login.exit_code, 0) << login.output;
  auto submit = [&] {
    return testing::RunTrainyard(remote.string(), (home_ / "none").string(),
                                 "job create -f job.yml --stream", cli);
  };
  CmdResult first = submit();
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("Uploaded 3 of 3 objects (300.0 kB)"), std::string::npos)
      << first.output;
  EXPECT_NE(first.output.find("remote-bytes-1"), std::string::npos) << first.output;
  EXPECT_FALSE(fs::exists(home_ / "none")) << "a remote target makes no local workspace";

  CmdResult again = submit();
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("Uploaded 0 of 3 objects (0 B)"), std::string::npos) << again.output;

  ASSERT_TRUE(WriteFileAtomic(remote / "src" / "data.txt", "remote-bytes-22").ok());
  CmdResult changed = submit();
  ASSERT_EQ(changed.exit_code, 0) << changed.output;
  EXPECT_NE(changed.output.find("Uploaded 1 of 3 objects (15 B)"), std::string::npos)
      << changed.output;
  EXPECT_NE(changed.output.find("remote-bytes-22"), std::string::npos) << changed.output;

  // Snapshot commands need the workspace's files, which are not here.
  CmdResult list =
      testing::RunTrainyard(remote.string(), (home_ / "none").string(), "snapshot list", cli);
  EXPECT_EQ(list.exit_code, 1) << list.output;
  EXPECT_NE(list.output.find("remote daemon"), std::string::npos) << list.output;
}
}  // namespace
}  // namespace trainyard
