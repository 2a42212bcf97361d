// The HTTP server as a client on the network or a run sees it: raw bytes on a connection to a
// real HttpServer with the daemon's kind of routes and authorisation (the workspace token and
// run tokens through AuthorizeRunToken). Request line, target, query and headers parsing,
// percent-decoding, route matching, body limits and auth all run on every input; a run token
// may never get an answer from outside its run.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "trainyard/api/http_server.h"
#include "trainyard/api/run_scope.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/util.h"

using namespace trainyard;

namespace {

const SecretBox& Box() {
  static const SecretBox box = SecretBox::ForTesting("0123456789abcdef0123456789abcdef");
  return box;
}

HttpServer& Server() {
  static HttpServer* server = [] {
    HttpServerOptions o;
    o.bearer_token = "workspace-token";
    o.max_body_bytes = 4096;
    o.threads = 1;
    o.blocking_threads = 1;
    o.token_scope = [](std::string_view token, const HttpRequest& req) {
      return api::AuthorizeRunToken(Box(), token, req, 1'800'000'000);
    };
    auto* s = new HttpServer(o);
    auto answer = [](HttpRequest& req) {
      // Only the run of a run token may be answered for it.
      if (!req.principal.empty() && req.Param("name") != req.principal) std::abort();
      return HttpResponse::Json(200, {{"path", req.path}, {"n", req.query.size()}});
    };
    for (const char* m : {"GET", "POST", "PUT", "PATCH", "DELETE"}) {
      s->Route(m, "/api/v1/jobs/{name}", SyncHandler(answer));
      s->Route(m, "/api/v1/jobs/{name}/metrics/{metric...}", SyncHandler(answer));
      s->Route(m, "/api/v1/jobs/{name}/files/{path...}", SyncHandler(answer));
      s->Route(m, "/api/v1/jobs/{name}/{what}", SyncHandler(answer));
    }
    s->Route("GET", "/api/v1/health", SyncHandler([](HttpRequest&) {
               return HttpResponse::Json(200, {{"ok", true}});
             }));
    if (!s->Start().ok()) std::abort();
    return s;
  }();
  return *server;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const int port = Server().port();
  // A run token of run "r1" stands in for "RUNTOKEN" in the input, so the fuzzer reaches it.
  static const std::string run_token = Box().RunToken("r1", 1'800'000'100);
  std::string input(reinterpret_cast<const char*>(data), size);
  for (std::size_t at; (at = input.find("RUNTOKEN")) != std::string::npos;) {
    input.replace(at, 8, run_token);
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    (void)::send(fd, input.data(), input.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    char buf[4096];
    while (::recv(fd, buf, sizeof buf, 0) > 0) {
    }
  }
  ::close(fd);
  return 0;
}
