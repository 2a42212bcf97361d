// Compute definitions (JSON, Validate, SameSettings, the default `local`), compute YAML files
// and the job file's queue_settings.priority. The bad compute files are data:
// tests/cases/bad-specs/compute-*.yml (spec_cases_test.cc).

#include "trainyard/spec/compute.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <thread>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/definition.h"
#include "trainyard/spec/spec.h"

namespace trainyard::spec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

ComputeDefinition CpuCluster() {
  ComputeDefinition d;
  d.name = "cpu-cluster";
  d.type = "docker";
  d.max_nodes = 4;
  d.node_cpus = 2;
  d.node_memory_bytes = 4LL << 30;
  d.node_gpus = 0;
  d.idle_seconds = 120;
  return d;
}

// ---------------------------------------------------------------------------------------------
// The definition

TEST(ComputeDefinitionTest, JsonRoundTrip) {
  ComputeDefinition d = CpuCluster();
  d.node_cpus = 0.5;
  nlohmann::json j = d.ToJson();
  EXPECT_EQ(j["name"], "cpu-cluster");
  EXPECT_EQ(j["type"], "docker");
  EXPECT_EQ(j["max_nodes"], 4);
  EXPECT_EQ(j["node_cpus"], 0.5);
  EXPECT_EQ(j["node_memory_bytes"], 4LL << 30);
  EXPECT_EQ(j["node_gpus"], 0);
  EXPECT_EQ(j["idle_seconds"], 120);
  auto back = ComputeDefinition::FromJson(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->name, d.name);
  EXPECT_TRUE(back->SameSettings(d));
}

TEST(ComputeDefinitionTest, FromJsonDefaultsMissingFields) {
  auto d = ComputeDefinition::FromJson({{"name", "small"}});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->type, "docker");
  EXPECT_EQ(d->max_nodes, 1);
  EXPECT_EQ(d->node_cpus, 0);
  EXPECT_TRUE(d->Validate().ok());
  // An integer CPU count is a number too.
  auto cpus = ComputeDefinition::FromJson({{"name", "c"}, {"node_cpus", 3}});
  ASSERT_TRUE(cpus.ok());
  EXPECT_EQ(cpus->node_cpus, 3.0);
}

