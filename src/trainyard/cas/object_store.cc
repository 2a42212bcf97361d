#include "trainyard/cas/object_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <utility>
#include <vector>

#include "trainyard/cas/io.h"
#include "trainyard/cas/manifest.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/util.h"

namespace trainyard::cas {
namespace {

using internal::ErrnoError;
using internal::OpenSourceFile;
using internal::ReadSome;
using internal::ScopedFd;
using internal::WriteAll;

constexpr size_t kCopyBufferSize = 1 << 20;

// A per-thread copy buffer, allocated once per thread and left uninitialised.
struct CopyBuffer {
  char* data() { return storage.get(); }
  static constexpr size_t size() { return kCopyBufferSize; }
  std::unique_ptr<char[]> storage{new char[kCopyBufferSize]};
};

CopyBuffer& ThreadCopyBuffer() {
  thread_local CopyBuffer buffer;
  return buffer;
}

// Reads all of `fd` (expected to hold about `size_hint` bytes) into *out.
Status ReadAllInto(int fd, std::uint64_t size_hint, const std::filesystem::path& path,
                   std::string* out) {
  out->resize(static_cast<size_t>(size_hint) + 1);  // +1 to see the end in one call.
  size_t used = 0;
  for (;;) {
    if (used == out->size()) out->resize(out->size() * 2);
    ssize_t n = ReadSome(fd, out->data() + used, out->size() - used);
    if (n < 0) return ErrnoError("cannot read", path, errno);
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  out->resize(used);
  return Status::Ok();
}
// Files up to this size are read once into memory; larger ones are hashed before copying.
constexpr std::uint64_t kReadWholeLimit = 1 << 20;
constexpr unsigned kObjectMode = 0444;
// PutFiles flushes up to this many new objects one by one, more with two syncfs calls.
constexpr size_t kFsyncEachLimit = 16;

// fsyncs the file at `path` (through a new descriptor, which flushes the file's dirty data).
Status FsyncFile(const std::filesystem::path& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("cannot open", path, errno);
  if (::fsync(fd.get()) != 0) return ErrnoError("cannot fsync", path, errno);
  return Status::Ok();
}

// Seals a complete object file before it is published: sets its mtime to kSealedMtime
// (leaving the access time alone). No write may follow.
Status SealFd(int fd, const std::filesystem::path& path) {
  struct timespec times[2];
  times[0].tv_sec = 0;
  times[0].tv_nsec = UTIME_OMIT;
  times[1].tv_sec = static_cast<time_t>(kSealedMtime);
  times[1].tv_nsec = 0;
  if (::futimens(fd, times) != 0)
    return ErrnoError("cannot set the modification time of", path, errno);
  return Status::Ok();
}

Status CorruptObject(const std::string& digest, const std::string& actual,
                     const std::filesystem::path& path) {
  return Internal("object " + digest + " is corrupt: its content hashes to " + actual + " (file " +
                  path.string() + ")");
}

}  // namespace

ObjectStore::ObjectStore(std::filesystem::path root) : root_(std::move(root)) {}

Status ObjectStore::CheckDigest(const std::string& digest) const {
  if (!IsSha256Hex(digest)) {
    return InvalidArgument("'" + digest + "' is not a SHA-256 digest (64 lower-case hex digits)");
  }
  return Status::Ok();
}

std::filesystem::path ObjectStore::PathFor(const std::string& digest) const {
  if (!IsSha256Hex(digest)) return {};
  return root_ / "sha256" / digest.substr(0, 2) / digest.substr(2);
}

bool ObjectStore::Has(const std::string& digest) const {
  if (!IsSha256Hex(digest)) return false;
  struct stat st {};
  return ::stat(PathFor(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::vector<bool> ObjectStore::HasEach(const std::vector<std::string>& digests) const {
  std::vector<bool> present(digests.size(), false);
  const std::filesystem::path objects_dir = root_ / "sha256";
  ScopedFd dir(::open(objects_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return present;
  char rel[64 + 2] = {};  // "<2 hex>/<62 hex>" and the terminating NUL.
  for (size_t i = 0; i < digests.size(); ++i) {
    const std::string& d = digests[i];
    if (!IsSha256Hex(d)) continue;
    rel[0] = d[0];
    rel[1] = d[1];
    rel[2] = '/';
    d.copy(rel + 3, 62, 2);
    rel[65] = '\0';
    struct stat st {};
    present[i] = ::fstatat(dir.get(), rel, &st, 0) == 0 && S_ISREG(st.st_mode);
  }
  return present;
}

StatusOr<int> ObjectStore::CreateTemp(std::filesystem::path* path) const {
  const std::filesystem::path dir = root_ / "tmp";
  for (int attempt = 0;; ++attempt) {
    *path = dir / (RandomHex(12) + ".part");
    int fd = ::open(path->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, kObjectMode);
    if (fd >= 0) return fd;
    if (errno == ENOENT && attempt == 0) {
      TY_RETURN_IF_ERROR(MakeDirs(dir));
      continue;
    }
    return ErrnoError("cannot create temp file", *path, errno);
  }
}

Status ObjectStore::Publish(const std::filesystem::path& tmp, const std::string& digest) const {
  const std::filesystem::path final_path = PathFor(digest);
  const std::filesystem::path shard = final_path.parent_path();
  if (::mkdir(shard.c_str(), 0755) != 0 && errno != EEXIST) {
    if (errno != ENOENT) return ErrnoError("cannot create folder", shard, errno);
    TY_RETURN_IF_ERROR(MakeDirs(shard));
  }
  if (::rename(tmp.c_str(), final_path.c_str()) != 0) {
    return ErrnoError("cannot move object into place at", final_path, errno);
  }
  return Status::Ok();
}

Status ObjectStore::SyncStore() const {
  ScopedFd fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("cannot open", root_, errno);
  if (::syncfs(fd.get()) != 0) return ErrnoError("cannot flush the file system of", root_, errno);
  return Status::Ok();
}

StatusOr<std::filesystem::path> ObjectStore::StageBytes(std::string_view data, bool sync) const {
  std::filesystem::path tmp;
  TY_ASSIGN_OR_RETURN(int out_fd, CreateTemp(&tmp));
  ScopedFd out(out_fd);
  Status s = WriteAll(out.get(), data, tmp);
  if (s.ok()) s = SealFd(out.get(), tmp);
  if (s.ok() && sync && ::fsync(out.get()) != 0) s = ErrnoError("cannot fsync", tmp, errno);
  if (s.ok() && out.Close() != 0) s = ErrnoError("cannot close", tmp, errno);
  if (!s.ok()) {
    out.Reset();
    ::unlink(tmp.c_str());
    return s;
  }
  return tmp;
}

StatusOr<ObjectStore::Staged> ObjectStore::Stage(const std::filesystem::path& src, bool sync,
                                                 const RootedDir* beneath) const {
  ScopedFd in;
  struct stat st {};
  TY_RETURN_IF_ERROR(OpenSourceFile(src, &in, &st, beneath));

  Staged staged;
  PutResult& result = staged.result;
  if (static_cast<std::uint64_t>(st.st_size) <= kReadWholeLimit) {
    // Small file: one read, then hash and (when missing) write from memory.
    std::string data;
    TY_RETURN_IF_ERROR(ReadAllInto(in.get(), static_cast<std::uint64_t>(st.st_size), src, &data));
    result.size = data.size();
    result.digest = Sha256Hex(data);
    if (Has(result.digest)) return staged;
    TY_ASSIGN_OR_RETURN(staged.tmp, StageBytes(data, sync));
    result.added = true;
    return staged;
  }

  // Large file: copied to a temp file while it is hashed, in one pass (a second read and hash
  // would cost more than the copy whenever the object is new, as in a first snapshot). When
  // the object turns out to be present already, the unpublished copy is dropped.
  CopyBuffer& buf = ThreadCopyBuffer();
  TY_ASSIGN_OR_RETURN(int out_fd, CreateTemp(&staged.tmp));
  ScopedFd out(out_fd);
  auto fail = [&](Status s) -> Status {
    out.Reset();
    ::unlink(staged.tmp.c_str());
    return s;
  };
  Sha256 copy_hash;
  result.size = 0;
  for (;;) {
    ssize_t n = ReadSome(in.get(), buf.data(), buf.size());
    if (n < 0) return fail(ErrnoError("cannot read", src, errno));
    if (n == 0) break;
    std::string_view chunk(buf.data(), static_cast<size_t>(n));
    copy_hash.Update(chunk);
    if (Status s = WriteAll(out.get(), chunk, staged.tmp); !s.ok()) return fail(s);
    result.size += static_cast<std::uint64_t>(n);
  }
  result.digest = copy_hash.FinishHex();
  if (Has(result.digest)) {
    out.Reset();
    ::unlink(staged.tmp.c_str());
    staged.tmp.clear();
    return staged;
  }
  if (Status s = SealFd(out.get(), staged.tmp); !s.ok()) return fail(s);
  if (sync && ::fsync(out.get()) != 0) return fail(ErrnoError("cannot fsync", staged.tmp, errno));
  if (out.Close() != 0) return fail(ErrnoError("cannot close", staged.tmp, errno));
  result.added = true;
  return staged;
}

StatusOr<std::string> ObjectStore::PutFile(const std::filesystem::path& src) {
  TY_ASSIGN_OR_RETURN(PutResult r, Put(src));
  return std::move(r.digest);
}

StatusOr<ObjectStore::PutResult> ObjectStore::Put(const std::filesystem::path& src) {
  TY_ASSIGN_OR_RETURN(Staged staged, Stage(src, /*sync=*/true));
  if (staged.tmp.empty()) return staged.result;
  if (Status s = Publish(staged.tmp, staged.result.digest); !s.ok()) {
    ::unlink(staged.tmp.c_str());
    return s;
  }
  TY_RETURN_IF_ERROR(internal::SyncDir(PathFor(staged.result.digest).parent_path()));
  return staged.result;
}

StatusOr<std::vector<ObjectStore::PutResult>> ObjectStore::PutFiles(
    const std::vector<std::filesystem::path>& srcs, size_t* failed_index,
    const RootedDir* beneath) {
  const size_t n = srcs.size();
  std::vector<Staged> staged(n);
  std::vector<Status> errors(n);
  internal::ParallelFor(n, [&](size_t i) {
    StatusOr<Staged> s = Stage(srcs[i], /*sync=*/false, beneath);
    if (!s.ok()) {
      errors[i] = s.status();
      return false;
    }
    staged[i] = std::move(s).value();
    return true;
  });
  return CommitStaged(staged, errors, failed_index);
}

StatusOr<std::vector<ObjectStore::PutResult>> ObjectStore::AdoptFiles(
    const std::vector<std::filesystem::path>& files) {
  const size_t n = files.size();
  std::vector<Staged> staged(n);
  std::vector<Status> errors(n);
  const std::filesystem::path tmp_dir = root_ / "tmp";
  TY_RETURN_IF_ERROR(MakeDirs(tmp_dir));
  internal::ParallelFor(n, [&](size_t i) {
    // Hashed where it is, then moved into tmp/ (a rename: no copy) unless its object exists.
    ScopedFd fd(::open(files[i].c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    struct stat st {};
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      errors[i] = ErrnoError("cannot open", files[i], errno);
      return false;
    }
    auto digest = Sha256Fd(fd.get(), files[i].string());
    if (!digest.ok()) {
      errors[i] = digest.status();
      return false;
    }
    Staged& out = staged[i];
    out.result.digest = *digest;
    out.result.size = static_cast<std::uint64_t>(st.st_size);
    if (Has(out.result.digest)) {
      ::unlink(files[i].c_str());
      return true;
    }
    const std::filesystem::path tmp = tmp_dir / (RandomHex(12) + ".part");
    Status sealed = Status::Ok();
    if (::fchmod(fd.get(), kObjectMode) != 0) sealed = ErrnoError("cannot seal", files[i], errno);
    if (sealed.ok()) sealed = SealFd(fd.get(), files[i]);
    if (sealed.ok() && ::rename(files[i].c_str(), tmp.c_str()) != 0) {
      sealed = ErrnoError("cannot move into the store", files[i], errno);
    }
    if (!sealed.ok()) {
      errors[i] = sealed;
      return false;
    }
    out.tmp = tmp;
    out.result.added = true;
    return true;
  });
  return CommitStaged(staged, errors, nullptr);
}

StatusOr<std::vector<ObjectStore::PutResult>> ObjectStore::CommitStaged(
    std::vector<Staged>& staged, const std::vector<Status>& errors, size_t* failed_index) {
  const size_t n = staged.size();
  auto discard_temps = [&] {
    for (Staged& s : staged) {
      if (!s.tmp.empty()) ::unlink(s.tmp.c_str());
      s.tmp.clear();
    }
  };
  for (size_t i = 0; i < n; ++i) {
    if (!errors[i].ok()) {
      discard_temps();
      if (failed_index != nullptr) *failed_index = i;
      return errors[i];
    }
  }
  const auto new_count = static_cast<size_t>(
      std::count_if(staged.begin(), staged.end(), [](const Staged& s) { return !s.tmp.empty(); }));
  if (new_count > 0 && new_count <= kFsyncEachLimit) {
    // A few new objects: flushing each file and its folder costs less than flushing the whole
    // file system, whose cost depends on whatever else is dirty on it.
    Status s = Status::Ok();
    for (Staged& st : staged) {
      if (st.tmp.empty() || !s.ok()) continue;
      s = FsyncFile(st.tmp);
    }
    std::vector<std::filesystem::path> shards;
    for (Staged& st : staged) {
      if (st.tmp.empty() || !s.ok()) continue;
      if (Has(st.result.digest)) {  // The same content twice in this batch, or a racing writer.
        ::unlink(st.tmp.c_str());
        st.result.added = false;
      } else {
        s = Publish(st.tmp, st.result.digest);
        if (s.ok()) shards.push_back(PathFor(st.result.digest).parent_path());
      }
      if (s.ok()) st.tmp.clear();
    }
    if (!s.ok()) {
      discard_temps();
      return s;
    }
    std::sort(shards.begin(), shards.end());
    shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
    for (const std::filesystem::path& shard : shards) TY_RETURN_IF_ERROR(internal::SyncDir(shard));
  } else if (new_count > 0) {
    // One flush makes every temp file's content durable before any of them becomes visible
    // under its digest; a second one makes the renames durable.
    if (Status s = SyncStore(); !s.ok()) {
      discard_temps();
      return s;
    }
    for (Staged& s : staged) {
      if (s.tmp.empty()) continue;
      if (Has(s.result.digest)) {  // The same content twice in this batch, or a racing writer.
        ::unlink(s.tmp.c_str());
        s.result.added = false;
      } else if (Status p = Publish(s.tmp, s.result.digest); !p.ok()) {
        discard_temps();
        return p;
      }
      s.tmp.clear();
    }
    TY_RETURN_IF_ERROR(SyncStore());
  }
  std::vector<PutResult> results;
  results.reserve(n);
  for (Staged& s : staged) results.push_back(std::move(s.result));
  return results;
}

StatusOr<std::string> ObjectStore::PutBytes(std::string_view data) {
  std::string digest = Sha256Hex(data);
  if (Has(digest)) return digest;
  TY_ASSIGN_OR_RETURN(std::filesystem::path tmp, StageBytes(data, /*sync=*/true));
  if (Status s = Publish(tmp, digest); !s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  TY_RETURN_IF_ERROR(internal::SyncDir(PathFor(digest).parent_path()));
  return digest;
}

ObjectStore::Writer::Writer(ObjectStore* store, int fd, std::filesystem::path tmp)
    : store_(store), fd_(fd), tmp_(std::move(tmp)), hash_(std::make_unique<Sha256>()) {}

ObjectStore::Writer::Writer(Writer&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)),
      fd_(std::exchange(other.fd_, -1)),
      tmp_(std::exchange(other.tmp_, {})),
      hash_(std::move(other.hash_)),
      size_(std::exchange(other.size_, 0)) {}

ObjectStore::Writer& ObjectStore::Writer::operator=(Writer&& other) noexcept {
  if (this != &other) {
    Abandon();
    store_ = std::exchange(other.store_, nullptr);
    fd_ = std::exchange(other.fd_, -1);
    tmp_ = std::exchange(other.tmp_, {});
    hash_ = std::move(other.hash_);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

ObjectStore::Writer::~Writer() { Abandon(); }

void ObjectStore::Writer::Abandon() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
  tmp_.clear();
}

Status ObjectStore::Writer::Write(std::string_view data) {
  if (fd_ < 0) return FailedPrecondition("object writer is already finished");
  if (Status s = WriteAll(fd_, data, tmp_); !s.ok()) {
    Abandon();
    return s;
  }
  hash_->Update(data);
  size_ += data.size();
  return Status::Ok();
}

StatusOr<ObjectStore::PutResult> ObjectStore::Writer::Commit(const std::string& expected_digest) {
  if (fd_ < 0) return FailedPrecondition("object writer is already finished");
  if (Status s = store_->CheckDigest(expected_digest); !s.ok()) {
    Abandon();
    return s;
  }
  PutResult result;
  result.digest = hash_->FinishHex();
  hash_.reset();
  result.size = size_;
  if (result.digest != expected_digest) {
    Abandon();
    return InvalidArgument("content hashes to " + result.digest + ", not " + expected_digest);
  }
  if (store_->Has(result.digest)) {
    Abandon();
    return result;
  }
  Status s = SealFd(fd_, tmp_);
  if (s.ok() && ::fsync(fd_) != 0) s = ErrnoError("cannot fsync", tmp_, errno);
  if (s.ok()) {
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) s = ErrnoError("cannot close", tmp_, errno);
  }
  if (s.ok()) s = store_->Publish(tmp_, result.digest);
  if (!s.ok()) {
    Abandon();
    return s;
  }
  tmp_.clear();  // Published: no longer ours to remove.
  TY_RETURN_IF_ERROR(internal::SyncDir(store_->PathFor(result.digest).parent_path()));
  result.added = true;
  return result;
}

StatusOr<ObjectStore::Writer> ObjectStore::NewWriter() {
  std::filesystem::path tmp;
  TY_ASSIGN_OR_RETURN(int fd, CreateTemp(&tmp));
  return Writer(this, fd, std::move(tmp));
}

StatusOr<std::string> ObjectStore::Read(const std::string& digest) const {
  TY_RETURN_IF_ERROR(CheckDigest(digest));
  const std::filesystem::path path = PathFor(digest);
  StatusOr<std::string> data = ReadFile(path);
  if (!data.ok()) {
    if (data.status().code() == StatusCode::kNotFound) {
      return NotFound("object " + digest + " is not in the store at " + root_.string());
    }
    return data.status().WithPrefix("object " + digest);
  }
  std::string actual = Sha256Hex(*data);
  if (actual != digest) return CorruptObject(digest, actual, path);
  return data;
}

Status ObjectStore::Verify(const std::string& digest) const {
  TY_RETURN_IF_ERROR(CheckDigest(digest));
  const std::filesystem::path path = PathFor(digest);
  StatusOr<std::string> actual = Sha256File(path);
  if (!actual.ok()) {
    if (actual.status().code() == StatusCode::kNotFound) {
      return NotFound("object " + digest + " is not in the store at " + root_.string());
    }
    return actual.status().WithPrefix("object " + digest);
  }
  if (*actual != digest) return CorruptObject(digest, *actual, path);
  return Status::Ok();
}

ObjectStore::ObjectState ObjectStore::Inspect(const std::string& digest,
                                              std::uint64_t expected_size) const {
  if (!IsSha256Hex(digest)) return ObjectState::kUnsealed;
  struct stat st {};
  if (::lstat(PathFor(digest).c_str(), &st) != 0) {
    return errno == ENOENT ? ObjectState::kMissing : ObjectState::kUnsealed;
  }
  const bool sealed = S_ISREG(st.st_mode) && (st.st_mode & 0222) == 0 &&
                      static_cast<std::uint64_t>(st.st_size) == expected_size &&
                      st.st_mtim.tv_sec == static_cast<time_t>(kSealedMtime) &&
                      st.st_mtim.tv_nsec == 0;
  return sealed ? ObjectState::kSealed : ObjectState::kUnsealed;
}

StatusOr<std::string> ObjectStore::ReverifyAndSeal(const std::string& digest) const {
  TY_RETURN_IF_ERROR(CheckDigest(digest));
  const std::filesystem::path path = PathFor(digest);
  ScopedFd in(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!in.valid()) {
    if (errno == ENOENT) {
      return NotFound("object " + digest + " is not in the store at " + root_.string());
    }
    return ErrnoError("cannot read object", path, errno);
  }
  struct stat before {};
  if (::fstat(in.get(), &before) != 0) return ErrnoError("cannot stat object", path, errno);
  if (!S_ISREG(before.st_mode)) return Internal("object " + path.string() + " is not a file");
  ::posix_fadvise(in.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  Sha256 hash;
  CopyBuffer& buf = ThreadCopyBuffer();
  for (;;) {
    ssize_t n = ReadSome(in.get(), buf.data(), buf.size());
    if (n < 0) return ErrnoError("cannot read object", path, errno);
    if (n == 0) break;
    hash.Update(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  std::string actual = hash.FinishHex();
  if (actual != digest) return actual;
  // Sealed only when nothing changed it while it was hashed (a write changes the ctime).
  struct stat after {};
  if (::fstat(in.get(), &after) != 0) return ErrnoError("cannot stat object", path, errno);
  if (after.st_size != before.st_size || after.st_ctim.tv_sec != before.st_ctim.tv_sec ||
      after.st_ctim.tv_nsec != before.st_ctim.tv_nsec) {
    return Internal("object " + digest + " changed while it was verified (file " + path.string() +
                    ")");
  }
  if ((after.st_mode & 07777) != kObjectMode && ::fchmod(in.get(), kObjectMode) != 0) {
    return ErrnoError("cannot make read-only", path, errno);
  }
  TY_RETURN_IF_ERROR(SealFd(in.get(), path));
  return actual;
}

StatusOr<std::filesystem::path> ObjectStore::Quarantine(const std::string& digest) const {
  TY_RETURN_IF_ERROR(CheckDigest(digest));
  const std::filesystem::path from = PathFor(digest);
  const std::filesystem::path dir = root_ / "corrupt";
  TY_RETURN_IF_ERROR(MakeDirs(dir));
  std::filesystem::path to = dir / digest;
  if (::rename(from.c_str(), to.c_str()) != 0) {
    if (errno == ENOENT) {
      return NotFound("object " + digest + " is not in the store at " + root_.string());
    }
    return ErrnoError("cannot move corrupt object to", to, errno);
  }
  return to;
}

Status ObjectStore::CopyTo(const std::string& digest, const std::filesystem::path& dest,
                           unsigned mode, const std::uint64_t* expected_size) const {
  TY_RETURN_IF_ERROR(CheckDigest(digest));
  const std::filesystem::path path = PathFor(digest);
  ScopedFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) {
    if (errno == ENOENT) {
      return NotFound("object " + digest + " is not in the store at " + root_.string());
    }
    return ErrnoError("cannot read object", path, errno);
  }
  ::posix_fadvise(in.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  ScopedFd out(::open(dest.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out.valid()) {
    if (errno == EEXIST) return AlreadyExists(PrintablePath(dest.native()) + " already exists");
    return ErrnoError("cannot create", dest, errno);
  }
  auto fail = [&](Status s) -> Status {
    out.Reset();
    ::unlink(dest.c_str());
    return s;
  };

  Sha256 hash;
  std::uint64_t size = 0;
  CopyBuffer& buf = ThreadCopyBuffer();
  for (;;) {
    ssize_t n = ReadSome(in.get(), buf.data(), buf.size());
    if (n < 0) return fail(ErrnoError("cannot read object", path, errno));
    if (n == 0) break;
    std::string_view chunk(buf.data(), static_cast<size_t>(n));
    hash.Update(chunk);
    if (Status s = WriteAll(out.get(), chunk, dest); !s.ok()) return fail(s);
    size += static_cast<std::uint64_t>(n);
  }
  std::string actual = hash.FinishHex();
  if (actual != digest) return fail(CorruptObject(digest, actual, path));
  if (expected_size != nullptr && size != *expected_size) {
    return fail(Internal("object " + digest + " has " + std::to_string(size) +
                         " bytes, the manifest says " + std::to_string(*expected_size)));
  }
  if (::fchmod(out.get(), mode) != 0) return fail(ErrnoError("cannot chmod", dest, errno));
  if (out.Close() != 0) return fail(ErrnoError("cannot close", dest, errno));
  return Status::Ok();
}

}  // namespace trainyard::cas
