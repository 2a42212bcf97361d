#include "trainyard/cli/snapshot_commands.h"

#include <dirent.h>
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

#include "trainyard/cas/gc.h"
#include "trainyard/cas/manifest.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/cli/command.h"
#include "trainyard/cli/format.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"
#include "trainyard/store/snapshot_references.h"

namespace trainyard::cli {
namespace {

using json = nlohmann::json;

constexpr size_t kIdLength = 64;
constexpr size_t kMinPrefix = 6;
constexpr size_t kShortId = 12;
constexpr size_t kPreviewTopFiles = 20;

std::int64_t MillisOf(const struct timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
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

// Snapshots a folder into the workspace (uploading what a remote daemon lacks) and prints its id.
int SnapshotCreate(Session& s, const std::string& dir, const std::string& output) {
  auto snap = s.Snapshot(dir);
  if (!snap.ok()) return Fail(snap.status());
  if (output == "json") {
    json out = {{"id", snap->id}, {"files", snap->file_count}, {"bytes", snap->total_bytes}};
    std::cout << out.dump() << "\n";
  } else {
    std::cout << snap->id << "\n";
  }
  return 0;
}

}  // namespace

StatusOr<std::string> ResolveSnapshotId(const WorkspaceLayout& layout,
                                        const std::string& id_or_prefix) {
  std::string prefix = id_or_prefix;
  std::transform(prefix.begin(), prefix.end(), prefix.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (prefix.size() < kMinPrefix || prefix.size() > kIdLength ||
      !std::all_of(prefix.begin(), prefix.end(), IsLowerHexDigit)) {
    return InvalidArgument("'" + cas::PrintablePath(id_or_prefix) +
                           "' is not a snapshot id: give the id or a prefix of at least " +
                           std::to_string(kMinPrefix) + " hex digits");
  }
  TY_ASSIGN_OR_RETURN(auto manifests, cas::ListManifests(layout.SnapshotsDir()));
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
  TY_ASSIGN_OR_RETURN(auto manifests, cas::ListManifests(layout.SnapshotsDir()));
  TY_ASSIGN_OR_RETURN(store::SnapshotReferences refs,
                      store::ReadSnapshotReferences(layout.Database()));
  Store store(layout);
  std::vector<const cas::ManifestFile*> order;
  for (const auto& [id, f] : manifests) order.push_back(&f);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return MillisOf(a->mtime) > MillisOf(b->mtime);
  });
  json list = json::array();
  std::vector<std::vector<std::string>> rows;
  for (const cas::ManifestFile* f : order) {
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

StatusOr<cas::GcReport> CollectGarbage(const WorkspaceLayout& layout,
                                       const cas::GcOptions& options) {
  return cas::CollectGarbage(
      layout.ObjectsDir(), layout.SnapshotsDir(),
      [&]() -> StatusOr<std::set<std::string>> {
        TY_ASSIGN_OR_RETURN(store::SnapshotReferences refs,
                            store::ReadSnapshotReferences(layout.Database()));
        return refs.Ids();
      },
      options);
}

Status SnapshotGc(const WorkspaceLayout& layout, const cas::GcOptions& options,
                  const std::string& output) {
  TY_ASSIGN_OR_RETURN(cas::GcReport r, CollectGarbage(layout, options));
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

void AddSnapshotCommands(CommandLine& cl) {
  struct Options {
    std::string dir = ".", id, dest;
    cas::GcOptions gc;
  };
  auto o = std::make_shared<Options>();
  // These work on the workspace's files directly (no daemon needed), so on a local one only;
  // `preview` and `create` work anywhere.
  auto local = [](std::function<Status(const WorkspaceLayout&)> fn) {
    return [fn = std::move(fn)](Session& s) {
      if (s.target().remote()) {
        return Fail(FailedPrecondition(
            "snapshot commands work on a local workspace's files; this one is the remote "
            "daemon " +
            s.target().url + " (from " + s.target().found_by + ")"));
      }
      const Status st = fn(s.layout());
      return st.ok() ? 0 : Fail(st);
    };
  };
  auto* snapshot =
      cl.app.add_subcommand("snapshot", "Inspect, download and clean up source snapshots");
  snapshot->require_subcommand(1);
  auto* preview =
      snapshot->add_subcommand("preview", "What a snapshot of DIR would include and ignore");
  preview->add_option("dir", o->dir, "Folder to preview (default: .)");
  cl.AddOutput(preview);
  cl.Then(preview, [o, &cl](Session& s) {
    const Status st = SnapshotPreview(s.layout(), o->dir, cl.output);
    return st.ok() ? 0 : Fail(st);
  });
  auto* create = snapshot->add_subcommand(
      "create",
      "Snapshot DIR into the workspace (uploading what a remote daemon lacks); prints "
      "its id");
  create->add_option("dir", o->dir, "Folder to snapshot (default: .)");
  cl.AddOutput(create);
  cl.Then(create, [o, &cl](Session& s) { return SnapshotCreate(s, o->dir, cl.output); });
  auto* list = snapshot->add_subcommand("list", "List the workspace's snapshots");
  cl.AddOutput(list);
  cl.Then(list, local([&cl](const WorkspaceLayout& l) { return SnapshotList(l, cl.output); }));
  auto* show = snapshot->add_subcommand("show", "Show a snapshot's files");
  show->add_option("id", o->id, "Snapshot id or a unique prefix (6+ hex digits)")->required();
  cl.AddOutput(show);
  cl.Then(show,
          local([o, &cl](const WorkspaceLayout& l) { return SnapshotShow(l, o->id, cl.output); }));
  auto* download =
      snapshot->add_subcommand("download", "Write a snapshot's files into a new folder");
  download->add_option("id", o->id, "Snapshot id or a unique prefix (6+ hex digits)")->required();
  download->add_option("dir", o->dest, "Folder to create (must not exist or be empty)")->required();
  cl.Then(download,
          local([o](const WorkspaceLayout& l) { return SnapshotDownload(l, o->id, o->dest); }));
  auto* gc = snapshot->add_subcommand(
      "gc", "Remove snapshots no run or environment uses, and unreferenced objects");
  gc->add_flag("--dry-run", o->gc.dry_run, "Only report what would be removed");
  gc->add_option("--keep-newer-than", o->gc.keep_newer_than_seconds,
                 "Never remove anything modified less than this many seconds ago (default 3600)");
  cl.AddOutput(gc);
  cl.Then(gc,
          local([o, &cl](const WorkspaceLayout& l) { return SnapshotGc(l, o->gc, cl.output); }));
}

}  // namespace trainyard::cli
