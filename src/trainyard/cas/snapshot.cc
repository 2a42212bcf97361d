#include "trainyard/cas/snapshot.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "trainyard/cas/io.h"
#include "trainyard/cas/stat_cache.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::cas {
namespace {

namespace fs = std::filesystem;
using internal::ErrnoError;
using internal::FileStat;
using internal::ParallelFor;
using internal::StatCache;
using internal::StatCacheEntry;

constexpr size_t kOffendersShown = 5;

// What a walk of the source folder found.
struct WalkedFile {
  std::string rel;
  std::uint64_t size = 0;
  std::uint32_t mode = 0644;
  FileStat stat;  // As seen by the walk (lstat), before the content is read.
};

struct Walk {
  fs::path root;  // Canonical.
  std::vector<WalkedFile> files;
  std::vector<ManifestEntry> links;
  std::vector<IgnoredPath> ignored;
  std::vector<std::string> skipped;
};

std::string JoinRel(const std::string& dir, std::string_view name) {
  return dir.empty() ? std::string(name) : dir + "/" + std::string(name);
}

const char* SpecialKind(mode_t mode) {
  if (S_ISFIFO(mode)) return "named pipe";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISCHR(mode)) return "character device";
  if (S_ISBLK(mode)) return "block device";
  return "special file";
}

StatusOr<std::string> ReadLink(const fs::path& path) {
  std::string buf(256, '\0');
  for (;;) {
    ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
    if (n < 0) return ErrnoError("cannot read symlink", path, errno);
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    buf.resize(buf.size() * 2);
  }
}

Status CheckLink(const Walk& walk, const fs::path& link_abs, const std::string& rel,
                 const std::string& target) {
  bool inside = SymlinkStaysInside(rel, target);
  if (inside) {
    // Follow the links on the way too (a link may lead through another one that climbs out).
    std::error_code ec;
    fs::path resolved = fs::weakly_canonical(link_abs.parent_path() / target, ec);
    if (!ec) inside = resolved == walk.root || IsWithin(walk.root, resolved);
  }
  if (inside) return Status::Ok();
  return InvalidArgument("symlink " + PrintablePath(rel) + " points to '" + PrintablePath(target) +
                         "', which is outside " + PrintablePath(walk.root.native()) +
                         ". A snapshot keeps only links that stay inside the folder: replace it "
                         "with a copy or a relative link inside the folder, or exclude it in " +
                         PrintablePath((walk.root / kAmlIgnoreName).native()) + ".");
}

Status WalkDir(const fs::path& dir_abs, const std::string& dir_rel, IgnoreRules& rules,
               Walk& walk) {
  TY_RETURN_IF_ERROR(AddIgnoreFileOf(dir_abs, dir_rel, rules));
  DIR* d = ::opendir(dir_abs.c_str());
  if (d == nullptr) return ErrnoError("cannot read folder", dir_abs, errno);
  std::vector<std::pair<std::string, struct stat>> entries;
  Status status;
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(d);
    if (e == nullptr) {
      if (errno != 0) status = ErrnoError("cannot read folder", dir_abs, errno);
      break;
    }
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      status = ErrnoError("cannot stat", dir_abs / e->d_name, errno);
      break;
    }
    entries.emplace_back(std::string(name), st);
  }
  ::closedir(d);
  TY_RETURN_IF_ERROR(status);
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });

  for (const auto& [name, st] : entries) {
    std::string rel = JoinRel(dir_rel, name);
    const bool is_dir = S_ISDIR(st.st_mode);
    IgnoreRules::Match m = rules.MatchEntry(rel, is_dir);
    if (m.ignored) {
      walk.ignored.push_back({std::move(rel), is_dir, m.Describe()});
      continue;
    }
    const fs::path abs = dir_abs / name;
    if (is_dir) {
      TY_RETURN_IF_ERROR(WalkDir(abs, rel, rules, walk));
    } else if (S_ISREG(st.st_mode)) {
      walk.files.push_back({std::move(rel), static_cast<std::uint64_t>(st.st_size),
                            (st.st_mode & S_IXUSR) != 0 ? 0755u : 0644u, FileStat::Of(st)});
    } else if (S_ISLNK(st.st_mode)) {
      TY_ASSIGN_OR_RETURN(std::string target, ReadLink(abs));
      TY_RETURN_IF_ERROR(CheckLink(walk, abs, rel, target));
      ManifestEntry link;
      link.path = std::move(rel);
      link.type = ManifestEntry::Type::kSymlink;
      link.mode = 0;
      link.link_target = std::move(target);
      walk.links.push_back(std::move(link));
    } else {
      walk.skipped.push_back(rel + " (" + SpecialKind(st.st_mode) + ")");
    }
  }
  return Status::Ok();
}

