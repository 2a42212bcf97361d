"""HTTP/1.1 to the daemon over a unix socket or TCP (TLS for https), with keep-alive reuse.

The client is this module's own, on plain sockets: the standard library's http.client pulls
in the email package and costs a training script or an SDK program tens of milliseconds of
import time, for the handful of things the daemon's API needs (one request at a time per
connection, Content-Length or chunked answers, keep-alive).

Transport is thread-safe: each request takes an idle connection from a small pool (or opens
one) and puts it back when the answer was read to its end and the server keeps it open.
"""

import _thread

USER_AGENT = "trainyard-python/0.1"

# Bounds on what the daemon (or whatever answers at its address) may send before its body.
MAX_LINE_BYTES = 64 * 1024
MAX_HEADERS = 128
_DIGITS = frozenset("0123456789")
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
# Request bodies that are files go out in blocks of this size.
SEND_BLOCK_BYTES = 256 * 1024


class ProtocolError(Exception):
    """The peer broke HTTP/1.1 or the connection ended inside an answer."""


class _Stale(ProtocolError):
    """A reused keep-alive connection the server had closed: nothing of an answer arrived."""


class SinkError(Exception):
    """The caller's sink could not take a block of the answer (e.g. a full disk): `error`."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


# Errors that mean "the daemon is not there or went away": the caller may retry.
CONNECTION_ERRORS = (OSError, ProtocolError)
# Requests sent again on a new connection when a reused one turns out closed by the server:
# those that may be repeated (a POST only with an Idempotency-Key, which the daemon honours).
_REPEATABLE = ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text, safe="/"):
    """Percent-encodes `text` (UTF-8) for a URL path or query: what urllib.parse.quote does,
    without importing urllib.parse (and ipaddress) into every run and SDK program."""
    keep = _UNRESERVED.union(safe.encode("ascii"))
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if all(b in keep for b in data):
        return data.decode("ascii")
    return "".join(chr(b) if b in keep else "%%%02X" % b for b in data)


def split_url(url):
    """(scheme, host, port or None, path) of unix://PATH, http(s)://HOST[:PORT][/PATH] URLs.

    Raises ValueError for anything it cannot split: a user part, a bad port, a bracketed host
    that does not close. The host is lowercased; an IPv6 host loses its brackets.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ValueError("URL %r has no scheme" % url)
    scheme = scheme.lower()
    if scheme == "unix":
        return scheme, "", None, rest
    rest = rest.split("#", 1)[0].split("?", 1)[0]
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority:
        raise ValueError("URL %r: user names in URLs are not supported" % url)
    port_text = ""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError("URL %r: the IPv6 address has no closing ]" % url)
        host, after = authority[1:end], authority[end + 1:]
        if after and not after.startswith(":"):
            raise ValueError("URL %r: unexpected %r after the host" % (url, after))
        port_text = after[1:]
    else:
        host, _, port_text = authority.partition(":")
    port = None
    if port_text:
        if not port_text.isdigit() or not port_text.isascii() or not 0 < int(port_text) < 65536:
            raise ValueError("URL %r: port %r is not a number in 1-65535" % (url, port_text))
        port = int(port_text)
    return scheme, host.lower(), port, path


def _unix_socket(path, timeout):
    import socket  # on the first connection: kept out of the import time
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def _tcp_socket(host, port, timeout):
    import socket
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        # A request is one write; without this, Nagle's algorithm can hold a small follow-up
        # write (a file body's last block) for a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    return sock


def parse_url(url, ca_pem=None):
    """Splits a TRAINYARD_TRACKING_URL into a socket opener and a path prefix.

    Accepts unix:///path/to.sock, http://host:port[/prefix] and https://host:port[/prefix].
    The opener takes a timeout in seconds and returns (socket, Host header value).
    An https daemon's certificate is verified, with its host name, against `ca_pem` (the PEM
    text of TRAINYARD_TRACKING_CA: the daemon's own self-signed certificate) when given, else
    against the system's authorities. Raises ValueError for anything else.
    """
    scheme, host, port, path = split_url(url)
    if scheme == "unix":
        # unix:///abs/path, or unix://relative/path (unusual but unambiguous enough)
        if not path:
            raise ValueError("tracking URL %r has no socket path" % url)
        return (lambda timeout: (_unix_socket(path, timeout), "localhost")), ""
    if scheme in ("http", "https"):
        if not host:
            raise ValueError("tracking URL %r has no host" % url)
        name = "[%s]" % host if ":" in host else host
        prefix = path.rstrip("/")
        if scheme == "http":
            port = port or 80
            host_header = name if port == 80 else "%s:%d" % (name, port)
            return (lambda timeout: (_tcp_socket(host, port, timeout), host_header)), prefix
        import ssl  # only https daemons need it: kept out of the import time
        context = ssl.create_default_context(cadata=ca_pem) if ca_pem else \
            ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        port = port or 443
        host_header = name if port == 443 else "%s:%d" % (name, port)

        def open_tls(timeout):
            sock = _tcp_socket(host, port, timeout)
            try:
                return context.wrap_socket(sock, server_hostname=host), host_header
            except BaseException:
                sock.close()
                raise

        return open_tls, prefix
    raise ValueError("tracking URL %r: expected unix:///path/to.sock or http://host:port" % url)


