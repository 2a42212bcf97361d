#include "trainyard/slurm/slurm.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_env.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

namespace trainyard::slurm {
namespace {

const fs::path kTestdata = fs::path(TRAINYARD_SOURCE_DIR) / "src/trainyard/slurm/testdata";

// A fresh folder under the system's temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "slurm_test.XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { (void)RemoveTree(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

using Cmd = trainyard::testing::CmdResult;
using trainyard::testing::RunShell;

unsigned Mode(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

std::string Read(const fs::path& p) {
  auto text = ReadFile(p);
  return text.ok() ? *text : "";
}

// --- SbatchArgs ------------------------------------------------------------------------------

TEST(SbatchArgsTest, Full) {
  JobRequest req;
  req.name = "trainyard-r1";
  req.comment = "trainyard run=r1";
  req.partition = "gpu";
  req.account = "team";
  req.qos = "high";
  req.nodes = 2;
  req.tasks_per_node = 4;
  req.gpus_per_node = 8;
  req.time_limit_seconds = 61;
  req.extra_args = {"--exclusive", "--constraint=a100"};
  req.script = "/shared/r1/job.sh";
  req.output = "/shared/r1/batch.log";
  req.working_dir = "/shared/r1";
  std::vector<std::string> want = {"--parsable",
                                   "--export=ALL",
                                   "--job-name=trainyard-r1",
                                   "--comment=trainyard run=r1",
                                   "--partition=gpu",
                                   "--account=team",
                                   "--qos=high",
                                   "--nodes=2",
                                   "--ntasks-per-node=4",
                                   "--gpus-per-node=8",
                                   "--time=2",
                                   "--output=/shared/r1/batch.log",
                                   "--chdir=/shared/r1",
                                   "--exclusive",
                                   "--constraint=a100",
                                   "/shared/r1/job.sh"};
  EXPECT_EQ(SbatchArgs(req), want);
}

TEST(SbatchArgsTest, OptionalOnesLeftOut) {
  JobRequest req;
  req.name = "n";
  req.partition = "debug";
  req.script = "/j.sh";
  std::vector<std::string> want = {
      "--parsable",        "--export=ALL", "--job-name=n",        "--comment=",
      "--partition=debug", "--nodes=1",    "--ntasks-per-node=1", "/j.sh"};
  EXPECT_EQ(SbatchArgs(req), want);
}

TEST(SbatchArgsTest, TimeRoundsUpToWholeMinutes) {
  auto time_arg = [](std::int64_t seconds) {
    JobRequest req;
    req.time_limit_seconds = seconds;
    req.script = "/j.sh";
    for (const std::string& a : SbatchArgs(req)) {
      if (StartsWith(a, "--time=")) return a;
    }
    return std::string();
  };
  EXPECT_EQ(time_arg(0), "");
  EXPECT_EQ(time_arg(1), "--time=1");
  EXPECT_EQ(time_arg(60), "--time=1");
  EXPECT_EQ(time_arg(61), "--time=2");
  EXPECT_EQ(time_arg(3600), "--time=60");
}

// --- Parsing -----------------------------------------------------------------------------------

const JobInfo* Find(const std::vector<JobInfo>& jobs, std::int64_t id) {
  for (const JobInfo& j : jobs) {
    if (j.id == id) return &j;
  }
  return nullptr;
}

// Real output of `squeue --json` of Slurm 22.05.8 on the test machine.
TEST(ParseJobsTest, Slurm2205) {
  auto jobs = ParseJobs(Read(kTestdata / "squeue-22.05.json"));
  ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
  ASSERT_EQ(jobs->size(), 8u);

  const JobInfo* done = Find(*jobs, 103);
  ASSERT_NE(done, nullptr);
  EXPECT_EQ(done->name, "trainyard-abc");
  EXPECT_EQ(done->comment, "trainyard run=abc");
  EXPECT_EQ(done->partition, "debug");
  EXPECT_EQ(done->state, "COMPLETED");
  EXPECT_EQ(done->reason, "");
  EXPECT_EQ(done->exit_code, 0);
  EXPECT_FALSE(done->signal.has_value());
  EXPECT_EQ(done->nodes, "vm");
  EXPECT_EQ(done->time_limit_minutes, 1);
  EXPECT_EQ(done->submit_time, 1795725000);
  EXPECT_EQ(done->start_time, 1795725001);
  EXPECT_EQ(done->end_time, 1795725021);

  const JobInfo* failed = Find(*jobs, 108);  // the script ran `exit 3`: wait status 768
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->state, "FAILED");
  EXPECT_EQ(failed->reason, "NonZeroExitCode");
  EXPECT_EQ(failed->exit_code, 3);
  EXPECT_FALSE(failed->signal.has_value());
  EXPECT_EQ(failed->comment, "run x");
  EXPECT_EQ(failed->time_limit_minutes, 0);  // null: none set

  const JobInfo* cancelled = Find(*jobs, 106);  // scancel: SIGTERM, wait status 15
  ASSERT_NE(cancelled, nullptr);
  EXPECT_EQ(cancelled->state, "CANCELLED");
  EXPECT_EQ(cancelled->signal, 15);
  EXPECT_FALSE(cancelled->exit_code.has_value());

  const JobInfo* killed = Find(*jobs, 107);
  ASSERT_NE(killed, nullptr);
  EXPECT_EQ(killed->signal, 9);
  EXPECT_EQ(killed->reason, "JobLaunchFailure");

  const JobInfo* running = Find(*jobs, 109);
  ASSERT_NE(running, nullptr);
  EXPECT_EQ(running->state, "RUNNING");
  EXPECT_EQ(running->time_limit_minutes, 2);
  EXPECT_FALSE(running->exit_code.has_value());
  EXPECT_FALSE(running->signal.has_value());

  const JobInfo* pending = Find(*jobs, 110);
  ASSERT_NE(pending, nullptr);
  EXPECT_EQ(pending->state, "PENDING");
  EXPECT_EQ(pending->reason, "BeginTime");
  EXPECT_EQ(pending->nodes, "");
  EXPECT_FALSE(pending->exit_code.has_value());
}

// The shape of Slurm 23.02 and later (data_parser v0.0.39+), written by hand.
constexpr char kSqueue23[] = R"({
  "jobs": [
    {"job_id": 7, "name": "a", "comment": "trainyard run=a", "partition": "gpu",
     "job_state": ["COMPLETED"], "state_reason": "None",
     "exit_code": {"status": ["SUCCESS"], "return_code": {"set": true, "infinite": false,
                   "number": 0}, "signal": {"id": {"set": false, "infinite": false,
                   "number": 0}, "name": ""}},
     "nodes": "gpu[01-02]",
     "time_limit": {"set": true, "infinite": false, "number": 30},
     "submit_time": {"set": true, "infinite": false, "number": 1700000000},
     "start_time": {"set": true, "infinite": false, "number": 1700000005},
     "end_time": {"set": true, "infinite": false, "number": 1700000100}},
    {"job_id": 8, "name": "b", "comment": "", "partition": "gpu",
     "job_state": ["FAILED"], "state_reason": "NonZeroExitCode",
     "exit_code": {"status": ["EXITED"], "return_code": {"set": true, "infinite": false,
                   "number": 3}, "signal": {"id": {"set": false, "infinite": false,
                   "number": 0}, "name": ""}},
     "nodes": "gpu01", "time_limit": {"set": false, "infinite": true, "number": 0},
     "submit_time": {"set": true, "infinite": false, "number": 1700000000},
     "start_time": {"set": true, "infinite": false, "number": 1700000001},
     "end_time": {"set": true, "infinite": false, "number": 1700000002}},
    {"job_id": 9, "name": "c", "comment": "", "partition": "gpu",
     "job_state": ["CANCELLED"], "state_reason": "None",
     "exit_code": {"status": ["SIGNALED"], "return_code": {"set": true, "infinite": false,
                   "number": 0}, "signal": {"id": {"set": true, "infinite": false,
                   "number": 15}, "name": "TERM"}},
     "nodes": "gpu01", "time_limit": {"set": true, "infinite": false, "number": 5},
     "submit_time": {"set": true, "infinite": false, "number": 1700000000},
     "start_time": {"set": true, "infinite": false, "number": 1700000001},
     "end_time": {"set": true, "infinite": false, "number": 1700000002}},
    {"job_id": 10, "name": "d", "comment": "", "partition": "gpu",
     "job_state": ["PENDING"], "state_reason": "Resources",
     "exit_code": {"status": ["PENDING"], "return_code": {"set": false, "infinite": false,
                   "number": 0}, "signal": {"id": {"set": false, "infinite": false,
                   "number": 0}, "name": ""}},
     "nodes": "", "time_limit": {"set": true, "infinite": false, "number": 5},
     "submit_time": {"set": true, "infinite": false, "number": 1700000000},
     "start_time": {"set": true, "infinite": false, "number": 0},
     "end_time": {"set": true, "infinite": false, "number": 0}},
    {"job_id": 11, "name": "e", "comment": "", "partition": "gpu",
     "job_state": ["RUNNING", "COMPLETING"], "state_reason": "None",
     "exit_code": {"status": ["EXITED"], "return_code": {"set": true, "infinite": false,
                   "number": 1}, "signal": {"id": {"set": false, "infinite": false,
                   "number": 0}, "name": ""}},
     "nodes": "gpu02", "time_limit": {"set": true, "infinite": false, "number": 5}}
  ]
})";