StatusOr<Walk> WalkTree(const fs::path& source_dir) {
  std::error_code ec;
  fs::path root = fs::canonical(source_dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) {
      return NotFound("source folder " + PrintablePath(source_dir.native()) + " does not exist");
    }
    return Internal("cannot resolve source folder " + PrintablePath(source_dir.native()) + ": " +
                    ec.message());
  }
  if (!fs::is_directory(root, ec)) {
    return InvalidArgument(PrintablePath(source_dir.native()) + " is not a folder");
  }
  Walk walk;
  walk.root = root;
  IgnoreRules rules;
  TY_RETURN_IF_ERROR(WalkDir(root, "", rules, walk));
  return walk;
}

std::string PlainCount(std::uint64_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

// The ignore file a person should edit at the root, as advice text.
std::string IgnoreFileAdvice(const fs::path& root) {
  struct stat st {};
  const fs::path aml = root / kAmlIgnoreName;
  const fs::path git = root / kGitIgnoreName;
  if (::lstat(aml.c_str(), &st) == 0) return PrintablePath(aml.native());
  if (::lstat(git.c_str(), &st) == 0) {
    return PrintablePath(git.native()) + " (or in a new " + PrintablePath(aml.native()) +
           ", which then replaces .gitignore in that folder)";
  }
  return PrintablePath(aml.native());
}

// The limits error for a walk, or nullopt when within the limits.
std::optional<std::string> LimitProblem(const Walk& walk, const SnapshotLimits& limits) {
  const std::uint64_t count = walk.files.size() + walk.links.size();
  std::uint64_t bytes = 0;
  for (const WalkedFile& f : walk.files) bytes += f.size;
  const bool too_many = count > limits.max_files;
  const bool too_big = bytes > limits.max_bytes;
  if (!too_many && !too_big) return std::nullopt;

  // Totals per folder, counting everything below it.
  struct Totals {
    std::uint64_t bytes = 0;
    std::uint64_t files = 0;
  };
  std::map<std::string, Totals> folders;
  auto add = [&](const std::string& rel, std::uint64_t size) {
    for (size_t slash = rel.find('/'); slash != std::string::npos;
         slash = rel.find('/', slash + 1)) {
      Totals& t = folders[rel.substr(0, slash)];
      t.bytes += size;
      t.files += 1;
    }
  };
  for (const WalkedFile& f : walk.files) add(f.rel, f.size);
  for (const ManifestEntry& l : walk.links) add(l.path, 0);
  // Rank by what is over the limit: bytes when too big, else the file count.
  auto metric = [&](const Totals& t) { return too_big ? t.bytes : t.files; };

  // A folder that is mostly one subfolder is better described by that subfolder.
  std::map<std::string, std::uint64_t> largest_child;
  for (const auto& [path, t] : folders) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) continue;
    std::uint64_t& c = largest_child[path.substr(0, slash)];
    c = std::max(c, metric(t));
  }
  std::vector<std::pair<std::string, Totals>> candidates;
  for (const auto& [path, t] : folders) {
    const std::uint64_t m = metric(t);
    if (m == 0) continue;
    auto it = largest_child.find(path);
    if (it != largest_child.end() && it->second * 10 >= m * 8) continue;
    candidates.emplace_back(path, t);
  }
  std::sort(candidates.begin(), candidates.end(), [&](const auto& a, const auto& b) {
    if (metric(a.second) != metric(b.second)) return metric(a.second) > metric(b.second);
    return a.first < b.first;
  });
  std::vector<std::pair<std::string, Totals>> picked;
  for (const auto& c : candidates) {
    if (picked.size() == kOffendersShown) break;
    bool covered = std::any_of(picked.begin(), picked.end(), [&](const auto& p) {
      return c.first.size() > p.first.size() && c.first.compare(0, p.first.size(), p.first) == 0 &&
             c.first[p.first.size()] == '/';
    });
    if (!covered) picked.push_back(c);
  }

  std::vector<const WalkedFile*> largest_files;
  for (const WalkedFile& f : walk.files) largest_files.push_back(&f);
  const size_t nfiles = std::min(kOffendersShown, largest_files.size());
  std::partial_sort(largest_files.begin(), largest_files.begin() + static_cast<long>(nfiles),
                    largest_files.end(), [](const WalkedFile* a, const WalkedFile* b) {
                      if (a->size != b->size) return a->size > b->size;
                      return a->rel < b->rel;
                    });
  largest_files.resize(nfiles);

  std::string msg = "snapshot of " + PrintablePath(walk.root.native()) +
                    " is too large: " + PlainCount(count, "file", "files");
  if (too_many) msg += " (limit " + std::to_string(limits.max_files) + ")";
  msg += ", " + FormatBytes(bytes);
  if (too_big) msg += " (limit " + FormatBytes(limits.max_bytes) + ")";
  msg += ".";
  if (!picked.empty()) {
    msg += " Largest folders: ";
    for (size_t i = 0; i < picked.size(); ++i) {
      if (i > 0) msg += ", ";
      msg += PrintablePath(picked[i].first) + "/ " + FormatBytes(picked[i].second.bytes) + " in " +
             PlainCount(picked[i].second.files, "file", "files");
    }
    msg += ";";
  }
  if (!largest_files.empty()) {
    msg += picked.empty() ? " Largest files: " : " largest files: ";
    for (size_t i = 0; i < largest_files.size(); ++i) {
      if (i > 0) msg += ", ";
      msg += PrintablePath(largest_files[i]->rel) + " " + FormatBytes(largest_files[i]->size);
    }
    msg += ".";
  }
  std::string example = !picked.empty()          ? picked[0].first + "/"
                        : !largest_files.empty() ? largest_files[0]->rel
                                                 : std::string("*.bin");
  msg += " Exclude them with lines such as '" + PrintablePath(example) + "' in " +
         IgnoreFileAdvice(walk.root) + ", or raise the limit.";
  return msg;
}

