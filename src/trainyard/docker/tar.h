#pragma once

// Build contexts as tar archives (uncompressed, POSIX pax format), made so that the same input
// always gives the same bytes: entries in sorted path order, mtime 0, uid/gid 0, no user or group
// names. Docker's build cache then sees an unchanged context as unchanged.

#include <filesystem>
#include <map>
#include <string>

#include "trainyard/common/status.h"

namespace trainyard::docker {

// A tar of everything under `dir`, with paths relative to it ("sub/", "sub/file"). Keeps
// regular files, folders and symlinks (the link itself, never its target) with their permission
// bits; skips sockets, FIFOs and devices. NotFound when `dir` is not a folder, Internal on I/O
// errors.
StatusOr<std::string> TarDirectory(const std::filesystem::path& dir);

// A tar of in-memory files: path ("Dockerfile", "app/main.py") -> contents, each mode 0644,
// with entries for the parent folders (mode 0755). InvalidArgument for an empty, absolute or
// ".."-containing path, or a path that is also another file's folder.
StatusOr<std::string> TarFiles(const std::map<std::string, std::string>& files);

}  // namespace trainyard::docker
