#include "trainyard/http/socket_relay.h"

// clang-format off
#include <utility>  // Before Boost 1.74's awaitable.hpp, which uses std::exchange without it.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
// clang-format on
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "trainyard/common/fs.h"
#include "trainyard/common/sha256.h"
#include "trainyard/http/http_server.h"

namespace trainyard {

namespace asio = boost::asio;
using asio::ip::tcp;
using unix_proto = asio::local::stream_protocol;

namespace {

constexpr auto kAwaitable = asio::use_awaitable;

// Copies bytes from `from` to `to` until either side ends, then shuts both down so the other
// direction ends too.
template <class From, class To>
// `slot` is held while the pump runs (the relay's count of open connections).
asio::awaitable<void> Pump(std::shared_ptr<From> from, std::shared_ptr<To> to,
                           std::shared_ptr<void> slot) {
  std::array<char, 64 * 1024> buf;
  boost::system::error_code ec;
  for (;;) {
    const std::size_t n =
        co_await from->async_read_some(asio::buffer(buf), asio::redirect_error(kAwaitable, ec));
    if (ec || n == 0) break;
    co_await asio::async_write(*to, asio::buffer(buf.data(), n),
                               asio::redirect_error(kAwaitable, ec));
    if (ec) break;
  }
  boost::system::error_code ignored;
  from->shutdown(asio::socket_base::shutdown_both, ignored);
  to->shutdown(asio::socket_base::shutdown_both, ignored);
  slot.reset();  // This direction is done.
}

}  // namespace

struct SocketRelay::Impl {
  asio::io_context ioc{1};
  std::optional<unix_proto::acceptor> acceptor;
  std::filesystem::path path;
  int port = 0;
  int max_connections = 1;
  std::atomic<int> connections{0};
  std::thread thread;

  asio::awaitable<void> Relay(std::shared_ptr<unix_proto::socket> client,
                              std::shared_ptr<void> slot) {
    auto upstream = std::make_shared<tcp::socket>(ioc);
    boost::system::error_code ec;
    co_await upstream->async_connect(
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)),
        asio::redirect_error(kAwaitable, ec));
    if (ec) co_return;  // The client sees its connection closed.
    upstream->set_option(tcp::no_delay(true), ec);
    asio::co_spawn(ioc, Pump(client, upstream, slot), asio::detached);
    asio::co_spawn(ioc, Pump(upstream, client, slot), asio::detached);
  }

  asio::awaitable<void> AcceptLoop() {
    for (;;) {
      auto client = std::make_shared<unix_proto::socket>(ioc);
      boost::system::error_code ec;
      co_await acceptor->async_accept(*client, asio::redirect_error(kAwaitable, ec));
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
      if (ec) continue;
      if (connections.fetch_add(1) >= max_connections) {
        connections.fetch_sub(1);
        // Never waits: a client that does not read its refusal just loses it.
        const std::string answer = TooManyConnectionsAnswer(max_connections, "the runs'");
        client->non_blocking(true, ec);
        client->write_some(asio::buffer(answer), ec);
        client->shutdown(asio::socket_base::shutdown_send, ec);
        client->close(ec);
        continue;
      }
      // Released when both directions of the relayed connection are done.
      std::shared_ptr<void> slot(nullptr, [this](void*) { connections.fetch_sub(1); });
      asio::co_spawn(ioc, Relay(std::move(client), std::move(slot)), asio::detached);
    }
  }
};

SocketRelay::SocketRelay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StatusOr<std::unique_ptr<SocketRelay>> SocketRelay::Start(const std::filesystem::path& socket_path,
                                                          int port, int max_connections) {
  if (socket_path.native().size() >= sizeof(sockaddr_un{}.sun_path)) {
    return InvalidArgument("socket path " + socket_path.string() +
                           " is too long for a unix socket");
  }
  TY_RETURN_IF_ERROR(MakeDirs(socket_path.parent_path()));
  // A socket left by a previous daemon: replaced (its clients are gone with it).
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return FailedPrecondition(socket_path.string() + " exists and is not a socket");
    }
    ::unlink(socket_path.c_str());
  }
  auto impl = std::make_unique<Impl>();
  impl->path = socket_path;
  impl->port = port;
  impl->max_connections = std::max(1, max_connections);
  boost::system::error_code ec;
  unix_proto::acceptor acceptor(impl->ioc);
  const unix_proto::endpoint endpoint(socket_path.string());
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Internal("cannot listen on " + socket_path.string() + ": " + ec.message());
  // Any user in a container may connect: requests are authenticated by token.
  ::chmod(socket_path.c_str(), 0666);
  impl->acceptor.emplace(std::move(acceptor));
  asio::co_spawn(impl->ioc, impl->AcceptLoop(), asio::detached);
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->ioc.run(); });
  return std::unique_ptr<SocketRelay>(new SocketRelay(std::move(impl)));
}

SocketRelay::~SocketRelay() {
  impl_->ioc.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  boost::system::error_code ec;
  if (impl_->acceptor) impl_->acceptor->close(ec);
  ::unlink(impl_->path.c_str());
}

StatusOr<std::filesystem::path> ApiSocketDir(const std::filesystem::path& workspace_root) {
  std::filesystem::path preferred = workspace_root / "sock";
  if ((preferred / "api.sock").native().size() < sizeof(sockaddr_un{}.sun_path)) {
    TY_RETURN_IF_ERROR(MakeDirs(preferred));
    return preferred;
  }
  const std::string hash = Sha256Hex(workspace_root.string()).substr(0, 16);
  std::filesystem::path base;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && xdg[0] == '/') {
    base = std::filesystem::path(xdg) / ("trainyard-" + hash);
  } else {
    base =
        std::filesystem::path("/tmp") / ("trainyard-" + std::to_string(::geteuid()) + "-" + hash);
  }
  TY_RETURN_IF_ERROR(EnsurePrivateDir(base));
  // The folder mounted into containers: enterable by a container's non-root user, while the
  // 0700 folder above keeps other users of this machine out.
  std::filesystem::path dir = base / "sock";
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Internal("cannot create " + dir.string() + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    return FailedPrecondition(dir.string() + " is not a folder of this user");
  }
  return dir;
}

}  // namespace trainyard
