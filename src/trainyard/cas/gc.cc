#include "trainyard/cas/gc.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <unordered_set>
#include <utility>

#include "trainyard/cas/manifest.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::cas {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kIdLength = 64;

// One file found by a directory scan: its name and lstat data.
struct FileInfo {
  std::string name;
  struct timespec mtime {};
  // Status change time. For objects this is their age: it is set when an object is renamed
  // into place (or linked, or re-sealed) and cannot be set back, whereas every published object
  // carries the same fixed mtime (its seal, kSealedMtime).
  struct timespec ctime {};
  std::uint64_t size = 0;
  bool regular = false;
};

// Lists the entries of `dir` (not recursive). A missing folder is empty.
StatusOr<std::vector<FileInfo>> ScanDir(const fs::path& dir) {
  std::vector<FileInfo> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return Internal("cannot list " + dir.string() + ": " + std::strerror(errno));
  }
  std::unique_ptr<DIR, int (*)(DIR*)> closer(d, ::closedir);
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(d);
    if (e == nullptr) {
      if (errno != 0) return Internal("cannot list " + dir.string() + ": " + std::strerror(errno));
      break;
    }
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // Removed meanwhile.
      return Internal("cannot stat " + (dir / name).string() + ": " + std::strerror(errno));
    }
    FileInfo f;
    f.name = std::move(name);
    f.mtime = st.st_mtim;
    f.ctime = st.st_ctim;
    f.size = static_cast<std::uint64_t>(st.st_size);
    f.regular = S_ISREG(st.st_mode);
    out.push_back(std::move(f));
  }
  return out;
}

bool IsManifestName(const std::string& name) {
  return name.size() == kIdLength + 5 && EndsWith(name, ".json") &&
         IsSha256Hex(std::string_view(name).substr(0, kIdLength));
}

bool Younger(const struct timespec& mtime, const struct timespec& cutoff) {
  return mtime.tv_sec > cutoff.tv_sec ||
         (mtime.tv_sec == cutoff.tv_sec && mtime.tv_nsec > cutoff.tv_nsec);
}

// When an object file was last stored. A sealed object (mtime kSealedMtime, as every object
// gets when published) is dated by its ctime, set when it was renamed into place (or later
// linked or re-sealed), which nothing can set back. An unsealed one (published before objects
// were sealed, or written to since) is dated by its mtime.
struct timespec ObjectAge(const FileInfo& f) {
  const bool sealed = f.mtime.tv_sec == static_cast<time_t>(kSealedMtime) && f.mtime.tv_nsec == 0;
  return sealed ? f.ctime : f.mtime;
}

// Removes a file; one that is already gone counts as removed by someone else (false).
StatusOr<bool> RemoveFile(const fs::path& path) {
  if (::unlink(path.c_str()) == 0) return true;
  if (errno == ENOENT) return false;
  return Internal("cannot remove " + path.string() + ": " + std::strerror(errno));
}

// The digests of the files of every manifest in `ids`, added to `live`. Manifests removed
// meanwhile are skipped; any other failure to read one is an error (its objects would look dead).
Status MarkLive(const Snapshotter& snapshots, const std::vector<std::string>& ids,
                std::unordered_set<std::string>* live) {
  for (const std::string& id : ids) {
    StatusOr<Manifest> m = snapshots.Load(id);
    if (!m.ok()) {
      if (m.status().code() == StatusCode::kNotFound) continue;
      return Internal("cannot read snapshot manifest " + id + " (" + m.status().message() +
                      "); no objects were removed, since its objects would look unreferenced");
    }
    for (const ManifestEntry& e : m->entries) {
      if (!e.digest.empty()) live->insert(e.digest);
    }
  }
  return Status::Ok();
}

// An object file under <objects>/sha256.
struct ObjectFile {
  std::string digest;
  fs::path path;
  std::uint64_t size = 0;
};

}  // namespace

StatusOr<std::map<std::string, ManifestFile>> ListManifests(const fs::path& snapshots_dir) {
  TY_ASSIGN_OR_RETURN(std::vector<FileInfo> files, ScanDir(snapshots_dir));
  std::map<std::string, ManifestFile> out;
  for (FileInfo& f : files) {
    if (!f.regular || !IsManifestName(f.name)) continue;
    std::string id = f.name.substr(0, kIdLength);
    out[id] = ManifestFile{id, f.mtime, f.size};
  }
  return out;
}

