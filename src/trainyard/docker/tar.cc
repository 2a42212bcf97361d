#include "trainyard/docker/tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <string_view>
#include <system_error>
#include <vector>

#include "trainyard/common/util.h"

namespace trainyard::docker {
namespace {

namespace fs = std::filesystem;

// Writes a deterministic tar into a string.
class TarWriter {
 public:
  TarWriter() : archive_(archive_write_new()) {}
  ~TarWriter() {
    if (archive_ != nullptr) archive_write_free(archive_);
  }
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;

  Status Open() {
    if (archive_ == nullptr) return Internal("tar: out of memory");
    if (archive_write_set_format_pax_restricted(archive_) != ARCHIVE_OK ||
        archive_write_add_filter_none(archive_) != ARCHIVE_OK ||
        archive_write_open(archive_, &out_, nullptr, &TarWriter::Write, nullptr) != ARCHIVE_OK) {
      return Error("open");
    }
    return Status::Ok();
  }

  Status AddDirectory(const std::string& path, unsigned mode) {
    return AddHeader(path + "/", AE_IFDIR, mode, 0, nullptr);
  }

  Status AddSymlink(const std::string& path, const std::string& target) {
    return AddHeader(path, AE_IFLNK, 0777, 0, target.c_str());
  }

  Status AddFile(const std::string& path, unsigned mode, std::string_view contents) {
    TY_RETURN_IF_ERROR(AddHeader(path, AE_IFREG, mode, contents.size(), nullptr));
    return WriteData(path, contents);
  }

  // Streams a file from disk in blocks. The size recorded is the size from `stat`; a file that
  // changes size while being read is an error rather than a corrupt archive.
  Status AddFileFromDisk(const std::string& path, unsigned mode, const fs::path& source,
                         std::uint64_t size) {
    std::ifstream in(source, std::ios::binary);
    if (!in) return Internal("tar: cannot open " + source.string());
    TY_RETURN_IF_ERROR(AddHeader(path, AE_IFREG, mode, size, nullptr));
    std::vector<char> buf(1 << 16);
    std::uint64_t written = 0;
    while (written < size) {
      in.read(buf.data(),
              static_cast<std::streamsize>(std::min<std::uint64_t>(buf.size(), size - written)));
      std::streamsize got = in.gcount();
      if (got <= 0) break;
      TY_RETURN_IF_ERROR(WriteData(path, std::string_view(buf.data(), static_cast<size_t>(got))));
      written += static_cast<std::uint64_t>(got);
    }
    if (written != size || in.peek() != std::char_traits<char>::eof()) {
      return Internal("tar: " + source.string() + " changed size while being read");
    }
    return Status::Ok();
  }

  StatusOr<std::string> Finish() {
    if (archive_write_close(archive_) != ARCHIVE_OK) return Error("close");
    return std::move(out_);
  }

 private:
  static la_ssize_t Write(struct archive*, void* client, const void* data, size_t n) {
    static_cast<std::string*>(client)->append(static_cast<const char*>(data), n);
    return static_cast<la_ssize_t>(n);
  }

  Status Error(std::string_view what) {
    const char* msg = archive_error_string(archive_);
    return Internal("tar: " + std::string(what) + ": " + (msg != nullptr ? msg : "unknown error"));
  }

  Status AddHeader(const std::string& path, unsigned type, unsigned mode, std::uint64_t size,
                   const char* symlink) {
    std::unique_ptr<archive_entry, decltype(&archive_entry_free)> entry(archive_entry_new(),
                                                                        &archive_entry_free);
    if (!entry) return Internal("tar: out of memory");
    archive_entry_set_pathname(entry.get(), path.c_str());
    archive_entry_set_filetype(entry.get(), type);
    archive_entry_set_perm(entry.get(), mode & 07777);
    archive_entry_set_size(entry.get(), static_cast<la_int64_t>(size));
    archive_entry_set_mtime(entry.get(), 0, 0);
    archive_entry_set_uid(entry.get(), 0);
    archive_entry_set_gid(entry.get(), 0);
    if (symlink != nullptr) archive_entry_set_symlink(entry.get(), symlink);
    if (archive_write_header(archive_, entry.get()) != ARCHIVE_OK) return Error(path);
    return Status::Ok();
  }