TEST(ParseJobsTest, Slurm23) {
  auto jobs = ParseJobs(kSqueue23);
  ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
  ASSERT_EQ(jobs->size(), 5u);
  const JobInfo& a = (*jobs)[0];
  EXPECT_EQ(a.id, 7);
  EXPECT_EQ(a.comment, "trainyard run=a");
  EXPECT_EQ(a.state, "COMPLETED");
  EXPECT_EQ(a.reason, "");
  EXPECT_EQ(a.exit_code, 0);
  EXPECT_FALSE(a.signal.has_value());
  EXPECT_EQ(a.nodes, "gpu[01-02]");
  EXPECT_EQ(a.time_limit_minutes, 30);
  EXPECT_EQ(a.submit_time, 1700000000);
  EXPECT_EQ(a.start_time, 1700000005);
  EXPECT_EQ(a.end_time, 1700000100);

  const JobInfo& b = (*jobs)[1];
  EXPECT_EQ(b.state, "FAILED");
  EXPECT_EQ(b.exit_code, 3);
  EXPECT_FALSE(b.signal.has_value());
  EXPECT_EQ(b.time_limit_minutes, 0);  // infinite

  const JobInfo& c = (*jobs)[2];
  EXPECT_EQ(c.state, "CANCELLED");
  EXPECT_EQ(c.signal, 15);
  EXPECT_FALSE(c.exit_code.has_value());

  const JobInfo& d = (*jobs)[3];
  EXPECT_EQ(d.state, "PENDING");
  EXPECT_EQ(d.reason, "Resources");
  EXPECT_FALSE(d.exit_code.has_value());
  EXPECT_EQ(d.start_time, 0);

  const JobInfo& e = (*jobs)[4];
  EXPECT_EQ(e.state, "COMPLETING");
  EXPECT_EQ(e.exit_code, 1);
}