void SortEntries(Manifest& m) {
  std::sort(m.entries.begin(), m.entries.end(),
            [](const ManifestEntry& a, const ManifestEntry& b) { return a.path < b.path; });
}

SnapshotResult ResultFromWalk(Walk& walk) {
  SnapshotResult r;
  r.ignored = std::move(walk.ignored);
  r.skipped = std::move(walk.skipped);
  return r;
}

Status CheckId(const std::string& id) {
  if (!IsSha256Hex(id)) {
    return InvalidArgument("'" + id + "' is not a snapshot id (64 lower-case hex digits)");
  }
  return Status::Ok();
}

}  // namespace

Snapshotter::Snapshotter(ObjectStore& objects, std::filesystem::path snapshots_dir,
                         std::filesystem::path stat_cache_dir)
    : objects_(objects),
      snapshots_dir_(std::move(snapshots_dir)),
      stat_cache_dir_(std::move(stat_cache_dir)) {}

StatusOr<SnapshotResult> Snapshotter::Snapshot(const std::filesystem::path& source_dir,
                                               const SnapshotLimits& limits) {
  // The cache is loaded, and whether its objects are still in the store checked, on another
  // thread while the folder is walked (both are mostly stat calls).
  const bool use_cache = !stat_cache_dir_.empty();
  StatCache cache;
  fs::path cache_root;
  std::vector<std::string> known;  // Digests of the cache, sorted.
  std::vector<bool> known_present;
  std::jthread loader;  // Declared after what it uses, so joined before they are destroyed.
  if (use_cache) {
    std::error_code ec;
    cache_root = fs::canonical(source_dir, ec);
    if (!ec) {
      loader = std::jthread([this, &cache, &cache_root, &known, &known_present] {
        cache = StatCache::Load(stat_cache_dir_, cache_root);
        known = cache.Digests();
        known_present = objects_.HasEach(known);
      });
    }
  }
  TY_ASSIGN_OR_RETURN(Walk walk, WalkTree(source_dir));
  if (std::optional<std::string> problem = LimitProblem(walk, limits)) {
    return InvalidArgument(std::move(*problem));
  }
  if (loader.joinable()) loader.join();
  if (walk.root != cache_root) cache = StatCache();  // Renamed meanwhile: start afresh.

  const size_t n = walk.files.size();

  // Digests known from the cache (their objects checked once per distinct digest); the other
  // files are read.
  std::vector<std::string> digests(n);
  std::vector<std::uint64_t> sizes(n);
  std::vector<size_t> to_read;
  std::vector<size_t> cached;  // Files with a cache hit, pending the object check.
  for (size_t i = 0; i < n; ++i) {
    const WalkedFile& f = walk.files[i];
    const std::string* digest = use_cache ? cache.Lookup(f.rel, f.stat) : nullptr;
    if (digest != nullptr) {
      digests[i] = *digest;
      sizes[i] = f.size;
      cached.push_back(i);
    } else {
      to_read.push_back(i);
    }
  }
  if (!cached.empty()) {
    for (size_t i : cached) {
      auto it = std::lower_bound(known.begin(), known.end(), digests[i]);
      const bool present = it != known.end() && *it == digests[i] &&
                           known_present[static_cast<size_t>(it - known.begin())];
      if (!present) to_read.push_back(i);
    }
    std::sort(to_read.begin(), to_read.end());  // Walk order, for the first error reported.
  }
  if (!to_read.empty()) {
    std::vector<fs::path> sources;
    sources.reserve(to_read.size());
    for (size_t i : to_read) sources.push_back(walk.root / walk.files[i].rel);
    size_t failed = 0;
    StatusOr<std::vector<ObjectStore::PutResult>> put = objects_.PutFiles(sources, &failed);
    if (!put.ok()) {
      return put.status().WithPrefix("cannot snapshot " +
                                     PrintablePath(walk.files[to_read[failed]].rel));
    }
    for (size_t k = 0; k < to_read.size(); ++k) {
      digests[to_read[k]] = std::move((*put)[k].digest);
      sizes[to_read[k]] = (*put)[k].size;
    }
  }
  // Rewritten only when something was read or files went away, so an unchanged tree writes
  // nothing. The objects are durable at this point (PutFiles returned). A file whose size
  // changed while it was read is recorded with the walk's stat, which then no longer matches,
  // so it is read again next time.
  if (use_cache && (!to_read.empty() || cache.loaded_entries() != n)) {
    std::vector<StatCacheEntry> entries;
    entries.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      entries.push_back({walk.files[i].rel, walk.files[i].stat, digests[i]});
    }
    (void)StatCache::Save(stat_cache_dir_, walk.root, entries);  // Best effort: a cache.
  }

  SnapshotResult result = ResultFromWalk(walk);
  result.files_hashed = to_read.size();
  result.files_from_cache = n - to_read.size();
  Manifest& m = result.manifest;
  m.entries.reserve(n + walk.links.size());
  for (size_t i = 0; i < n; ++i) {
    ManifestEntry e;
    e.path = std::move(walk.files[i].rel);
    e.type = ManifestEntry::Type::kFile;
    e.mode = walk.files[i].mode;
    e.size = sizes[i];
    e.digest = std::move(digests[i]);
    m.entries.push_back(std::move(e));
  }
  for (ManifestEntry& l : walk.links) m.entries.push_back(std::move(l));
  SortEntries(m);
  if (Status s = m.Validate(); !s.ok()) return Internal("snapshot manifest: " + s.message());

  const std::string json = m.ToJson();
  result.id = Sha256Hex(json);
  result.file_count = m.entries.size();
  result.total_bytes = m.TotalBytes();
  const fs::path manifest_path = snapshots_dir_ / (result.id + ".json");
  // Written only after every object is durable (PutFiles returned). An existing manifest is
  // kept when intact (byte for byte what would be written), so an unchanged tree writes nothing.
  // A kept manifest gets a fresh mtime: `snapshot gc` spares anything newer than its grace
  // period, and this snapshot is about to be used (as git freshens reused objects). Should gc
  // have removed it meanwhile, it is written again.
  StatusOr<std::string> existing = ReadFile(manifest_path);
  if (!existing.ok() || *existing != json ||
      ::utimensat(AT_FDCWD, manifest_path.c_str(), nullptr, 0) != 0) {
    TY_RETURN_IF_ERROR(MakeDirs(snapshots_dir_));
    TY_RETURN_IF_ERROR(WriteFileAtomic(manifest_path, json, 0444));
  }
  return result;
}

