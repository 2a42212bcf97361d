#include "trainyard/spec/spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/data_uri.h"
#include "trainyard/spec/definition.h"

namespace trainyard::spec {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

fs::path GoodSpecsDir() { return fs::path(TRAINYARD_SOURCE_DIR) / "tests/cases/good-specs"; }

using Vars = std::map<std::string, std::string>;

// A getenv over a fixed map, so tests never depend on the machine's environment.
ParseOptions FakeEnv(Vars vars) {
  ParseOptions options;
  options.getenv = [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
  return options;
}

ParseOptions RegistryEnv() {
  return FakeEnv({{"TY_REGISTRY_HOST", "127.0.0.1"},
                  {"TY_REGISTRY_USER", "alice"},
                  {"TY_REGISTRY_PASSWORD", "pa$$word-1"}});
}

// A scratch folder removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("trainyard_spec_test_" + RandomHex(8));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  void Write(const std::string& relative, const std::string& text) const {
    fs::create_directories((path_ / relative).parent_path());
    ASSERT_TRUE(WriteFileAtomic(path_ / relative, text).ok());
  }

 private:
  fs::path path_;
};

// ---------------------------------------------------------------------------------------------
// SubstituteCommand

TEST(SubstituteCommandTest, ReplacesInputsAndOutputs) {
  auto out = SubstituteCommand(
      "python train.py --epochs ${{inputs.epochs}} --out "
      "${{outputs.model}} --again ${{inputs.epochs}}",
      {{"epochs", "3"}}, {{"model", "/outputs/model"}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "python train.py --epochs 3 --out /outputs/model --again 3");
}

TEST(SubstituteCommandTest, ToleratesWhitespaceInsideBraces) {
  auto out = SubstituteCommand("run ${{ inputs.x }} ${{\toutputs.y}} ${{inputs.x  }}", {{"x", "1"}},
                               {{"y", "/o"}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "run 1 /o 1");
}

TEST(SubstituteCommandTest, KeepsOptionalPartWhenItsInputsAreGiven) {
  auto out = SubstituteCommand("python t.py $[[--lr ${{inputs.lr}} --wd ${{inputs.wd}}]] --x",
                               {{"lr", "0.1"}, {"wd", "0.01"}}, {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "python t.py --lr 0.1 --wd 0.01 --x");
}

TEST(SubstituteCommandTest, DropsOptionalPartWhenAnyInputIsMissing) {
  auto out = SubstituteCommand("python t.py $[[--lr ${{inputs.lr}} --wd ${{inputs.wd}}]] --x",
                               {{"lr", "0.1"}}, {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "python t.py  --x");
}

TEST(SubstituteCommandTest, OptionalPartsAreIndependent) {
  auto out = SubstituteCommand(
      "a $[[-b ${{inputs.b}}]] $[[-c ${{inputs.c}}]] $[[-o "
      "${{outputs.o}}]] $[[plain]]",
      {{"c", "C"}}, {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "a  -c C  plain");
}

TEST(SubstituteCommandTest, LeavesOtherDollarsAndBracketsAlone) {
  auto out = SubstituteCommand("echo $HOME ${PATH} $[x] ]] }} $$ {{inputs.a}}", {}, {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "echo $HOME ${PATH} $[x] ]] }} $$ {{inputs.a}}");
}

TEST(SubstituteCommandTest, UndefinedInputOutsideOptionalIsAnError) {
  auto out = SubstituteCommand("python t.py ${{inputs.epoch}}", {{"epochs", "3"}, {"lr", "1"}}, {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(),
            "undefined input 'epoch' in ${{inputs.epoch}}; defined inputs: epochs, lr");
}

TEST(SubstituteCommandTest, UndefinedOutputIsAnError) {
  auto out = SubstituteCommand("python t.py ${{ outputs.model }}", {}, {});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message(),
            "undefined output 'model' in ${{ outputs.model }}; no outputs are defined");
}

TEST(SubstituteCommandTest, OtherExpressionsAreErrorsNamingThem) {
  for (const std::string expression :
       {"${{foo.bar}}", "${{inputs}}", "${{inputs.}}", "${{inputs.a-b}}", "${{env.HOME}}", "${{}}",
        "${{outputs.x.y}}"}) {
    auto out = SubstituteCommand("run " + expression, {{"a", "1"}}, {{"x", "/x"}});
    ASSERT_FALSE(out.ok()) << expression;
    EXPECT_THAT(out.status().message(), HasSubstr("unsupported expression '" + expression + "'"));
  }
  // Inside an optional part too: only references to missing names are forgiven.
  auto out = SubstituteCommand("run $[[${{foo.bar}}]]", {}, {});
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(out.status().message(), HasSubstr("'${{foo.bar}}'"));
}

TEST(SubstituteCommandTest, UnterminatedMarkersAreErrors) {
  auto a = SubstituteCommand("python t.py --x ${{inputs.x", {{"x", "1"}}, {});
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("unterminated '${{'"));
  EXPECT_THAT(a.status().message(), HasSubstr("'${{inputs.x'"));

  auto b = SubstituteCommand("python t.py $[[--x ${{inputs.x}}", {{"x", "1"}}, {});
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("unterminated '$[['"));

  auto c = SubstituteCommand("python $[[ ${{inputs.x ]]", {{"x", "1"}}, {});
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("unterminated '${{'"));

  auto d = SubstituteCommand("a $[[ b $[[ c ]] ]]", {}, {});
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("nested '$[['"));
}

TEST(SubstituteCommandTest, MultiLineCommand) {
  auto out = SubstituteCommand("python -m app\n  --a ${{inputs.a}}\n  $[[--b ${{inputs.b}}]]\n",
                               {{"a", "x y"}}, {});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(*out, "python -m app\n  --a x y\n  \n");
}

// ---------------------------------------------------------------------------------------------
// ParseByteSize

TEST(ParseByteSizeTest, AcceptsDockerStyleSizes) {
  const std::map<std::string, std::int64_t> cases = {
      {"0", 0},
      {"1024", 1024},
      {"1024b", 1024},
      {"1024B", 1024},
      {"64k", 64 << 10},
      {"64K", 64 << 10},
      {"64kb", 64 << 10},
      {"512m", 512LL << 20},
      {"512MB", 512LL << 20},
      {"512 m", 512LL << 20},
      {"2g", 2LL << 30},
      {"2G", 2LL << 30},
      {"2gb", 2LL << 30},
      {"2GiB", 2LL << 30},
      {"1t", 1LL << 40},
      {"1p", 1LL << 50},
      {"1.5g", (3LL << 30) / 2},
      {"0.5k", 512},
      {"1.0001k", 1024},  // fractions round down to whole bytes
      {" 8m ", 8LL << 20},
      {"8191p", 8191LL << 50},
  };
  for (const auto& [text, bytes] : cases) {
    auto parsed = ParseByteSize(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.status().ToString();
    EXPECT_EQ(*parsed, bytes) << text;
  }
}

TEST(ParseByteSizeTest, RejectsGarbageNegativeAndOverflow) {
  for (const std::string text :
       {"", " ", "-1", "-2g", "abc", "g", "2x", "2gbb", "2 gigabytes", "1.5", "1.g", ".5g", "2  g",
        "0x10", "1e9", "2g ram", "9223372036854775808", "8192p", "99999999999999999999k"}) {
    auto parsed = ParseByteSize(text);
    EXPECT_FALSE(parsed.ok()) << "'" << text << "' parsed as " << (parsed.ok() ? *parsed : 0);
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
      EXPECT_THAT(parsed.status().message(), HasSubstr("'" + text + "'"));
    }
  }
  EXPECT_THAT(ParseByteSize("-1g").status().message(), HasSubstr("must not be negative"));
  EXPECT_THAT(ParseByteSize("2q").status().message(), HasSubstr("unknown unit 'q'"));
}

// ---------------------------------------------------------------------------------------------
// ParseCondaYaml

TEST(ParseCondaYamlTest, SplitsCondaPackagesAndPip) {
  const std::string text =
      "name: train\n"
      "channels: [conda-forge, defaults]\n"
      "dependencies:\n"
      "  - python=3.11\n"
      "  - pip\n"
      "  - pip>=23\n"
      "  - conda-forge::python==3.11.4\n"
      "  - PIP=23.1\n"
      "  - numpy=1.26\n"
      "  - python-dateutil\n"
      "  - pipx\n"
      "  - cudatoolkit 11.8.*\n"
      "  - pip:\n"
      "      - torch==2.3.0\n"
      "      - --extra-index-url https://example/simple\n"
      "      - mlflow\n";
  auto conda = ParseCondaYaml(text, "conda.yml");
  ASSERT_TRUE(conda.ok()) << conda.status().ToString();
  EXPECT_EQ(conda->text, text);
  EXPECT_THAT(conda->channels, ElementsAre("conda-forge", "defaults"));
  EXPECT_THAT(conda->conda_packages,
              ElementsAre("numpy=1.26", "python-dateutil", "pipx", "cudatoolkit 11.8.*"));
  EXPECT_THAT(conda->pip,
              ElementsAre("torch==2.3.0", "--extra-index-url https://example/simple", "mlflow"));
}

TEST(ParseCondaYamlTest, PythonAndPipOnlyNeedNoConda) {
  auto conda = ParseCondaYaml("dependencies:\n  - python=3.10\n  - pip\n", "c.yml");
  ASSERT_TRUE(conda.ok()) << conda.status().ToString();
  EXPECT_THAT(conda->conda_packages, IsEmpty());
  EXPECT_THAT(conda->pip, IsEmpty());
  EXPECT_THAT(conda->channels, IsEmpty());
}

TEST(ParseCondaYamlTest, ErrorsCarryFileLineColumn) {
  auto two_pips = ParseCondaYaml("dependencies:\n  - pip: [a]\n  - pip: [b]\n", "env/c.yml");
  ASSERT_FALSE(two_pips.ok());
  EXPECT_THAT(two_pips.status().message(),
              HasSubstr("env/c.yml:3:5: a second {pip: [...]} entry in dependencies"));

  auto other_map = ParseCondaYaml("dependencies:\n  - conda: [a]\n", "c.yml");
  ASSERT_FALSE(other_map.ok());
  EXPECT_THAT(other_map.status().message(),
              HasSubstr("c.yml:2:5: unknown key 'conda' in dependencies[0]; allowed keys: pip"));

  auto not_list = ParseCondaYaml("dependencies: numpy\n", "c.yml");
  ASSERT_FALSE(not_list.ok());
  EXPECT_EQ(not_list.status().message(), "c.yml:1:15: 'dependencies' must be a list, got 'numpy'");

  auto pip_not_strings = ParseCondaYaml("dependencies:\n  - pip:\n      - {a: b}\n", "c.yml");
  ASSERT_FALSE(pip_not_strings.ok());
  EXPECT_THAT(pip_not_strings.status().message(),
              HasSubstr("c.yml:3:9: 'dependencies[0].pip[0]' must be a string, got a mapping"));

  auto syntax = ParseCondaYaml("dependencies: [a\n", "c.yml");
  ASSERT_FALSE(syntax.ok());
  EXPECT_THAT(syntax.status().message(), HasSubstr("c.yml:2:1: YAML syntax error"));

  auto empty = ParseCondaYaml("", "c.yml");
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("c.yml:1:1: the file is empty"));
}

// ---------------------------------------------------------------------------------------------
// ${{env.NAME}} in image_registry

TEST(RegistryEnvTest, ResolvesEnvReferencesWithInjectedGetenv) {
  auto env = ParseEnvironmentFile((GoodSpecsDir() / "env-registry.yml").string(), RegistryEnv());
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  ASSERT_TRUE(env->registry.has_value());
  EXPECT_EQ(env->registry->address, "127.0.0.1:5000");
  EXPECT_EQ(env->registry->username, "alice");
  EXPECT_EQ(env->registry->password, "pa$$word-1");
  EXPECT_TRUE(env->user_managed_dependencies);
  EXPECT_EQ(env->image, "127.0.0.1:5000/team/base:1.0");
  EXPECT_EQ(env->name, "private-base");
}

TEST(RegistryEnvTest, LiteralValuesAndSeveralReferencesInOneField) {
  const std::string yaml =
      "image: reg.example:443/base:1\n"
      "image_registry:\n"
      "  address: ${{env.HOST}}:${{env.PORT}}\n"
      "  username: robot\n"
      "  password: ${{env.PW}}\n";
  auto env = ParseEnvironmentYaml(yaml, "env.yml", "/tmp",
                                  FakeEnv({{"HOST", "reg.example"}, {"PORT", "443"}, {"PW", ""}}));
  ASSERT_FALSE(env.ok());  // an empty password is refused
  EXPECT_EQ(env.status().message(), "env.yml:5:13: 'image_registry.password' is empty");

  env = ParseEnvironmentYaml(yaml, "env.yml", "/tmp",
                             FakeEnv({{"HOST", "reg.example"}, {"PORT", "443"}, {"PW", "x"}}));
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->registry->address, "reg.example:443");
  EXPECT_EQ(env->registry->username, "robot");
  EXPECT_EQ(env->registry->password, "x");
}

