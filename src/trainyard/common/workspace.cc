#include "trainyard/common/workspace.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>

#include "trainyard/common/fs.h"

namespace trainyard {

Status WorkspaceLayout::Create() const {
  for (const auto& dir : {root, ObjectsDir(), SnapshotsDir(), RunsDir(), ScratchDir()}) {
    TY_RETURN_IF_ERROR(MakeDirs(dir));
  }
  ::chmod(root.c_str(), 0700);
  return Status::Ok();
}

Status CheckWorkspaceIsPrivate(const WorkspaceLayout& layout) {
  auto describe = [](const struct stat& st) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return "owner uid " + std::to_string(st.st_uid) + ", mode " + mode;
  };
  struct stat st {};
  if (::stat(layout.root.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Internal("cannot look at workspace " + layout.root.string() + ": " +
                    std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    return FailedPrecondition("workspace " + layout.root.string() + " is not a folder");
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return FailedPrecondition(
        "workspace " + layout.root.string() + " is not private to you (" + describe(st) +
        "): a workspace must be your own folder with mode 0700, so that a folder shipped in a "
        "cloned repository or made by another user is never used as one. If you trust it: "
        "chmod 700 '" +
        layout.root.string() + "'");
  }
  if (::stat(layout.Database().c_str(), &st) == 0 &&
      (st.st_uid != ::geteuid() || (st.st_mode & 022) != 0)) {
    return FailedPrecondition("the database " + layout.Database().string() + " of workspace " +
                              layout.root.string() + " is not private to you (" + describe(st) +
                              "); it must be yours and writable by you only");
  }
  return Status::Ok();
}

StatusOr<WorkspaceConfig> LoadWorkspaceConfig(const WorkspaceLayout& layout) {
  WorkspaceConfig cfg;
  auto text = ReadFile(layout.ConfigFile());
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) return cfg;
    return text.status();
  }
  const std::string where = layout.ConfigFile().string();
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument(where + ": not a JSON object");
  }
  auto read = [&](const char* key, auto* out) -> Status {
    if (!j.contains(key)) return Status::Ok();
    if (!j[key].is_number_integer() || j[key].template get<std::int64_t>() < 0) {
      return InvalidArgument(where + ": '" + key + "' must be a non-negative integer");
    }
    *out = j[key].template get<std::remove_pointer_t<decltype(out)>>();
    return Status::Ok();
  };
  struct Key {
    const char* name;
    std::function<Status()> read;
  };
  const Key keys[] = {
      {"snapshot_max_bytes", [&] { return read("snapshot_max_bytes", &cfg.snapshot_max_bytes); }},
      {"snapshot_max_files", [&] { return read("snapshot_max_files", &cfg.snapshot_max_files); }},
      {"max_concurrent_runs",
       [&] { return read("max_concurrent_runs", &cfg.max_concurrent_runs); }},
      {"port", [&] { return read("port", &cfg.port); }},
      {"stop_grace_seconds", [&] { return read("stop_grace_seconds", &cfg.stop_grace_seconds); }},
      {"max_connections", [&] { return read("max_connections", &cfg.max_connections); }},
      {"http_header_timeout_ms",
       [&] { return read("http_header_timeout_ms", &cfg.http_header_timeout_ms); }},
      {"http_min_bytes_per_second",
       [&] { return read("http_min_bytes_per_second", &cfg.http_min_bytes_per_second); }},
      {"http_transfer_grace_ms",
       [&] { return read("http_transfer_grace_ms", &cfg.http_transfer_grace_ms); }},
      {"max_tags_per_run", [&] { return read("max_tags_per_run", &cfg.max_tags_per_run); }},
      {"max_properties_per_run",
       [&] { return read("max_properties_per_run", &cfg.max_properties_per_run); }},
      {"max_entries_per_run",
       [&] { return read("max_entries_per_run", &cfg.max_entries_per_run); }},
      {"container_pids_limit",
       [&] { return read("container_pids_limit", &cfg.container_pids_limit); }},
      {"container_log_max_bytes",
       [&] { return read("container_log_max_bytes", &cfg.container_log_max_bytes); }},
      {"default_image",
       [&] {
         if (!j.contains("default_image")) return Status::Ok();
         if (!j["default_image"].is_string() || j["default_image"].get<std::string>().empty()) {
           return InvalidArgument(where + ": 'default_image' must be a non-empty image name");
         }
         cfg.default_image = j["default_image"].get<std::string>();
         return Status::Ok();
       }},
  };
  for (const Key& key : keys) TY_RETURN_IF_ERROR(key.read());
  for (auto item = j.begin(); item != j.end(); ++item) {
    const std::string& k = item.key();
    const bool known = std::any_of(std::begin(keys), std::end(keys),
                                   [&](const Key& key) { return k == key.name; });
    if (!known) {
      std::string allowed;
      for (const Key& key : keys) allowed += (allowed.empty() ? "" : ", ") + std::string(key.name);
      return InvalidArgument(where + ": unknown key '" + k + "'; allowed keys: " + allowed);
    }
  }
  return cfg;
}

}  // namespace trainyard