// sacct's own shape (22.05): state and times nested, comment an object.
TEST(ParseJobsTest, Sacct) {
  constexpr char kSacct[] = R"({"jobs": [{"job_id": 42, "name": "x",
    "comment": {"administrator": null, "job": "trainyard run=x", "system": null},
    "partition": "debug", "state": {"current": "FAILED", "reason": "None"},
    "exit_code": {"status": "FAILED", "return_code": 2}, "nodes": "vm",
    "time": {"limit": 10, "submission": 1, "start": 2, "end": 3}}]})";
  auto jobs = ParseJobs(kSacct);
  ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
  ASSERT_EQ(jobs->size(), 1u);
  const JobInfo& j = (*jobs)[0];
  EXPECT_EQ(j.id, 42);
  EXPECT_EQ(j.comment, "trainyard run=x");
  EXPECT_EQ(j.state, "FAILED");
  EXPECT_EQ(j.reason, "");
  EXPECT_EQ(j.exit_code, 2);
  EXPECT_EQ(j.time_limit_minutes, 10);
  EXPECT_EQ(j.submit_time, 1);
  EXPECT_EQ(j.end_time, 3);
}

// Found by the slurm fuzz target: a float no int64 holds was converted anyway (undefined
// behaviour). Such a number, and one nested deeper than Slurm nests, reads as unset.
TEST(ParseJobsTest, NumbersNoInt64HoldsReadAsUnset) {
  auto jobs = ParseJobs(R"({"jobs": [{"job_id": 9, "time_limit": 2.23e27,
    "submit_time": {"set": true, "number": -1e300}, "start_time": 12.9,
    "end_time": {"number": {"number": {"number": {"number": {"number": 5}}}}}}]})");
  ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
  ASSERT_EQ(jobs->size(), 1u);
  EXPECT_EQ((*jobs)[0].id, 9);
  EXPECT_EQ((*jobs)[0].time_limit_minutes, 0);
  EXPECT_EQ((*jobs)[0].submit_time, 0);
  EXPECT_EQ((*jobs)[0].start_time, 12);
  EXPECT_EQ((*jobs)[0].end_time, 0);
}

