#include "trainyard/client/workspace_client.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

extern char** environ;

#include "trainyard/common/fs.h"
#include "trainyard/common/tls.h"
#include "trainyard/common/util.h"

namespace trainyard::client {

namespace {

// Checks a remote daemon's URL: http(s)://HOST[:PORT] with nothing after the authority but an
// optional "/".
Status CheckUrl(const std::string& url, const std::string& where) {
  const bool scheme = StartsWith(url, "http://") || StartsWith(url, "https://");
  const size_t authority = url.find("://") + 3;
  const size_t slash = url.find('/', scheme ? authority : 0);
  if (!scheme || url.size() == authority ||
      (slash != std::string::npos && slash != url.size() - 1)) {
    return InvalidArgument(where + ": '" + url +
                           "' is not a daemon URL; expected http://HOST:PORT or https://HOST:PORT");
  }
  return Status::Ok();
}

std::string EnvOr(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

StatusOr<WorkspaceTarget> FromConfig(const fs::path& cfg) {
  TY_ASSIGN_OR_RETURN(std::string text, ReadFile(cfg));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument(cfg.string() + ": not a JSON object");
  }
  for (const auto& [k, v] : j.items()) {
    if (k == "token_file") {
      return InvalidArgument(cfg.string() +
                             ": 'token_file' is not read (a config found in a folder may come "
                             "from a cloned repository): run `trainyard login URL` once instead, "
                             "which keeps the token in your own credentials file");
    }
    if (k != "workspace_dir" && k != "workspace_name" && k != "url") {
      return InvalidArgument(cfg.string() + ": unknown key '" + k +
                             "'; allowed keys: workspace_dir, workspace_name, url");
    }
    if (!v.is_string() || v.get<std::string>().empty()) {
      return InvalidArgument(cfg.string() + ": '" + k + "' must be a non-empty string");
    }
  }
  auto relative_to_config = [&](const std::string& key) {
    fs::path p = j[key].get<std::string>();
    if (p.is_relative()) p = cfg.parent_path() / p;
    return p.lexically_normal();
  };
  if (j.contains("url")) {
    if (j.contains("workspace_dir")) {
      return InvalidArgument(cfg.string() +
                             ": give either 'workspace_dir' (a local workspace) or 'url' (a "
                             "remote daemon), not both");
    }
    WorkspaceTarget t;
    t.url = j["url"].get<std::string>();
    if (!t.url.empty() && t.url.back() == '/') t.url.pop_back();
    TY_RETURN_IF_ERROR(CheckUrl(t.url, cfg.string()));
    t.found_by = cfg.string();
    // Not the token of $TRAINYARD_TOKEN nor a file the config names: a config in a cloned
    // repository could send either to a URL of its choosing.
    auto token = LoadCredential(t.url);
    if (!token.ok()) {
      if (token.status().code() != StatusCode::kNotFound) return token.status();
      return InvalidArgument(cfg.string() + ": no token for " + t.url + ": run `trainyard login " +
                             t.url + "` once (it reads the daemon's token from stdin)");
    }
    t.token = std::move(token->token);
    t.tls = std::move(token->tls);
    return t;
  }
  if (!j.contains("workspace_dir")) {
    return InvalidArgument(cfg.string() +
                           ": 'workspace_dir' (a folder path, relative to the config's "
                           "folder or absolute) or 'url' (a remote daemon) is required");
  }
  WorkspaceTarget t{{relative_to_config("workspace_dir")}, cfg.string()};
  if (Status st = CheckWorkspaceIsPrivate(t.layout); !st.ok()) {
    return Status(st.code(), st.message() + " (named by " + cfg.string() + ")");
  }
  return t;
}

// "{...}" of the credentials file, or an empty object when it does not exist.
StatusOr<nlohmann::json> ReadCredentials() {
  const fs::path file = CredentialsFile();
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    if (errno == ENOENT) return nlohmann::json::object();
    return Internal("cannot read " + file.string() + ": " + std::strerror(errno));
  }
  if (st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return FailedPrecondition(file.string() +
                              " is readable or writable by others (or not yours); it holds "
                              "tokens: chmod 600 it, or remove it and log in again");
  }
  TY_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument(file.string() + ": not a JSON object");
  }
  return j;
}