StatusOr<GcReport> CollectGarbage(const fs::path& objects_dir, const fs::path& snapshots_dir,
                                  const GcRoots& roots, const GcOptions& options) {
  if (options.keep_newer_than_seconds < 0) {
    return InvalidArgument("--keep-newer-than must be 0 or more seconds");
  }
  struct timespec cutoff {};
  ::clock_gettime(CLOCK_REALTIME, &cutoff);
  cutoff.tv_sec -= static_cast<time_t>(options.keep_newer_than_seconds);

  GcReport report;
  ObjectStore objects(objects_dir);
  Snapshotter snapshots(objects, snapshots_dir);
  // Roots first: a manifest written after this read is young, so it is kept either way.
  TY_ASSIGN_OR_RETURN(const std::set<std::string> referenced, roots());
  TY_ASSIGN_OR_RETURN(auto manifests, ListManifests(snapshots_dir));

  // 1. Manifests.
  std::vector<std::string> kept_ids;
  for (const auto& [id, f] : manifests) {
    if (referenced.count(id) > 0) {
      ++report.kept_snapshots;
      kept_ids.push_back(id);
    } else if (Younger(f.mtime, cutoff)) {
      ++report.kept_snapshots;
      ++report.kept_young_snapshots;
      kept_ids.push_back(id);
    } else {
      report.removed_snapshots.push_back(id);
      report.removed_snapshot_bytes += f.size;
    }
  }
  // Every manifest must be readable before anything is removed.
  std::unordered_set<std::string> live;
  TY_RETURN_IF_ERROR(MarkLive(snapshots, kept_ids, &live));
  // Manifests written since `seen` was listed mark their objects too.
  auto mark_new_manifests = [&](const std::map<std::string, ManifestFile>& seen)
      -> StatusOr<std::map<std::string, ManifestFile>> {
    TY_ASSIGN_OR_RETURN(auto now_present, ListManifests(snapshots_dir));
    std::vector<std::string> fresh;
    for (const auto& [id, f] : now_present) {
      if (seen.count(id) == 0) fresh.push_back(id);
    }
    TY_RETURN_IF_ERROR(MarkLive(snapshots, fresh, &live));
    return now_present;
  };
  if (!options.dry_run) {
    std::vector<std::string> removed;
    for (const std::string& id : report.removed_snapshots) {
      TY_ASSIGN_OR_RETURN(bool gone, RemoveFile(snapshots_dir / (id + ".json")));
      if (gone) {
        removed.push_back(id);
      } else {
        report.removed_snapshot_bytes -= manifests.at(id).size;  // Another gc was first.
      }
    }
    report.removed_snapshots = std::move(removed);
    TY_ASSIGN_OR_RETURN(manifests, mark_new_manifests(manifests));
  }

  // 2. Objects.
  const fs::path fanout_dir = objects_dir / "sha256";
  TY_ASSIGN_OR_RETURN(std::vector<FileInfo> fanout, ScanDir(fanout_dir));
  std::vector<ObjectFile> dead;
  for (const FileInfo& d : fanout) {
    if (d.name.size() != 2 || !IsLowerHexDigit(d.name[0]) || !IsLowerHexDigit(d.name[1])) continue;
    TY_ASSIGN_OR_RETURN(std::vector<FileInfo> files, ScanDir(fanout_dir / d.name));
    for (const FileInfo& f : files) {
      std::string digest = d.name + f.name;
      if (!f.regular || !IsSha256Hex(digest)) continue;
      if (live.count(digest) > 0) {
        ++report.kept_objects;
      } else if (Younger(ObjectAge(f), cutoff)) {
        ++report.kept_objects;
        ++report.kept_young_objects;
      } else {
        dead.push_back({std::move(digest), fanout_dir / d.name / f.name, f.size});
      }
    }
  }
  if (!options.dry_run && !dead.empty()) {
    // One more look for manifests written during the sweep, just before removing.
    TY_RETURN_IF_ERROR(mark_new_manifests(manifests).status());
  }
  for (const ObjectFile& o : dead) {
    if (live.count(o.digest) > 0) {
      ++report.kept_objects;
      continue;
    }
    if (!options.dry_run) {
      TY_ASSIGN_OR_RETURN(bool removed, RemoveFile(o.path));
      if (!removed) continue;
    }
    ++report.removed_objects;
    report.removed_object_bytes += o.size;
  }

  // 3. Temp files left by crashed writers: <objects>/tmp/* and <snapshots>/<id>.json.tmp.*.
  auto sweep_temps = [&](const fs::path& dir, bool all) -> Status {
    TY_ASSIGN_OR_RETURN(std::vector<FileInfo> files, ScanDir(dir));
    for (const FileInfo& f : files) {
      if (!f.regular || Younger(f.mtime, cutoff)) continue;
      if (!all && f.name.find(".json.tmp.") == std::string::npos) continue;
      if (!options.dry_run) {
        TY_ASSIGN_OR_RETURN(bool removed, RemoveFile(dir / f.name));
        if (!removed) continue;
      }
      ++report.removed_temp_files;
      report.removed_temp_bytes += f.size;
    }
    return Status::Ok();
  };
  TY_RETURN_IF_ERROR(sweep_temps(objects_dir / "tmp", /*all=*/true));
  TY_RETURN_IF_ERROR(sweep_temps(snapshots_dir, /*all=*/false));
  return report;
}

}  // namespace trainyard::cas