TEST(ParseJobsTest, RefusesWhatIsNotSqueueJson) {
  EXPECT_EQ(ParseJobs("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJobs("squeue: error: oops").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJobs("[1,2]").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJobs(R"({"meta":{}})").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseJobs(R"({"jobs":[1]})").status().code(), StatusCode::kInvalidArgument);
  auto none = ParseJobs(R"({"jobs":[]})");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(IsFinalStateTest, States) {
  for (const char* s : {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                        "PREEMPTED", "BOOT_FAIL", "DEADLINE"}) {
    EXPECT_TRUE(IsFinalState(s)) << s;
  }
  for (const char* s : {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", ""}) {
    EXPECT_FALSE(IsFinalState(s)) << s;
  }
}

TEST(ParseNodesTest, Slurm2205) {
  auto nodes = ParseNodes(Read(kTestdata / "sinfo-22.05.json"));
  ASSERT_TRUE(nodes.ok()) << nodes.status().ToString();
  ASSERT_EQ(nodes->size(), 1u);
  const NodeInfo& n = (*nodes)[0];
  EXPECT_EQ(n.name, "vm");
  EXPECT_EQ(n.state, "mixed");
  EXPECT_EQ(n.cpus, 2);
  EXPECT_EQ(n.memory_mb, 22900);
  EXPECT_EQ(n.gpus, 0);
  EXPECT_EQ(n.alloc_cpus, 1);
  EXPECT_EQ(n.partitions, std::vector<std::string>{"debug"});
}

TEST(ParseNodesTest, Slurm23AndGres) {
  constexpr char kSinfo23[] = R"J({"nodes": [
    {"name": "gpu01", "hostname": "gpu01", "state": ["IDLE"], "cpus": 64,
     "real_memory": {"set": true, "infinite": false, "number": 512000},
     "gres": "gpu:a100:4(S:0-1)", "partitions": ["gpu", "all"], "alloc_cpus": 0},
    {"name": "gpu02", "state": ["MIXED", "DRAIN"], "cpus": 64, "real_memory": 512000,
     "gres": "gpu:2,gpu:t4:1(S:0,1),mps:100", "partitions": ["gpu"], "alloc_cpus": 8},
    {"name": "cpu01", "state": "idle", "state_flags": ["DRAIN"], "cpus": 8,
     "real_memory": 1000, "gres": "", "partitions": [], "alloc_cpus": 0},
    {"name": "gpu03", "state": ["ALLOCATED"], "cpus": 8, "gres": "gpu", "alloc_cpus": 8}
  ]})J";
  auto nodes = ParseNodes(kSinfo23);
  ASSERT_TRUE(nodes.ok()) << nodes.status().ToString();
  ASSERT_EQ(nodes->size(), 4u);
  EXPECT_EQ((*nodes)[0].state, "idle");
  EXPECT_EQ((*nodes)[0].memory_mb, 512000);
  EXPECT_EQ((*nodes)[0].gpus, 4);
  EXPECT_EQ((*nodes)[0].partitions, (std::vector<std::string>{"gpu", "all"}));
  EXPECT_EQ((*nodes)[1].state, "draining");
  EXPECT_EQ((*nodes)[1].gpus, 3);
  EXPECT_EQ((*nodes)[1].alloc_cpus, 8);
  EXPECT_EQ((*nodes)[2].state, "drained");
  EXPECT_EQ((*nodes)[2].gpus, 0);
  EXPECT_EQ((*nodes)[3].state, "allocated");
  EXPECT_EQ((*nodes)[3].gpus, 1);
  EXPECT_EQ(ParseNodes("{}").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseNodes("not json").status().code(), StatusCode::kInvalidArgument);
}

// --- The command client, against stand-in commands ------------------------------------------

class FakeBin {
 public:
  void Add(const std::string& name, const std::string& body) {
    EXPECT_TRUE(WriteFileAtomic(tmp_.path() / name, "#!/bin/sh\n" + body + "\n", 0755).ok());
  }
  std::unique_ptr<Client> MakeClient(int timeout_seconds = 30) {
    return MakeCommandClient({tmp_.path(), timeout_seconds});
  }

 private:
  TempDir tmp_;
};

TEST(CommandClientTest, SubmitPassesArgvAndReadsTheJobId) {
  FakeBin bin;
  TempDir out;
  const std::string args_file = (out.path() / "args").string();
  bin.Add("sbatch", "printf '%s\\n' \"$@\" >" + ShellQuote(args_file) + "; echo '1234;cluster'");
  JobRequest req;
  req.name = "a b; $(touch x)";  // no shell: passed as one argument, as is
  req.script = "/j.sh";
  auto id = bin.MakeClient()->Submit(req);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(*id, 1234);
  std::string want;
  for (const std::string& a : SbatchArgs(req)) want += a + "\n";
  EXPECT_EQ(Read(args_file), want);
}

TEST(CommandClientTest, ErrorsByKind) {
  FakeBin bin;
  bin.Add("sbatch",
          "echo 'sbatch: error: invalid partition specified: nope' >&2; "
          "echo 'sbatch: error: Batch job submission failed: Invalid partition name specified' "
          ">&2; exit 1");
  bin.Add("squeue",
          "echo 'squeue: error: Unable to contact slurm controller (connect failure)' >&2; "
          "exit 1");
  bin.Add("sinfo", "echo garbage");
  bin.Add("scancel",
          "echo 'scancel: error: Kill job error on job id 5: Invalid job id specified' >&2; "
          "exit 1");
  auto client = bin.MakeClient();
  JobRequest req;
  req.script = "/j.sh";
  Status s = client->Submit(req).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job "
            "submission failed: Invalid partition name specified");
  s = client->ListJobs().status();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("Unable to contact slurm controller"), std::string::npos);
  EXPECT_EQ(client->ListNodes().status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(client->Cancel(5).ok());  // already gone: nothing to do
}

TEST(CommandClientTest, MissingCommandIsUnavailable) {
  auto client = MakeCommandClient({"/nonexistent/slurm/bin", 30});
  JobRequest req;
  req.script = "/j.sh";
  Status s = client->Submit(req).status();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_TRUE(StartsWith(s.message(), "sbatch not found (is Slurm installed?")) << s.message();
}

TEST(CommandClientTest, HungCommandIsKilled) {
  FakeBin bin;
  bin.Add("squeue", "exec sleep 30");
  auto t0 = std::chrono::steady_clock::now();
  Status s = bin.MakeClient(1)->ListJobs().status();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("squeue --json"), std::string::npos) << s.message();
}

