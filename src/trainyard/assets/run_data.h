#pragma once

// A run's data: its inputs fetched before it starts, its outputs written to datastores when it
// ends (docs/data.md, "Inputs and outputs").
//
// An input that is a local path stays one. Every other source (a datastore path, a run's
// outputs, an http(s) URL, wasbs://, abfss://, s3://) becomes a read-only folder of the
// workspace's data cache: the objects are listed, each one is fetched only when its entity tag
// (or, for a URL, its ETag / Last-Modified validators) is not already known, stored
// content-addressed in the object store the code snapshots use, and the folder is the snapshot
// of that listing, made once per distinct content and shared by every run that reads it. A
// second run of an unchanged input therefore transfers nothing: one listing, then the folder.
// A fetch that fails leaves no partial file anywhere a run can see.

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "trainyard/assets/datastores.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/common/mutex.h"
#include "trainyard/spec/data_uri.h"
#include "trainyard/spec/definition.h"

namespace trainyard::assets {

class Catalog;
class Registries;
struct AssetSource;

// Thread-safe. Borrows everything it is given; all must outlive it.
class RunData {
 public:
  // `cache_dir` holds the data cache: validators of fetched objects and the shared folders.
  // `runs_dir` is where runs' folders are (for azureml://jobs/<run>/outputs/... inputs).
  RunData(Datastores& datastores, cas::ObjectStore& objects, cas::Snapshotter& snapshots,
          std::filesystem::path cache_dir, std::filesystem::path runs_dir);

  // Where inputs that name a data asset or model (azureml:<name>:<version>, @latest, @label)
  // are looked up. Set once, before any other call; without one such inputs are refused.
  // `registries` (optional) resolves azureml://registries/<r>/(models|data)/... inputs.
  void UseCatalog(Catalog* catalog, Registries* registries = nullptr) {
    catalog_ = catalog;
    registries_ = registries;
  }

  // At submit: every input and output names something that exists (a known datastore, an
  // existing run, a data asset or model of a fitting type), so a typo fails the submit, not the
  // run. An asset named by a label (`@latest`) is pinned to the version it names now, so the
  // run records what it read. InvalidArgument / NotFound naming the input.
  Status Check(spec::RunRequest& request);

  // In Preparing: `request.inputs` with every input that is not a local path turned into one
  // (a folder, or a file in one, of the data cache), and `direct` inputs turned into literals
  // holding their URI. `log` receives a line per input (what was fetched, what was reused).
  // Errors name the input, the source and, for HTTP, the status: "input 'data': GET
  // https://host/x.csv answered 404".
  // `canceled` (optional) is asked between files: true stops the fetch with Cancelled.
  using Log = std::function<void(std::string_view)>;
  StatusOr<std::map<std::string, spec::InputSpec>> ResolveInputs(
      const spec::RunRequest& request, const Log& log, const std::function<bool()>& canceled = {});

  // What Capture took into the object store: a snapshot of it, made once per distinct
  // content.
  struct Captured {
    std::string snapshot_id;
    std::string file;  // a file source: its path in the snapshot; a folder: ""
    std::uint64_t files = 0;
    std::uint64_t bytes = 0;
  };
  // Fetches what `uri` names (a datastore path, a run's outputs, an http(s) URL, wasbs://,
  // abfss://, s3://) into the object store through the data cache, as an input is, and
  // returns its snapshot. `what` starts every message and log line ("input 'data'",
  // "model m"). Internal for a local path or an asset reference (nothing to fetch).
  StatusOr<Captured> Capture(const std::string& what, const spec::DataUri& uri, bool file,
                             const Log& log, const std::function<bool()>& canceled = {});
  // Where a captured snapshot is readable: its folder of the data cache (made on first use),
  // or the file in it.
  StatusOr<std::filesystem::path> PathOf(const Captured& captured);

  // In Finalizing: copies each output with a datastore `path` from `run_dir/outputs/<name>` to
  // that datastore, file by file, then registers each output with a `name` as a data asset (a
  // model for a model type) with the run as its lineage. Errors name the output, the file and
  // the datastore, or the asset.
  Status DeliverOutputs(const spec::RunRequest& request, const std::filesystem::path& run_dir,
                        const Log& log);

 private:
  Status RegisterOutputs(const spec::RunRequest& request, const std::filesystem::path& run_dir,
                         const Log& log);
  StatusOr<AssetSource> ResolveAsset(const spec::InputSpec& in, const spec::DataUri& uri);
  StatusOr<Captured> CaptureObjects(const std::string& what, bool file, const spec::DataUri& uri,
                                    const Log& log, const std::function<bool()>& canceled);
  StatusOr<Captured> CaptureHttp(const std::string& what, const spec::DataUri& uri, const Log& log);
  StatusOr<std::unique_ptr<ObjectClient>> ClientFor(const spec::DataUri& uri,
                                                    std::string* location);
  // The folder of snapshot `id` in the cache, materialised on first use.
  StatusOr<std::filesystem::path> Folder(const std::string& id);
  Mutex& LockFor(const std::string& key);

  Datastores& datastores_;
  cas::ObjectStore& objects_;
  cas::Snapshotter& snapshots_;
  const std::filesystem::path cache_dir_;
  const std::filesystem::path runs_dir_;
  Catalog* catalog_ = nullptr;
  Registries* registries_ = nullptr;
  Mutex locks_mu_;
  // One lock per cached source (by its index file), so two runs of the same input fetch once.
  std::map<std::string, std::unique_ptr<Mutex>> locks_ GUARDED_BY(locks_mu_);
};

}  // namespace trainyard::assets