std::string NormalUrl(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

Status WriteCredentials(const nlohmann::json& j) {
  const fs::path file = CredentialsFile();
  TY_RETURN_IF_ERROR(MakeDirs(file.parent_path()));
  ::chmod(file.parent_path().c_str(), 0700);
  return WriteFileAtomic(file, j.dump(2), 0600);
}

}  // namespace

StatusOr<WorkspaceTarget> FindWorkspace(const std::filesystem::path& cwd) {
  if (std::string url = EnvOr("TRAINYARD_URL"); !url.empty()) {
    if (url.back() == '/') url.pop_back();
    TY_RETURN_IF_ERROR(CheckUrl(url, "$TRAINYARD_URL"));
    WorkspaceTarget t;
    t.url = url;
    t.token = EnvOr("TRAINYARD_TOKEN");
    t.found_by = "$TRAINYARD_URL";
    t.tls.pinned_public_key = EnvOr("TRAINYARD_TLS_PIN");
    t.tls.ca_file = EnvOr("TRAINYARD_CA_FILE");
    if (!t.tls.pinned_public_key.empty() && !IsPublicKeyPin(t.tls.pinned_public_key)) {
      return InvalidArgument(
          "$TRAINYARD_TLS_PIN is not a key pin (sha256//BASE64, as printed "
          "by `trainyard server`)");
    }
    if (t.token.empty()) {
      return InvalidArgument(
          "$TRAINYARD_URL is set but $TRAINYARD_TOKEN is not: a remote "
          "daemon needs its token");
    }
    return t;
  }
  for (fs::path dir = fs::absolute(cwd);; dir = dir.parent_path()) {
    fs::path cfg = dir / ".trainyard" / "config.json";
    std::error_code ec;
    if (fs::is_regular_file(cfg, ec)) return FromConfig(cfg);
    if (dir == dir.root_path() || dir.empty()) break;
  }
  if (const char* home = std::getenv("TRAINYARD_HOME"); home != nullptr && *home != '\0') {
    return WorkspaceTarget{{fs::absolute(home).lexically_normal()}, "$TRAINYARD_HOME"};
  }
  return WorkspaceTarget{{HomeDir() / ".trainyard"}, "~/.trainyard"};
}

fs::path CredentialsFile() {
  if (std::string xdg = EnvOr("XDG_CONFIG_HOME"); !xdg.empty() && fs::path(xdg).is_absolute()) {
    return fs::path(xdg) / "trainyard" / "credentials.json";
  }
  return HomeDir() / ".config" / "trainyard" / "credentials.json";
}

Status SaveCredential(const std::string& url, const Credential& credential) {
  const std::string key = NormalUrl(url);
  TY_RETURN_IF_ERROR(CheckUrl(key, "trainyard login"));
  if (credential.token.empty()) return InvalidArgument("trainyard login: the token is empty");
  const TlsTrust& tls = credential.tls;
  if ((!tls.pinned_public_key.empty() || !tls.ca_file.empty()) && !StartsWith(key, "https://")) {
    return InvalidArgument("trainyard login: --pin and --ca-file are for https:// URLs only");
  }
  if (!tls.pinned_public_key.empty() && !IsPublicKeyPin(tls.pinned_public_key)) {
    return InvalidArgument("trainyard login: '" + tls.pinned_public_key +
                           "' is not a key pin; expected sha256//BASE64 as printed by "
                           "`trainyard server`");
  }
  if (!tls.ca_file.empty() && !fs::path(tls.ca_file).is_absolute()) {
    return InvalidArgument("trainyard login: --ca-file must be an absolute path");
  }
  TY_ASSIGN_OR_RETURN(nlohmann::json j, ReadCredentials());
  nlohmann::json entry = {{"token", credential.token}};
  if (!tls.pinned_public_key.empty()) entry["pin"] = tls.pinned_public_key;
  if (!tls.ca_file.empty()) entry["ca_file"] = tls.ca_file;
  j[key] = std::move(entry);
  return WriteCredentials(j);
}

