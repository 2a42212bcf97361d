#include "trainyard/api/daemon.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include "trainyard/api/asset_routes.h"
#include "trainyard/api/compute_routes.h"
#include "trainyard/api/datastore_routes.h"
#include "trainyard/api/environment_routes.h"
#include "trainyard/api/job_routes.h"
#include "trainyard/api/registry_routes.h"
#include "trainyard/api/run_scope.h"
#include "trainyard/api/snapshot_routes.h"
#include "trainyard/api/tracking_routes.h"
#include "trainyard/assets/catalog.h"
#include "trainyard/assets/datastores.h"
#include "trainyard/assets/registries.h"
#include "trainyard/assets/run_data.h"
#include "trainyard/cas/object_store.h"
#include "trainyard/cas/snapshot.h"
#include "trainyard/common/fs.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/tls.h"
#include "trainyard/common/util.h"
#include "trainyard/common/workspace.h"
#include "trainyard/docker/docker_config.h"
#include "trainyard/docker/http_engine.h"
#include "trainyard/envbuild/image_builder.h"
#include "trainyard/exec/docker/docker_runs.h"
#include "trainyard/exec/process/process_runs.h"
#include "trainyard/exec/slurm/slurm_runs.h"
#include "trainyard/http/http_server.h"
#include "trainyard/http/socket_relay.h"
#include "trainyard/sched/scheduler.h"
#include "trainyard/slurm/slurm.h"
#include "trainyard/spec/compute.h"
#include "trainyard/store/store.h"
#include "trainyard/tracking/run_files.h"
#include "trainyard/tracking/series_store.h"

namespace trainyard::api {
namespace {

using json = nlohmann::json;

constexpr const char* kVersion = "0.1.0";
// The HTTP server's pool for reads of run tracking (HttpServerOptions::pools).
constexpr const char* kReadPool = "read";

}  // namespace

struct Daemon::Impl {
  WorkspaceLayout layout;
  WorkspaceConfig config;
  int lock_fd = -1;
  std::string token;
  std::unique_ptr<store::Store> store;
  std::optional<SecretBox> secrets;
  std::unique_ptr<docker::Engine> owned_engine;
  docker::Engine* engine = nullptr;
  std::unique_ptr<cas::ObjectStore> objects;
  std::unique_ptr<cas::Snapshotter> snapshots;
  std::unique_ptr<envbuild::ImageBuilder> builder;
  // The nodes of docker and process computes, and the executor of each compute type.
  std::unique_ptr<exec::DockerExecutor> containers;
  std::unique_ptr<exec::ProcessExecutor> processes;
  std::unique_ptr<slurm::Client> owned_slurm;
  std::unique_ptr<exec::DockerRunExecutor> docker_runs;
  std::unique_ptr<exec::ProcessRunExecutor> process_runs;
  std::unique_ptr<exec::SlurmRunExecutor> slurm_runs;
  exec::ExecutorRegistry executors;
  std::unique_ptr<envbuild::EnvironmentRegistry> environments;
  std::unique_ptr<assets::Datastores> datastores;
  std::unique_ptr<assets::RunData> run_data;  // runs' inputs and outputs beyond local paths
  std::unique_ptr<assets::Catalog> catalog;   // data assets and models
  std::unique_ptr<assets::Registries> registries;
  std::unique_ptr<sched::Scheduler> scheduler;
  std::unique_ptr<tracking::SeriesStore> series;  // Run metrics (<workspace>/tracking.db).
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<SocketRelay> socket_relay;  // The API for runs in containers.
  // Routes with state of their own (the others are free functions).
  std::unique_ptr<EnvironmentRoutes> environment_routes;
  std::unique_ptr<JobRoutes> job_routes;
  bool wrote_server_file = false;
  std::string public_url;  // serving beyond loopback: https://ADDR:PORT (Daemon::public_url)
  std::string tls_pin;

  std::string BaseUrl() const { return "http://127.0.0.1:" + std::to_string(http->port()); }

  ~Impl() {
    socket_relay.reset();
    if (http) http->Stop();
    environment_routes.reset();  // waits for its builds, before the builder they use goes away
    job_routes.reset();
    scheduler.reset();  // joins run workers
    if (wrote_server_file) ::unlink(layout.ServerFile().c_str());
    if (lock_fd >= 0) ::close(lock_fd);
  }

