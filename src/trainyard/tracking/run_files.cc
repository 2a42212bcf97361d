#include "trainyard/tracking/run_files.h"

#include <sys/stat.h>

#include <algorithm>
#include <system_error>

#include "trainyard/cas/io.h"
#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/sha256.h"

namespace trainyard::tracking {

namespace fs = std::filesystem;

std::string DigestOfHex(std::string_view hex) { return "sha256:" + std::string(hex); }

StatusOr<std::vector<RunFile>> CollectOutputs(SeriesStore& store, const std::string& run_id,
                                              const fs::path& run_dir, std::int64_t now_ms,
                                              std::vector<std::string>* skipped) {
  auto root = RootedDir::Open(run_dir);
  if (!root.ok()) return std::vector<RunFile>{};
  std::vector<RunFile> files;
  // The walk never enters a link, also one swapped in for a folder after it was listed.
  Status walked = root->Walk("outputs", [&](const RootedDir::Entry& e) {
    if (!S_ISREG(e.st.st_mode)) return true;
    RunFile f;
    f.path = e.rel;
    f.origin = "output";
    f.recorded_ms = now_ms;
    files.push_back(std::move(f));
    return true;
  });
  if (!walked.ok()) {
    // outputs/ itself replaced by a link or a file: nothing in it is the run's to record.
    if (walked.code() != StatusCode::kInvalidArgument) return walked;
    if (skipped != nullptr) skipped->push_back(walked.message());
  }

  std::vector<Status> errors(files.size());
  cas::internal::ParallelFor(files.size(), [&](size_t i) {
    RunFile& f = files[i];
    struct stat st {};
    auto fd = root->OpenFile(f.path, &st);
    if (!fd.ok()) {
      errors[i] = fd.status();
      return true;
    }
    auto hex = Sha256Fd(fd->get(), f.path);
    if (!hex.ok()) {
      errors[i] = hex.status();
      return true;
    }
    f.size = static_cast<std::uint64_t>(st.st_size);
    f.digest = DigestOfHex(*hex);
    return true;
  });
  std::vector<RunFile> recorded;
  recorded.reserve(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    if (errors[i].ok()) {
      recorded.push_back(std::move(files[i]));
    } else if (skipped != nullptr) {
      skipped->push_back(files[i].path + ": " + errors[i].message());
    }
  }
  TY_RETURN_IF_ERROR(store.RecordFiles(run_id, recorded, now_ms));
  return recorded;
}

}  // namespace trainyard::tracking