StatusOr<SnapshotResult> Snapshotter::Preview(const std::filesystem::path& source_dir) const {
  return Preview(source_dir, SnapshotLimits{});
}

StatusOr<SnapshotResult> Snapshotter::Preview(const std::filesystem::path& source_dir,
                                              const SnapshotLimits& limits) const {
  TY_ASSIGN_OR_RETURN(Walk walk, WalkTree(source_dir));
  SnapshotResult result = ResultFromWalk(walk);
  if (std::optional<std::string> problem = LimitProblem(walk, limits)) {
    result.over_limit = std::move(*problem);
  }
  Manifest& m = result.manifest;
  for (WalkedFile& f : walk.files) {
    ManifestEntry e;
    e.path = std::move(f.rel);
    e.mode = f.mode;
    e.size = f.size;
    m.entries.push_back(std::move(e));
  }
  for (ManifestEntry& l : walk.links) m.entries.push_back(std::move(l));
  SortEntries(m);
  result.file_count = m.entries.size();
  result.total_bytes = m.TotalBytes();
  return result;
}

StatusOr<Manifest> Snapshotter::Load(const std::string& id) const {
  TY_RETURN_IF_ERROR(CheckId(id));
  const fs::path path = snapshots_dir_ / (id + ".json");
  StatusOr<std::string> json = ReadFile(path);
  if (!json.ok()) {
    if (json.status().code() == StatusCode::kNotFound) {
      return NotFound("snapshot " + id + " not found in " + snapshots_dir_.string());
    }
    return json.status().WithPrefix("snapshot " + id);
  }
  const std::string actual = Sha256Hex(*json);
  if (actual != id) {
    return Internal("manifest of snapshot " + id + " is corrupt: it hashes to " + actual +
                    " (file " + path.string() + ")");
  }
  StatusOr<Manifest> m = Manifest::FromJson(*json);
  if (!m.ok()) {
    return Internal("manifest of snapshot " + id + " (" + path.string() +
                    ") is invalid: " + m.status().message());
  }
  return m;
}