TEST(RegistryEnvTest, UnsetVariableIsLocatedAndNamesTheField) {
  auto options = FakeEnv({{"TY_REGISTRY_HOST", "127.0.0.1"}, {"TY_REGISTRY_USER", "alice"}});
  auto env = ParseEnvironmentFile((GoodSpecsDir() / "env-registry.yml").string(), options);
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(env.status().message(),
              HasSubstr("env-registry.yml:7:13: environment variable TY_REGISTRY_PASSWORD is not "
                        "set (needed by image_registry.password)"));
}

TEST(RegistryEnvTest, ResolvedSecretsNeverAppearInErrors) {
  const std::string secret = "hunter2-very-secret";
  // The password resolves, then a later field fails: the message must not carry the secret.
  const std::string yaml =
      "image: 127.0.0.1:5000/base:1\n"
      "image_registry:\n"
      "  password: ${{env.PW}}\n"
      "  username: ${{env.PW}}\n"
      "  address: ${{env.MISSING}}\n";
  auto env = ParseEnvironmentYaml(yaml, "env.yml", "/tmp", FakeEnv({{"PW", secret}}));
  ASSERT_FALSE(env.ok());
  EXPECT_THAT(env.status().message(), HasSubstr("MISSING is not set"));
  EXPECT_THAT(env.status().message(), Not(HasSubstr(secret)));
  // A bad expression in a literal password is reported without quoting the field.
  auto bad = ParseEnvironmentYaml(
      "image: a/b:1\nimage_registry: {address: r, username: u, password: \"x${{" + secret +
          "}}\"}\n",
      "env.yml", "/tmp", FakeEnv({}));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("unsupported ${{...}} expression"));
  EXPECT_THAT(bad.status().message(), Not(HasSubstr(secret)));
}

