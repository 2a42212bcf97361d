#include "trainyard/cli/snapshot_commands.h"

#include <dirent.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_set>

#include "trainyard/cas/manifest.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/cli/format.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::cli {
namespace {

using json = nlohmann::json;

constexpr size_t kIdLength = 64;
constexpr size_t kMinPrefix = 6;
constexpr size_t kShortId = 12;
constexpr size_t kPreviewTopFiles = 20;

bool IsHexLower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

std::int64_t MillisOf(const struct timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

// One file found by a directory scan: its name and lstat data.
struct FileInfo {
  std::string name;
  struct timespec mtime {};
  // Status change time. For objects this is their age: it is set when an object is renamed
  // into place (or linked, or re-sealed) and cannot be set back, whereas every published object
  // carries the same fixed mtime (its seal, cas::kSealedMtime).
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
    if (::lstat((dir / name).c_str(), &st) != 0) {
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

// A manifest file in the snapshots folder.
struct ManifestFile {
  std::string id;
  struct timespec mtime {};
  std::uint64_t size = 0;
};

bool IsManifestName(const std::string& name) {
  return name.size() == kIdLength + 5 && EndsWith(name, ".json") &&
         IsSha256Hex(std::string_view(name).substr(0, kIdLength));
}

// The manifests of the workspace, by id.
StatusOr<std::map<std::string, ManifestFile>> ListManifests(const WorkspaceLayout& layout) {
  TY_ASSIGN_OR_RETURN(std::vector<FileInfo> files, ScanDir(layout.SnapshotsDir()));
  std::map<std::string, ManifestFile> out;
  for (FileInfo& f : files) {
    if (!f.regular || !IsManifestName(f.name)) continue;
    std::string id = f.name.substr(0, kIdLength);
    out[id] = ManifestFile{id, f.mtime, f.size};
  }
  return out;
}

// Every maximal run of exactly 64 lower-case hex digits in `text` (snapshot ids in JSON).
void CollectIds(std::string_view text, std::set<std::string>* ids) {
  size_t i = 0;
  while (i < text.size()) {
    if (!IsHexLower(text[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && IsHexLower(text[j])) ++j;
    if (j - i == kIdLength) ids->insert(std::string(text.substr(i, kIdLength)));
    i = j;
  }
}

// Who refers to each snapshot id.
struct References {
  std::map<std::string, std::uint64_t> runs;
  std::map<std::string, std::uint64_t> environments;

  bool Has(const std::string& id) const { return runs.count(id) > 0 || environments.count(id) > 0; }
};

// Runs `sql` on `db`, calling `row` for each result row. A table that does not exist yet (a
// database the daemon has not migrated) gives no rows.
Status QueryRows(sqlite3* db, const fs::path& path, const char* sql,
                 const std::function<void(sqlite3_stmt*)>& row) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) != SQLITE_OK) {
    std::string msg = sqlite3_errmsg(db);
    sqlite3_finalize(stmt);
    if (StartsWith(msg, "no such table")) return Status::Ok();
    return Internal("cannot read the workspace database " + path.string() + ": " + msg);
  }
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) row(stmt);
  std::string msg = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) {
    return Internal("cannot read the workspace database " + path.string() + ": " + msg);
  }
  return Status::Ok();
}

std::string_view Column(sqlite3_stmt* stmt, int i) {
  const unsigned char* p = sqlite3_column_text(stmt, i);
  if (p == nullptr) return {};
  return {reinterpret_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(stmt, i))};
}

