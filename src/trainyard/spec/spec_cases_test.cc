// The data-driven catalogue of bad specs: every tests/cases/bad-specs/*.yml must fail to parse
// with the message its `# expect:` lines give. A file whose name starts with "env-" is an
// environment file, one starting with "compute-" a compute file; any other is a job file. Adding
// a case is adding a file.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"
#include "trainyard/spec/compute.h"
#include "trainyard/spec/spec.h"

namespace trainyard::spec {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kExpectPrefix[] = "# expect: ";
constexpr char kSecret[] = "s3cret-value-from-env";

fs::path BadSpecsDir() { return fs::path(TRAINYARD_SOURCE_DIR) / "tests/cases/bad-specs"; }

struct BadCase {
  fs::path path;
  std::vector<std::string> expectations;  // from the leading `# expect: ` lines
};

// gtest prints the case as its file name.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.path.filename().string(); }

// The cases in name order. A file without an expectation on its first line yields a case with
// no expectations, which the test reports.
std::vector<BadCase> LoadBadCases() {
  std::vector<BadCase> cases;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(BadSpecsDir(), ec)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".yml") continue;
    BadCase c;
    c.path = entry.path();
    StatusOr<std::string> text = ReadFile(entry.path());
    if (text.ok()) {
      for (const std::string& line : Split(*text, '\n')) {
        if (!trainyard::StartsWith(line, kExpectPrefix)) break;
        c.expectations.push_back(line.substr(sizeof(kExpectPrefix) - 1));
      }
    }
    cases.push_back(std::move(c));
  }
  std::sort(cases.begin(), cases.end(),
            [](const BadCase& a, const BadCase& b) { return a.path < b.path; });
  return cases;
}

// A fixed environment: the catalogue must not depend on the machine's variables.
ParseOptions FakeEnvironment() {
  ParseOptions options;
  options.getenv = [](const std::string& name) -> std::optional<std::string> {
    if (name == "TY_SET_PASSWORD") return std::string(kSecret);
    if (name == "TY_SET_USER") return std::string("bob");
    return std::nullopt;
  };
  return options;
}

std::string CaseName(const ::testing::TestParamInfo<BadCase>& info) {
  std::string name = info.param.path.stem().string();
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

class BadSpecTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadSpecTest, FailsWithExpectedMessage) {
  const BadCase& c = GetParam();
  ASSERT_FALSE(c.expectations.empty())
      << c.path << ": the first line must be '# expect: <part of the error message>'";
  const std::string path = c.path.string();
  const std::string file_name = c.path.filename().string();
  Status status = trainyard::StartsWith(file_name, "env-")
                      ? ParseEnvironmentFile(path, FakeEnvironment()).status()
                  : trainyard::StartsWith(file_name, "compute-")
                      ? ParseComputeFile(path).status()
                      : ParseJobFile(path, FakeEnvironment()).status();
  ASSERT_FALSE(status.ok()) << c.path << " parsed, but should fail with: " << c.expectations[0];
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  for (const std::string& expected : c.expectations) {
    EXPECT_THAT(status.message(), HasSubstr(expected)) << "case " << c.path;
  }
  EXPECT_THAT(status.message(), Not(HasSubstr(kSecret)));
  // Errors located in the case file itself start with "FILE:LINE:COL: ".
  if (trainyard::StartsWith(c.expectations[0], ":")) {
    EXPECT_THAT(status.message(), StartsWith(path + c.expectations[0]));
  }
}

INSTANTIATE_TEST_SUITE_P(Catalogue, BadSpecTest, ::testing::ValuesIn(LoadBadCases()), CaseName);

TEST(BadSpecCatalogueTest, HasAtLeastThirtyCases) {
  std::vector<BadCase> cases = LoadBadCases();
  EXPECT_GE(cases.size(), 30u);
  for (const BadCase& c : cases) {
    EXPECT_FALSE(c.expectations.empty()) << c.path << " has no '# expect: ' first line";
  }
}

}  // namespace
}  // namespace trainyard::spec
