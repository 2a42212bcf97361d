#pragma once

// Helpers for integration tests that need real services (dockerd, the private registry).
// A missing service fails the test when CI=true or TRAINYARD_REQUIRE_SERVICES=1, and skips it
// with the reason otherwise — never silently.

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace trainyard::testing {

inline bool ServicesRequired() {
  auto is = [](const char* name, const char* want) {
    const char* v = std::getenv(name);
    return v != nullptr && std::string(v) == want;
  };
  return is("CI", "true") || is("TRAINYARD_REQUIRE_SERVICES", "1");
}

// Use as: TY_REQUIRE_SERVICE(ok_expression, "why it is missing");
#define TY_REQUIRE_SERVICE(available, reason)                                          \
  do {                                                                                 \
    if (!(available)) {                                                                \
      if (::trainyard::testing::ServicesRequired()) {                                  \
        FAIL() << "required service missing: " << (reason);                            \
      } else {                                                                         \
        GTEST_SKIP() << "service missing (set TRAINYARD_REQUIRE_SERVICES=1 to fail): " \
                     << (reason);                                                      \
      }                                                                                \
    }                                                                                  \
  } while (0)

// The private test registry written by scripts/registry.sh, or nullopt.
struct RegistryInfo {
  std::string address, user, password, image;
};
std::optional<RegistryInfo> LoadRegistryInfo();

// The object-store services written by scripts/storage.sh (storage.env), or nullopt.
struct StorageInfo {
  std::string azurite_account, azurite_key, azurite_url;
  std::string s3_url, s3_bucket, s3_access_key_id, s3_secret_access_key;
};
std::optional<StorageInfo> LoadStorageInfo();

// True when dockerd answers on /var/run/docker.sock.
bool DockerAvailable();

// An IPv4 address of this machine other than loopback (an up interface's, preferring one that
// is not a container bridge), for serving "beyond loopback" in tests; "" when there is none.
std::string NonLoopbackAddress();

// The exit code and the interleaved stdout and stderr of a command.
struct CmdResult {
  int exit_code = -1;
  std::string output;
};

// Stops the daemon a CLI started for `workspace` (its server.json names it), waiting up to 5 s
// for it to exit. Nothing when none runs.
void StopWorkspaceDaemon(const std::filesystem::path& workspace);

// The trainyard binary this build made.
std::string TrainyardBinary();

// Runs a shell command line (test-only: the code under test never runs commands through a
// shell), its stdout and stderr together.
CmdResult RunShell(const std::string& line);

// Runs `binary ARGS` in folder `cwd` with TRAINYARD_HOME=`workspace`, as a user would.
CmdResult RunTrainyard(const std::string& cwd, const std::string& workspace,
                       const std::string& args, const std::string& binary = TrainyardBinary());

}  // namespace trainyard::testing
