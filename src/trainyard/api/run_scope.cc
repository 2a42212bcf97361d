#include "trainyard/api/run_scope.h"

#include <algorithm>
#include <vector>

#include "trainyard/common/rooted_dir.h"
#include "trainyard/common/util.h"

namespace trainyard::api {
namespace {

constexpr std::string_view kJobs = "/api/v1/jobs/";

// Routes under /api/v1/jobs/{run}/ a run token may use, and whether they write.
struct RunRoute {
  std::string_view first;  // first segment after the run
  std::string_view method;
};
constexpr RunRoute kRunRoutes[] = {
    {"metrics", "GET"}, {"metrics", "POST"}, {"entries", "GET"},    {"entries", "POST"},
    {"tags", "GET"},    {"tags", "PATCH"},   {"properties", "GET"}, {"properties", "POST"},
    {"status", "POST"}, {"files", "GET"},    {"files", "PUT"},
};

}  // namespace

bool IsRunFilePath(std::string_view rel) {
  auto parts = SplitRelativePath(rel);
  if (!parts.ok()) return false;
  return std::find(kRunFileFolders.begin(), kRunFileFolders.end(), parts->front()) !=
         kRunFileFolders.end();
}

StatusOr<std::string> AuthorizeRunToken(const SecretBox& secrets, std::string_view token,
                                        const HttpRequest& request, std::int64_t now_unix_s) {
  std::string run = secrets.RunOfToken(token, now_unix_s);
  if (run.empty()) return Unauthenticated("unknown or expired run token");
  const std::string prefix = std::string(kJobs) + run + "/";
  Status outside = PermissionDenied("a run token may only reach " + prefix +
                                    "{metrics,entries,tags,properties,status} and " + prefix +
                                    "files/{outputs,logs,images}/...; " + request.method + " " +
                                    request.path + " is outside it");
  if (!StartsWith(request.path, prefix)) return outside;
  const std::string_view tail = std::string_view(request.path).substr(prefix.size());
  const std::size_t slash = tail.find('/');
  const std::string_view first = tail.substr(0, slash);
  const std::string_view rest =
      slash == std::string_view::npos ? std::string_view() : tail.substr(slash + 1);
  const bool known = std::any_of(
      std::begin(kRunRoutes), std::end(kRunRoutes),
      [&](const RunRoute& r) { return r.first == first && r.method == request.method; });
  if (!known) return outside;
  if (first == "files") {
    // The listing (GET files) is filtered by the handler; a file must be in a run folder.
    if (!(request.method == "GET" && rest.empty()) && !IsRunFilePath(rest)) return outside;
  } else if (first != "metrics" && !rest.empty()) {
    return outside;  // only metrics/{name} has a tail
  }
  return run;
}

Status CheckRunWritable(const HttpRequest& request, const store::RunRecord& run) {
  if (request.principal.empty() || request.method == "GET" || request.method == "HEAD") {
    return Status::Ok();
  }
  const bool closed = store::IsTerminal(run.status) || run.status == store::RunStatus::kFinalizing;
  if (!closed) return Status::Ok();
  return PermissionDenied("run " + run.id + " is " + std::string(store::RunStatusName(run.status)) +
                          ": its run token can no longer write");
}

}  // namespace trainyard::api