// Reads the snapshot references from the workspace database, read-only (never creating it or
// changing its schema, so this is safe beside a running daemon). A missing database has none.
// A run refers to its code snapshot and to any snapshot id in its request (an inline
// environment's build context); an environment to any snapshot id in its definition.
StatusOr<References> ReadReferences(const WorkspaceLayout& layout) {
  References refs;
  const fs::path path = layout.Database();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) return refs;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> db(raw, sqlite3_close_v2);
  if (rc != SQLITE_OK) {
    return Internal("cannot open the workspace database " + path.string() + ": " +
                    (raw ? sqlite3_errmsg(raw) : "out of memory"));
  }
  sqlite3_busy_timeout(db.get(), 10000);
  TY_RETURN_IF_ERROR(
      QueryRows(db.get(), path, "SELECT snapshot_id, request_json FROM runs", [&](sqlite3_stmt* s) {
        std::set<std::string> ids;
        CollectIds(Column(s, 0), &ids);
        CollectIds(Column(s, 1), &ids);
        for (const std::string& id : ids) ++refs.runs[id];
      }));
  TY_RETURN_IF_ERROR(
      QueryRows(db.get(), path, "SELECT definition_json FROM environments", [&](sqlite3_stmt* s) {
        std::set<std::string> ids;
        CollectIds(Column(s, 0), &ids);
        for (const std::string& id : ids) ++refs.environments[id];
      }));
  return refs;
}

struct Store {
  explicit Store(const WorkspaceLayout& layout)
      : objects(layout.ObjectsDir()), snapshots(objects, layout.SnapshotsDir()) {}
  cas::ObjectStore objects;
  cas::Snapshotter snapshots;
};

std::string ModeString(const cas::ManifestEntry& e) {
  if (e.type == cas::ManifestEntry::Type::kSymlink) return "link";
  return e.mode == 0755 ? "0755" : "0644";
}

json EntryJson(const cas::ManifestEntry& e) {
  json j{{"path", cas::PrintablePath(e.path)},
         {"type", e.type == cas::ManifestEntry::Type::kSymlink ? "symlink" : "file"}};
  if (e.type == cas::ManifestEntry::Type::kSymlink) {
    j["target"] = cas::PrintablePath(e.link_target);
  } else {
    j["mode"] = ModeString(e);
    j["size"] = e.size;
    if (!e.digest.empty()) j["digest"] = e.digest;
  }
  return j;
}

