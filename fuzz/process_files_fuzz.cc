// The process executor's records in a node's state folder (shim.pid, child.pid, exit), which a
// restarted daemon reads back: written by processes of the run's user, so parsed with bounds.
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_util.h"
#include "trainyard/exec/process/process_executor.h"

using namespace trainyard;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    const auto record = exec::ParsePidRecord(text);
    if (record && record->pid <= 0) std::abort();
  } else {
    (void)exec::ParseExitRecord(text);
  }
  return 0;
}
