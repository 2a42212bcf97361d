#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/sha256.h"
#include "trainyard/common/status.h"

namespace trainyard::cas {

// The modification time every object gets when it is published (its "seal"):
// 1'000'000'000 s after the epoch, 2001-09-09T01:46:40Z. Objects are read-only and never
// rewritten, so an object whose mtime is still the seal and whose size is as expected has not
// been written to since it was published (any write through the file system sets the mtime to
// the current time). Readers that cannot afford to re-hash (Snapshotter::Materialize in link
// mode) trust a sealed object and re-hash the others. Because the mtime is fixed, the age of an
// object is its ctime (set when it was renamed into place), not its mtime.
inline constexpr std::int64_t kSealedMtime = 1'000'000'000;

// A content-addressed store of immutable blobs on the local file system.
//
// Layout under `root`: `sha256/<first 2 hex>/<remaining 62 hex>` for objects (mode 0444) and
// `tmp/` for objects being written. An object is written to `tmp/`, flushed to disk, renamed
// into place and the rename flushed, so an object visible under its digest is complete and
// durable; a crash leaves at most stray files in `tmp/`. Published objects are sealed (mtime set
// to kSealedMtime before the rename). Content already present is hashed but
// never rewritten (a file above 1 MiB is copied to `tmp/` while it is hashed, and the copy
// dropped when the object turns out to exist). Digests are lower-case hex SHA-256 of the
// content. Folders are created on first use.
//
// Thread-safe: any number of threads (and processes) may use the same root at once; storing
// the same content concurrently is harmless.
class ObjectStore {
 public:
  // What one Put stored.
  struct PutResult {
    std::string digest;
    std::uint64_t size = 0;  // Bytes read from the source (= stored).
    bool added = false;      // False when the object was already present.
  };

  // Streams one object of unknown content into the store, for uploads: the bytes go to a temp
  // file in tmp/ and are hashed as they arrive; Commit checks them against the digest the
  // sender claimed and publishes the object. Created by NewWriter. Move-only; one thread at a
  // time. Destroying a writer that was not committed removes its temp file. The store must
  // outlive its writers.
  class Writer {
   public:
    Writer(Writer&& other) noexcept;
    Writer& operator=(Writer&& other) noexcept;
    ~Writer();
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    // Appends `data` to the temp file, hashing it. Errors: Internal on I/O errors (e.g. disk
    // full; the writer is then finished and its temp file removed), FailedPrecondition after
    // Commit or after a failed Write.
    Status Write(std::string_view data);

    // Bytes written so far.
    std::uint64_t size() const { return size_; }

    // Finishes the writer. Checks that the content hashes to `expected_digest` (64 lower-case
    // hex); if so publishes the object, durable as with Put, and returns {digest, size,
    // added}; added is false when the object was already present (the temp file is then
    // dropped). Errors: InvalidArgument for a malformed digest, or "content hashes to
    // <actual>, not <expected>" when the content does not match (nothing is published);
    // Internal on I/O errors; FailedPrecondition when already finished. In every case the temp
    // file is gone afterwards.
    StatusOr<PutResult> Commit(const std::string& expected_digest);

   private:
    friend class ObjectStore;
    Writer(ObjectStore* store, int fd, std::filesystem::path tmp);
    // Closes and removes the temp file (when still there) and marks the writer finished.
    void Abandon();

    ObjectStore* store_ = nullptr;  // Borrowed; null once moved from.
    int fd_ = -1;                   // The temp file; -1 once finished.
    std::filesystem::path tmp_;     // Empty once finished.
    std::unique_ptr<Sha256> hash_;
    std::uint64_t size_ = 0;
  };

  explicit ObjectStore(std::filesystem::path root);

  const std::filesystem::path& root() const { return root_; }

  // True when an object with this digest is present. False for malformed digests.
  bool Has(const std::string& digest) const;
  // Has for many digests at once, cheaper per digest (one folder handle, short lookups): element
  // i is true when digests[i] is present. All false when the store has no objects folder.
  std::vector<bool> HasEach(const std::vector<std::string>& digests) const;

  // Where the object with this digest lives (whether or not it exists). Returns an empty path
  // for a malformed digest (not 64 lower-case hex characters).
  std::filesystem::path PathFor(const std::string& digest) const;

  // Stores the content of the regular file `src`, hashing while copying. A symlink at `src` is
  // not followed. Returns the digest. Errors: NotFound (no such file), InvalidArgument (not a
  // regular file, or a symlink), PermissionDenied (unreadable), Internal (I/O).
  StatusOr<std::string> PutFile(const std::filesystem::path& src);
  // PutFile with details.
  StatusOr<PutResult> Put(const std::filesystem::path& src);