Status RemoveCredential(const std::string& url) {
  TY_ASSIGN_OR_RETURN(nlohmann::json j, ReadCredentials());
  if (j.erase(NormalUrl(url)) == 0) return Status::Ok();
  return WriteCredentials(j);
}

StatusOr<Credential> LoadCredential(const std::string& url) {
  TY_ASSIGN_OR_RETURN(nlohmann::json j, ReadCredentials());
  const std::string key = NormalUrl(url);
  if (!j.contains(key) || !j[key].is_object() || !j[key].contains("token") ||
      !j[key]["token"].is_string()) {
    return NotFound("no token stored for " + key);
  }
  const nlohmann::json& entry = j[key];
  Credential out;
  out.token = entry["token"].get<std::string>();
  if (entry.contains("pin") && entry["pin"].is_string()) {
    out.tls.pinned_public_key = entry["pin"].get<std::string>();
  }
  if (entry.contains("ca_file") && entry["ca_file"].is_string()) {
    out.tls.ca_file = entry["ca_file"].get<std::string>();
  }
  return out;
}

fs::path ClientCacheDir() {
  if (std::string xdg = EnvOr("XDG_CACHE_HOME"); !xdg.empty() && fs::path(xdg).is_absolute()) {
    return fs::path(xdg) / "trainyard";
  }
  return HomeDir() / ".cache" / "trainyard";
}

StatusOr<ServerInfo> ReadServerInfo(const WorkspaceLayout& layout) {
  TY_ASSIGN_OR_RETURN(std::string text, ReadFile(layout.ServerFile()));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("port") || !j["port"].is_number()) {
    return NotFound(layout.ServerFile().string() + " is incomplete");
  }
  ServerInfo info;
  info.pid = j.value("pid", 0);
  info.port = j["port"].get<int>();
  info.token = j.value("token", "");
  info.url = j.value("url", "http://127.0.0.1:" + std::to_string(info.port));
  info.public_url = j.value("public_url", "");
  info.tls_pin = j.value("tls_pin", "");
  info.exe = j.value("exe", "");
  info.exe_mtime = j.value("exe_mtime", std::int64_t{0});
  return info;
}

