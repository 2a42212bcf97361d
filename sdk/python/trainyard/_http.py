"""HTTP/1.1 to the daemon over a unix socket or TCP, with keep-alive connection reuse.

Transport is thread-safe: each request takes an idle connection from a small pool (or opens
one) and puts it back when the answer was read to its end and the server keeps it open.
"""

import http.client
import json
import socket
import threading
from urllib.parse import quote, urlsplit

USER_AGENT = "trainyard-python/0.1"
# Errors that mean "the daemon is not there or went away": the caller may retry.
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose socket is a unix stream socket at `path`."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def parse_url(url, ca_pem=None):
    """Splits a TRAINYARD_TRACKING_URL into a connection factory and a path prefix.

    Accepts unix:///path/to.sock, http://host:port[/prefix] and https://host:port[/prefix].
    An https daemon's certificate is verified, with its host name, against `ca_pem` (the PEM
    text of TRAINYARD_TRACKING_CA: the daemon's own self-signed certificate) when given, else
    against the system's authorities. Raises ValueError for anything else.
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        path = parts.path
        if parts.netloc:  # unix://relative/path is unusual but unambiguous enough
            path = parts.netloc + path
        if not path:
            raise ValueError("tracking URL %r has no socket path" % url)
        return (lambda timeout: UnixHTTPConnection(path, timeout)), ""
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError("tracking URL %r has no host" % url)
        host, port = parts.hostname, parts.port
        if parts.scheme == "http":
            return (lambda timeout: http.client.HTTPConnection(host, port, timeout=timeout)), \
                parts.path.rstrip("/")
        import ssl  # only https daemons need it: kept out of the import time
        context = ssl.create_default_context(cadata=ca_pem) if ca_pem else \
            ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return (lambda timeout: http.client.HTTPSConnection(
            host, port, timeout=timeout, context=context)), parts.path.rstrip("/")
    raise ValueError("tracking URL %r: expected unix:///path/to.sock or http://host:port" % url)


def error_message(status, body):
    """The human message of an error answer ({"error": {"message"}} or the raw text)."""
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
    return text[:500] or http.client.responses.get(status, "HTTP %d" % status)


class Transport:
    """Sends requests to one daemon with one bearer token. Thread-safe."""

    def __init__(self, url, token, timeout=30.0, max_idle=4, ca_pem=None):
        self._factory, self._prefix = parse_url(url, ca_pem)
        self.url = url
        self._token = token
        self.timeout = timeout
        self._idle = []
        self._lock = threading.Lock()
        self._max_idle = max_idle
        self.connections_opened = 0  # for tests: keep-alive reuse

    def reset_after_fork(self):
        """Forgets the parent's connections (their sockets stay the parent's)."""
        self._idle = []
        self._lock = threading.Lock()

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def run_path(self, run_id, tail):
        return "%s/api/v1/jobs/%s%s" % (self._prefix, quote(run_id, safe=""), tail)

    def request(self, method, path, body=None, content_type=None, timeout=None, headers=None):
        """Sends one request; returns (status, body bytes).

        Raises one of CONNECTION_ERRORS when the daemon cannot be reached or the connection
        broke. A request on a reused keep-alive connection that the server had closed is
        retried once on a new connection.
        """
        headers = dict(headers or {}, **{"User-Agent": USER_AGENT, "Accept": "application/json"})
        if self._token:
            headers["Authorization"] = "Bearer " + self._token
        if body is not None:
            headers["Content-Type"] = content_type or "application/octet-stream"
            headers["Content-Length"] = str(len(body))
        t = self.timeout if timeout is None else max(0.05, min(timeout, self.timeout))
        for attempt in (0, 1):
            if hasattr(body, "seek"):
                body.seek(0)
            conn, reused = self._take(t)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except CONNECTION_ERRORS:
                conn.close()
                if reused and attempt == 0:
                    continue
                raise
            if resp.will_close:
                conn.close()
            else:
                self._give(conn)
            return resp.status, data
        raise AssertionError("unreachable")

    def _take(self, timeout):
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._factory(timeout)
            self.connections_opened += 1
            return conn, False
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, True

    def _give(self, conn):
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()