TEST(ComputeDefinitionTest, FromJsonNamesBadAndUnknownFields) {
  auto unknown = ComputeDefinition::FromJson({{"name", "c"}, {"max_node", 2}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("unknown field 'max_node'"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("max_nodes"));

  auto bad_type = ComputeDefinition::FromJson({{"name", "c"}, {"max_nodes", "4"}});
  ASSERT_FALSE(bad_type.ok());
  EXPECT_THAT(bad_type.status().message(), HasSubstr("compute.max_nodes must be an integer"));

  auto bad_cpus = ComputeDefinition::FromJson({{"name", "c"}, {"node_cpus", "2"}});
  ASSERT_FALSE(bad_cpus.ok());
  EXPECT_THAT(bad_cpus.status().message(), HasSubstr("compute.node_cpus must be a number"));

  EXPECT_FALSE(ComputeDefinition::FromJson(nlohmann::json::array()).ok());
}

TEST(ComputeDefinitionTest, FromJsonKeepsHugeValuesInvalid) {
  // Values beyond int range must not wrap into valid ones.
  auto d = ComputeDefinition::FromJson({{"name", "c"}, {"max_nodes", 4294967297LL}});
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(d->Validate().message(), HasSubstr("max_nodes must be from 1 to 10000"));
  auto g = ComputeDefinition::FromJson({{"name", "c"}, {"node_gpus", -4294967295LL}});
  ASSERT_TRUE(g.ok());
  EXPECT_THAT(g->Validate().message(), HasSubstr("node_gpus must be from 0 to 64"));
}

TEST(ComputeDefinitionTest, ValidateNamesTheField) {
  struct Case {
    void (*change)(ComputeDefinition&);
    const char* expected;
  };
  const Case cases[] = {
      {[](ComputeDefinition& d) { d.name = ""; }, "compute name '' must be"},
      {[](ComputeDefinition& d) { d.name = "a/b"; }, "compute name 'a/b' must be"},
      {[](ComputeDefinition& d) { d.type = "kubernetes"; },
       "type must be docker, process or slurm"},
      {[](ComputeDefinition& d) { d.type = "amlcompute"; },
       "type must be docker, process or slurm"},
      {[](ComputeDefinition& d) { d.max_nodes = 0; }, "max_nodes must be from 1 to 10000, got 0"},
      {[](ComputeDefinition& d) { d.max_nodes = 10001; }, "max_nodes must be from 1 to 10000"},
      {[](ComputeDefinition& d) { d.node_cpus = -1; }, "node_cpus must be a number >= 0"},
      {[](ComputeDefinition& d) { d.node_cpus = std::nan(""); }, "node_cpus must be"},
      {[](ComputeDefinition& d) { d.node_memory_bytes = -1; }, "node_memory_bytes must be 0"},
      {[](ComputeDefinition& d) { d.node_memory_bytes = 1 << 20; }, "at least 6 MiB"},
      {[](ComputeDefinition& d) { d.node_gpus = -1; }, "node_gpus must be from 0 to 64"},
      {[](ComputeDefinition& d) { d.node_gpus = 65; }, "node_gpus must be from 0 to 64"},
      {[](ComputeDefinition& d) {
         d.type = "process";
         d.node_gpus = 1;
       },
       "node_gpus must be 0 for a process compute"},
      {[](ComputeDefinition& d) { d.idle_seconds = -1; }, "idle_seconds must be >= 0"},
  };
  EXPECT_TRUE(CpuCluster().Validate().ok());
  for (const Case& c : cases) {
    ComputeDefinition d = CpuCluster();
    c.change(d);
    Status s = d.Validate();
    ASSERT_FALSE(s.ok()) << c.expected;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr(c.expected));
  }
  ComputeDefinition machine_sized = CpuCluster();
  machine_sized.node_cpus = 0;
  machine_sized.node_memory_bytes = 0;
  EXPECT_TRUE(machine_sized.Validate().ok());
  ComputeDefinition floor = CpuCluster();
  floor.node_memory_bytes = 6LL << 20;
  EXPECT_TRUE(floor.Validate().ok());
}

TEST(ComputeDefinitionTest, SameSettingsIgnoresTheNameOnly) {
  ComputeDefinition a = CpuCluster();
  ComputeDefinition b = CpuCluster();
  b.name = "other";
  EXPECT_TRUE(a.SameSettings(b));
  auto differs = [&](void (*change)(ComputeDefinition&)) {
    ComputeDefinition c = CpuCluster();
    change(c);
    return !a.SameSettings(c);
  };
  EXPECT_TRUE(differs([](ComputeDefinition& d) { d.type = "process"; }));
  EXPECT_TRUE(differs([](ComputeDefinition& d) { d.max_nodes = 5; }));
  EXPECT_TRUE(differs([](ComputeDefinition& d) { d.node_cpus = 2.5; }));
  EXPECT_TRUE(differs([](ComputeDefinition& d) { d.node_memory_bytes += 1; }));
  EXPECT_TRUE(differs([](ComputeDefinition& d) { d.node_gpus = 1; }));
  EXPECT_TRUE(differs([](ComputeDefinition& d) { d.idle_seconds = 0; }));
}

TEST(ComputeDefinitionTest, DefaultLocalIsOneMachineSizedDockerNode) {
  ComputeDefinition local = DefaultLocalCompute();
  EXPECT_EQ(local.name, "local");
  EXPECT_EQ(local.type, "docker");
  EXPECT_EQ(local.max_nodes, 1);
  EXPECT_EQ(local.node_gpus, 0);
  EXPECT_EQ(local.node_cpus,
            static_cast<double>(std::max(1u, std::thread::hardware_concurrency())));
  EXPECT_EQ(local.node_memory_bytes,
            static_cast<std::int64_t>(::sysconf(_SC_PHYS_PAGES)) * ::sysconf(_SC_PAGE_SIZE));
  EXPECT_GT(local.node_memory_bytes, 6LL << 20);
  EXPECT_TRUE(local.Validate().ok()) << local.Validate().ToString();
}

TEST(ComputeDefinitionTest, ThisMachineCountsTheGpusTheDriverLists) {
  const fs::path tmp = fs::temp_directory_path() / ("ty-machine-" + RandomHex(4));
  const MachineSize none = ThisMachine(tmp / "absent");
  EXPECT_EQ(none.gpus, 0);
  EXPECT_EQ(none.cpus, static_cast<double>(std::max(1u, std::thread::hardware_concurrency())));
  EXPECT_EQ(none.memory_bytes, DefaultLocalCompute().node_memory_bytes);
  for (const char* bus : {"0000:01:00.0", "0000:02:00.0", "0000:81:00.0"}) {
    ASSERT_TRUE(MakeDirs(tmp / "gpus" / bus).ok());
  }
  ASSERT_TRUE(WriteFileAtomic(tmp / "gpus" / "README", "not a GPU").ok());
  EXPECT_EQ(ThisMachine(tmp / "gpus").gpus, 3);
  (void)RemoveTree(tmp);
}

// ---------------------------------------------------------------------------------------------
// Compute YAML

TEST(ComputeYamlTest, ParsesOurKeys) {
  auto d = ParseComputeYaml(
      "$schema: https://example.invalid/compute.schema.json\n"
      "name: cpu-cluster\n"
      "description: four small nodes\n"
      "type: docker\n"
      "max_nodes: 4\n"
      "node_cpus: 2\n"
      "node_memory: 4g\n"
      "node_gpus: 0\n"
      "idle_seconds: 300\n",
      "compute.yml");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->name, "cpu-cluster");
  EXPECT_EQ(d->type, "docker");
  EXPECT_EQ(d->max_nodes, 4);
  EXPECT_EQ(d->node_cpus, 2.0);
  EXPECT_EQ(d->node_memory_bytes, 4LL << 30);
  EXPECT_EQ(d->node_gpus, 0);
  EXPECT_EQ(d->idle_seconds, 300);
}

