#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "trainyard/common/status.h"

namespace trainyard {

namespace fs = std::filesystem;

// Reads a whole file. NotFound when it does not exist, Internal on other I/O errors.
StatusOr<std::string> ReadFile(const fs::path& path);

// Writes `data` to `path` atomically: a temp file beside it, fsync, rename, fsync of the folder.
// A crash leaves either the old content or the new, never a torn file. `mode` is applied to the
// temp file before the rename.
Status WriteFileAtomic(const fs::path& path, std::string_view data, unsigned mode = 0644);

// Appends to a file, creating it when missing.
Status AppendFile(const fs::path& path, std::string_view data);

// Creates a folder and its parents; OK when it exists.
Status MakeDirs(const fs::path& path);

// Makes `dir` a folder only this user can enter: created with mode 0700 when missing (its
// parent must exist); when it exists, it must be a real folder (not a link), owned by this
// user, with no group or other permission bits. FailedPrecondition naming what is wrong
// otherwise (e.g. another local user created it first in a shared /tmp): never used then.
Status EnsurePrivateDir(const fs::path& dir);

// Removes a tree; OK when it does not exist.
Status RemoveTree(const fs::path& path);

// True when `path`, after lexical normalisation, stays inside `root` (both made absolute first).
// Does not follow symlinks: callers that open the path must also refuse symlinks that leave.
bool IsWithin(const fs::path& root, const fs::path& path);

// Joins a user-given relative path under `root` and refuses one that escapes it (absolute paths,
// `..` that climb out). Returns the joined absolute path.
StatusOr<fs::path> ResolveUnder(const fs::path& root, std::string_view relative);

// Size of a file, or 0 on error.
std::uint64_t FileSizeOr0(const fs::path& path);

// The home folder of the current user ($HOME, else the passwd entry).
fs::path HomeDir();

}  // namespace trainyard