TEST(RegistryEnvTest, DefaultGetenvReadsTheProcessEnvironment) {
  ASSERT_EQ(::setenv("TY_SPEC_TEST_REGISTRY_PW", "from-process", 1), 0);
  ::unsetenv("TY_SPEC_TEST_REGISTRY_UNSET");
  const std::string yaml =
      "image: a/b:1\n"
      "image_registry:\n"
      "  address: r\n"
      "  username: u\n"
      "  password: ${{env.TY_SPEC_TEST_REGISTRY_PW}}\n";
  auto env = ParseEnvironmentYaml(yaml, "env.yml", "/tmp");
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->registry->password, "from-process");
  auto unset = ParseEnvironmentYaml(
      "image: a/b:1\nimage_registry: {address: r, username: u, password: "
      "\"${{env.TY_SPEC_TEST_REGISTRY_UNSET}}\"}\n",
      "env.yml", "/tmp");
  ASSERT_FALSE(unset.ok());
  EXPECT_THAT(unset.status().message(), HasSubstr("TY_SPEC_TEST_REGISTRY_UNSET is not set"));
  ::unsetenv("TY_SPEC_TEST_REGISTRY_PW");
}

// ---------------------------------------------------------------------------------------------
// Good specs

TEST(GoodSpecsTest, EveryJobAndEnvironmentFileParses) {
  int count = 0;
  for (const auto& entry : fs::directory_iterator(GoodSpecsDir())) {
    std::string name = entry.path().filename().string();
    if (entry.path().extension() != ".yml") continue;
    if (StartsWith(name, "job-")) {
      auto job = ParseJobFile(entry.path().string(), RegistryEnv());
      EXPECT_TRUE(job.ok()) << job.status().ToString();
      ++count;
    } else if (StartsWith(name, "env-")) {
      auto env = ParseEnvironmentFile(entry.path().string(), RegistryEnv());
      EXPECT_TRUE(env.ok()) << env.status().ToString();
      ++count;
    }
  }
  EXPECT_GE(count, 6);
}

