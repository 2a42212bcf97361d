#include "trainyard/cas/snapshot.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <functional>
#include <map>
#include <memory>
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

// One entry of a folder and what the walk needs of its lstat.
struct DirEntry {
  std::string name;
  mode_t mode = 0;
  FileStat stat;
};
// The entries of one folder, sorted by name.
using DirEntries = std::vector<DirEntry>;

StatusOr<DirEntries> ReadEntries(const fs::path& dir_abs) {
  DIR* d = ::opendir(dir_abs.c_str());
  if (d == nullptr) return ErrnoError("cannot read folder", dir_abs, errno);
  DirEntries entries;
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
    entries.push_back({std::string(name), st.st_mode, FileStat::Of(st)});
  }
  ::closedir(d);
  TY_RETURN_IF_ERROR(status);
  std::sort(entries.begin(), entries.end(),
            [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return entries;
}

// Records one entry of folder `dir_abs` in `walk`, unless ignored. Returns true for a folder
// to walk into.
StatusOr<bool> AddEntry(const fs::path& dir_abs, const std::string& dir_rel, const DirEntry& entry,
                        const IgnoreRules& rules, Walk& walk) {
  const std::string& name = entry.name;
  const mode_t mode = entry.mode;
  std::string rel = JoinRel(dir_rel, name);
  const bool is_dir = S_ISDIR(mode);
  IgnoreRules::Match m = rules.MatchEntry(rel, is_dir);
  if (m.ignored) {
    walk.ignored.push_back({std::move(rel), is_dir, m.Describe()});
    return false;
  }
  if (is_dir) return true;
  if (S_ISREG(mode)) {
    walk.files.push_back(
        {std::move(rel), entry.stat.size, (mode & S_IXUSR) != 0 ? 0755u : 0644u, entry.stat});
  } else if (S_ISLNK(mode)) {
    const fs::path abs = dir_abs / name;
    TY_ASSIGN_OR_RETURN(std::string target, ReadLink(abs));
    TY_RETURN_IF_ERROR(CheckLink(walk, abs, rel, target));
    ManifestEntry link;
    link.path = std::move(rel);
    link.type = ManifestEntry::Type::kSymlink;
    link.mode = 0;
    link.link_target = std::move(target);
    walk.links.push_back(std::move(link));
  } else {
    walk.skipped.push_back(rel + " (" + SpecialKind(mode) + ")");
  }
  return false;
}

// Adds the folder's ignore file to `rules`. Looked for only when the listing names one, which
// saves two failing lookups per folder in the common case of folders without one.
Status AddIgnoreFileIfListed(const fs::path& dir_abs, const std::string& dir_rel,
                             const DirEntries& entries, IgnoreRules& rules) {
  const bool listed = std::any_of(entries.begin(), entries.end(), [](const DirEntry& e) {
    return e.name == kAmlIgnoreName || e.name == kGitIgnoreName;
  });
  return listed ? AddIgnoreFileOf(dir_abs, dir_rel, rules) : Status::Ok();
}

Status WalkDir(const fs::path& dir_abs, const std::string& dir_rel, IgnoreRules& rules,
               Walk& walk) {
  TY_ASSIGN_OR_RETURN(DirEntries entries, ReadEntries(dir_abs));
  TY_RETURN_IF_ERROR(AddIgnoreFileIfListed(dir_abs, dir_rel, entries, rules));
  for (const DirEntry& e : entries) {
    TY_ASSIGN_OR_RETURN(bool descend, AddEntry(dir_abs, dir_rel, e, rules, walk));
    if (descend) {
      TY_RETURN_IF_ERROR(WalkDir(dir_abs / e.name, JoinRel(dir_rel, e.name), rules, walk));
    }
  }
  return Status::Ok();
}

// Appends everything `part` found to `walk`.
void Append(Walk& walk, Walk&& part) {
  auto move_all = [](auto& to, auto& from) {
    to.insert(to.end(), std::make_move_iterator(from.begin()), std::make_move_iterator(from.end()));
  };
  move_all(walk.files, part.files);
  move_all(walk.links, part.links);
  move_all(walk.ignored, part.ignored);
  move_all(walk.skipped, part.skipped);
}

// The walk is mostly stat calls, which run in parallel well: the subfolders of the root are
// walked on two threads, each with its own copy of the rules (a folder's ignore file only
// applies below it, so siblings never need each other's rules). The result is the same, in
// the same order, as walking everything on one thread.
constexpr size_t kWalkThreads = 2;

// `side_task`, when given, runs with the canonical root on one of the walk's threads while the
// others walk (before any error is returned, once the root folder was listed).
using SideTask = std::function<void(const fs::path& root)>;

StatusOr<Walk> WalkTree(const fs::path& source_dir, const SideTask& side_task = nullptr) {
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
  IgnoreRules rules;
  TY_ASSIGN_OR_RETURN(DirEntries entries, ReadEntries(root));
  TY_RETURN_IF_ERROR(AddIgnoreFileIfListed(root, "", entries, rules));

  // Segments in walk order: runs of the root's own entries, and whole subfolders.
  struct Segment {
    Walk part;
    std::string subdir;  // Empty for a run of the root's own entries.
    Status status;
  };
  std::vector<Segment> segments(1);
  segments[0].part.root = root;
  for (const DirEntry& e : entries) {
    TY_ASSIGN_OR_RETURN(bool descend, AddEntry(root, "", e, rules, segments.back().part));
    if (!descend) continue;
    segments.emplace_back().subdir = e.name;
    segments.back().part.root = root;
    segments.emplace_back().part.root = root;
  }
  std::vector<size_t> subdirs;
  for (size_t i = 0; i < segments.size(); ++i) {
    if (!segments[i].subdir.empty()) subdirs.push_back(i);
  }
  // Item 0 is the side task (handed out first), the others the subfolders in walk order.
  const size_t first = side_task ? 1 : 0;
  ParallelFor(
      subdirs.size() + first,
      [&](size_t k) {
        if (k < first) {
          side_task(root);
          return true;
        }
        Segment& seg = segments[subdirs[k - first]];
        IgnoreRules own = rules;
        seg.status = WalkDir(root / seg.subdir, seg.subdir, own, seg.part);
        return seg.status.ok();
      },
      kWalkThreads);
  Walk walk;
  walk.root = root;
  for (Segment& seg : segments) {
    TY_RETURN_IF_ERROR(seg.status);  // The first error in walk order.
    Append(walk, std::move(seg.part));
  }
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

// Sorts by path bytes. Returns where each entry went: entry i is now at position[i]. The
// walk's order is nearly that already; when it is not, positions are sorted and each entry
// moved once (moving whole entries around while sorting costs more).
std::vector<size_t> SortEntries(Manifest& m) {
  std::vector<ManifestEntry>& v = m.entries;
  std::vector<size_t> position(v.size());
  for (size_t i = 0; i < position.size(); ++i) position[i] = i;
  auto less = [](const ManifestEntry& a, const ManifestEntry& b) { return a.path < b.path; };
  if (std::is_sorted(v.begin(), v.end(), less)) return position;
  std::vector<size_t> order = position;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return less(v[a], v[b]); });
  std::vector<ManifestEntry> sorted;
  sorted.reserve(v.size());
  for (size_t k = 0; k < order.size(); ++k) {
    position[order[k]] = k;
    sorted.push_back(std::move(v[order[k]]));
  }
  v = std::move(sorted);
  return position;
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

// Hashes one regular file in place (never through a symlink). Errors as ObjectStore::PutFile.
StatusOr<ObjectStore::PutResult> HashInPlace(const fs::path& src, const RootedDir* beneath) {
  constexpr size_t kBufferSize = 1 << 20;
  thread_local std::unique_ptr<char[]> buffer(new char[kBufferSize]);
  internal::ScopedFd in;
  struct stat st {};
  TY_RETURN_IF_ERROR(internal::OpenSourceFile(src, &in, &st, beneath));
  Sha256 hash;
  ObjectStore::PutResult r;
  for (;;) {
    ssize_t n = internal::ReadSome(in.get(), buffer.get(), kBufferSize);
    if (n < 0) return ErrnoError("cannot read", src, errno);
    if (n == 0) break;
    hash.Update(std::string_view(buffer.get(), static_cast<size_t>(n)));
    r.size += static_cast<std::uint64_t>(n);
  }
  r.digest = hash.FinishHex();
  return r;
}

// HashInPlace for many files on a few threads; results in the order of `srcs`. Errors: the
// first failing file's in that order (its index in *failed_index).
StatusOr<std::vector<ObjectStore::PutResult>> HashFiles(const std::vector<fs::path>& srcs,
                                                        size_t* failed_index,
                                                        const RootedDir* beneath) {
  const size_t n = srcs.size();
  std::vector<ObjectStore::PutResult> results(n);
  std::vector<Status> errors(n);
  ParallelFor(n, [&](size_t i) {
    StatusOr<ObjectStore::PutResult> r = HashInPlace(srcs[i], beneath);
    if (!r.ok()) {
      errors[i] = r.status();
      return false;
    }
    results[i] = std::move(r).value();
    return true;
  });
  for (size_t i = 0; i < n; ++i) {
    if (!errors[i].ok()) {
      *failed_index = i;
      return errors[i];
    }
  }
  return results;
}

// True when the regular file at `path` holds exactly `data` (compared in blocks, without
// reading the whole file into memory).
bool HasContent(const fs::path& path, std::string_view data) {
  internal::ScopedFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  struct stat st {};
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) != data.size()) {
    return false;
  }
  char buf[64 * 1024];
  size_t at = 0;
  for (;;) {
    const ssize_t got = internal::ReadSome(fd.get(), buf, sizeof buf);
    if (got < 0) return false;
    if (got == 0) return at == data.size();
    const auto k = static_cast<size_t>(got);
    if (at + k > data.size() || data.compare(at, k, std::string_view(buf, k)) != 0) return false;
    at += k;
  }
}