namespace {

// True when the daemon runs another build of trainyard than `self_exe`.
bool IsStale(const ServerInfo& info, const fs::path& self_exe) {
  if (info.exe.empty()) return false;
  std::error_code ec;
  auto mtime = fs::last_write_time(self_exe, ec).time_since_epoch().count();
  if (ec) return false;
  return info.exe != self_exe.string() || info.exe_mtime != static_cast<std::int64_t>(mtime);
}

// True when process `pid` is a trainyard daemon serving `layout`: its command line is
// "... server --workspace ROOT". A pid from a stale server.json may belong to anything by now.
bool IsOurDaemon(int pid, const WorkspaceLayout& layout) {
  auto cmdline = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  if (!cmdline.ok()) return false;
  std::vector<std::string> args = Split(*cmdline, '\0');
  for (size_t i = 0; i + 2 < args.size(); ++i) {
    if (args[i] == "server" && args[i + 1] == "--workspace" &&
        fs::path(args[i + 2]).lexically_normal() == layout.root.lexically_normal()) {
      return true;
    }
  }
  return false;
}

// Stops a daemon of another build and waits until it has exited (its lock is then free).
void StopStaleDaemon(const ServerInfo& info, const WorkspaceLayout& layout) {
  if (info.pid <= 0 || !IsOurDaemon(info.pid, layout)) return;
  if (::kill(info.pid, SIGTERM) != 0) return;
  for (int i = 0; i < 500 && ::kill(info.pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

StatusOr<std::unique_ptr<HttpClient>> TryConnect(const WorkspaceLayout& layout,
                                                 const fs::path& self_exe) {
  TY_ASSIGN_OR_RETURN(ServerInfo info, ReadServerInfo(layout));
  if (info.pid > 0 && ::kill(info.pid, 0) != 0 && errno == ESRCH) {
    return Unavailable("the daemon recorded in " + layout.ServerFile().string() + " is gone");
  }
  if (IsStale(info, self_exe)) {
    StopStaleDaemon(info, layout);
    return Unavailable("the running daemon was started by another build of trainyard");
  }
  auto client = std::make_unique<HttpClient>(info.url, info.token);
  auto health = client->Request("GET", "/api/v1/health", "", "application/json", 2000);
  if (!health.ok()) return health.status();
  if (health->status != 200)
    return Unavailable("daemon health check answered " + std::to_string(health->status));
  // A daemon of another workspace on a reused port would be a surprise: check the token works.
  auto auth = client->Request("GET", "/api/v1/workspace", "", "application/json", 2000);
  if (!auth.ok()) return auth.status();
  if (auth->status != 200) return Unavailable("the daemon refused this workspace's token");
  return client;
}

}  // namespace

std::vector<std::string> DaemonEnvironment(char** env) {
  std::vector<std::string_view> names = BaseEnvironmentNames();
  for (std::string_view n :
       {"XDG_RUNTIME_DIR", "DOCKER_HOST", "DOCKER_CONFIG", "SLURM_CONF", "TRAINYARD_SDK_DIR"}) {
    names.push_back(n);
  }
  std::vector<std::string> out = SelectEnvironment(env, names);
  if (std::none_of(out.begin(), out.end(),
                   [](const std::string& kv) { return StartsWith(kv, "PATH="); })) {
    out.emplace_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  }
  return out;
}

namespace {

Status SpawnDaemon(const WorkspaceLayout& layout, const fs::path& self_exe) {
  TY_RETURN_IF_ERROR(layout.Create());
  // Everything the child needs is built before fork: it must not allocate.
  const std::string exe = self_exe.string();
  const std::string root = layout.root.string();
  const std::string log_path = layout.DaemonLog().string();
  // The daemon gets an explicit environment, never the CLI's: a registry password or token in
  // this shell is not the daemon's, nor its children's (docs/security.md).
  const std::vector<std::string> env = DaemonEnvironment(environ);
  std::vector<char*> envp;
  for (const std::string& kv : env) envp.push_back(const_cast<char*>(kv.c_str()));
  envp.push_back(nullptr);
  const char* argv[] = {exe.c_str(), "server", "--workspace", root.c_str(), nullptr};
  pid_t pid = ::fork();
  if (pid < 0) return Internal("fork failed: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    // A grandchild, so the daemon is not our child and outlives this CLI.
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    int devnull = ::open("/dev/null", O_RDONLY);
    int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (log >= 0) {
      ::dup2(log, 1);
      ::dup2(log, 2);
    }
    // Nothing else the CLI had open (a caller's pipe, say) may be held by the daemon.
    ::close_range(3, ~0U, 0);
    ::execve(exe.c_str(), const_cast<char* const*>(argv), envp.data());
    ::_exit(127);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return Status::Ok();
}

}  // namespace

StatusOr<std::unique_ptr<HttpClient>> ConnectOrStart(const WorkspaceLayout& layout,
                                                     const fs::path& self_exe) {
  auto first = TryConnect(layout, self_exe);
  if (first.ok()) return first;
  TY_RETURN_IF_ERROR(SpawnDaemon(layout, self_exe));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  Status last = first.status();
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto c = TryConnect(layout, self_exe);
    if (c.ok()) return c;
    last = c.status();
  }
  return Unavailable("the trainyard daemon for workspace " + layout.root.string() +
                     " did not come up (" + last.message() + "); see " +
                     layout.DaemonLog().string());
}

}  // namespace trainyard::client