std::string Plural(std::uint64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

bool Younger(const struct timespec& mtime, const struct timespec& cutoff) {
  return mtime.tv_sec > cutoff.tv_sec ||
         (mtime.tv_sec == cutoff.tv_sec && mtime.tv_nsec > cutoff.tv_nsec);
}

// When an object file was last stored. A sealed object (mtime cas::kSealedMtime, as every
// object gets when published) is dated by its ctime, set when it was renamed into place (or
// later linked or re-sealed), which nothing can set back. An unsealed one (published before
// objects were sealed, or written to since) is dated by its mtime, as before sealing.
struct timespec ObjectAge(const FileInfo& f) {
  const bool sealed =
      f.mtime.tv_sec == static_cast<time_t>(cas::kSealedMtime) && f.mtime.tv_nsec == 0;
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
Status MarkLive(const cas::Snapshotter& snapshots, const std::vector<std::string>& ids,
                std::unordered_set<std::string>* live) {
  for (const std::string& id : ids) {
    StatusOr<cas::Manifest> m = snapshots.Load(id);
    if (!m.ok()) {
      if (m.status().code() == StatusCode::kNotFound) continue;
      return Internal("cannot read snapshot manifest " + id + " (" + m.status().message() +
                      "); no objects were removed, since its objects would look unreferenced");
    }
    for (const cas::ManifestEntry& e : m->entries) {
      if (!e.digest.empty()) live->insert(e.digest);
    }
  }
  return Status::Ok();
}

// An object file under cas/sha256.
struct ObjectFile {
  std::string digest;
  fs::path path;
  std::uint64_t size = 0;
};

}  // namespace

StatusOr<std::string> ResolveSnapshotId(const WorkspaceLayout& layout,
                                        const std::string& id_or_prefix) {
  std::string prefix = id_or_prefix;
  std::transform(prefix.begin(), prefix.end(), prefix.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (prefix.size() < kMinPrefix || prefix.size() > kIdLength ||
      !std::all_of(prefix.begin(), prefix.end(), IsHexLower)) {
    return InvalidArgument("'" + cas::PrintablePath(id_or_prefix) +
                           "' is not a snapshot id: give the id or a prefix of at least " +
                           std::to_string(kMinPrefix) + " hex digits");
  }
  TY_ASSIGN_OR_RETURN(auto manifests, ListManifests(layout));
  std::vector<std::string> matches;
  for (auto it = manifests.lower_bound(prefix);
       it != manifests.end() && StartsWith(it->first, prefix); ++it) {
    matches.push_back(it->first);
  }
  if (matches.empty()) {
    return NotFound("no snapshot matches '" + prefix + "' in " + layout.SnapshotsDir().string());
  }
  if (matches.size() > 1) {
    std::string msg = "snapshot prefix '" + prefix + "' is ambiguous; it matches " +
                      std::to_string(matches.size()) + " snapshots:";
    for (size_t i = 0; i < matches.size() && i < 10; ++i) msg += " " + matches[i];
    if (matches.size() > 10) msg += " ...";
    return InvalidArgument(msg + " (give more digits)");
  }
  return matches.front();
}

Status SnapshotPreview(const WorkspaceLayout& layout, const std::string& dir,
                       const std::string& output) {
  TY_ASSIGN_OR_RETURN(WorkspaceConfig cfg, LoadWorkspaceConfig(layout));
  cas::SnapshotLimits limits;
  limits.max_bytes = cfg.snapshot_max_bytes;
  limits.max_files = cfg.snapshot_max_files;
  Store store(layout);
  const fs::path source = fs::absolute(dir.empty() ? fs::path(".") : fs::path(dir));
  TY_ASSIGN_OR_RETURN(cas::SnapshotResult r, store.snapshots.Preview(source, limits));

  // Files largest first (then by path), symlinks after them.
  std::vector<const cas::ManifestEntry*> entries;
  for (const cas::ManifestEntry& e : r.manifest.entries) entries.push_back(&e);
  std::stable_sort(entries.begin(), entries.end(), [](const auto* a, const auto* b) {
    bool al = a->type == cas::ManifestEntry::Type::kSymlink;
    bool bl = b->type == cas::ManifestEntry::Type::kSymlink;
    if (al != bl) return bl;
    return a->size > b->size;
  });

  if (output == "json") {
    json files = json::array();
    for (const auto* e : entries) files.push_back(EntryJson(*e));
    json ignored = json::array();
    for (const cas::IgnoredPath& p : r.ignored) {
      ignored.push_back(
          {{"path", cas::PrintablePath(p.path)}, {"is_dir", p.is_dir}, {"rule", p.rule}});
    }
    json skipped = json::array();
    for (const std::string& s : r.skipped) skipped.push_back(cas::PrintablePath(s));
    PrintJson({{"dir", source.lexically_normal().string()},
               {"file_count", r.file_count},
               {"total_bytes", r.total_bytes},
               {"limits", {{"max_files", limits.max_files}, {"max_bytes", limits.max_bytes}}},
               {"over_limit", !r.over_limit.empty()},
               {"over_limit_message", r.over_limit},
               {"files", files},
               {"ignored", ignored},
               {"skipped", skipped}});
    return Status::Ok();
  }

  std::cout << "Snapshot preview of " << source.lexically_normal().string() << "\n"
            << "  Would include: " << Plural(r.file_count, "file", "files") << ", "
            << FormatBytes(r.total_bytes) << "\n"
            << "  Limits:        " << limits.max_files << " files, "
            << FormatBytes(limits.max_bytes) << " (workspace.json: snapshot_max_files, "
            << "snapshot_max_bytes)\n";
  if (r.over_limit.empty()) {
    std::cout << "  Within the limits.\n";
  } else {
    std::cout << "  OVER THE LIMIT: " << r.over_limit << "\n";
  }
  if (!entries.empty()) {
    std::cout << "\nIncluded, largest first:\n";
    std::vector<std::vector<std::string>> rows;
    std::uint64_t rest_bytes = 0;
    for (size_t i = 0; i < entries.size(); ++i) {
      const cas::ManifestEntry& e = *entries[i];
      if (i >= kPreviewTopFiles) {
        rest_bytes += e.size;
        continue;
      }
      bool link = e.type == cas::ManifestEntry::Type::kSymlink;
      rows.push_back(
          {"  " + (link ? std::string("link") : FormatBytes(e.size)),
           cas::PrintablePath(e.path) + (link ? " -> " + cas::PrintablePath(e.link_target) : "")});
    }
    std::cout << RenderTable({"  SIZE", "PATH"}, rows);
    if (entries.size() > kPreviewTopFiles) {
      std::cout << "  ... and "
                << Plural(entries.size() - kPreviewTopFiles, "more entry", "more entries") << " ("
                << FormatBytes(rest_bytes) << ")\n";
    }
  }
  if (!r.ignored.empty()) {
    std::cout << "\nIgnored (" << r.ignored.size() << "):\n";
    std::vector<std::vector<std::string>> rows;
    for (const cas::IgnoredPath& p : r.ignored) {
      rows.push_back({"  " + cas::PrintablePath(p.path) + (p.is_dir ? "/" : ""), p.rule});
    }
    std::cout << RenderTable({"  PATH", "RULE"}, rows);
  }
  if (!r.skipped.empty()) {
    std::cout << "\nSkipped special files (" << r.skipped.size() << "):\n";
    for (const std::string& s : r.skipped) std::cout << "  " << cas::PrintablePath(s) << "\n";
  }
  return Status::Ok();
}

Status SnapshotList(const WorkspaceLayout& layout, const std::string& output) {
  TY_ASSIGN_OR_RETURN(auto manifests, ListManifests(layout));
  TY_ASSIGN_OR_RETURN(References refs, ReadReferences(layout));
  Store store(layout);
  std::vector<const ManifestFile*> order;
  for (const auto& [id, f] : manifests) order.push_back(&f);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return MillisOf(a->mtime) > MillisOf(b->mtime);
  });
  json list = json::array();
  std::vector<std::vector<std::string>> rows;
  for (const ManifestFile* f : order) {
    json j{{"id", f->id},
           {"created_at", FormatTimeIso(MillisOf(f->mtime))},
           {"runs", refs.runs.count(f->id) ? refs.runs.at(f->id) : 0},
           {"environments", refs.environments.count(f->id) ? refs.environments.at(f->id) : 0}};
    StatusOr<cas::Manifest> m = store.snapshots.Load(f->id);
    if (m.ok()) {
      j["file_count"] = m->entries.size();
      j["total_bytes"] = m->TotalBytes();
    } else {
      j["error"] = m.status().message();
    }
    rows.push_back({f->id.substr(0, kShortId), m.ok() ? std::to_string(m->entries.size()) : "?",
                    m.ok() ? FormatBytes(m->TotalBytes()) : "unreadable",
                    FormatTimeIso(MillisOf(f->mtime)).substr(0, 19),
                    std::to_string(j["runs"].get<std::uint64_t>()),
                    std::to_string(j["environments"].get<std::uint64_t>())});
    list.push_back(std::move(j));
  }
  if (output == "json") {
    PrintJson(list);
  } else if (rows.empty()) {
    std::cout << "No snapshots in " << layout.SnapshotsDir().string() << "\n";
  } else {
    std::cout << RenderTable({"ID", "FILES", "SIZE", "CREATED", "RUNS", "ENVS"}, rows);
  }
  return Status::Ok();
}