// A digest of a walk's symlinks (paths and targets, in walk order); "" when there are none.
std::string LinksDigest(const std::vector<ManifestEntry>& links) {
  if (links.empty()) return "";
  std::string all;
  for (const ManifestEntry& l : links) {
    all += l.path;
    all += '\0';
    all += l.link_target;
    all += '\0';
  }
  return Sha256Hex(all);
}

// Writes a manifest that has been built (its objects durable) under its id. `json` is its
// canonical form, or null when it was not computed because the manifest is known to be the one
// stored under `id` (see Snapshotter::WriteManifest).
using PublishFn =
    std::function<Status(const std::string& id, const Manifest& m, const std::string* json)>;

// The body of Snapshotter::Snapshot (with `objects`: files are stored there, and `publish`
// writes the manifest) and of ScanTree (null `objects`: files are only hashed, nothing is
// published).
//
// The stat cache names the snapshot it was saved with. When that snapshot's manifest is in
// `snapshots_dir`, every cached digest is known to be stored (see StatCache), so the store is
// not asked about them; otherwise each distinct cached digest is looked up (one stat each).
StatusOr<SnapshotResult> TakeSnapshot(const fs::path& source_dir, const SnapshotLimits& limits,
                                      const fs::path& stat_cache_dir, ObjectStore* objects,
                                      const fs::path& snapshots_dir, const PublishFn& publish) {
  // The cache is loaded, and whether its objects are still in the store checked, on one of the
  // walk's threads while the others walk (both are mostly stat calls).
  const bool use_cache = !stat_cache_dir.empty();
  StatCache cache;
  bool all_known_present = objects == nullptr;  // Nothing to check when storing nothing.
  std::vector<std::string> known;  // Digests of the cache, sorted (when checked one by one).
  std::vector<bool> known_present;
  SideTask load_cache = [&](const fs::path& root) {
    cache = StatCache::Load(stat_cache_dir, root);
    if (all_known_present) return;
    if (!cache.snapshot_id().empty()) {
      const fs::path manifest = snapshots_dir / (cache.snapshot_id() + ".json");
      struct stat st {};
      if (::stat(manifest.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        all_known_present = true;
        return;
      }
    }
    known = cache.Digests();
    known_present = objects->HasEach(known);
  };
  TY_ASSIGN_OR_RETURN(Walk walk, WalkTree(source_dir, use_cache ? load_cache : nullptr));
  if (std::optional<std::string> problem = LimitProblem(walk, limits)) {
    return InvalidArgument(std::move(*problem));
  }

  const size_t n = walk.files.size();

  // Digests known from the cache (their objects checked once per distinct digest unless all
  // are known to be present); the other files are read.
  std::vector<std::string> digests(n);
  std::vector<std::uint64_t> sizes(n);
  std::vector<size_t> to_read;
  std::vector<size_t> cached;  // Files with a cache hit, pending the object check.
  for (size_t i = 0; i < n; ++i) {
    const WalkedFile& f = walk.files[i];
    std::optional<std::string_view> digest;
    if (use_cache) digest = cache.Lookup(f.rel, f.stat);
    if (digest) {
      digests[i] = *digest;
      sizes[i] = f.size;
      cached.push_back(i);
    } else {
      to_read.push_back(i);
    }
  }
  if (!cached.empty() && !all_known_present) {
    for (size_t i : cached) {
      auto it = std::lower_bound(known.begin(), known.end(), digests[i]);
      const bool present = it != known.end() && *it == digests[i] &&
                           known_present[static_cast<size_t>(it - known.begin())];
      if (!present) to_read.push_back(i);
    }
    std::sort(to_read.begin(), to_read.end());  // Walk order, for the first error reported.
  }
  if (!to_read.empty()) {
    // Each file is opened beneath the walked folder without following any link: a folder
    // swapped for a link since the walk (by whoever else can write in the tree) cannot lead the
    // read out of it, e.g. into files of the user running the daemon.
    TY_ASSIGN_OR_RETURN(RootedDir root, RootedDir::Open(walk.root));
    std::vector<fs::path> sources;
    sources.reserve(to_read.size());
    for (size_t i : to_read) sources.push_back(walk.files[i].rel);
    size_t failed = 0;
    StatusOr<std::vector<ObjectStore::PutResult>> put =
        objects != nullptr ? objects->PutFiles(sources, &failed, &root)
                           : HashFiles(sources, &failed, &root);
    if (!put.ok()) {
      return put.status().WithPrefix("cannot snapshot " +
                                     PrintablePath(walk.files[to_read[failed]].rel));
    }
    for (size_t k = 0; k < to_read.size(); ++k) {
      digests[to_read[k]] = std::move((*put)[k].digest);
      sizes[to_read[k]] = (*put)[k].size;
    }
  }

  SnapshotResult result = ResultFromWalk(walk);
  result.source_root = walk.root;
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
  const std::string links_digest = LinksDigest(walk.links);
  for (ManifestEntry& l : walk.links) m.entries.push_back(std::move(l));
  // File i of the walk is now m.entries[position[i]].
  const std::vector<size_t> position = SortEntries(m);

  // Unchanged since the cache was saved: every file's digest came from the cache, the cache
  // holds no other file, and the symlinks are the same. The manifest is then the one of the
  // cache's snapshot (the cache holds exactly that snapshot's files), whose JSON and id need
  // not be computed again.
  const bool unchanged = !cache.snapshot_id().empty() && to_read.empty() &&
                         cache.racy_entries() == 0 && cache.loaded_entries() == n &&
                         links_digest == cache.links_digest();
  std::string json;
  if (unchanged) {
    result.id = cache.snapshot_id();
  } else {
    json = m.ToJson();
    result.id = Sha256Hex(json);
    // The cache is saved only after its snapshot's manifest passed this check, so a manifest
    // with the cache's id (the same bytes) has passed it already.
    if (result.id != cache.snapshot_id()) {
      if (Status s = m.Validate(); !s.ok()) return Internal("snapshot manifest: " + s.message());
    }
  }
  result.file_count = m.entries.size();
  result.total_bytes = m.TotalBytes();
  if (publish) TY_RETURN_IF_ERROR(publish(result.id, m, unchanged ? nullptr : &json));

  // Saved after the manifest is written, naming it (see StatCache), and only when something
  // was read, files went away or the snapshot changed, so an unchanged tree writes nothing.
  if (use_cache && !unchanged) {
    // A file whose size changed while it was read is recorded with the walk's stat, which then
    // no longer matches, so it is read again next time.
    std::vector<StatCacheEntry> cache_entries;
    cache_entries.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const ManifestEntry& e = m.entries[position[i]];
      cache_entries.push_back({e.path, walk.files[i].stat, e.digest});
    }
    // Best effort: a cache.
    (void)StatCache::Save(stat_cache_dir, walk.root, cache_entries, result.id, links_digest);
  }
  return result;
}

}  // namespace

