// A local datastore: a folder on the daemon's machine (or a shared file system). Every file is
// opened through the folder's descriptor without following links (common/rooted_dir.h): other
// users and runs may write there.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "trainyard/assets/client_internal.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/util.h"

namespace trainyard::assets::internal {
namespace {

// What changes when a file's content does: its size, modification and change times and inode
// (the change time cannot be set back by the file's owner, as the modification time can).
std::string LocalEtag(const struct stat& st) {
  return std::to_string(st.st_size) + "-" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec) + "-" + std::to_string(st.st_ctim.tv_sec) + "." +
         std::to_string(st.st_ctim.tv_nsec) + "-" + std::to_string(st.st_ino);
}

class LocalClient : public ObjectClient {
 public:
  explicit LocalClient(const spec::DatastoreDefinition& def) : name_(def.name), root_(def.path) {}

  std::string Describe() const override {
    return "local datastore '" + name_ + "' (" + root_.string() + ")";
  }

  Status Check() override {
    auto dir = RootedDir::Open(root_);
    if (!dir.ok()) {
      return Status(dir.status().code(), Describe() +
                                             ": the folder cannot be opened on the "
                                             "daemon's machine: " +
                                             dir.status().message());
    }
    return Status::Ok();
  }

  StatusOr<std::vector<ObjectInfo>> List(std::string_view prefix) override {
    TY_ASSIGN_OR_RETURN(RootedDir dir, OpenRoot());
    std::vector<ObjectInfo> out;
    // Walk from the deepest folder the prefix names whole, then filter by the prefix.
    std::string start(
        prefix.substr(0, prefix.rfind('/') == std::string_view::npos ? 0 : prefix.rfind('/')));
    if (!start.empty()) TY_RETURN_IF_ERROR(CheckObjectKey(start));
    TY_RETURN_IF_ERROR(dir.Walk(start, [&](const RootedDir::Entry& e) {
      if (S_ISREG(e.st.st_mode) && StartsWith(e.rel, prefix)) {
        out.push_back({e.rel, static_cast<std::uint64_t>(e.st.st_size), LocalEtag(e.st)});
      }
      return true;
    }));
    std::sort(out.begin(), out.end(),
              [](const ObjectInfo& a, const ObjectInfo& b) { return a.key < b.key; });
    return out;
  }

  StatusOr<ObjectInfo> Stat(std::string_view key) override {
    TY_RETURN_IF_ERROR(CheckObjectKey(key));
    TY_ASSIGN_OR_RETURN(RootedDir dir, OpenRoot());
    struct stat st {};
    auto fd = dir.OpenFile(key, &st);
    if (!fd.ok()) return Missing(fd.status(), key);
    return ObjectInfo{std::string(key), static_cast<std::uint64_t>(st.st_size), LocalEtag(st)};
  }

  StatusOr<ObjectInfo> Download(std::string_view key, const std::filesystem::path& dest,
                                bool durable) override {
    TY_RETURN_IF_ERROR(CheckObjectKey(key));
    TY_ASSIGN_OR_RETURN(RootedDir dir, OpenRoot());
    struct stat st {};
    auto in = dir.OpenFile(key, &st);
    if (!in.ok()) return Missing(in.status(), key);
    if (dest.has_parent_path()) TY_RETURN_IF_ERROR(MakeDirs(dest.parent_path()));
    std::filesystem::path temp = dest;
    temp += ".part-" + RandomHex(6);
    ScopedFd out(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!out.valid()) {
      return Internal("cannot create " + temp.string() + ": " + std::strerror(errno));
    }
    Status copied = CopyFd(in->get(), out.get(), Describe() + " " + std::string(key));
    if (copied.ok() && durable && ::fsync(out.get()) != 0) {
      copied = Internal("cannot sync " + temp.string() + ": " + std::strerror(errno));
    }
    if (copied.ok() && out.Close() != 0) {
      copied = Internal("cannot write " + temp.string() + ": " + std::strerror(errno));
    }
    if (copied.ok() && ::rename(temp.c_str(), dest.c_str()) != 0) {
      copied = Internal("cannot rename " + temp.string() + ": " + std::strerror(errno));
    }
    if (!copied.ok()) {
      ::unlink(temp.c_str());
      return copied;
    }
    return ObjectInfo{std::string(key), static_cast<std::uint64_t>(st.st_size), LocalEtag(st)};
  }

  Status Upload(const std::filesystem::path& file, std::string_view key) override {
    TY_RETURN_IF_ERROR(CheckObjectKey(key));
    TY_ASSIGN_OR_RETURN(RootedDir dir, OpenRoot());
    ScopedFd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in.valid())
      return NotFound("cannot upload " + file.string() + ": " + std::strerror(errno));
    // Written beside the target and renamed over it: a reader never sees half a file. Both
    // names are taken relative to the parent folder, opened without following links.
    const std::string key_s(key);
    const size_t slash = key_s.rfind('/');
    const std::string parent = slash == std::string::npos ? "" : key_s.substr(0, slash);
    const std::string base = key_s.substr(slash == std::string::npos ? 0 : slash + 1);
    const std::string temp = ".upload-" + RandomHex(6);
    ScopedFd parent_fd;
    if (parent.empty()) {
      TY_ASSIGN_OR_RETURN(parent_fd, dir.OpenDir(""));
    } else {
      TY_ASSIGN_OR_RETURN(parent_fd, dir.MakeDirs(parent));
    }
    ScopedFd out(::openat(parent_fd.get(), temp.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!out.valid()) {
      return Internal("cannot create a file in " + Describe() + " '" + parent +
                      "': " + std::strerror(errno));
    }
    Status copied = CopyFd(in.get(), out.get(), file.string());
    if (copied.ok() && out.Close() != 0) {
      copied = Internal("cannot write " + Describe() + " '" + key_s + "': " + std::strerror(errno));
    }
    if (copied.ok() &&
        ::renameat(parent_fd.get(), temp.c_str(), parent_fd.get(), base.c_str()) != 0) {
      copied = Internal("cannot rename a new file to '" + key_s + "' in " + Describe() + ": " +
                        std::strerror(errno));
    }
    if (!copied.ok()) ::unlinkat(parent_fd.get(), temp.c_str(), 0);
    return copied;
  }

 private:
  StatusOr<RootedDir> OpenRoot() const {
    auto dir = RootedDir::Open(root_);
    if (!dir.ok()) return dir.status().WithPrefix(Describe());
    return dir;
  }

  Status Missing(const Status& st, std::string_view key) const {
    if (st.code() == StatusCode::kNotFound) {
      return NotFound(Describe() + " has no file '" + std::string(key) + "'");
    }
    return st.WithPrefix(Describe() + " '" + std::string(key) + "'");
  }

  const std::string name_;
  const std::filesystem::path root_;
};

}  // namespace

std::unique_ptr<ObjectClient> NewLocalClient(const spec::DatastoreDefinition& def) {
  return std::make_unique<LocalClient>(def);
}

}  // namespace trainyard::assets::internal