TEST(CommandClientTest, LargeOutputOnBothStreamsDoesNotBlock) {
  FakeBin bin;
  // 1 MB to stderr first, then the JSON: a reader of one pipe only would deadlock.
  bin.Add("sinfo",
          "head -c 1000000 /dev/zero | tr '\\0' x >&2; "
          "printf '{\"nodes\":[{\"name\":\"n\",\"cpus\":4,\"comment\":\"'; "
          "head -c 1000000 /dev/zero | tr '\\0' y; printf '\"}]}'");
  auto nodes = bin.MakeClient(20)->ListNodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status().ToString().substr(0, 200);
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_EQ((*nodes)[0].cpus, 4);
}

TEST(CommandClientTest, AccountingDisabledIsRememberedAndThreadSafe) {
  FakeBin bin;
  TempDir out;
  const std::string calls = (out.path() / "calls").string();
  bin.Add("sacct", "echo call >>" + ShellQuote(calls) +
                       "; echo 'Slurm accounting storage is disabled' >&2; exit 1");
  auto client = bin.MakeClient();
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < 3; ++k) {
        auto job = client->AccountedJob(7);
        EXPECT_TRUE(job.ok() && !job->has_value());
      }
    });
  }
  for (auto& t : threads) t.join();
  size_t n = Split(Read(calls), '\n').size() - 1;
  EXPECT_GE(n, 1u);
  EXPECT_LE(n, 4u);  // at most one call per thread before the fact is known
}

// --- Job files ---------------------------------------------------------------------------------

TaskSpec BasicTask() {
  TaskSpec t;
  t.run_id = "exp_1_abcdef01";
  t.image = "debian:bookworm-slim";
  t.container_prefix = "trainyard-exp_1_abcdef01";
  t.command = "echo hello";
  return t;
}

TEST(JobFilesTest, EnvFileRoundTripsAnyValue) {
  TempDir tmp;
  JobFiles files{tmp.path() / "job"};
  TaskSpec t = BasicTask();
  const std::map<std::string, std::string> values = {
      {"PLAIN", "value"},
      {"QUOTES", "it's \"quoted\" ''"},
      {"SPACES", "  a  b  "},
      {"NEWLINES", "line1\nline2\n"},
      {"DOLLAR", "$HOME `id` $(id) ${X:-y} \\n"},
      {"EMPTY", ""},
      {"_UNDER9", "*?[glob]"},
  };
  t.env = values;
  t.command = "echo 'it''s' \"$X\" && exit 3";
  ASSERT_TRUE(WriteJobFiles(t, files).ok());
  EXPECT_EQ(Mode(files.EnvFile()), 0600u);
  EXPECT_EQ(Mode(files.BatchScript()), 0700u);
  EXPECT_EQ(Mode(files.TaskScript()), 0700u);
  auto read_back = [&](const std::string& name) {
    // A trailing "x" keeps the value's own trailing newlines through $(...)-free output.
    return RunShell("sh -c '. " + ShellQuote(files.EnvFile().string()) + "; printf %s \"$" + name +
                    "\"'");
  };
  for (const auto& [name, value] : values) {
    Cmd r = read_back(name);
    EXPECT_EQ(r.exit_code, 0) << name;
    EXPECT_EQ(r.output, value) << name;
  }
  EXPECT_EQ(read_back("TRAINYARD_COMMAND").output, t.command);
  // Exported: a child process sees them.
  Cmd child =
      RunShell("sh -c '. " + ShellQuote(files.EnvFile().string()) + "; env' | grep '^PLAIN='");
  EXPECT_EQ(child.output, "PLAIN=value\n");
  // Values never appear in the scripts.
  EXPECT_EQ(Read(files.TaskScript()).find("line1"), std::string::npos);
  EXPECT_EQ(Read(files.BatchScript()).find("line1"), std::string::npos);
}

TEST(JobFilesTest, RefusesBadNames) {
  TempDir tmp;
  JobFiles files{tmp.path()};
  for (const char* bad : {"1X", "A-B", "A B", "", "X;rm", "Ä"}) {
    TaskSpec t = BasicTask();
    t.env[bad] = "v";
    Status s = WriteJobFiles(t, files);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find(std::string("\"") + bad + "\""), std::string::npos) << s.message();
  }
  TaskSpec t = BasicTask();
  t.prepend_paths["BAD-NAME"] = "/x";
  EXPECT_EQ(WriteJobFiles(t, files).code(), StatusCode::kInvalidArgument);
  t = BasicTask();
  t.runtime = "rkt";
  EXPECT_EQ(WriteJobFiles(t, files).code(), StatusCode::kInvalidArgument);
  t = BasicTask();
  t.container_prefix = "a b";
  EXPECT_EQ(WriteJobFiles(t, files).code(), StatusCode::kInvalidArgument);
  t = BasicTask();
  t.distribution = "horovod";
  EXPECT_EQ(WriteJobFiles(t, files).code(), StatusCode::kInvalidArgument);
}

