#include "trainyard/tracking/run_files.h"

#include <sys/stat.h>

#include <algorithm>
#include <system_error>

#include "trainyard/cas/io.h"
#include "trainyard/common/sha256.h"

namespace trainyard::tracking {

namespace fs = std::filesystem;

std::string DigestOfHex(std::string_view hex) { return "sha256:" + std::string(hex); }

StatusOr<std::vector<RunFile>> CollectOutputs(SeriesStore& store, const std::string& run_id,
                                              const fs::path& run_dir, std::int64_t now_ms) {
  const fs::path outputs = run_dir / "outputs";
  std::error_code ec;
  const auto top = fs::symlink_status(outputs, ec);
  if (ec || !fs::is_directory(top)) return std::vector<RunFile>{};

  // The walk never enters a symlinked folder (the iterator does not follow them by default).
  std::vector<RunFile> files;
  for (auto it = fs::recursive_directory_iterator(outputs, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const auto st = it->symlink_status(ec);
    if (ec || !fs::is_regular_file(st)) continue;
    RunFile f;
    f.path = fs::relative(it->path(), run_dir, ec).generic_string();
    if (ec) break;
    f.origin = "output";
    f.recorded_ms = now_ms;
    files.push_back(std::move(f));
  }
  if (ec) return Internal("listing the outputs of run " + run_id + ": " + ec.message());
  std::sort(files.begin(), files.end(),
            [](const RunFile& a, const RunFile& b) { return a.path < b.path; });

  std::vector<Status> errors(files.size());
  cas::internal::ParallelFor(files.size(), [&](size_t i) {
    RunFile& f = files[i];
    cas::internal::ScopedFd fd;
    struct stat st {};
    // Opened without following a final symlink and never blocking on a FIFO swapped in.
    errors[i] = cas::internal::OpenSourceFile(run_dir / f.path, &fd, &st);
    if (!errors[i].ok()) return false;
    auto hex = Sha256Fd(fd.get(), f.path);
    if (!hex.ok()) {
      errors[i] = hex.status();
      return false;
    }
    f.size = static_cast<std::uint64_t>(st.st_size);
    f.digest = DigestOfHex(*hex);
    return true;
  });
  for (size_t i = 0; i < files.size(); ++i) {
    if (!errors[i].ok()) {
      return Status(errors[i].code(), "cannot collect output '" + files[i].path + "' of run " +
                                          run_id + ": " + errors[i].message());
    }
  }
  TY_RETURN_IF_ERROR(store.RecordFiles(run_id, files, now_ms));
  return files;
}

}  // namespace trainyard::tracking
