// The HTTP server as a client on the network or a run sees it: raw bytes on a connection to a
// real HttpServer (served on this thread through a socketpair, by the code that serves accepted
// connections) with the daemon's kind of routes and authorisation (the workspace token and
// run tokens through AuthorizeRunToken). Request line, target, query and headers parsing,
// percent-decoding, route matching, body limits and auth all run on every input; a run token
// may never get an answer from outside its run.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#include "trainyard/api/run_scope.h"
#include "trainyard/common/secret_box.h"
#include "trainyard/common/util.h"
#include "trainyard/http/http_server.h"

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
    // On the event loop: the handlers answer at once, and each input then costs two thread
    // switches (this thread and the server's) rather than four.
    for (const char* m : {"GET", "POST", "PUT", "PATCH", "DELETE"}) {
      s->RouteOnLoop(m, "/api/v1/jobs/{name}", SyncHandler(answer));
      s->RouteOnLoop(m, "/api/v1/jobs/{name}/metrics/{metric...}", SyncHandler(answer));
      s->RouteOnLoop(m, "/api/v1/jobs/{name}/files/{path...}", SyncHandler(answer));
      s->RouteOnLoop(m, "/api/v1/jobs/{name}/{what}", SyncHandler(answer));
    }
    s->RouteOnLoop("GET", "/api/v1/health", SyncHandler([](HttpRequest&) {
                     return HttpResponse::Json(200, {{"ok", true}});
                   }));
    if (!s->Start().ok()) std::abort();
    return s;
  }();
  return *server;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static HttpServer& server = Server();
  // A run token of run "r1" stands in for "RUNTOKEN" in the input, so the fuzzer reaches it.
  static const std::string run_token = Box().RunToken("r1", 1'800'000'100);
  // What a socket buffer holds at once: the client writes the whole input before the server
  // reads, and the server's answers (which echo the path) must fit before the client reads.
  constexpr std::size_t kMaxInput = 8 * 1024;
  std::string input(reinterpret_cast<const char*>(data), std::min(size, kMaxInput));
  for (std::size_t at; (at = input.find("RUNTOKEN")) != std::string::npos;) {
    input.replace(at, 8, run_token);
  }
  // The client's end gets the input and the end of its stream; the server then serves the other
  // end on this thread, through the same session code as a TCP connection it accepted.
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) return 0;
  const int buffer = 1 << 20;
  for (int fd : ends) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  }
  const bool sent = ::send(ends[1], input.data(), input.size(), MSG_NOSIGNAL | MSG_DONTWAIT) ==
                    static_cast<ssize_t>(input.size());
  ::shutdown(ends[1], SHUT_WR);
  if (sent) {
    server.ServeConnectionOnThisThread(ends[0]);
  } else {
    ::close(ends[0]);
  }
  char answer[4096];
  while (::recv(ends[1], answer, sizeof answer, MSG_DONTWAIT) > 0) {
  }
  ::close(ends[1]);
  return 0;
}
