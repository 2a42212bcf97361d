// What Slurm says: squeue/sacct/sinfo JSON, and the exit files a job's scripts write into a
// folder the run shares.
#include <fstream>

#include "fuzz/fuzz_util.h"
#include "trainyard/slurm/slurm.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      (void)slurm::ParseJobs(text);
      break;
    case 1:
      (void)slurm::ParseNodes(text);
      break;
    default: {
      slurm::JobFiles files{fuzz::ScratchDir()};
      std::ofstream(files.ExitFile(), std::ios::binary | std::ios::trunc) << text;
      std::ofstream(files.TaskExitFile(0), std::ios::binary | std::ios::trunc) << text;
      (void)slurm::ReadJobExit(files);
      (void)slurm::ReadTaskExit(files, 0);
      break;
    }
  }
  return 0;
}