TEST(ComputeYamlTest, ParsesAzureAmlComputeKeys) {
  // An Azure ML CLI v2 compute file, as `az ml compute create -f` takes it, plus a node size.
  auto d = ParseComputeYaml(
      "$schema: https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json\n"
      "name: gpu-cluster\n"
      "type: amlcompute\n"
      "min_instances: 0\n"
      "max_instances: 2\n"
      "idle_time_before_scale_down: 120\n"
      "node_cpus: 0.5\n"
      "node_memory: 512m\n"
      "node_gpus: 1\n",
      "amlcompute.yml");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->name, "gpu-cluster");
  EXPECT_EQ(d->type, "docker");
  EXPECT_EQ(d->max_nodes, 2);
  EXPECT_EQ(d->idle_seconds, 120);
  EXPECT_EQ(d->node_cpus, 0.5);
  EXPECT_EQ(d->node_memory_bytes, 512LL << 20);
  EXPECT_EQ(d->node_gpus, 1);
}

TEST(ComputeYamlTest, DefaultsAndProcessType) {
  auto d = ParseComputeYaml("name: host\ntype: process\nnode_memory: 0\n", "host.yml");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->type, "process");
  EXPECT_EQ(d->max_nodes, 1);
  EXPECT_EQ(d->node_cpus, 0);
  EXPECT_EQ(d->node_memory_bytes, 0);
  EXPECT_EQ(d->idle_seconds, 0);
}

TEST(ComputeYamlTest, ErrorsCarryFileLineColumnAndField) {
  auto bad = ParseComputeYaml("name: c\nmax_nodes: many\n", "c.yml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              StartsWith("c.yml:2:12: 'max_nodes' must be an integer from 1 to 10000"));

  auto unknown = ParseComputeYaml("name: c\nvm_size: big\n", "c.yml");
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(),
              StartsWith("c.yml:2:1: unknown key 'vm_size' in compute"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("allowed keys: $schema, name, type"));

  for (const char* cpus : {"inf", "nan", "0x10", "-1", "1,5", "[2]"}) {
    auto c = ParseComputeYaml(std::string("name: c\nnode_cpus: ") + cpus + "\n", "c.yml");
    ASSERT_FALSE(c.ok()) << cpus;
    EXPECT_THAT(c.status().message(), StartsWith("c.yml:2:12: 'node_cpus' must be a number"));
  }

  auto syntax = ParseComputeYaml("name: [c\n", "c.yml");
  ASSERT_FALSE(syntax.ok());
  EXPECT_THAT(syntax.status().message(), StartsWith("c.yml:"));
  EXPECT_THAT(syntax.status().message(), HasSubstr("YAML syntax error"));

  auto duplicate = ParseComputeYaml("name: c\nmax_nodes: 2\nmax_nodes: 3\n", "c.yml");
  ASSERT_FALSE(duplicate.ok());
  EXPECT_THAT(duplicate.status().message(), StartsWith("c.yml:3:1: duplicate key 'max_nodes'"));

  auto empty = ParseComputeYaml("", "c.yml");
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("a compute file is a mapping"));
}