Snapshotter::Snapshotter(ObjectStore& objects, std::filesystem::path snapshots_dir,
                         std::filesystem::path stat_cache_dir)
    : objects_(objects),
      snapshots_dir_(std::move(snapshots_dir)),
      stat_cache_dir_(std::move(stat_cache_dir)) {}

StatusOr<SnapshotResult> Snapshotter::Snapshot(const std::filesystem::path& source_dir,
                                               const SnapshotLimits& limits) {
  // The manifest is written only after every object is durable (PutFiles returned).
  return TakeSnapshot(source_dir, limits, stat_cache_dir_, &objects_, snapshots_dir_,
                      [this](const std::string& id, const Manifest& m, const std::string* json) {
                        return WriteManifest(id, m, json);
                      });
}

StatusOr<SnapshotResult> ScanTree(const std::filesystem::path& source_dir,
                                  const SnapshotLimits& limits,
                                  const std::filesystem::path& stat_cache_dir) {
  return TakeSnapshot(source_dir, limits, stat_cache_dir, /*objects=*/nullptr, {}, nullptr);
}

Status Snapshotter::WriteManifest(const std::string& id, const Manifest& manifest,
                                  const std::string* json) const {
  const fs::path manifest_path = snapshots_dir_ / (id + ".json");
  std::string computed;
  if (json == nullptr) {
    // Known from the stat cache to be the manifest stored under `id`: freshened without being
    // read (a damaged file is caught by Load, which checks the hash).
    if (::utimensat(AT_FDCWD, manifest_path.c_str(), nullptr, 0) == 0) return Status::Ok();
    if (Status s = manifest.Validate(); !s.ok()) {
      return Internal("snapshot manifest: " + s.message());
    }
    computed = manifest.ToJson();
    json = &computed;
  }
  // An existing manifest is kept when intact (byte for byte what would be written), so an
  // unchanged tree writes nothing. A kept manifest gets a fresh mtime: `snapshot gc` spares
  // anything newer than its grace period, and this snapshot is about to be used (as git
  // freshens reused objects). Should gc have removed it meanwhile, it is written again.
  if (!HasContent(manifest_path, *json) ||
      ::utimensat(AT_FDCWD, manifest_path.c_str(), nullptr, 0) != 0) {
    TY_RETURN_IF_ERROR(MakeDirs(snapshots_dir_));
    TY_RETURN_IF_ERROR(WriteFileAtomic(manifest_path, *json, 0444));
  }
  return Status::Ok();
}