TEST(JobFilesTest, PullAuthGoesToA0600FileOnly) {
  TempDir tmp;
  JobFiles files{tmp.path()};
  TaskSpec t = BasicTask();
  t.image = "127.0.0.1:5000/team/img:1";
  t.pull_auth = docker::RegistryAuth{"user", "s3cret-pass", "127.0.0.1:5000"};
  ASSERT_TRUE(WriteJobFiles(t, files).ok());
  fs::path auth = tmp.path() / "auth";
  EXPECT_EQ(Mode(auth), 0700u);
  EXPECT_EQ(Mode(auth / "config.json"), 0600u);
  EXPECT_EQ(Read(auth / "config.json"), "{\"auths\":{\"127.0.0.1:5000\":{\"auth\":\"" +
                                            Base64Encode("user:s3cret-pass") + "\"}}}\n");
  for (const fs::path& p : {files.BatchScript(), files.TaskScript(), files.EnvFile()}) {
    EXPECT_EQ(Read(p).find("s3cret"), std::string::npos) << p;
    EXPECT_EQ(Read(p).find(Base64Encode("user:s3cret-pass")), std::string::npos) << p;
  }
  std::string job = Read(files.BatchScript());
  EXPECT_NE(job.find("srun --ntasks-per-node=1 --ntasks=\"$SLURM_JOB_NUM_NODES\" "
                     "--kill-on-bad-exit=1 docker --config \"$dir/auth\" pull "
                     "'127.0.0.1:5000/team/img:1'"),
            std::string::npos)
      << job;
  EXPECT_NE(job.find("rm -rf \"$dir/auth\""), std::string::npos);

  t.runtime = "podman";
  ASSERT_TRUE(WriteJobFiles(t, files).ok());
  EXPECT_NE(Read(files.BatchScript())
                .find("podman pull --authfile \"$dir/auth/config.json\" "
                      "'127.0.0.1:5000/team/img:1'"),
            std::string::npos);
}

TEST(JobFilesTest, UserInputIsQuoted) {
  TempDir tmp;
  JobFiles files{tmp.path() / "it's a $dir"};
  TaskSpec t = BasicTask();
  t.image = "img'; touch /tmp/pwned; '";
  t.working_dir = "/work dir/$(id)";
  t.mounts = {{"/data/a b", "/in", true}, {"/x';id;'", "/out", false}};
  t.prepend_paths = {{"PYTHONPATH", "/sdk's dir"}};
  ASSERT_TRUE(WriteJobFiles(t, files).ok());
  std::string task = Read(files.TaskScript());
  EXPECT_NE(task.find(ShellQuote(t.image)), std::string::npos);
  EXPECT_NE(task.find("-w " + ShellQuote(t.working_dir)), std::string::npos);
  EXPECT_NE(task.find("-v " + ShellQuote("/data/a b:/in:ro")), std::string::npos);
  EXPECT_NE(task.find("-v " + ShellQuote("/x';id;':/out")), std::string::npos);
  EXPECT_NE(task.find("dir=" + ShellQuote(fs::absolute(files.dir).string())), std::string::npos);
  // `sh -n` parses them: quoting did not break the syntax.
  EXPECT_EQ(RunShell("sh -n " + ShellQuote(files.TaskScript().string())).exit_code, 0);
  EXPECT_EQ(RunShell("sh -n " + ShellQuote(files.BatchScript().string())).exit_code, 0);
}

TEST(JobFilesTest, ScriptsPassShellcheck) {
  if (RunShell("command -v shellcheck").exit_code != 0) {
    const char* ci = std::getenv("CI");
    if (ci != nullptr && *ci != '\0')
      FAIL() << "shellcheck is missing (apt-get install shellcheck)";
    GTEST_SKIP() << "shellcheck is missing (apt-get install shellcheck); CI fails here";
  }
  std::vector<TaskSpec> variants;
  variants.push_back(BasicTask());
  for (const char* dist : {"pytorch", "mpi", "tensorflow"}) {
    TaskSpec t = BasicTask();
    t.distribution = dist;
    t.tasks_per_node = 2;
    variants.push_back(t);
  }
  {
    TaskSpec t = BasicTask();
    t.distribution = "tensorflow";
    t.tensorflow_parameter_servers = 1;
    variants.push_back(t);
  }
  {
    TaskSpec t = BasicTask();
    t.env = {{"A", "1"}, {"MASTER_PORT", "7000"}};
    t.prepend_paths = {{"PYTHONPATH", "/sdk"}, {"PATH", "/opt/bin"}};
    t.mounts = {{"/data", "/in", true}};
    t.working_dir = "/in";
    t.shm_size_bytes = 1 << 30;
    t.gpus_per_node = 4;
    t.pull_auth = docker::RegistryAuth{"u", "p", "reg:5000"};
    variants.push_back(t);
    t.runtime = "podman";
    variants.push_back(t);
  }
  int i = 0;
  for (const TaskSpec& t : variants) {
    TempDir tmp;
    JobFiles files{tmp.path()};
    ASSERT_TRUE(WriteJobFiles(t, files).ok());
    for (const fs::path& p : {files.BatchScript(), files.TaskScript(), files.EnvFile()}) {
      Cmd r = RunShell("shellcheck -s sh " + ShellQuote(p.string()));
      EXPECT_EQ(r.exit_code, 0) << "variant " << i << " " << p.filename() << ":\n"
                                << r.output << "\n"
                                << Read(p);
    }
    ++i;
  }
}

