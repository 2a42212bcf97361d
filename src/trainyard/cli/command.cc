#include "trainyard/cli/command.h"

#include <cstdio>
#include <system_error>

namespace trainyard::cli {

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.message().c_str());
  return s.code() == StatusCode::kInvalidArgument ? 2 : 1;
}

fs::path SelfExe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("trainyard") : p;
}

std::string ApiBase(const std::string& registry) {
  return registry.empty() ? "/api/v1" : "/api/v1/registries/" + HttpClient::UrlEncode(registry);
}

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

}  // namespace trainyard::cli
