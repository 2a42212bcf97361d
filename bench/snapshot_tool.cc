// Drives the snapshotter from the command line for bench/snapshot.sh, so that whole-process
// times can be compared with git and tar by hyperfine.
//
//   snapshot_tool snapshot STORE_DIR SRC_DIR     prints "<id> <files hashed> <files cached>"
//   snapshot_tool materialize STORE_DIR ID DEST [--copy]   hard links (default) or copies
//   snapshot_tool sha256-speed                   prints SHA-256 MB/s on one core
//
// STORE_DIR holds `cas/` (objects), `cas/statcache/` and `snapshots/`, as a workspace does.

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/common/sha256.h"

namespace {

namespace fs = std::filesystem;
using trainyard::cas::ObjectStore;
using trainyard::cas::Snapshotter;

int Usage() {
  std::fprintf(stderr,
               "usage: snapshot_tool snapshot STORE_DIR SRC_DIR\n"
               "       snapshot_tool materialize STORE_DIR ID DEST [--copy]\n"
               "       snapshot_tool sha256-speed\n");
  return 2;
}

int Sha256Speed() {
  const std::string data(64 << 20, 'x');
  const auto start = std::chrono::steady_clock::now();
  int rounds = 0;
  double seconds = 0;
  std::string sink;
  do {
    sink += trainyard::Sha256Hex(data).substr(0, 1);
    ++rounds;
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (seconds < 1.0);
  std::printf("%.0f\n", rounds * static_cast<double>(data.size()) / seconds / 1e6);
  return sink.empty() ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string_view(argv[1]) == "sha256-speed") return Sha256Speed();
  if (argc < 4) return Usage();
  const std::string_view cmd = argv[1];
  const fs::path store = argv[2];
  ObjectStore objects(store / "cas");
  Snapshotter snapshotter(objects, store / "snapshots", store / "cas" / "statcache");
  if (cmd == "snapshot" && argc == 4) {
    trainyard::cas::SnapshotLimits limits;
    limits.max_bytes = 1ull << 40;
    limits.max_files = 10'000'000;
    auto r = snapshotter.Snapshot(argv[3], limits);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return 1;
    }
    std::printf("%s %llu %llu\n", r->id.c_str(), static_cast<unsigned long long>(r->files_hashed),
                static_cast<unsigned long long>(r->files_from_cache));
    return 0;
  }
  const bool copy = argc == 6 && std::string_view(argv[5]) == "--copy";
  if (cmd == "materialize" && (argc == 5 || copy)) {
    trainyard::Status s = snapshotter.Materialize(
        argv[3], argv[4],
        copy ? trainyard::cas::MaterializeMode::kCopy : trainyard::cas::MaterializeMode::kLink);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
    return 0;
  }
  return Usage();
}