TEST(GoodSpecsTest, ReferenceExampleWithLocalPaths) {
  const fs::path dir = GoodSpecsDir();
  auto job = ParseJobFile((dir / "job-full.yml").string(), RegistryEnv());
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->source_file, (dir / "job-full.yml").string());
  EXPECT_EQ(job->name, "");
  EXPECT_EQ(job->command,
            "python train.py --epochs ${{inputs.epochs}} --data ${{inputs.data}} --out "
            "${{outputs.model}}");
  EXPECT_EQ(job->code, (dir / "src").string());
  ASSERT_EQ(job->environment.kind, EnvironmentRef::Kind::kInline);
  const EnvironmentSpec& env = job->environment.inline_spec;
  EXPECT_EQ(env.image, "fastdotai/fastai2:latest");
  EXPECT_FALSE(env.build.has_value());
  EXPECT_EQ(env.dockerfile, "");
  EXPECT_EQ(env.name, "");
  EXPECT_EQ(env.platform, "linux/amd64");
  ASSERT_TRUE(env.conda.has_value());
  EXPECT_THAT(env.conda->channels, ElementsAre("conda-forge", "defaults"));
  EXPECT_THAT(env.conda->conda_packages,
              ElementsAre("cudatoolkit=11.8", "conda-forge::python-dateutil"));
  EXPECT_THAT(env.conda->pip, ElementsAre("fastai==2.7.14", "mlflow"));
  EXPECT_EQ(env.conda->text, *ReadFile(dir / "conda.yml"));
  EXPECT_EQ(job->compute, "local");
  EXPECT_EQ(job->experiment_name, "fastai-custom-image");
  EXPECT_EQ(job->display_name, "pets-resnet34");
  ASSERT_EQ(job->inputs.size(), 2u);
  EXPECT_EQ(job->inputs.at("epochs").kind, InputSpec::Kind::kLiteral);
  EXPECT_EQ(job->inputs.at("epochs").value, "3");
  EXPECT_EQ(job->inputs.at("data").kind, InputSpec::Kind::kUriFolder);
  EXPECT_EQ(job->inputs.at("data").path, (dir / "data/images").string());
  EXPECT_EQ(job->inputs.at("data").mode, "ro_mount");
  ASSERT_EQ(job->outputs.size(), 1u);
  EXPECT_EQ(job->outputs.at("model").type, "uri_folder");
  EXPECT_EQ(job->outputs.at("model").mode, "rw_mount");
  EXPECT_THAT(job->environment_variables, ElementsAre(Pair("OMP_NUM_THREADS", "4")));
  EXPECT_EQ(job->instance_count, 2);
  EXPECT_EQ(job->shm_size_bytes, 2LL << 30);
  ASSERT_TRUE(job->distribution.has_value());
  EXPECT_EQ(job->distribution->type, "pytorch");
  EXPECT_EQ(job->distribution->process_count_per_instance, 1);
  EXPECT_EQ(job->timeout_seconds, 3600);
  EXPECT_THAT(job->tags, ElementsAre(Pair("team", "vision")));

  // The command substitutes with the run's values.
  std::map<std::string, std::string> inputs = {{"epochs", "3"}, {"data", "/mnt/inputs/data"}};
  auto command = SubstituteCommand(job->command, inputs, {{"model", "/mnt/outputs/model"}});
  ASSERT_TRUE(command.ok()) << command.status().ToString();
  EXPECT_EQ(*command,
            "python train.py --epochs 3 --data /mnt/inputs/data --out /mnt/outputs/model");
}

