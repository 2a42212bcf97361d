#include "trainyard/spec/run_request_check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "trainyard/spec/spec.h"

namespace trainyard::spec {
namespace {

using ::testing::HasSubstr;

RunRequest Valid() {
  RunRequest r;
  r.name = "run-1";
  r.experiment_name = "exp";
  r.command = "python train.py --data ${{inputs.data}} --out ${{outputs.model}}";
  InputSpec in;
  in.kind = InputSpec::Kind::kUriFolder;
  in.path = "/data";
  r.inputs["data"] = in;
  r.outputs["model"] = OutputSpec{};
  r.timeout_seconds = 3600;
  r.priority = kPriorityHigh;
  r.distribution = DistributionSpec{"pytorch", 2};
  return r;
}

TEST(CheckRunRequestTest, AcceptsAValidRequest) {
  EXPECT_TRUE(CheckRunRequest(Valid()).ok()) << CheckRunRequest(Valid()).ToString();
  RunRequest minimal;
  minimal.command = "true";
  EXPECT_TRUE(CheckRunRequest(minimal).ok()) << CheckRunRequest(minimal).ToString();
}

TEST(CheckRunRequestTest, NamesTheFieldThatCannotRun) {
  struct Case {
    std::function<void(RunRequest&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](RunRequest& r) { r.distribution->type = "horovod"; },
       "distribution.type must be pytorch, mpi or tensorflow, not 'horovod'"},
      {[](RunRequest& r) { r.distribution->process_count_per_instance = 0; },
       "distribution.process_count_per_instance must be 1..1024, not 0"},
      {[](RunRequest& r) { r.distribution->process_count_per_instance = 1025; },
       "distribution.process_count_per_instance must be 1..1024, not 1025"},
      {[](RunRequest& r) {
         r.distribution = DistributionSpec{"tensorflow", 2};
       },
       "a tensorflow distribution runs one worker per node"},
      {[](RunRequest& r) { r.priority = kMaxPriority + 1; },
       "priority must be between -1000 and 1000, not 1001"},
      {[](RunRequest& r) { r.experiment_name = "no spaces"; },
       "invalid experiment name 'no spaces'"},
      {[](RunRequest& r) { r.name = "../up"; }, "invalid run name '../up'"},
      {[](RunRequest& r) { r.timeout_seconds = 0; },
       "limits.timeout must be a positive number of seconds"},
      {[](RunRequest& r) { r.timeout_seconds = kMaxTimeoutSeconds + 1; },
       "limits.timeout must be a positive number of seconds"},
      {[](RunRequest& r) { r.command = "python train.py ${{inputs.missing}}"; }, "missing"},
  };
  for (const Case& c : cases) {
    RunRequest r = Valid();
    c.change(r);
    const Status st = CheckRunRequest(r);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(st.message(), HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace trainyard::spec