Status Snapshotter::Materialize(const std::string& id, const std::filesystem::path& dest_in) const {
  TY_ASSIGN_OR_RETURN(Manifest manifest, Load(id));
  fs::path dest = dest_in.lexically_normal();
  if (!dest.has_filename()) dest = dest.parent_path();

  struct stat st {};
  if (::lstat(dest.c_str(), &st) == 0) {
    std::error_code ec;
    if (!S_ISDIR(st.st_mode) || !fs::is_empty(dest, ec) || ec) {
      return FailedPrecondition("cannot materialize snapshot " + id + " into " +
                                PrintablePath(dest.native()) +
                                ": it exists and is not an empty folder");
    }
  } else if (errno != ENOENT) {
    return ErrnoError("cannot inspect", dest, errno);
  }
  fs::path parent = dest.parent_path();
  if (parent.empty()) parent = ".";
  TY_RETURN_IF_ERROR(MakeDirs(parent));
  const fs::path staging = parent / (dest.filename().string() + ".partial-" + RandomHex(6));
  if (::mkdir(staging.c_str(), 0755) != 0) return ErrnoError("cannot create", staging, errno);

  auto fail = [&](Status s) -> Status {
    (void)RemoveTree(staging);
    return s.WithPrefix("cannot materialize snapshot " + id + " into " +
                        PrintablePath(dest.native()));
  };

  // Folders first (sorted, so parents come before children), then files, then symlinks, so
  // that nothing is ever written through a symlink.
  std::set<std::string> folders;
  for (const ManifestEntry& e : manifest.entries) {
    for (size_t slash = e.path.find('/'); slash != std::string::npos;
         slash = e.path.find('/', slash + 1)) {
      folders.insert(e.path.substr(0, slash));
    }
  }
  for (const std::string& f : folders) {
    const fs::path p = staging / f;
    if (::mkdir(p.c_str(), 0755) != 0) return fail(ErrnoError("cannot create folder", p, errno));
  }

  std::vector<const ManifestEntry*> files;
  for (const ManifestEntry& e : manifest.entries) {
    if (e.type == ManifestEntry::Type::kFile) files.push_back(&e);
  }
  std::vector<Status> errors(files.size());
  ParallelFor(files.size(), [&](size_t i) {
    const ManifestEntry& e = *files[i];
    Status s = objects_.CopyTo(e.digest, staging / e.path, e.mode, &e.size);
    if (!s.ok()) {
      errors[i] = s.WithPrefix(PrintablePath(e.path));
      return false;
    }
    return true;
  });
  for (Status& s : errors) {
    if (!s.ok()) return fail(s);
  }
  for (const ManifestEntry& e : manifest.entries) {
    if (e.type != ManifestEntry::Type::kSymlink) continue;
    const fs::path p = staging / e.path;
    if (::symlink(e.link_target.c_str(), p.c_str()) != 0) {
      return fail(ErrnoError("cannot create symlink", p, errno));
    }
  }
  if (::rename(staging.c_str(), dest.c_str()) != 0) {
    return fail(ErrnoError("cannot move the materialized tree to", dest, errno));
  }
  return Status::Ok();
}

}  // namespace trainyard::cas