StatusOr<std::string> Snapshotter::AddManifest(const Manifest& manifest) {
  if (Status s = manifest.Validate(); !s.ok()) return s.WithPrefix("invalid manifest");
  const std::string json = manifest.ToJson();
  std::string id = Sha256Hex(json);
  std::vector<std::string> digests;
  std::vector<const ManifestEntry*> files;
  for (const ManifestEntry& e : manifest.entries) {
    if (e.type != ManifestEntry::Type::kFile) continue;
    digests.push_back(e.digest);
    files.push_back(&e);
  }
  const std::vector<bool> present = objects_.HasEach(digests);
  constexpr size_t kMissingShown = 10;
  size_t missing = 0;
  std::string listed;
  std::set<std::string_view> seen;  // A digest of several files is listed (and counted) once.
  for (size_t i = 0; i < files.size(); ++i) {
    if (present[i] || !seen.insert(files[i]->digest).second) continue;
    if (++missing <= kMissingShown) {
      listed += (listed.empty() ? "" : ", ") + files[i]->digest + " (" +
                PrintablePath(files[i]->path) + ")";
    }
  }
  // A declared size must be the object's: limits are checked against declared sizes, and a
  // materialised file must be what the manifest says.
  for (size_t i = 0; i < files.size(); ++i) {
    if (!present[i]) continue;
    struct stat st {};
    if (::stat(objects_.PathFor(files[i]->digest).c_str(), &st) == 0 &&
        static_cast<std::uint64_t>(st.st_size) != files[i]->size) {
      return InvalidArgument("invalid manifest: file '" + PrintablePath(files[i]->path) +
                             "' declares " + std::to_string(files[i]->size) +
                             " bytes but its object " + files[i]->digest + " has " +
                             std::to_string(st.st_size));
    }
  }
  if (missing > 0) {
    return NotFound("snapshot " + id + " lacks " + PlainCount(missing, "object", "objects") +
                    " in the store at " + objects_.root().string() + ": " + listed +
                    (missing > kMissingShown
                         ? " and " + std::to_string(missing - kMissingShown) + " more"
                         : "") +
                    "; upload them first");
  }
  TY_RETURN_IF_ERROR(WriteManifest(id, manifest, &json));
  return id;
}

