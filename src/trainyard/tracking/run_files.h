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
// same paths. The folder is the run's to write: it is walked and its files opened by descriptor
// below `run_dir`, so symbolic links (to files or folders, also ones swapped in mid-walk),
// FIFOs, sockets and devices are skipped and never followed or opened. A missing outputs/
// records nothing. A file that cannot be read (permissions, vanished, swapped for a link) is
// skipped and described in `*skipped` ("outputs/x: <why>"), so one bad file never costs the
// others. Returns the files recorded, ordered by path; an error only when the store fails.
StatusOr<std::vector<RunFile>> CollectOutputs(SeriesStore& store, const std::string& run_id,
                                              const std::filesystem::path& run_dir,
                                              std::int64_t now_ms,
                                              std::vector<std::string>* skipped = nullptr);

}  // namespace trainyard::tracking