  void InstallRoutes();
};

void Daemon::Impl::InstallRoutes() {
  HttpServer& s = *http;
  // Answered on the event loop: it stays fast however busy the blocking pool is.
  s.RouteOnLoop("GET", "/api/v1/health", SyncHandler([](HttpRequest&) {
                  return HttpResponse::Json(200, {{"status", "ok"}, {"version", kVersion}});
                }));
  s.Route(
      "GET", "/api/v1/workspace", SyncHandler([this](HttpRequest&) {
        // The limits the snapshot routes enforce, so a remote CLI refuses an oversized folder
        // before uploading it.
        const json limits = {{"max_files", config.snapshot_max_files},
                             {"max_bytes", config.snapshot_max_bytes}};
        // What the machine has, which the Python SDK cuts a cloud VM size down to.
        const spec::MachineSize m = spec::ThisMachine();
        const json machine = {{"cpus", m.cpus}, {"memory_bytes", m.memory_bytes}, {"gpus", m.gpus}};
        return HttpResponse::Json(200, {{"root", layout.root.string()},
                                        {"version", kVersion},
                                        {"snapshot_limits", limits},
                                        {"default_image", config.default_image},
                                        {"machine", machine}});
      }));

  environment_routes =
      std::make_unique<EnvironmentRoutes>(*store, *environments, *snapshots, *builder);
  environment_routes->Install(s);
  job_routes = std::make_unique<JobRoutes>(*store, *scheduler, *series, layout,
                                           [this] { return BaseUrl(); });
  job_routes->Install(s);

  // Snapshots: a remote client's objects and manifests, and folders of this machine.
  SnapshotRouteOptions snapshot_options;
  snapshot_options.max_object_bytes = config.snapshot_max_bytes;
  snapshot_options.max_snapshot_bytes = config.snapshot_max_bytes;
  snapshot_options.max_snapshot_files = config.snapshot_max_files;
  snapshot_options.stat_cache_dir = layout.ObjectsDir() / "statcache";  // the local CLI's
  AddSnapshotRoutes(s, *objects, *snapshots, snapshot_options);

  // Run tracking: metrics, entries, tags, properties, files, the script's verdict.
  TrackingRouteOptions tracking_options;
  tracking_options.max_tags_per_run = config.max_tags_per_run;
  tracking_options.max_properties_per_run = config.max_properties_per_run;
  tracking_options.read_pool = kReadPool;
  AddTrackingRoutes(s, *store, *series, layout, tracking_options);

  // Compute targets: create-or-attach, list, the status view, delete.
  AddComputeRoutes(s, *scheduler);

  // Datastores: create (access checked first), list, show, delete.
  AddDatastoreRoutes(s, *datastores);

  // Data assets and models: versions, labels, archive; a stored object's bytes.
  AddAssetRoutes(s, *catalog, *objects);

  // Registries: attach, list, show, detach; their environments, data assets and models.
  AddRegistryRoutes(s, *registries, *snapshots);
}

namespace {

// The Python SDK mounted into runs: $TRAINYARD_SDK_DIR, else share/trainyard/sdk/python beside
// an installed binary, else the source tree this binary was built from. Empty when none has the
// package (runs then get no SDK, and say so only if they import it).
fs::path FindPythonSdk() {
  std::vector<fs::path> candidates;
  if (const char* dir = std::getenv("TRAINYARD_SDK_DIR"); dir != nullptr && *dir != '\0') {
    candidates.emplace_back(dir);
  }
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path().parent_path() / "share/trainyard/sdk/python");
  candidates.push_back(fs::path(TRAINYARD_SOURCE_DIR) / "sdk/python");
  for (const fs::path& c : candidates) {
    if (fs::is_regular_file(c / "trainyard" / "__init__.py", ec)) return fs::absolute(c);
  }
  spdlog::warn("the Python SDK (sdk/python) was not found; runs cannot import trainyard");
  return {};
}

// Raises the soft descriptor limit to the hard one (each connection, log and run costs
// descriptors); returns the soft limit now in force.
std::uint64_t RaiseDescriptorLimit() {
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return 1024;
  if (limit.rlim_cur < limit.rlim_max) {
    struct rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return limit.rlim_cur == RLIM_INFINITY ? std::uint64_t{1} << 20 : limit.rlim_cur;
}

// The connection cap: workspace.json's max_connections when set, else half the descriptors
// left after a reserve for the database, logs and runs, at most 10,000.
int ConnectionCap(std::uint64_t descriptors, int configured) {
  if (configured > 0) return configured;
  constexpr std::uint64_t kReserve = 512;
  const std::uint64_t spare = descriptors > kReserve ? (descriptors - kReserve) / 2 : 0;
  return static_cast<int>(std::clamp<std::uint64_t>(spare, 64, 10'000));
}

// What serving beyond loopback needs: the address's parsed form, the names a certificate for it
// must carry, and how a node of the cluster reaches it.
struct PublicAddress {
  std::vector<std::string> names;  // IP addresses and host names, for the certificate
  std::string reach;               // the host part of its URL ("[v6]" bracketed)
};

bool IsLoopback(const std::string& host) {
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

std::string ThisHostName() {
  char name[256] = {0};
  if (::gethostname(name, sizeof name - 1) != 0) return "";
  return name;
}

StatusOr<PublicAddress> DescribePublicAddress(const std::string& host) {
  in_addr v4{};
  in6_addr v6{};
  const bool is_v4 = ::inet_pton(AF_INET, host.c_str(), &v4) == 1;
  const bool is_v6 = !is_v4 && ::inet_pton(AF_INET6, host.c_str(), &v6) == 1;
  if (!is_v4 && !is_v6) {
    return InvalidArgument("--host '" + host + "' is not an IP address (IPv4 or IPv6)");
  }
  PublicAddress out;
  const std::string hostname = ThisHostName();
  const bool wildcard = is_v4 ? v4.s_addr == INADDR_ANY : IN6_IS_ADDR_UNSPECIFIED(&v6);
  if (!wildcard) {
    out.names.push_back(host);
    out.reach = is_v6 ? "[" + host + "]" : host;
    return out;
  }
  // Every address of this machine, since a client may come in through any of them; nodes are
  // told the host name.
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) == 0) {
    for (const ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
      if (a->ifa_addr == nullptr) continue;
      char text[INET6_ADDRSTRLEN] = {0};
      const int family = a->ifa_addr->sa_family;
      if (family == AF_INET) {
        ::inet_ntop(family, &reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr, text,
                    sizeof text);
      } else if (family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a->ifa_addr);
        if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr)) continue;  // needs a zone: not in a URL
        ::inet_ntop(family, &in6->sin6_addr, text, sizeof text);
      } else {
        continue;
      }
      const std::string name = text;
      if (!name.empty() && std::find(out.names.begin(), out.names.end(), name) == out.names.end()) {
        out.names.push_back(name);
      }
    }
    ::freeifaddrs(list);
  }
  // A host name a certificate cannot carry (an underscore, say) is left out of it.
  const bool usable = IsCertificateName(hostname);
  if (usable) out.names.push_back(hostname);
  out.reach = usable ? hostname : out.names.empty() ? "127.0.0.1" : out.names.front();
  return out;
}