Status SnapshotShow(const WorkspaceLayout& layout, const std::string& id_or_prefix,
                    const std::string& output) {
  TY_ASSIGN_OR_RETURN(std::string id, ResolveSnapshotId(layout, id_or_prefix));
  Store store(layout);
  TY_ASSIGN_OR_RETURN(cas::Manifest m, store.snapshots.Load(id));
  struct stat st {};
  std::string created;
  if (::stat((layout.SnapshotsDir() / (id + ".json")).c_str(), &st) == 0) {
    created = FormatTimeIso(MillisOf(st.st_mtim));
  }
  if (output == "json") {
    json entries = json::array();
    for (const cas::ManifestEntry& e : m.entries) entries.push_back(EntryJson(e));
    PrintJson({{"id", id},
               {"created_at", created},
               {"file_count", m.entries.size()},
               {"total_bytes", m.TotalBytes()},
               {"entries", entries}});
    return Status::Ok();
  }
  std::cout << "Snapshot: " << id << "\n"
            << "Created:  " << created << "\n"
            << "Files:    " << m.entries.size() << " (" << FormatBytes(m.TotalBytes()) << ")\n\n";
  std::vector<std::vector<std::string>> rows;
  for (const cas::ManifestEntry& e : m.entries) {
    bool link = e.type == cas::ManifestEntry::Type::kSymlink;
    rows.push_back({ModeString(e), link ? "" : FormatBytes(e.size),
                    link ? "-> " + cas::PrintablePath(e.link_target) : e.digest.substr(0, kShortId),
                    cas::PrintablePath(e.path)});
  }
  std::cout << RenderTable({"MODE", "SIZE", "DIGEST", "PATH"}, rows);
  return Status::Ok();
}

