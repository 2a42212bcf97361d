// Every YAML reader (job, environment, compute, datastore, conda) and ${{...}} substitution, with
// the small scalar parsers beside them. Errors carry file:line:col; none may crash or hang.
#include <map>

#include "fuzz/fuzz_util.h"
#include "trainyard/spec/compute.h"
#include "trainyard/spec/datastore.h"
#include "trainyard/spec/spec.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  spec::ParseOptions options;
  options.getenv = [](const std::string& name) -> std::optional<std::string> {
    if (name == "SET") return std::string("value");
    return std::nullopt;
  };
  const std::string dir = fuzz::ScratchDir().string();
  switch (data[0] % 6) {
    case 0: {
      auto job = spec::ParseJobYaml(text, "job.yml", dir, options);
      if (job.ok()) {
        std::map<std::string, std::string> ins, outs;
        for (const auto& [k, v] : job->inputs) ins[k] = "x";
        for (const auto& [k, v] : job->outputs) outs[k] = "y";
        (void)spec::SubstituteCommand(job->command, ins, outs);
      }
      break;
    }
    case 1:
      (void)spec::ParseEnvironmentYaml(text, "env.yml", dir, options);
      break;
    case 2:
      (void)spec::ParseComputeYaml(text, "compute.yml");
      (void)spec::ParseDatastoreYaml(text, "datastore.yml", dir, options);
      break;
    case 3:
      (void)spec::ParseCondaYaml(text, "conda.yml");
      break;
    case 4:
      (void)spec::SubstituteCommand(text, {{"a", "1"}, {"b", "2"}}, {{"o", "/out"}});
      break;
    default:
      (void)spec::ParseByteSize(text);
      (void)spec::ParsePriority(text);
      break;
  }
  return 0;
}
