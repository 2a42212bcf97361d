#include "trainyard/docker/docker_config.h"

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "trainyard/common/fs.h"
#include "trainyard/common/util.h"

namespace trainyard::docker {
namespace {

using nlohmann::json;

constexpr std::string_view kDockerHubServer = "https://index.docker.io/v1/";

// "https://Host:5000/v2/" -> "host:5000"; the Docker Hub aliases -> "docker.io".
std::string NormalizeRegistryKey(std::string_view key) {
  key = Trim(key);
  for (std::string_view scheme : {"https://", "http://"}) {
    if (StartsWith(key, scheme)) {
      key.remove_prefix(scheme.size());
      break;
    }
  }
  if (size_t slash = key.find('/'); slash != std::string_view::npos) key = key.substr(0, slash);
  std::string host(key);
  for (char& c : host) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (host == "index.docker.io" || host == "registry-1.docker.io" || host == "docker.io") {
    return "docker.io";
  }
  return host;
}

// Finds the entry of `object` whose key names `registry` (already normalised).
const json* FindEntry(const json& object, const std::string& registry) {
  if (!object.is_object()) return nullptr;
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (NormalizeRegistryKey(it.key()) == registry) return &it.value();
  }
  return nullptr;
}

std::string StringField(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

}  // namespace

std::filesystem::path DefaultDockerConfigPath() {
  const char* dir = std::getenv("DOCKER_CONFIG");
  if (dir != nullptr && *dir != '\0') return std::filesystem::path(dir) / "config.json";
  return HomeDir() / ".docker" / "config.json";
}

StatusOr<std::optional<RegistryAuth>> LookupDockerConfigAuth(
    const std::filesystem::path& config_json, const std::string& registry) {
  StatusOr<std::string> text = ReadFile(config_json);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) return std::optional<RegistryAuth>();
    return text.status();
  }
  json config = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) {
    return InvalidArgument(config_json.string() + ": not a valid Docker config (JSON object)");
  }
  const std::string wanted = NormalizeRegistryKey(registry);

  // Credentials kept by a helper program: we do not run helpers.
  if (auto helpers = config.find("credHelpers"); helpers != config.end()) {
    if (FindEntry(*helpers, wanted) != nullptr) return std::optional<RegistryAuth>();
  }

  auto auths = config.find("auths");
  if (auths == config.end()) return std::optional<RegistryAuth>();
  const json* entry = FindEntry(*auths, wanted);
  if (entry == nullptr || !entry->is_object()) return std::optional<RegistryAuth>();

  RegistryAuth out;
  out.server_address = wanted == "docker.io" ? std::string(kDockerHubServer) : wanted;
  std::string encoded = StringField(*entry, "auth");
  if (!encoded.empty()) {
    std::string decoded;
    size_t colon = std::string::npos;
    if (Base64Decode(encoded, &decoded)) colon = decoded.find(':');
    if (colon == std::string::npos) {
      return InvalidArgument(config_json.string() + ": the \"auth\" value for " + registry +
                             " is not base64 of \"user:password\"");
    }
    out.username = decoded.substr(0, colon);
    out.password = decoded.substr(colon + 1);
    return std::optional<RegistryAuth>(std::move(out));
  }
  out.username = StringField(*entry, "username");
  out.password = StringField(*entry, "password");
  if (out.username.empty() && out.password.empty()) {
    // An empty entry: `docker login` with a credsStore writes these. Nothing we can use.
    return std::optional<RegistryAuth>();
  }
  return std::optional<RegistryAuth>(std::move(out));
}

}  // namespace trainyard::docker
