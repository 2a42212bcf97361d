#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/status.h"

namespace trainyard::cas {

// One file or symlink of a snapshot.
struct ManifestEntry {
  enum class Type { kFile, kSymlink };

  // Relative to the snapshot root, '/'-separated, the file name bytes exactly as on disk (not
  // necessarily UTF-8). Never empty, absolute, or containing "", "." or ".." components.
  std::string path;
  Type type = Type::kFile;
  std::uint32_t mode = 0644;  // Files: 0644 or 0755 (owner-executable on disk). Symlinks: 0.
  std::uint64_t size = 0;     // Files: content bytes. Symlinks: 0.
  std::string digest;         // Files: SHA-256 of the content (lower-case hex). Symlinks: "".
  std::string link_target;    // Symlinks: the target as stored on disk (relative). Files: "".

  bool operator==(const ManifestEntry&) const = default;
};

// The list of what a snapshot holds. Folders are implied by paths (an empty folder is not
// recorded, as in git).
//
// JSON form (version 1), canonical: no whitespace, keys in this order, entries sorted by path
// bytes, so the same tree always gives the same bytes and the same id:
//   {"version":1,"entries":[
//     {"path":"train.py","type":"file","mode":"0755","size":120,"digest":"<64 hex>"},
//     {"path":"data/latest","type":"symlink","target":"v2"}]}
// Non-UTF-8 names: a path (or symlink target) whose bytes are not valid UTF-8 is written as
// "path_b64" (or "target_b64") holding the standard base64 of the raw bytes instead of "path"
// (or "target"). Readers accept either form, never both. Control characters are \u-escaped.
struct Manifest {
  std::vector<ManifestEntry> entries;  // Sorted by path (byte order), unique.

  // The canonical JSON described above. Sorts a copy first if `entries` is not sorted.
  std::string ToJson() const;
  // Parses and validates (see Validate). Errors: InvalidArgument saying what is wrong.
  static StatusOr<Manifest> FromJson(std::string_view json);

  // A manifest of one regular file.
  static Manifest OneFile(std::string path, std::string digest, std::uint64_t size,
                          std::uint32_t mode = 0644);
  // The regular file (not a symlink) at `path`, or nullptr.
  const ManifestEntry* FindFile(std::string_view path) const;

  // The snapshot id: SHA-256 (hex) of ToJson().
  std::string Id() const;
  // Sum of file sizes, saturating at UINT64_MAX (declared sizes come from clients and cannot
  // wrap the sum below a limit).
  std::uint64_t TotalBytes() const;

  // Checks the invariants: paths safe and relative, sorted and unique, no path below a file or
  // symlink, file digests well-formed, modes 0644/0755, symlink targets relative and never
  // climbing above the snapshot root, each on its own and as a chain through the snapshot's
  // other links (`d/y -> ..` with `z -> d/y/..` leaves it; at most 40 links are followed, as
  // the kernel does). Errors: InvalidArgument naming the entry.
  Status Validate() const;
};

// True when a symlink at `link_path` (relative to a root) with `target` stays inside the root
// when resolved lexically: the target is relative and its ".." components never climb above
// the root at any step. Does not look at the file system.
bool SymlinkStaysInside(std::string_view link_path, std::string_view target);

// Raw path bytes made safe for messages (and for JSON encoders that require UTF-8): invalid
// UTF-8 bytes and control characters become "\xNN"; everything else is kept. For display only;
// not reversible.
std::string PrintablePath(std::string_view s);

// True for bytes that are valid UTF-8 (RFC 3629: no overlong forms, no surrogates).
bool IsValidUtf8(std::string_view s);

}  // namespace trainyard::cas