def error_message(status, body):
    """The human message of an error answer ({"error": {"message"}} or the raw text)."""
    import json
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except ValueError:
        pass
    return text[:500] or "HTTP %d" % status


def _header_block(method, target, host, headers, length):
    if not method.isalpha() or not target.startswith("/") or \
            any(c <= " " or c == "\x7f" for c in target):
        raise ValueError("not an HTTP request line: %r %r" % (method, target[:200]))
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: " + host]
    for name, value in headers.items():
        value = str(value)
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError("HTTP header %r holds a line break" % name)
        lines.append("%s: %s" % (name, value))
    if length is not None:
        lines.append("Content-Length: %d" % length)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class _Collect(object):
    """A sink that keeps the body in memory."""

    def __init__(self):
        self._pieces = []

    def write(self, block):
        self._pieces.append(block)

    def value(self):
        return b"".join(self._pieces)


class _Counted(object):
    """Passes blocks to a caller's sink, counting them: a request whose answer already
    reached the sink cannot be retried."""

    def __init__(self, sink):
        self.sink, self.bytes = sink, 0

    def write(self, block):
        try:
            self.sink.write(block)
        except Exception as e:  # the sink's failure, not the connection's
            raise SinkError(e)
        self.bytes += len(block)


class Connection(object):
    """One HTTP/1.1 connection: requests go out one at a time, each answer read to its end."""

    def __init__(self, opener, timeout):
        self.sock, self._host = opener(timeout)
        self._in = self.sock.makefile("rb")

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def closed_by_peer(self):
        """True when an idle connection has something to read: the server closed it (or sent
        what no request asked for); it cannot carry another request."""
        import select
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def close(self):
        try:
            self._in.close()
        finally:
            self.sock.close()

    def request(self, method, target, headers, body, sink=None):
        """Sends one request; returns (status, body bytes, keep-alive).

        `body` is None, bytes, or a file-like object with read(n) whose len() is its size.
        With `sink` (an object with write(bytes)), a 2xx answer's body goes to it block by
        block instead of into memory, and b"" is returned in its place.
        """
        if body is None:
            length = None if method in ("GET", "HEAD", "DELETE") else 0
        else:
            length = len(body)
        head = _header_block(method, target, self._host, headers, length)
        try:
            if body is None or isinstance(body, (bytes, bytearray, memoryview)):
                self.sock.sendall(head + bytes(body or b""))
            else:
                self.sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _Stale("the connection was closed by the server: %s" % e)
        if body is not None and not isinstance(body, (bytes, bytearray, memoryview)):
            left = length
            while left > 0:
                block = body.read(min(left, SEND_BLOCK_BYTES))
                if not block:
                    raise ProtocolError("the request body ended %d bytes before its declared "
                                        "length of %d" % (left, length))
                self.sock.sendall(block)
                left -= len(block)
        return self._read_answer(method, sink)

    # --- the answer ------------------------------------------------------------------------

    def _line(self, first=False):
        """One line of the answer's head. `first`: the status line, where a connection that
        closes or resets before any byte is stale (_Stale), not broken."""
        try:
            line = self._in.readline(MAX_LINE_BYTES + 1)
        except ConnectionResetError as e:
            if first:
                raise _Stale("the connection was reset before an answer: %s" % e)
            raise
        if not line:
            raise (_Stale if first else ProtocolError)("the connection closed before an answer")
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError("an answer line is longer than %d bytes" % MAX_LINE_BYTES)
        if not line.endswith(b"\n"):
            raise ProtocolError("the connection closed inside an answer's head")
        return line

    def _read_answer(self, method, sink):
        first = True
        while True:
            line = self._line(first)
            first = False
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or \
                    len(parts[1]) != 3 or not parts[1].isdigit():
                raise ProtocolError("not an HTTP/1.x status line: %r" % line[:80])
            version, status = parts[0], int(parts[1])
            headers = self._headers()
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer; the real one follows
            break
        connection = headers.get("connection", "").lower()
        if version == b"HTTP/1.0":
            keep = "keep-alive" in connection
        else:
            keep = "close" not in connection
        if method == "HEAD" or status in (101, 204, 304):
            return status, b"", keep
        out = sink if sink is not None and 200 <= status < 300 else _Collect()
        encoding = headers.get("transfer-encoding", "").lower()
        if encoding:
            if encoding.split(",")[-1].strip() != "chunked":
                raise ProtocolError("unsupported Transfer-Encoding %r" % encoding)
            if "content-length" in headers:
                keep = False  # framed two ways: not trusted for the next answer (RFC 9112)
            self._chunked(out)
        elif "content-length" in headers:
            text = headers["content-length"]
            if not text or len(text) > 18 or not set(text) <= _DIGITS:
                raise ProtocolError("bad Content-Length %r" % text)
            self._exactly(int(text), out)
        else:
            keep = False  # the body ends where the connection does
            while True:
                block = self._in.read1(SEND_BLOCK_BYTES)
                if not block:
                    break
                out.write(block)
        return status, out.value() if isinstance(out, _Collect) else b"", keep

    def _headers(self):
        headers = {}
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return headers
            name, sep, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if not sep or not name or name != name.split()[0]:
                raise ProtocolError("bad answer header line %r" % line[:80])
            value = value.strip()
            if name == "content-length" and headers.get(name, value) != value:
                raise ProtocolError("conflicting Content-Length headers")
            headers[name] = headers[name] + ", " + value if name in headers and \
                name != "content-length" else value
        raise ProtocolError("an answer has more than %d header lines" % MAX_HEADERS)

    def _exactly(self, n, out):
        left = n
        while left > 0:
            block = self._in.read1(min(left, SEND_BLOCK_BYTES))
            if not block:
                raise ProtocolError("the connection closed after %d of the answer's %d bytes"
                                    % (n - left, n))
            out.write(block)
            left -= len(block)

    def _chunked(self, out):
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 15 or not set(size_text) <= _HEX_DIGITS:
                raise ProtocolError("bad chunk size %r" % size_text[:40])
            size = int(size_text, 16)
            if size == 0:
                self._headers()  # trailers, then the blank line
                return
            self._exactly(size, out)
            if self._line() not in (b"\r\n", b"\n"):
                raise ProtocolError("a chunk does not end with a line break")