  // Stores many files at once: hashes and copies them on a few threads, then makes all new
  // objects durable with two file-system flushes in total instead of two per object (the
  // difference between seconds and milliseconds for thousands of small files); a batch with
  // only a few new objects flushes those files and their folders instead. Nothing is flushed
  // when every object was already present. Results are
  // in the order of `srcs`. Errors: those of PutFile for the first failing file in that order
  // (its index in *failed_index when given); objects of other files may then be stored.
  // With `beneath`, `srcs` are relative to that folder and opened without following links
  // (internal::OpenSourceFile).
  StatusOr<std::vector<PutResult>> PutFiles(const std::vector<std::filesystem::path>& srcs,
                                            size_t* failed_index = nullptr,
                                            const RootedDir* beneath = nullptr);

  // PutFiles for files the caller hands over (downloads in a staging folder on the store's
  // file system, which nobody else writes): each is hashed where it is and then renamed into the
  // store, sealed read-only, instead of copied; a file whose object exists is removed. Same
  // durability as PutFiles. Errors: those of the first failing file; the files not yet moved are
  // left where they were.
  StatusOr<std::vector<PutResult>> AdoptFiles(const std::vector<std::filesystem::path>& files);

  // Stores `data`; returns its digest. Errors: Internal (I/O).
  StatusOr<std::string> PutBytes(std::string_view data);

  // A new writer with an empty temp file in tmp/. Errors: Internal / PermissionDenied when the
  // temp file cannot be created.
  StatusOr<Writer> NewWriter();

  // Reads a whole object and checks its digest. Errors: InvalidArgument (malformed digest),
  // NotFound (absent), Internal naming the object when its content does not hash to its
  // digest (corruption) or on I/O errors.
  StatusOr<std::string> Read(const std::string& digest) const;

  // Re-hashes an object on disk. Same errors as Read.
  Status Verify(const std::string& digest) const;

  // What an object looks like from its metadata alone.
  enum class ObjectState {
    kMissing,   // No object with this digest.
    kSealed,    // A read-only regular file, sealed (mtime kSealedMtime), of the expected size:
                // not written to since it was published.
    kUnsealed,  // Anything else: its content must be re-hashed before it is trusted.
  };
  // One lstat of the object. Malformed digests and stat errors other than "absent" give
  // kUnsealed (so the caller re-hashes, which reports the error).
  ObjectState Inspect(const std::string& digest, std::uint64_t expected_size) const;

  // Re-hashes an object and returns the digest of its content. When that is `digest` (intact),
  // the object is sealed again (mode 0444, mtime kSealedMtime), so that Inspect trusts it
  // next time. Errors: as Read, but a content mismatch is not an error (compare the result);
  // Internal when the object changed while it was hashed.
  StatusOr<std::string> ReverifyAndSeal(const std::string& digest) const;

  // Moves an object (found corrupt) to `corrupt/<digest>` under the root, out of readers' way
  // and kept for inspection; storing the content again restores the object. Returns the new
  // path. Errors: NotFound when absent; Internal on I/O errors.
  StatusOr<std::filesystem::path> Quarantine(const std::string& digest) const;

  // Copies an object to a new file `dest` (created exclusively, never through a symlink, with
  // permission bits `mode`), checking the digest and, when `expected_size` is given, the size
  // while copying. On any error `dest` is removed, so nothing unverified is left behind.
  // Errors: as Read; AlreadyExists when `dest` exists.
  Status CopyTo(const std::string& digest, const std::filesystem::path& dest, unsigned mode,
                const std::uint64_t* expected_size = nullptr) const;

 private:
  // A file hashed and, when its object was missing, copied to a temp file.
  struct Staged {
    PutResult result;
    std::filesystem::path tmp;  // Empty when the object was already present.
  };
  // Hashes `src` and, when the object is missing, copies it to a temp file (fsynced when
  // `sync` is set).
  StatusOr<Staged> Stage(const std::filesystem::path& src, bool sync,
                         const RootedDir* beneath = nullptr) const;
  // Makes staged temp files durable and publishes them (see PutFiles); `errors[i]` is the
  // staging error of file i, if any, which is returned (and every temp file removed) instead.
  StatusOr<std::vector<PutResult>> CommitStaged(std::vector<Staged>& staged,
                                                const std::vector<Status>& errors,
                                                size_t* failed_index);
  // Writes `data` to a new temp file (fsynced when `sync` is set); returns its path.
  StatusOr<std::filesystem::path> StageBytes(std::string_view data, bool sync) const;
  // Renames a complete, flushed temp file into place under `digest` (no flush of the folder).
  Status Publish(const std::filesystem::path& tmp, const std::string& digest) const;
  // Flushes the whole file system holding the store (syncfs).
  Status SyncStore() const;
  // Creates a new temp file in tmp/ and returns its fd (and path in *path).
  StatusOr<int> CreateTemp(std::filesystem::path* path) const;
  Status CheckDigest(const std::string& digest) const;

  std::filesystem::path root_;
};

}  // namespace trainyard::cas