Status SnapshotDownload(const WorkspaceLayout& layout, const std::string& id_or_prefix,
                        const std::string& dest) {
  TY_ASSIGN_OR_RETURN(std::string id, ResolveSnapshotId(layout, id_or_prefix));
  Store store(layout);
  TY_ASSIGN_OR_RETURN(cas::Manifest m, store.snapshots.Load(id));
  const fs::path target = fs::absolute(dest).lexically_normal();
  TY_RETURN_IF_ERROR(store.snapshots.Materialize(id, target));
  std::cout << "Downloaded snapshot " << id.substr(0, kShortId) << " ("
            << Plural(m.entries.size(), "file", "files") << ", " << FormatBytes(m.TotalBytes())
            << ") to " << target.string() << "\n";
  return Status::Ok();
}

StatusOr<GcReport> CollectGarbage(const WorkspaceLayout& layout, const GcOptions& options) {
  if (options.keep_newer_than_seconds < 0) {
    return InvalidArgument("--keep-newer-than must be 0 or more seconds");
  }
  struct timespec cutoff {};
  ::clock_gettime(CLOCK_REALTIME, &cutoff);
  cutoff.tv_sec -= static_cast<time_t>(options.keep_newer_than_seconds);

  GcReport report;
  Store store(layout);
  // References first: a manifest written after this read is young, so it is kept either way.
  TY_ASSIGN_OR_RETURN(References refs, ReadReferences(layout));
  TY_ASSIGN_OR_RETURN(auto manifests, ListManifests(layout));

  // 1. Manifests.
  std::vector<std::string> kept_ids;
  for (const auto& [id, f] : manifests) {
    if (refs.Has(id)) {
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
  TY_RETURN_IF_ERROR(MarkLive(store.snapshots, kept_ids, &live));
  if (!options.dry_run) {
    std::vector<std::string> removed;
    for (const std::string& id : report.removed_snapshots) {
      TY_ASSIGN_OR_RETURN(bool gone, RemoveFile(layout.SnapshotsDir() / (id + ".json")));
      if (gone) {
        removed.push_back(id);
      } else {
        report.removed_snapshot_bytes -= manifests.at(id).size;  // Another gc was first.
      }
    }
    report.removed_snapshots = std::move(removed);
    // Manifests written since the first listing mark their objects too.
    TY_ASSIGN_OR_RETURN(auto now_present, ListManifests(layout));
    std::vector<std::string> fresh;
    for (const auto& [id, f] : now_present) {
      if (manifests.count(id) == 0) fresh.push_back(id);
    }
    TY_RETURN_IF_ERROR(MarkLive(store.snapshots, fresh, &live));
    manifests = std::move(now_present);
  }

  // 2. Objects.
  const fs::path objects_dir = layout.ObjectsDir() / "sha256";
  TY_ASSIGN_OR_RETURN(std::vector<FileInfo> fanout, ScanDir(objects_dir));
  std::vector<ObjectFile> dead;
  for (const FileInfo& d : fanout) {
    if (d.name.size() != 2 || !IsHexLower(d.name[0]) || !IsHexLower(d.name[1])) continue;
    TY_ASSIGN_OR_RETURN(std::vector<FileInfo> files, ScanDir(objects_dir / d.name));
    for (const FileInfo& f : files) {
      std::string digest = d.name + f.name;
      if (!f.regular || !IsSha256Hex(digest)) continue;
      if (live.count(digest) > 0) {
        ++report.kept_objects;
      } else if (Younger(ObjectAge(f), cutoff)) {
        ++report.kept_objects;
        ++report.kept_young_objects;
      } else {
        dead.push_back({std::move(digest), objects_dir / d.name / f.name, f.size});
      }
    }
  }
  if (!options.dry_run && !dead.empty()) {
    // One more look for manifests written during the sweep, just before removing.
    TY_ASSIGN_OR_RETURN(auto now_present, ListManifests(layout));
    std::vector<std::string> fresh;
    for (const auto& [id, f] : now_present) {
      if (manifests.count(id) == 0) fresh.push_back(id);
    }
    TY_RETURN_IF_ERROR(MarkLive(store.snapshots, fresh, &live));
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

  // 3. Temp files left by crashed writers: cas/tmp/* and snapshots/<id>.json.tmp.*.
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
  TY_RETURN_IF_ERROR(sweep_temps(layout.ObjectsDir() / "tmp", /*all=*/true));
  TY_RETURN_IF_ERROR(sweep_temps(layout.SnapshotsDir(), /*all=*/false));
  return report;
}

Status SnapshotGc(const WorkspaceLayout& layout, const GcOptions& options,
                  const std::string& output) {
  TY_ASSIGN_OR_RETURN(GcReport r, CollectGarbage(layout, options));
  if (output == "json") {
    PrintJson({{"dry_run", options.dry_run},
               {"keep_newer_than_seconds", options.keep_newer_than_seconds},
               {"removed_snapshots", r.removed_snapshots},
               {"removed_snapshot_bytes", r.removed_snapshot_bytes},
               {"removed_objects", r.removed_objects},
               {"removed_object_bytes", r.removed_object_bytes},
               {"removed_temp_files", r.removed_temp_files},
               {"removed_temp_bytes", r.removed_temp_bytes},
               {"kept_snapshots", r.kept_snapshots},
               {"kept_young_snapshots", r.kept_young_snapshots},
               {"kept_objects", r.kept_objects},
               {"kept_young_objects", r.kept_young_objects}});
    return Status::Ok();
  }
  const char* verb = options.dry_run ? "Would remove" : "Removed";
  std::cout << verb << " " << Plural(r.removed_snapshots.size(), "snapshot", "snapshots") << " ("
            << FormatBytes(r.removed_snapshot_bytes) << "), "
            << Plural(r.removed_objects, "object", "objects") << " ("
            << FormatBytes(r.removed_object_bytes) << "), "
            << Plural(r.removed_temp_files, "temp file", "temp files") << " ("
            << FormatBytes(r.removed_temp_bytes) << ")\n";
  for (const std::string& id : r.removed_snapshots) {
    std::cout << "  " << (options.dry_run ? "would remove" : "removed") << " snapshot " << id
              << "\n";
  }
  std::cout << "Kept " << Plural(r.kept_snapshots, "snapshot", "snapshots") << " and "
            << Plural(r.kept_objects, "object", "objects");
  if (r.kept_young_snapshots + r.kept_young_objects > 0) {
    std::cout << " (" << r.kept_young_snapshots << " unreferenced snapshots and "
              << r.kept_young_objects << " unreferenced objects are newer than "
              << options.keep_newer_than_seconds << " s)";
  }
  std::cout << "\n";
  return Status::Ok();
}

}  // namespace trainyard::cli
