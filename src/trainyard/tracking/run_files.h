#pragma once

// A run's files with their digests: what `./outputs` held when the run's process exited
// (collected at Finalizing) and what the run uploaded, recorded in the tracking store.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"
#include "trainyard/tracking/series_store.h"

namespace trainyard::tracking {

// "sha256:<hex>" for a lower-case hex SHA-256.
std::string DigestOfHex(std::string_view hex);

// Hashes every regular file under `run_dir`/outputs and records each as
// {"outputs/<path>", size, digest, "output"} for run `run_id`, replacing earlier records of the
// same paths. Symbolic links (to files or folders), FIFOs, sockets and devices are skipped and
// never followed or opened. A missing outputs/ records nothing. An unreadable file is an error
// naming it, and then nothing is recorded. Returns the files recorded, ordered by path.
StatusOr<std::vector<RunFile>> CollectOutputs(SeriesStore& store, const std::string& run_id,
                                              const std::filesystem::path& run_dir,
                                              std::int64_t now_ms);

}  // namespace trainyard::tracking