void Snapshotter::DropStatCaches() const {
  if (stat_cache_dir_.empty()) return;
  (void)StatCache::DropAll(stat_cache_dir_);  // Best effort; a failure is not the error to report.
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
  (void)SortEntries(m);
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

Status Snapshotter::Materialize(const std::string& id, const std::filesystem::path& dest_in,
                                MaterializeMode mode) const {
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
  std::atomic<bool> object_lost{false};   // Missing or corrupt: the stat caches must go.
  std::atomic<bool> cross_device{false};  // Links impossible: copy everything.
  // Moves a corrupt object out of the way and says so.
  auto quarantine = [&](const ManifestEntry& e, const std::string& actual) -> Status {
    object_lost = true;
    std::string msg = "object " + e.digest + " is corrupt: its content hashes to " + actual;
    StatusOr<fs::path> moved = objects_.Quarantine(e.digest);
    msg += moved.ok() ? "; moved it to " + moved->string()
                      : " (file " + objects_.PathFor(e.digest).string() +
                            "; could not move it aside: " + moved.status().message() + ")";
    return Internal(msg + ". Take the snapshot again (resubmit the run) to store it anew");
  };
  // A verified copy. In link mode a corrupt object is also quarantined (CopyTo fails with
  // Internal for corruption and for I/O errors alike; a re-hash tells them apart).
  auto copy = [&](const ManifestEntry& e) -> Status {
    Status s = objects_.CopyTo(e.digest, staging / e.path, e.mode, &e.size);
    if (s.code() == StatusCode::kNotFound) object_lost = true;
    if (s.code() == StatusCode::kInternal && mode == MaterializeMode::kLink) {
      StatusOr<std::string> actual = objects_.ReverifyAndSeal(e.digest);
      if (actual.ok() && *actual != e.digest) return quarantine(e, *actual);
    }
    return s;
  };
  auto link = [&](const ManifestEntry& e) -> Status {
    if (e.mode != 0644 || cross_device.load(std::memory_order_relaxed)) return copy(e);
    switch (objects_.Inspect(e.digest, e.size)) {
      case ObjectStore::ObjectState::kMissing:
        object_lost = true;
        return NotFound("object " + e.digest + " is not in the store at " +
                        objects_.root().string());
      case ObjectStore::ObjectState::kUnsealed: {
        // Written to (or chmod-ed, or touched) since it was published: trusted only after a
        // full re-hash, which seals it again when intact.
        StatusOr<std::string> actual = objects_.ReverifyAndSeal(e.digest);
        if (!actual.ok()) {
          if (actual.status().code() == StatusCode::kNotFound) object_lost = true;
          return actual.status();
        }
        if (*actual != e.digest) return quarantine(e, *actual);
        break;
      }
      case ObjectStore::ObjectState::kSealed:
        break;
    }
    const fs::path object = objects_.PathFor(e.digest);
    const fs::path p = staging / e.path;
    if (::link(object.c_str(), p.c_str()) == 0) return Status::Ok();
    const int err = errno;
    if (err == EXDEV) cross_device = true;
    if (err == EXDEV || err == EMLINK || err == EPERM) return copy(e);  // EPERM: e.g. no links.
    if (err == ENOENT) object_lost = true;  // Removed since it was inspected.
    return ErrnoError("cannot link " + object.string() + " to", p, err);
  };
  ParallelFor(files.size(), [&](size_t i) {
    const ManifestEntry& e = *files[i];
    Status s = mode == MaterializeMode::kLink ? link(e) : copy(e);
    if (!s.ok()) {
      errors[i] = s.WithPrefix(PrintablePath(e.path));
      return false;
    }
    return true;
  });
  if (object_lost) DropStatCaches();
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