TEST(GoodSpecsTest, EnvironmentWithBuildContextAndRequirementsFile) {
  const fs::path dir = GoodSpecsDir();
  auto env = ParseEnvironmentFile((dir / "env-build.yml").string());
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->name, "vision-base");
  EXPECT_EQ(env->version, "2");
  EXPECT_EQ(env->description, "A build context with its Dockerfile in a subfolder.");
  EXPECT_EQ(env->image, "");
  ASSERT_TRUE(env->build.has_value());
  EXPECT_EQ(env->build->path, (dir / "docker-context").string());
  EXPECT_EQ(env->build->dockerfile_path, "docker/Dockerfile");
  EXPECT_FALSE(env->conda.has_value());
  EXPECT_THAT(env->pip_requirements, ElementsAre("numpy==1.26.4", "pandas>=2.0", "scikit-learn",
                                                 "--extra-index-url https://pypi.example/simple"));
  EXPECT_FALSE(env->user_managed_dependencies);
  EXPECT_THAT(env->environment_variables,
              UnorderedElementsAre(Pair("PYTHONUNBUFFERED", "1"), Pair("USE_CUDA", "false")));
  EXPECT_EQ(env->platform, "linux/arm64");
  EXPECT_THAT(env->tags, UnorderedElementsAre(Pair("owner", "vision-team"), Pair("stage", "")));
  EXPECT_FALSE(env->registry.has_value());
}

TEST(GoodSpecsTest, InlineDockerfileAndPipList) {
  auto env = ParseEnvironmentFile((GoodSpecsDir() / "env-dockerfile.yml").string());
  ASSERT_TRUE(env.ok()) << env.status().ToString();
  EXPECT_EQ(env->dockerfile,
            "# syntax=docker/dockerfile:1\nfrom python:3.11-slim\nRUN pip install --no-cache-dir "
            "numpy\n");
  EXPECT_FALSE(env->build.has_value());
  EXPECT_THAT(env->pip_requirements, ElementsAre("torch==2.3.0", "tqdm"));
}

TEST(GoodSpecsTest, JobWithEnvironmentFileAndOptionalArguments) {
  const fs::path dir = GoodSpecsDir();
  auto job = ParseJobFile((dir / "job-env-file.yml").string());
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  ASSERT_EQ(job->environment.kind, EnvironmentRef::Kind::kInline);
  EXPECT_EQ(job->environment.inline_spec.name, "vision-base");
  ASSERT_TRUE(job->environment.inline_spec.build.has_value());
  EXPECT_EQ(job->environment.inline_spec.build->path, (dir / "docker-context").string());
  EXPECT_EQ(job->code, "");
  EXPECT_EQ(job->experiment_name, "Default");
  EXPECT_EQ(job->compute, "local");
  EXPECT_EQ(job->instance_count, 1);
  EXPECT_FALSE(job->timeout_seconds.has_value());
  EXPECT_FALSE(job->shm_size_bytes.has_value());
  EXPECT_FALSE(job->distribution.has_value());
  const InputSpec& data = job->inputs.at("data");
  EXPECT_EQ(data.kind, InputSpec::Kind::kUriFile);
  EXPECT_EQ(data.path, (dir / "data/images/cat.txt").string());
  EXPECT_EQ(data.mode, "download");
  EXPECT_EQ(job->inputs.at("lr").kind, InputSpec::Kind::kLiteral);
  EXPECT_EQ(job->inputs.at("lr").value, "0.01");
  EXPECT_EQ(job->outputs.at("model").type, "uri_folder");
  // `checkpoint` is not declared: its optional part is dropped, lr's is kept.
  auto command = SubstituteCommand(job->command, {{"data", "/in/data"}, {"lr", "0.01"}},
                                   {{"model", "/out/model"}});
  ASSERT_TRUE(command.ok()) << command.status().ToString();
  EXPECT_EQ(*command, "python -m app --data /in/data  --lr 0.01 --out /out/model");
}