TEST(ComputeYamlTest, ParseComputeFileReadsAndNamesTheFile) {
  fs::path dir = fs::temp_directory_path() / ("trainyard_compute_test_" + RandomHex(8));
  ASSERT_TRUE(MakeDirs(dir).ok());
  const fs::path good = dir / "cluster.yml";
  ASSERT_TRUE(WriteFileAtomic(good, "name: cluster\nmax_nodes: 3\n").ok());
  auto d = ParseComputeFile(good.string());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->max_nodes, 3);

  const fs::path bad = dir / "bad.yml";
  ASSERT_TRUE(WriteFileAtomic(bad, "name: cluster\nnode_gpus: lots\n").ok());
  auto b = ParseComputeFile(bad.string());
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), StartsWith(bad.string() + ":2:12: 'node_gpus'"));

  auto missing = ParseComputeFile((dir / "absent.yml").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("compute file"));
  (void)RemoveTree(dir);
}

// ---------------------------------------------------------------------------------------------
// Priorities: ParsePriority and the job file's queue_settings

TEST(ParsePriorityTest, WordsAndIntegers) {
  EXPECT_EQ(*ParsePriority("low"), kPriorityLow);
  EXPECT_EQ(*ParsePriority("medium"), kPriorityMedium);
  EXPECT_EQ(*ParsePriority("high"), kPriorityHigh);
  EXPECT_EQ(*ParsePriority("High"), 100);
  EXPECT_EQ(*ParsePriority("LOW"), -100);
  EXPECT_EQ(*ParsePriority("0"), 0);
  EXPECT_EQ(*ParsePriority("+7"), 7);
  EXPECT_EQ(*ParsePriority("-1000"), -1000);
  EXPECT_EQ(*ParsePriority("1000"), 1000);
  for (const char* bad : {"", "urgent", "1001", "-1001", "1.5", "10x", "99999999999", "--1"}) {
    auto p = ParsePriority(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(p.status().message(), HasSubstr("low, medium, high or an integer from -1000"));
  }
}

TEST(QueueSettingsTest, JobPriorityFromQueueSettings) {
  const std::string base = "command: python t.py\nenvironment: {image: python:3.11-slim}\n";
  struct Case {
    const char* settings;
    int expected;
  };
  for (const Case& c : {Case{"", 0}, Case{"queue_settings: {priority: low}\n", -100},
                        Case{"queue_settings: {priority: medium}\n", 0},
                        Case{"queue_settings: {priority: high, job_tier: standard}\n", 100},
                        Case{"queue_settings:\n  priority: 250\n", 250},
                        Case{"queue_settings:\n  priority: -3\n  job_tier: spot\n", -3},
                        Case{"queue_settings: {}\n", 0}}) {
    auto job = ParseJobYaml(base + c.settings, "job.yml", ".");
    ASSERT_TRUE(job.ok()) << c.settings << job.status().ToString();
    EXPECT_EQ(job->priority, c.expected) << c.settings;
    // The request the CLI sends carries it.
    RunRequest req = RequestFromJob(*job, "", DefinitionFromSpec(job->environment.inline_spec, ""));
    EXPECT_EQ(req.priority, c.expected);
    auto back = RunRequest::FromJson(req.ToJson(SecretMode::kPlain));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->priority, c.expected);
  }
}

TEST(QueueSettingsTest, BadPriorityNamesFileLineAndField) {
  const std::string base = "command: python t.py\nenvironment: {image: python:3.11-slim}\n";
  auto job = ParseJobYaml(base + "queue_settings:\n  priority: 2000\n", "job.yml", ".");
  ASSERT_FALSE(job.ok());
  EXPECT_THAT(job.status().message(),
              StartsWith("job.yml:4:13: 'queue_settings.priority' must be low, medium, high or an "
                         "integer from -1000 to 1000, got '2000'"));
  auto list = ParseJobYaml(base + "queue_settings: {priority: [1]}\n", "job.yml", ".");
  ASSERT_FALSE(list.ok());
  EXPECT_THAT(list.status().message(), HasSubstr("got a list"));
  auto tier = ParseJobYaml(base + "queue_settings: {job_tier: {a: b}}\n", "job.yml", ".");
  ASSERT_FALSE(tier.ok());
  EXPECT_THAT(tier.status().message(), HasSubstr("'queue_settings.job_tier' must be a string"));
}