// The identity of the public listener: the user's files, else the workspace's self-signed one.
StatusOr<TlsIdentity> PublicIdentity(const DaemonOptions& options, const WorkspaceLayout& layout,
                                     const PublicAddress& address) {
  if (!options.tls_certificate.empty() || !options.tls_key.empty()) {
    if (options.tls_certificate.empty() || options.tls_key.empty()) {
      return InvalidArgument(
          "give both --tls-cert and --tls-key, or neither (a self-signed "
          "certificate is then made in the workspace)");
    }
    TlsIdentity given;
    TY_ASSIGN_OR_RETURN(given.certificate_pem, ReadFile(options.tls_certificate));
    TY_ASSIGN_OR_RETURN(given.private_key_pem, ReadFile(options.tls_key));
    TY_RETURN_IF_ERROR(CheckIdentity(
        given, options.tls_certificate.string() + " and " + options.tls_key.string()));
    return given;
  }
  bool new_key = false;
  TY_ASSIGN_OR_RETURN(TlsIdentity made,
                      LoadOrMakeWorkspaceIdentity(layout.root / "tls", address.names,
                                                  "trainyard " + ThisHostName(), &new_key));
  if (new_key) {
    spdlog::warn(
        "the workspace's TLS key could not be read: made a new one, whose pin differs "
        "(clients log in again with the new pin)");
  }
  return made;
}

}  // namespace

Daemon::Daemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Daemon::~Daemon() = default;
int Daemon::port() const { return impl_->http->port(); }
const std::string& Daemon::token() const { return impl_->token; }
std::string Daemon::url() const { return impl_->BaseUrl(); }
std::string Daemon::public_url() const { return impl_->public_url; }
std::string Daemon::tls_pin() const { return impl_->tls_pin; }
void Daemon::StopServing() { impl_->http->Stop(); }

StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const DaemonOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->layout.root = fs::absolute(options.workspace).lexically_normal();
  TY_RETURN_IF_ERROR(impl->layout.Create());
  TY_ASSIGN_OR_RETURN(impl->config, LoadWorkspaceConfig(impl->layout));

  impl->lock_fd = ::open(impl->layout.LockFile().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (impl->lock_fd < 0 || ::flock(impl->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    return FailedPrecondition("another trainyard daemon serves workspace " +
                              impl->layout.root.string());
  }
  store::StoreOptions store_options;
  store_options.durable_transitions = options.durable_transitions;
  TY_ASSIGN_OR_RETURN(impl->store,
                      store::OpenSqliteStore(impl->layout.Database().string(), store_options));
  tracking::SeriesStoreOptions series_options;
  series_options.max_entries_per_run = impl->config.max_entries_per_run;
  TY_ASSIGN_OR_RETURN(
      impl->series,
      tracking::SeriesStore::Open((impl->layout.root / "tracking.db").string(), series_options));
  // A client retries a batch within minutes; a week of keys covers any outage worth waiting out.
  constexpr std::int64_t kKeyRetentionMs = 7LL * 24 * 3600 * 1000;
  TY_RETURN_IF_ERROR(impl->series->ForgetKeysBefore(NowMillis() - kKeyRetentionMs));
  TY_ASSIGN_OR_RETURN(SecretBox box, SecretBox::Open(impl->layout.SecretKey()));
  impl->secrets.emplace(std::move(box));
  if (options.engine != nullptr) {
    impl->engine = options.engine;
  } else {
    impl->owned_engine = std::make_unique<docker::HttpEngine>(options.docker_socket);
    impl->engine = impl->owned_engine.get();
  }
  impl->objects = std::make_unique<cas::ObjectStore>(impl->layout.ObjectsDir());
  // With the stat caches' folder (the CLI's and POST /snapshots/from-folder's), so that an
  // object found missing or corrupt drops them all (Materialize) and the next snapshot reads
  // the files again instead of vouching for what the store lacks.
  impl->snapshots = std::make_unique<cas::Snapshotter>(*impl->objects, impl->layout.SnapshotsDir(),
                                                       impl->layout.ObjectsDir() / "statcache");
  fs::path docker_config =
      options.docker_config.empty() ? docker::DefaultDockerConfigPath() : options.docker_config;
  impl->builder = std::make_unique<envbuild::ImageBuilder>(
      *impl->engine, *impl->snapshots, impl->layout.ScratchDir(), docker_config);
  impl->environments =
      std::make_unique<envbuild::EnvironmentRegistry>(*impl->store, *impl->secrets);
  impl->datastores = std::make_unique<assets::Datastores>(*impl->store, *impl->secrets,
                                                          impl->layout.WorkspaceBlobStoreDir());
  exec::ExecutorOptions eopts;
  eopts.stop_grace_seconds = impl->config.stop_grace_seconds;
  eopts.container_pids_limit = impl->config.container_pids_limit;
  eopts.container_log_max_bytes = impl->config.container_log_max_bytes;
  TY_ASSIGN_OR_RETURN(eopts.socket_dir, ApiSocketDir(impl->layout.root));
  eopts.sdk_dir = FindPythonSdk();
  impl->containers = std::make_unique<exec::DockerExecutor>(*impl->engine);
  impl->processes = std::make_unique<exec::ProcessExecutor>(
      exec::ProcessExecutorOptions{impl->layout.root / "nodes"});
  // Slurm's commands are run only for slurm computes; a machine without Slurm can have none.
  slurm::Client* slurm = options.slurm;
  if (slurm == nullptr) {
    impl->owned_slurm = slurm::MakeCommandClient();
    slurm = impl->owned_slurm.get();
  }
  impl->docker_runs = std::make_unique<exec::DockerRunExecutor>(*impl->containers, eopts);
  impl->process_runs = std::make_unique<exec::ProcessRunExecutor>(*impl->processes, eopts);
  impl->slurm_runs = std::make_unique<exec::SlurmRunExecutor>(*slurm, *impl->engine, *impl->secrets,
                                                              exec::SlurmExecutorOptions{eopts});
  impl->executors.Add("docker", impl->docker_runs.get());
  impl->executors.Add("process", impl->process_runs.get());
  impl->executors.Add("slurm", impl->slurm_runs.get());
  sched::SchedulerOptions sopts;
  // `local` is one node unless the workspace asks for more runs at once (workspace.json).
  sopts.local_max_nodes = std::max(1, impl->config.max_concurrent_runs);
  // ./outputs recorded with digests in the tracking store at Finalizing (docs/tracking.md).
  sopts.collect_outputs = [series = impl->series.get()](
                              const std::string& run_id,
                              const fs::path& run_dir) -> StatusOr<std::vector<std::string>> {
    std::vector<std::string> skipped;
    TY_RETURN_IF_ERROR(
        tracking::CollectOutputs(*series, run_id, run_dir, NowMillis(), &skipped).status());
    return skipped;
  };
  // Inputs from datastores and URLs, fetched into the data cache; outputs to datastores.
  impl->run_data =
      std::make_unique<assets::RunData>(*impl->datastores, *impl->objects, *impl->snapshots,
                                        impl->layout.root / "datacache", impl->layout.RunsDir());
  assets::RunData* run_data = impl->run_data.get();
  impl->catalog = std::make_unique<assets::Catalog>(*impl->store, *impl->objects, *impl->snapshots,
                                                    *impl->datastores, *run_data,
                                                    impl->layout.ObjectsDir() / "statcache");
  impl->registries = std::make_unique<assets::Registries>(
      *impl->store, *impl->objects, *impl->snapshots, *impl->datastores, *run_data,
      impl->layout.ObjectsDir() / "statcache");
  run_data->UseCatalog(impl->catalog.get(), impl->registries.get());
  sopts.import_environment = [registries = impl->registries.get()](const std::string& registry,
                                                                   const std::string& name,
                                                                   const std::string& version) {
    return registries->ImportEnvironment(registry, name, version);
  };
  sopts.check_data = [run_data](spec::RunRequest& r) { return run_data->Check(r); };
  sopts.resolve_inputs = [run_data](const spec::RunRequest& r,
                                    const sched::SchedulerOptions::DataLog& log,
                                    const std::function<bool()>& canceled) {
    return run_data->ResolveInputs(r, log, canceled);
  };
  sopts.deliver_outputs = [run_data](const spec::RunRequest& r, const fs::path& run_dir,
                                     const sched::SchedulerOptions::DataLog& log) {
    return run_data->DeliverOutputs(r, run_dir, log);
  };
  impl->scheduler = std::make_unique<sched::Scheduler>(
      *impl->store, *impl->environments, *impl->builder, impl->executors, *impl->snapshots,
      *impl->secrets, impl->layout, sopts);

  // Beyond loopback: HTTPS there (unless insecure_http), plain HTTP on 127.0.0.1 for this
  // machine's CLI and the runs' socket.
  const bool public_host = !IsLoopback(options.host);
  std::optional<HttpListener> public_listener;
  std::string tracking_ca;
  if (public_host) {
    TY_ASSIGN_OR_RETURN(PublicAddress address, DescribePublicAddress(options.host));
    public_listener.emplace();
    public_listener->address = options.host;
    public_listener->port = options.port >= 0 ? options.port : impl->config.port;
    std::string scheme = "http://";
    if (!options.insecure_http) {
      TY_ASSIGN_OR_RETURN(TlsIdentity identity, PublicIdentity(options, impl->layout, address));
      TY_ASSIGN_OR_RETURN(impl->tls_pin, PublicKeyPin(identity.certificate_pem));
      // Slurm nodes trust the daemon by its certificate: the first of the chain when
      // self-signed, else the system's authorities.
      if (options.tls_certificate.empty()) tracking_ca = identity.certificate_pem;
      public_listener->tls = std::make_shared<const TlsIdentity>(std::move(identity));
      scheme = "https://";
    } else {
      spdlog::warn(
          "serving plain HTTP on {} (--insecure-http): tokens and data cross the "
          "network unencrypted",
          options.host);
    }
    impl->public_url = scheme + address.reach + ":";  // the port is known once bound
  } else if (!options.tls_certificate.empty() || !options.tls_key.empty()) {
    return InvalidArgument(
        "--tls-cert and --tls-key are for serving beyond loopback (--host "
        "ADDR); " +
        options.host + " is served plain HTTP");
  }

  impl->token = RandomHex(32);
  HttpServerOptions hopts;
  hopts.max_connections = ConnectionCap(RaiseDescriptorLimit(), impl->config.max_connections);
  hopts.header_timeout = std::chrono::milliseconds(impl->config.http_header_timeout_ms);
  hopts.min_bytes_per_second = impl->config.http_min_bytes_per_second;
  hopts.transfer_grace = std::chrono::milliseconds(impl->config.http_transfer_grace_ms);
  hopts.address = public_host ? "127.0.0.1" : options.host;
  hopts.port = public_host ? 0 : options.port >= 0 ? options.port : impl->config.port;
  hopts.bearer_token = impl->token;
  // Reads of run tracking (charts, tags) on threads of their own: never queued behind ingest.
  hopts.pools[kReadPool] = 4;
  // Runs report with tokens scoped to their own run (docs/tracking.md).
  const SecretBox* secrets = &*impl->secrets;
  hopts.token_scope = [secrets](std::string_view token,
                                const HttpRequest& request) -> StatusOr<std::string> {
    return AuthorizeRunToken(*secrets, token, request, NowMillis() / 1000);
  };
  impl->http = std::make_unique<HttpServer>(hopts);
  if (public_listener) {
    // The network has its own half of the connections: clients there, which need no token to
    // hold a connection open, cannot take those of this machine's CLI and runs.
    public_listener->max_connections = std::max(1, hopts.max_connections / 2);
    TY_RETURN_IF_ERROR(impl->http->AddListener(*public_listener));
  }
  impl->InstallRoutes();
  Impl* raw = impl.get();
  impl->scheduler->SetChangeListener(
      [raw](const std::string& id) { raw->http->notifier().Notify(id); });
  TY_RETURN_IF_ERROR(impl->http->Start());
  if (public_listener) {
    impl->public_url += std::to_string(impl->http->port(1));
    impl->scheduler->SetNetworkTracking(impl->public_url, tracking_ca);
  }
  TY_ASSIGN_OR_RETURN(impl->socket_relay,
                      SocketRelay::Start(eopts.socket_dir / "api.sock", impl->http->port(),
                                         // Runs share half: the user's clients keep the rest.
                                         std::max(1, hopts.max_connections / 2)));
  TY_RETURN_IF_ERROR(impl->scheduler->Recover());

  if (options.write_server_file) {
    // The executable's identity lets a CLI from a newer build replace a daemon from an older one.
    std::error_code ec;
    fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    auto mtime = ec ? 0 : fs::last_write_time(exe, ec).time_since_epoch().count();
    json info{{"pid", ::getpid()},
              {"exe", exe.string()},
              {"exe_mtime", ec ? 0 : mtime},
              {"port", impl->http->port()},
              {"token", impl->token},
              {"url", impl->BaseUrl()},
              {"public_url", impl->public_url},
              {"tls_pin", impl->tls_pin},
              {"workspace", impl->layout.root.string()}};
    TY_RETURN_IF_ERROR(WriteFileAtomic(impl->layout.ServerFile(), info.dump(), 0600));
    impl->wrote_server_file = true;
  }
  return std::unique_ptr<Daemon>(new Daemon(std::move(impl)));
}

int RunServer(const DaemonOptions& options) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // every thread started below inherits the mask
  ::signal(SIGPIPE, SIG_IGN);

  const std::string workspace = options.workspace.string();
  auto daemon = Daemon::Start(options);
  if (!daemon.ok()) {
    std::fprintf(stderr, "trainyard server: %s\n", daemon.status().message().c_str());
    return daemon.status().code() == StatusCode::kFailedPrecondition ? 3 : 1;
  }
  std::fprintf(stderr, "[%s] trainyard daemon %s listening on %s (workspace %s)\n",
               FormatTimeIso(NowMillis()).c_str(), kVersion, (*daemon)->url().c_str(),
               workspace.c_str());
  if (!(*daemon)->public_url().empty()) {
    std::fprintf(
        stderr, "[%s] also serving %s%s%s\n", FormatTimeIso(NowMillis()).c_str(),
        (*daemon)->public_url().c_str(),
        (*daemon)->tls_pin().empty() ? "" : "; certificate key pin (trainyard login --pin): ",
        (*daemon)->tls_pin().c_str());
  }
  int sig = 0;
  sigwait(&set, &sig);
  std::fprintf(stderr, "[%s] trainyard daemon stopping (signal %d); runs go on\n",
               FormatTimeIso(NowMillis()).c_str(), sig);
  (*daemon)->StopServing();
  // Runs outlive the daemon: their containers keep going and the next daemon re-attaches.
  ::unlink((WorkspaceLayout{fs::absolute(workspace)}).ServerFile().c_str());
  std::fflush(nullptr);
  ::_exit(0);
}

}  // namespace trainyard::api
