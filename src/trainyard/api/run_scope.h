#pragma once

// What a run token may do. A run token is handed to code the daemon does not trust (any
// train.py in any image); it reaches its own run's tracking data and the files under the run
// folder's outputs/, logs/ and images/, and nothing else: not another run, not the workspace,
// not the files the daemon keeps beside the run (Slurm job scripts, the hostfile, exit files,
// user_logs/), and nothing at all once the run reached Finalizing (docs/security.md).

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "trainyard/common/secret_box.h"
#include "trainyard/common/status.h"
#include "trainyard/http/http_server.h"
#include "trainyard/store/records.h"

namespace trainyard::api {

// The folders of a run folder that runs write and that run files may be stored in through the
// API: ./outputs and ./logs of the run, and images/ (log_image).
inline constexpr std::array<std::string_view, 3> kRunFileFolders = {"outputs", "logs", "images"};

// True when the relative path `rel` (as in /files/{rel}) is clean (no "..", not absolute) and
// lies under one of kRunFileFolders.
bool IsRunFilePath(std::string_view rel);

// The HttpServerOptions::token_scope of the daemon: the run id a run token names when `request`
// is one that token may make. Unauthenticated for a token that is not a run token of this
// workspace or has expired at `now_unix_s`; PermissionDenied, naming what is allowed, for a
// request outside the run's scope (another run, another route, a file outside
// kRunFileFolders). Does not look at the run's state (see CheckRunWritable).
StatusOr<std::string> AuthorizeRunToken(const SecretBox& secrets, std::string_view token,
                                        const HttpRequest& request, std::int64_t now_unix_s);

// For a request made with a run token (`request.principal` set): PermissionDenied when it
// writes (any method but GET and HEAD) and `run` has reached Finalizing or ended. OK otherwise,
// and always for the workspace token.
Status CheckRunWritable(const HttpRequest& request, const store::RunRecord& run);

}  // namespace trainyard::api