  Status WriteData(const std::string& path, std::string_view data) {
    while (!data.empty()) {
      la_ssize_t n = archive_write_data(archive_, data.data(), data.size());
      if (n <= 0) return Error(path);
      data.remove_prefix(static_cast<size_t>(n));
    }
    return Status::Ok();
  }

  struct archive* archive_;
  std::string out_;
};

bool IsSafeRelativePath(std::string_view p) {
  if (p.empty() || p.front() == '/' || p.back() == '/') return false;
  for (const std::string& part : Split(p, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

}  // namespace

StatusOr<std::string> TarDirectory(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("tar: not a folder: " + dir.string());

  // Collect first, then write sorted byte-wise by name in the archive (folders end in '/'),
  // which puts every folder right before its contents.
  std::map<std::string, std::string> paths;  // name in the archive -> path relative to `dir`
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec);
  if (ec) return Internal("tar: cannot list " + dir.string() + ": " + ec.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return Internal("tar: cannot list " + dir.string() + ": " + ec.message());
    std::string rel = it->path().lexically_relative(dir).generic_string();
    fs::file_type type = it->symlink_status(ec).type();
    if (ec) return Internal("tar: cannot stat " + it->path().string() + ": " + ec.message());
    paths.emplace(type == fs::file_type::directory ? rel + "/" : rel, rel);
  }
  if (ec) return Internal("tar: cannot list " + dir.string() + ": " + ec.message());

  TarWriter writer;
  TY_RETURN_IF_ERROR(writer.Open());
  for (const auto& [name, rel] : paths) {
    fs::path full = dir / rel;
    struct stat st;
    if (::lstat(full.c_str(), &st) != 0) {
      return Internal("tar: cannot stat " + full.string() + ": " + std::strerror(errno));
    }
    unsigned mode = static_cast<unsigned>(st.st_mode) & 07777;
    if (S_ISDIR(st.st_mode)) {
      TY_RETURN_IF_ERROR(writer.AddDirectory(rel, mode));
    } else if (S_ISLNK(st.st_mode)) {
      fs::path target = fs::read_symlink(full, ec);
      if (ec) return Internal("tar: cannot read link " + full.string() + ": " + ec.message());
      TY_RETURN_IF_ERROR(writer.AddSymlink(rel, target.string()));
    } else if (S_ISREG(st.st_mode)) {
      TY_RETURN_IF_ERROR(
          writer.AddFileFromDisk(rel, mode, full, static_cast<std::uint64_t>(st.st_size)));
    }
  }
  return writer.Finish();
}

StatusOr<std::string> TarFiles(const std::map<std::string, std::string>& files) {
  std::set<std::string> dirs;
  for (const auto& [path, contents] : files) {
    if (!IsSafeRelativePath(path)) {
      return InvalidArgument("tar: bad path \"" + path +
                             "\": want a relative path without '.', '..' or empty parts");
    }
    for (size_t slash = path.find('/'); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      dirs.insert(path.substr(0, slash));
    }
  }
  for (const std::string& d : dirs) {
    if (files.count(d) != 0) {
      return InvalidArgument("tar: \"" + d + "\" is both a file and a folder");
    }
  }
  // One sequence sorted by name in the archive (folders end in '/'), as TarDirectory writes.
  std::map<std::string, const std::string*> entries;
  for (const std::string& d : dirs) entries.emplace(d + "/", nullptr);
  for (const auto& [path, contents] : files) entries.emplace(path, &contents);

  TarWriter writer;
  TY_RETURN_IF_ERROR(writer.Open());
  for (const auto& [path, contents] : entries) {
    if (contents == nullptr) {
      TY_RETURN_IF_ERROR(writer.AddDirectory(path.substr(0, path.size() - 1), 0755));
    } else {
      TY_RETURN_IF_ERROR(writer.AddFile(path, 0644, *contents));
    }
  }
  return writer.Finish();
}

}  // namespace trainyard::docker