// A fake container runtime in `bin`: `run` writes an id to its cid file, remembers the other
// arguments in STATE.args and runs the command with the variables named by -e (their values in
// STATE.env); `inspect` reports the exit code.
void WriteFakeRuntime(const fs::path& bin, const std::string& state) {
  ASSERT_TRUE(WriteFileAtomic(bin / "docker", R"SH(#!/bin/sh
state=)SH" + ShellQuote(state) + R"SH(
case "$1" in
  run)
    shift
    if [ "$1" = --cidfile ]; then echo fakeid >"$2"; shift 2; fi
    printf '%s\n' "$@" >"$state.args"
    vars=$(awk 'p { print; p = 0 } $0 == "-e" { p = 1 }' "$state.args")
    cmd=$(tail -n 1 "$state.args")
    for v in $vars; do eval "val=\${$v-unset}"; printf '%s=%s\n' "$v" "$val"; done >"$state.env"
    /bin/sh -c "$cmd"; echo "$?" >"$state.rc"; exit "$(cat "$state.rc")" ;;
  inspect) echo "$@" >>"$state.inspected"; echo "$(cat "$state.rc") false" ;;
  rm) echo "$@" >>"$state.rm" ;;
esac
)SH",
                              0755)
                  .ok());
}

// The derived variables, with stand-ins for scontrol and the container runtime on PATH: the
// task script runs for real, outside Slurm.
TEST(JobFilesTest, TaskScriptDerivesVariablesAndRecordsExit) {
  TempDir tmp;
  JobFiles files{tmp.path() / "job"};
  fs::path bin = tmp.path() / "bin";
  ASSERT_TRUE(MakeDirs(bin).ok());
  // scontrol show hostnames: two hosts.
  ASSERT_TRUE(WriteFileAtomic(bin / "scontrol", "#!/bin/sh\nprintf 'n1\\nn2\\n'\n", 0755).ok());
  const std::string state = (tmp.path() / "state").string();
  WriteFakeRuntime(bin, state);
  TaskSpec t = BasicTask();
  t.distribution = "pytorch";
  t.tasks_per_node = 2;
  t.env = {{"USER_VAR", "it's"}};
  t.prepend_paths = {{"MYPATH", "/sdk"}};
  t.command = "echo \"$MYPATH\"; exit 4";
  ASSERT_TRUE(WriteJobFiles(t, files).ok());
  std::string env = "PATH=" + ShellQuote(bin.string()) +
                    ":/usr/bin:/bin SLURM_PROCID=3 SLURM_LOCALID=1 SLURM_NODEID=1 SLURM_NTASKS=4 "
                    "SLURM_JOB_NUM_NODES=2 SLURM_JOB_NODELIST='n[1-2]' RANK=99 MYPATH=/old ";
  Cmd r = RunShell(env + ShellQuote(files.TaskScript().string()));
  EXPECT_EQ(r.exit_code, 4) << r.output;
  EXPECT_EQ(r.output, "/sdk:/old\n");
  std::string seen = Read(state + ".env");
  for (const char* want :
       {"USER_VAR=it's", "MASTER_ADDR=n1", "MASTER_PORT=6105", "WORLD_SIZE=4", "RANK=3",
        "LOCAL_RANK=1", "NODE_RANK=1", "TRAINYARD_NODE_RANK=1", "TRAINYARD_NODE_COUNT=2",
        "TRAINYARD_PROCESSES=2", "TRAINYARD_DISTRIBUTION=pytorch",
        "TRAINYARD_HOSTFILE=/trainyard/hostfile", "AZ_BATCHAI_TASK_INDEX=1",
        "AZ_BATCHAI_MPI_MASTER_NODE=n1", "TRAINYARD_COMMAND=echo"}) {
    EXPECT_NE(seen.find(std::string(want) + (StartsWith(want, "TRAINYARD_COMMAND") ? "" : "\n")),
              std::string::npos)
        << want << " in:\n"
        << seen;
  }
  std::string args = Read(state + ".args");
  EXPECT_NE(args.find("--name\ntrainyard-exp_1_abcdef01-3\n--network\nhost\n"), std::string::npos)
      << args;
  EXPECT_NE(args.find("/trainyard/hostfile:ro"), std::string::npos);
  // Under the engine's init, so the command stops at SIGTERM, not only after the grace period.
  EXPECT_NE(args.find("\n--init\n"), std::string::npos) << args;
  EXPECT_EQ(args.find("it's"), std::string::npos);  // values by name only
  auto exit = ReadTaskExit(files, 3);
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->exit_code, 4);
  EXPECT_FALSE(exit->oom_killed);
  EXPECT_EQ(exit->node, 1);
  EXPECT_GT(exit->ended_ns, 1'600'000'000'000'000'000LL);
  // A failed run is asked of the engine too (did the OOM killer strike?), by its own id, which
  // is what is removed.
  EXPECT_NE(Read(state + ".inspected").find(" fakeid\n"), std::string::npos)
      << Read(state + ".inspected");
  EXPECT_EQ(Read(state + ".rm"), "rm -f fakeid\n");

  // A one-node job: its head node is the node itself, as on local computes.
  r = RunShell("PATH=" + ShellQuote(bin.string()) +
               ":/usr/bin:/bin SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NODEID=0 SLURM_NTASKS=2 "
               "SLURM_JOB_NUM_NODES=1 SLURM_JOB_NODELIST=n7 " +
               ShellQuote(files.TaskScript().string()));
  EXPECT_EQ(r.exit_code, 4) << r.output;
  seen = Read(state + ".env");
  EXPECT_NE(seen.find("AZ_BATCHAI_MPI_MASTER_NODE=127.0.0.1\n"), std::string::npos) << seen;
  EXPECT_NE(seen.find("AZ_BATCHAI_TASK_INDEX=0\n"), std::string::npos) << seen;
}

