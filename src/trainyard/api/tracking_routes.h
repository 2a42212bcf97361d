#pragma once

#include <cstddef>
#include <cstdint>

#include "trainyard/common/workspace.h"
#include "trainyard/http/http_server.h"
#include "trainyard/store/store.h"
#include "trainyard/tracking/metric_codec.h"
#include "trainyard/tracking/series_store.h"

namespace trainyard::api {

// Limits of the run-tracking routes (docs/tracking.md).
struct TrackingRouteOptions {
  // Largest body of POST /metrics (413 naming it beyond).
  std::uint64_t max_metrics_body_bytes = tracking::kDefaultMaxMetricsBodyBytes;
  // Largest JSON body of the other POST/PATCH routes (entries, tags, properties, status).
  std::uint64_t max_json_body_bytes = 16 << 20;
  // Largest file PUT /files/{path} stores.
  std::uint64_t max_file_bytes = std::uint64_t{2} << 30;
  // Points GET /metrics/{name} answers without ?max_points (a longer series is downsampled to
  // this many and says "downsampled": true); an explicit max_points may ask for more.
  std::size_t default_max_points = 1'000'000;
  // Tags and properties a run may have (a PATCH or POST that would exceed one is refused whole,
  // 400 naming the limit). Entries are capped by the tracking store.
  std::uint64_t max_tags_per_run = 10'000;
  std::uint64_t max_properties_per_run = 10'000;
  // The server's pool (HttpServerOptions::pools) the read routes run on, so that a chart read
  // never waits behind metric ingest; "" for the blocking pool every other route shares.
  std::string read_pool;
};

// Registers the routes a run reports through, all under /api/v1/jobs/{name}/ (docs/tracking.md):
//   POST metrics, GET metrics, GET metrics/{metric}   scalar series (`tracking`)
//   POST entries, GET entries                          lists, rows, tables, images (`tracking`)
//   GET/PATCH tags, GET/POST properties, POST status   run metadata (`store`)
//   PUT files/{path...}                                a file of the run's folder
// Every route answers 404 naming the run when `store` does not know it. Work that touches a
// database or fsyncs runs off the server's event loop: reads on `read_pool`, writes on the
// blocking pool. Borrows `store`, `tracking` and `layout`: they must outlive the server.
void AddTrackingRoutes(HttpServer& server, store::Store& store, tracking::SeriesStore& tracking,
                       const WorkspaceLayout& layout, const TrackingRouteOptions& options = {});

}  // namespace trainyard::api
