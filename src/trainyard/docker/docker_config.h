#pragma once

// Reading the user's `docker login` credentials from Docker's client config file, so that a
// private registry the user has logged in to works without repeating the password.

#include <filesystem>
#include <optional>
#include <string>

#include "trainyard/common/status.h"
#include "trainyard/docker/engine.h"

namespace trainyard::docker {

// $DOCKER_CONFIG/config.json when DOCKER_CONFIG is set, else ~/.docker/config.json.
std::filesystem::path DefaultDockerConfigPath();

// The credentials stored for `registry` ("127.0.0.1:5000", "ghcr.io", or "docker.io" for
// Docker Hub) in the `auths` map of `config_json`. Keys match in the forms `docker login`
// writes: "host", "https://host", "http://host/v2/", and for Docker Hub also
// "https://index.docker.io/v1/", "index.docker.io" and "registry-1.docker.io". An entry gives
// either `auth` (base64 of "user:password") or `username` and `password`.
//
// Returns nullopt when the file does not exist, when it has no entry for the registry, and when
// the credentials live in a credential helper (`credHelpers` names the registry, or `credsStore`
// is set and the `auths` entry carries no secret): trainyard does not run credential helpers, so
// such registries need credentials in the environment spec.
// The returned server_address is the registry, or "https://index.docker.io/v1/" for Docker Hub.
// InvalidArgument when the file is not valid JSON or an `auth` value is not base64 "user:pass";
// Internal when the file cannot be read.
StatusOr<std::optional<RegistryAuth>> LookupDockerConfigAuth(
    const std::filesystem::path& config_json, const std::string& registry);

}  // namespace trainyard::docker
