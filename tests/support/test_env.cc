#include "tests/support/test_env.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "trainyard/docker/http_engine.h"

namespace trainyard::testing {

namespace {

// KEY=VALUE lines of a shell env file (quotes allowed); empty when it cannot be read.
std::map<std::string, std::string> ReadEnvFile(const char* path) {
  std::ifstream in(path);
  std::map<std::string, std::string> kv;
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq == std::string::npos || line[0] == '#') continue;
    std::string v = line.substr(eq + 1);
    if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front()) {
      v = v.substr(1, v.size() - 2);
    }
    kv[line.substr(0, eq)] = v;
  }
  return kv;
}

}  // namespace

std::optional<StorageInfo> LoadStorageInfo() {
  const char* path = std::getenv("TRAINYARD_STORAGE_ENV");
  auto kv = ReadEnvFile(path ? path : "/var/lib/trainyard-test/storage.env");
  StorageInfo s{
      kv["AZURITE_ACCOUNT"], kv["AZURITE_KEY"],      kv["AZURITE_URL"],         kv["S3_URL"],
      kv["S3_BUCKET"],       kv["S3_ACCESS_KEY_ID"], kv["S3_SECRET_ACCESS_KEY"]};
  if (s.azurite_key.empty() || s.s3_secret_access_key.empty()) return std::nullopt;
  return s;
}

std::optional<RegistryInfo> LoadRegistryInfo() {
  const char* path = std::getenv("TRAINYARD_REGISTRY_ENV");
  auto kv = ReadEnvFile(path ? path : "/var/lib/trainyard-test/registry.env");
  RegistryInfo r{kv["REGISTRY"], kv["REGISTRY_USER"], kv["REGISTRY_PASSWORD"],
                 kv["REGISTRY_IMAGE"]};
  if (r.address.empty() || r.password.empty() || r.image.empty()) return std::nullopt;
  return r;
}

std::string TrainyardBinary() { return TRAINYARD_BINARY_DIR "/src/main/trainyard"; }

void StopWorkspaceDaemon(const std::filesystem::path& workspace) {
  std::ifstream in(workspace / "server.json");
  if (!in) return;
  const nlohmann::json info = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!info.is_object() || !info.contains("pid") || !info["pid"].is_number_integer()) return;
  const pid_t pid = info["pid"].get<int>();
  if (pid <= 0 || ::kill(pid, SIGTERM) != 0) return;
  for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

CmdResult RunShell(const std::string& line) {
  CmdResult r;
  FILE* p = ::popen((line + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int st = ::pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

CmdResult RunTrainyard(const std::string& cwd, const std::string& workspace,
                       const std::string& args, const std::string& binary) {
  return RunShell("cd '" + cwd + "' && TRAINYARD_HOME='" + workspace + "' " + binary + " " + args);
}

std::string NonLoopbackAddress() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::string best, bridge;
  for (const ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    if ((a->ifa_flags & IFF_UP) == 0 || (a->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char text[INET_ADDRSTRLEN] = {0};
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr, text,
                sizeof text);
    const std::string name = a->ifa_name;
    const bool is_bridge = name.rfind("docker", 0) == 0 || name.rfind("br-", 0) == 0;
    if (is_bridge) {
      if (bridge.empty()) bridge = text;
    } else if (best.empty()) {
      best = text;
    }
  }
  ::freeifaddrs(list);
  return best.empty() ? bridge : best;
}

bool DockerAvailable() {
  docker::HttpEngine engine;
  return engine.Ping().ok();
}

}  // namespace trainyard::testing