TEST(GoodSpecsTest, JobWithRegisteredEnvironment) {
  auto job = ParseJobFile((GoodSpecsDir() / "job-registered.yml").string());
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->name, "run-42");
  EXPECT_EQ(job->environment.kind, EnvironmentRef::Kind::kRegistered);
  EXPECT_EQ(job->environment.name, "fastai2");
  EXPECT_EQ(job->environment.version, "3");
  EXPECT_EQ(job->compute, "gpu-cluster");
  EXPECT_EQ(job->description, "Uses a registered environment.");
  EXPECT_EQ(job->inputs.at("flag").value, "true");
  EXPECT_EQ(job->inputs.at("n").value, "-7");
  EXPECT_EQ(job->inputs.at("label").value, "hello world");
  EXPECT_EQ(job->outputs.at("model").mode, "upload");
  EXPECT_EQ(job->shm_size_bytes, 512LL << 20);
  EXPECT_EQ(job->distribution->type, "mpi");
  EXPECT_EQ(job->distribution->process_count_per_instance, 4);
}

// ---------------------------------------------------------------------------------------------
// Job details not covered by the files

ParseOptions NoEnv() { return FakeEnv({}); }

TEST(ParseJobYamlTest, EnvironmentReferenceForms) {
  struct Case {
    std::string ref;
    std::string name;
    std::string version;
  };
  for (const Case& c :
       {Case{"azureml:fastai2:3", "fastai2", "3"}, Case{"azureml:fastai2@latest", "fastai2", ""},
        Case{"fastai2:1.0", "fastai2", "1.0"}, Case{"fastai2@latest", "fastai2", ""},
        Case{"fastai2", "fastai2", ""}}) {
    auto job =
        ParseJobYaml("command: run\nenvironment: " + c.ref + "\n", "job.yml", "/tmp", NoEnv());
    ASSERT_TRUE(job.ok()) << c.ref << ": " << job.status().ToString();
    EXPECT_EQ(job->environment.kind, EnvironmentRef::Kind::kRegistered) << c.ref;
    EXPECT_EQ(job->environment.name, c.name) << c.ref;
    EXPECT_EQ(job->environment.version, c.version) << c.ref;
  }
}

TEST(ParseJobYamlTest, SnapshotSettings) {
  auto job = ParseJobYaml(
      "command: run\nenvironment: base\nsnapshot: {max_files: 5000, max_size: 1g, copy: true}\n",
      "job.yml", "/tmp", NoEnv());
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->snapshot_max_files, 5000u);
  EXPECT_EQ(job->snapshot_max_bytes, 1ull << 30);
  EXPECT_TRUE(job->code_copy);
  // The request carries the copy choice to the daemon; the limits apply where the snapshot is
  // taken (the CLI).
  RunRequest q = RequestFromJob(*job, "", std::nullopt);
  EXPECT_TRUE(q.code_copy);
  auto back = RunRequest::FromJson(q.ToJson(SecretMode::kPlain));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->code_copy);

  auto plain = ParseJobYaml("command: run\nenvironment: base\n", "job.yml", "/tmp", NoEnv());
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_FALSE(plain->snapshot_max_files.has_value());
  EXPECT_FALSE(plain->snapshot_max_bytes.has_value());
  EXPECT_FALSE(plain->code_copy);
  EXPECT_FALSE(RequestFromJob(*plain, "", std::nullopt).code_copy);
}

TEST(ParseJobYamlTest, UsesFileNameAsGivenAndBaseDirForPaths) {
  TempDir dir;
  dir.Write("code/train.py", "print(1)\n");
  dir.Write("env/env.yml", "image: python:3.11-slim\nconda_file: conda.yml\n");
  dir.Write("env/conda.yml", "dependencies:\n  - pip:\n      - numpy\n");
  const std::string yaml = "command: python train.py\ncode: code\nenvironment: file:env/env.yml\n";
  auto job = ParseJobYaml(yaml, "submitted.yml", dir.path().string(), NoEnv());
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->code, (dir.path() / "code").string());
  EXPECT_EQ(job->source_file, (dir.path() / "submitted.yml").string());
  ASSERT_TRUE(job->environment.inline_spec.conda.has_value());  // conda.yml beside env.yml
  EXPECT_THAT(job->environment.inline_spec.conda->pip, ElementsAre("numpy"));

  // Errors in a file the job names carry that file's name and location.
  dir.Write("env/conda.yml", "dependencies:\n  - pip:\n      - [numpy]\n");
  auto bad = ParseJobYaml(yaml, "submitted.yml", dir.path().string(), NoEnv());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr("env/conda.yml:3:9: 'dependencies[0].pip[0]' must be a string"));

  auto missing = ParseJobYaml("command: run\nenvironment: {image: a}\ncode: nope\n", "my job.yml",
                              dir.path().string(), NoEnv());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(),
            "my job.yml:3:7: 'code': folder " + (dir.path() / "nope").string() + " does not exist");
}