TEST(ExitFilesTest, ReadsGoodAndRefusesMalformed) {
  TempDir tmp;
  JobFiles files{tmp.path()};
  EXPECT_FALSE(ReadTaskExit(files, 0).has_value());
  EXPECT_FALSE(ReadJobExit(files).has_value());

  ASSERT_TRUE(WriteFileAtomic(files.TaskExitFile(2), "137 true 1 1795725000123456789\n").ok());
  auto t = ReadTaskExit(files, 2);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->task, 2);
  EXPECT_EQ(t->exit_code, 137);
  EXPECT_TRUE(t->oom_killed);
  EXPECT_EQ(t->node, 1);
  EXPECT_EQ(t->ended_ns, 1795725000123456789LL);

  ASSERT_TRUE(WriteFileAtomic(files.ExitFile(), "0 run\n").ok());
  auto j = ReadJobExit(files);
  ASSERT_TRUE(j.has_value());
  EXPECT_EQ(j->exit_code, 0);
  EXPECT_FALSE(j->pull_failed);
  ASSERT_TRUE(WriteFileAtomic(files.ExitFile(), "1 pull\n").ok());
  j = ReadJobExit(files);
  ASSERT_TRUE(j.has_value());
  EXPECT_EQ(j->exit_code, 1);
  EXPECT_TRUE(j->pull_failed);

  for (const char* bad : {"", "0", "0 run", "x run\n", "0 walk\n", "0 run extra\n", "0  run\n"}) {
    ASSERT_TRUE(WriteFileAtomic(files.ExitFile(), bad).ok());
    EXPECT_FALSE(ReadJobExit(files).has_value()) << bad;
  }
  for (const char* bad : {"0 false 0\n", "0 maybe 0 1\n", "0 false 0 1", "a false 0 1\n",
                          "0 false 0 99999999999999999999\n", "0 false 0 1 2\n"}) {
    ASSERT_TRUE(WriteFileAtomic(files.TaskExitFile(0), bad).ok());
    EXPECT_FALSE(ReadTaskExit(files, 0).has_value()) << bad;
  }
}

}  // namespace
// TensorFlow with a parameter server: on three hosts the last is the "ps" task.
TEST(JobFilesTest, TaskScriptGivesTensorFlowItsParameterServers) {
  TempDir tmp;
  JobFiles files{tmp.path() / "job"};
  fs::path bin = tmp.path() / "bin";
  ASSERT_TRUE(MakeDirs(bin).ok());
  ASSERT_TRUE(
      WriteFileAtomic(bin / "scontrol", "#!/bin/sh\nprintf 'n1\\nn2\\nn3\\n'\n", 0755).ok());
  const std::string state = (tmp.path() / "state").string();
  WriteFakeRuntime(bin, state);
  TaskSpec t = BasicTask();
  t.distribution = "tensorflow";
  t.tensorflow_parameter_servers = 1;
  t.command = "true";
  ASSERT_TRUE(WriteJobFiles(t, files).ok());
  for (const auto& [node, task] : std::vector<std::pair<int, std::string>>{
           {2, R"({"type":"ps","index":0})"}, {1, R"({"type":"worker","index":1})"}}) {
    const std::string env = "PATH=" + ShellQuote(bin.string()) +
                            ":/usr/bin:/bin SLURM_PROCID=" + std::to_string(node) +
                            " SLURM_LOCALID=0 SLURM_NODEID=" + std::to_string(node) +
                            " SLURM_NTASKS=3 SLURM_JOB_NUM_NODES=3 SLURM_JOB_NODELIST='n[1-3]' ";
    Cmd r = RunShell(env + ShellQuote(files.TaskScript().string()));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const std::string seen = Read(state + ".env");
    EXPECT_NE(
        seen.find(
            R"(TF_CONFIG={"cluster":{"worker":["n1:2222","n2:2222"],"ps":["n3:2222"]},"task":)" +
            task + R"(,"environment":"cloud"})"),
        std::string::npos)
        << seen;
  }
}

}  // namespace trainyard::slurm