TEST(SlurmComputeTest, YamlJsonRoundTripAndRedaction) {
  ::setenv("TY_TEST_REGISTRY_PASSWORD", "s3cret pass", 1);
  auto def = ParseComputeYaml(
      "name: hpc\ntype: slurm\npartition: gpu\nmax_nodes: 4\naccount: ml\nqos: high\n"
      "gpus_per_node: 2\ncontainer_runtime: podman\nsbatch_args: [--exclusive, "
      "--constraint=a100]\nshared_dir: /shared/ty\nregistry:\n  address: 127.0.0.1:5000\n"
      "  username: ci\n  password: ${{env.TY_TEST_REGISTRY_PASSWORD}}\n",
      "hpc.yml");
  ASSERT_TRUE(def.ok()) << def.status().ToString();
  EXPECT_EQ(def->type, "slurm");
  EXPECT_EQ(def->partition, "gpu");
  EXPECT_EQ(def->account, "ml");
  EXPECT_EQ(def->qos, "high");
  EXPECT_EQ(def->gpus_per_node, 2);
  EXPECT_EQ(def->container_runtime, "podman");
  EXPECT_EQ(def->sbatch_args, (std::vector<std::string>{"--exclusive", "--constraint=a100"}));
  EXPECT_EQ(def->shared_dir, "/shared/ty");
  ASSERT_TRUE(def->registry.has_value());
  EXPECT_EQ(def->registry->password, "s3cret pass");

  auto back = ComputeDefinition::FromJson(def->ToJson(SecretMode::kPlain));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->SameSettings(*def));
  back->sbatch_args.pop_back();
  EXPECT_FALSE(back->SameSettings(*def));

  const std::string redacted = def->ToJson(SecretMode::kRedact).dump();
  EXPECT_THAT(redacted, Not(HasSubstr("s3cret")));
  EXPECT_THAT(redacted, HasSubstr("\"***\""));
}

TEST(SlurmComputeTest, ValidateRefusesWhatCannotWork) {
  ComputeDefinition d;
  d.name = "hpc";
  d.type = "slurm";
  EXPECT_THAT(d.Validate().message(), HasSubstr("needs a partition"));
  d.partition = "debug";
  EXPECT_TRUE(d.Validate().ok()) << d.Validate().ToString();
  auto with = [&](auto change) {
    ComputeDefinition c = d;
    change(c);
    return c.Validate().message();
  };
  EXPECT_THAT(with([](auto& c) { c.partition = "a b"; }), HasSubstr("without spaces"));
  EXPECT_THAT(with([](auto& c) { c.container_runtime = "lxc"; }), HasSubstr("docker or podman"));
  EXPECT_THAT(with([](auto& c) { c.sbatch_args = {"exclusive"}; }), HasSubstr("starting with '-'"));
  EXPECT_THAT(with([](auto& c) { c.sbatch_args = {"--x\n#SBATCH --y"}; }),
              HasSubstr("starting with '-'"));
  EXPECT_THAT(with([](auto& c) { c.shared_dir = "rel/dir"; }), HasSubstr("absolute"));
  EXPECT_THAT(with([](auto& c) { c.node_cpus = 2; }), HasSubstr("partition's"));
  EXPECT_THAT(with([](auto& c) {
                c.registry = RegistryCredentials{"127.0.0.1:5000", "u", ""};
              }),
              HasSubstr("address, a username and a password"));
  EXPECT_THAT(with([](auto& c) { c.gpus_per_node = 65; }), HasSubstr("gpus_per_node"));
  // The slurm settings belong to slurm computes only.
  ComputeDefinition docker;
  docker.name = "cpu";
  docker.partition = "debug";
  EXPECT_THAT(docker.Validate().message(), HasSubstr("settings of slurm computes"));
}

}  // namespace
}  // namespace trainyard::spec