class Transport(object):
    """Sends requests to one daemon with one bearer token. Thread-safe."""

    def __init__(self, url, token, timeout=30.0, max_idle=4, ca_pem=None):
        self._opener, self._prefix = parse_url(url, ca_pem)
        self.url = url
        self._token = token
        self.timeout = timeout
        self._idle = []
        self._lock = _thread.allocate_lock()
        self._max_idle = max_idle
        self.connections_opened = 0  # for tests: keep-alive reuse

    def reset_after_fork(self):
        """Forgets the parent's connections (their sockets stay the parent's)."""
        self._idle = []
        self._lock = _thread.allocate_lock()

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def run_path(self, run_id, tail):
        return "%s/api/v1/jobs/%s%s" % (self._prefix, quote(run_id, safe=""), tail)

    def request(self, method, path, body=None, content_type=None, timeout=None, headers=None,
                sink=None):
        """Sends one request; returns (status, body bytes).

        Raises one of CONNECTION_ERRORS when the daemon cannot be reached or the connection
        broke. An idle connection the server closed is noticed before reuse; if one closes
        while the request goes out, a repeatable request (GET, PUT, DELETE..., or a POST with
        an Idempotency-Key) is sent once more on a new connection, and only when nothing of
        an answer had arrived: never after a timeout. With `sink` (write(bytes)), a 2xx
        answer's body is written to it as it arrives and b"" returned; SinkError when the
        sink fails.
        """
        headers = dict(headers or {}, **{"User-Agent": USER_AGENT, "Accept": "application/json"})
        if self._token:
            headers["Authorization"] = "Bearer " + self._token
        if body is not None:
            headers["Content-Type"] = content_type or "application/octet-stream"
        t = self.timeout if timeout is None else max(0.05, min(timeout, self.timeout))
        repeatable = method in _REPEATABLE or "Idempotency-Key" in headers
        for attempt in (0, 1):
            if hasattr(body, "seek"):
                body.seek(0)
            conn, reused = self._take(t)
            counted = None if sink is None else _Counted(sink)
            try:
                status, data, keep = conn.request(method, path, headers, body, counted)
            except _Stale:
                conn.close()
                if reused and attempt == 0 and repeatable:
                    continue
                raise
            except CONNECTION_ERRORS:
                conn.close()
                raise
            except BaseException:
                conn.close()  # half a request or answer: the connection cannot be reused
                raise
            if keep:
                self._give(conn)
            else:
                conn.close()
            return status, data
        raise AssertionError("unreachable")

    def _take(self, timeout):
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = Connection(self._opener, timeout)
                self.connections_opened += 1
                return conn, False
            if conn.closed_by_peer():
                conn.close()
                continue
            conn.settimeout(timeout)
            return conn, True

    def _give(self, conn):
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()