TEST(ParseJobYamlTest, LiteralTextOfScalars) {
  auto job = ParseJobYaml(
      "command: run ${{inputs.a}} ${{inputs.b}} ${{inputs.c}} ${{inputs.d}}\n"
      "environment: {image: a}\n"
      "inputs: {a: 0.010, b: true, c: \"007\", d: {type: number, value: 1e-3}}\n"
      "environment_variables: {A: 1, B: yes, C: 2.50}\n"
      "tags: {x: 1, y: }\n",
      "job.yml", "/tmp", NoEnv());
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->inputs.at("a").value, "0.010");
  EXPECT_EQ(job->inputs.at("b").value, "true");
  EXPECT_EQ(job->inputs.at("c").value, "007");
  EXPECT_EQ(job->inputs.at("d").value, "1e-3");
  EXPECT_THAT(job->environment_variables,
              ElementsAre(Pair("A", "1"), Pair("B", "yes"), Pair("C", "2.50")));
  EXPECT_THAT(job->tags, ElementsAre(Pair("x", "1"), Pair("y", "")));
}

TEST(ParseJobYamlTest, UnknownKeyHintsTheClosestAllowedKey) {
  auto job = ParseJobYaml("command: run\nenvironment: {image: a}\nlimits: {timeot: 3}\n", "job.yml",
                          "/tmp", NoEnv());
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().message(),
            "job.yml:3:10: unknown key 'timeot' in limits; allowed keys: timeout; did you mean "
            "'timeout'?");
}

TEST(ParseJobYamlTest, DuplicateKeysInsideListsAreFound) {
  auto conda = ParseCondaYaml("dependencies:\n  - pip:\n      - a\n    pip:\n      - b\n", "c.yml");
  ASSERT_FALSE(conda.ok());
  EXPECT_THAT(conda.status().message(), HasSubstr("c.yml:4:5: duplicate key 'pip'"));
}

TEST(ParseJobYamlTest, AliasesAreFollowedWithoutBlowingUp) {
  // Nine levels of nine-fold aliases: walking every reference would visit 9^9 nodes.
  std::string yaml = "command: run\nenvironment: {image: a}\ndescription: x\nx0: &a0 [1]\n";
  for (int i = 1; i < 10; ++i) {
    std::string prev = "*a" + std::to_string(i - 1);
    yaml += "x" + std::to_string(i) + ": &a" + std::to_string(i) + " [" + prev;
    for (int j = 0; j < 8; ++j) yaml += ", " + prev;
    yaml += "]\n";
  }
  auto job = ParseJobYaml(yaml, "job.yml", "/tmp", NoEnv());
  ASSERT_FALSE(job.ok());  // x0 is not a job key, but the document is loaded and checked quickly
  EXPECT_THAT(job.status().message(), HasSubstr("job.yml:4:1: unknown key 'x0' in job"));
}

TEST(ParseJobYamlTest, DeepNestingIsAnErrorNotACrash) {
  std::string yaml = "command: x\nenvironment: {image: a}\ntags: ";
  yaml += std::string(100000, '[') + std::string(100000, ']') + "\n";
  auto job = ParseJobYaml(yaml, "deep.yml", "/tmp", NoEnv());
  ASSERT_FALSE(job.ok());
  EXPECT_THAT(job.status().message(), HasSubstr("deep.yml:3:"));
  EXPECT_THAT(job.status().message(), HasSubstr("levels deep"));
}

TEST(ParseJobYamlTest, StrayCommaAtDocumentLevelIsAnErrorNotAHang) {
  auto job = ParseJobYaml("- a\n,\n", "c.yml", "/tmp", NoEnv());
  ASSERT_FALSE(job.ok());
  EXPECT_THAT(job.status().message(), HasSubstr("c.yml:2:1: YAML syntax error: unexpected ','"));
}

TEST(ParseJobFileTest, MissingFileIsNotFound) {
  auto job = ParseJobFile("/nonexistent/trainyard/job.yml");
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(job.status().message(), HasSubstr("/nonexistent/trainyard/job.yml"));
}

TEST(ParseEnvironmentTest, DockerfilePathThroughSymlinkOutsideContextIsRefused) {
  TempDir dir;
  dir.Write("outside/Dockerfile", "FROM scratch\n");
  dir.Write("ctx/README", "x\n");
  fs::create_symlink(dir.path() / "outside/Dockerfile", dir.path() / "ctx/Dockerfile");
  auto env = ParseEnvironmentYaml("build: {path: ctx}\n", "env.yml", dir.path().string(), NoEnv());
  ASSERT_FALSE(env.ok());
  EXPECT_THAT(env.status().message(), HasSubstr("env.yml:1:8: 'build.dockerfile_path'"));
  EXPECT_THAT(env.status().message(), HasSubstr("through a symlink"));
}

TEST(ParseEnvironmentTest, ImageReferences) {
  for (const std::string ok :
       {"python:3.11-slim", "fastdotai/fastai2:latest", "127.0.0.1:5000/team/base:1.0",
        "localhost/x", "My.Registry:443/a/b", "ubuntu@sha256:abcdef", "a/b:1@sha256:00"}) {
    auto env = ParseEnvironmentYaml("image: \"" + ok + "\"\n", "env.yml", "/tmp", NoEnv());
    EXPECT_TRUE(env.ok()) << ok << ": " << env.status().ToString();
  }
  for (const std::string bad : {"Python:3", "a b", "a/b:", "a//b", "a:b@", "a/b:t!g"}) {
    auto env = ParseEnvironmentYaml("image: \"" + bad + "\"\n", "env.yml", "/tmp", NoEnv());
    EXPECT_FALSE(env.ok()) << bad;
  }
}

}  // namespace
}  // namespace trainyard::spec

namespace trainyard::spec {
namespace {

TEST(DataUriTest, ParsesEveryAddressJobFilesUse) {
  auto ds = ParseDataUri("azureml://datastores/workspaceblobstore/paths/data/images/");
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  EXPECT_EQ(ds->kind, DataUri::Kind::kDatastore);
  EXPECT_EQ(ds->datastore, "workspaceblobstore");
  EXPECT_EQ(ds->path, "data/images");
  auto job = ParseDataUri("azureml://jobs/digits_17_ab/outputs/artifacts/paths/model/");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->kind, DataUri::Kind::kRunOutput);
  EXPECT_EQ(job->run_id, "digits_17_ab");
  EXPECT_EQ(job->path, "model");
  auto blob = ParseDataUri("wasbs://data@acct.blob.core.windows.net/iris/iris.csv");
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(blob->kind, DataUri::Kind::kAzureBlob);
  EXPECT_EQ(blob->container, "data");
  EXPECT_EQ(blob->account, "acct");
  EXPECT_EQ(blob->suffix, "core.windows.net");
  EXPECT_EQ(blob->path, "iris/iris.csv");
  auto abfss = ParseDataUri("abfss://fs@acct.dfs.core.windows.net/a");
  ASSERT_TRUE(abfss.ok());
  EXPECT_EQ(abfss->container, "fs");
  auto s3 = ParseDataUri("s3://bucket/key/x.csv");
  ASSERT_TRUE(s3.ok());
  EXPECT_EQ(s3->bucket, "bucket");
  EXPECT_EQ(s3->path, "key/x.csv");
  auto http = ParseDataUri("https://example.org/iris.csv?sv=1");
  ASSERT_TRUE(http.ok());
  EXPECT_EQ(http->kind, DataUri::Kind::kHttp);
  auto local = ParseDataUri("/data/x");
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(local->kind, DataUri::Kind::kLocalPath);
  auto pinned = ParseDataUri("azureml:cifar-10:3");
  ASSERT_TRUE(pinned.ok());
  EXPECT_EQ(pinned->kind, DataUri::Kind::kAsset);
  EXPECT_EQ(pinned->asset_name, "cifar-10");
  EXPECT_EQ(pinned->asset_version, "3");
  EXPECT_EQ(pinned->asset_label, "");
  auto latest = ParseDataUri("azureml:cifar-10-example@latest");
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->asset_name, "cifar-10-example");
  EXPECT_EQ(latest->asset_version, "");
  EXPECT_EQ(latest->asset_label, "latest");
  auto mlflow = ParseDataUri("runs:/digits_17_ab/model");
  ASSERT_TRUE(mlflow.ok());
  EXPECT_EQ(mlflow->kind, DataUri::Kind::kRunOutput);
  EXPECT_EQ(mlflow->run_id, "digits_17_ab");
  EXPECT_EQ(mlflow->path, "model");
}

TEST(DataUriTest, RefusesWhatCannotBeAnAddress) {
  for (const char* bad : {"azureml://datastores/x/images", "azureml://datastores/x/paths/a/../b",
                          "azureml://jobs/r/outputs/x", "azureml:data", "azureml:data:",
                          "azureml:@latest", "azureml:a b:1", "runs:/", "runs:/../x",
                          "runs:/r/a/../b", "wasbs://acct.blob.core.windows.net/x", "s3:///x",
                          "gs://b/x", "https://", "https:///x", "relative/path", "https://a b"}) {
    EXPECT_FALSE(ParseDataUri(bad).ok()) << bad;
  }
  EXPECT_TRUE(LooksLikeUri("azureml:x:1"));
  EXPECT_TRUE(LooksLikeUri("runs:/r/model"));
  EXPECT_TRUE(LooksLikeUri("gs://b"));
  EXPECT_FALSE(LooksLikeUri("./a://b"));
  EXPECT_FALSE(LooksLikeUri("/data"));
}

}  // namespace
}  // namespace trainyard::spec
