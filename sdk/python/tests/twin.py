"""An in-memory twin of the daemon's run-tracking API (docs/tracking.md), for tests.

It serves HTTP/1.1 with keep-alive on a unix socket (or TCP), checks run tokens (401/403),
decodes the binary and JSON metric bodies strictly (400 naming the series, 413 over the
body limit, nothing of a rejected body stored), assigns steps as the daemon does, and keeps
entries, tags, properties, files and status reports per run. Faults can be injected: down()
closes the socket and every open connection, up() listens again at the same address,
fail() answers the next requests with a given status.

    twin = Twin(unix_path, runs={"run-1": "token-1"}); twin.start()
    ... twin.points("run-1", "loss") ...
    twin.close()

Run as a program (python -m tests.twin --socket PATH --run R --token T) it serves until
killed; bench_log.py uses that.
"""

import json
import math
import os
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote

try:
    from trainyard import _wire
except ImportError:  # run as a program from sdk/python
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from trainyard import _wire

MAX_NAME_BYTES = 250


class HttpError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _num(v):
    return _wire.json_number(v)


class RunState(object):
    """Everything the twin holds for one run."""

    def __init__(self):
        self.series = {}  # name -> {"steps": [], "timestamps": [], "values": []}
        self.entries = []
        self.tags = {}
        self.properties = {}
        self.files = {}  # path -> bytes
        self.statuses = []  # [{"status", "message"}]


class Twin(object):
    """The fake daemon. Thread-safe; all fields below may be read by tests under `lock`."""

    def __init__(self, unix_path=None, runs=None, max_body=64 << 20, tcp=False):
        self.unix_path = unix_path
        self.tcp = tcp or unix_path is None
        self.port = 0
        self.max_body = max_body
        self.lock = threading.Lock()
        runs = runs or {"run-1": "token-1"}
        self.runs = {name: RunState() for name in runs}
        self.tokens = {token: name for name, token in runs.items()}
        self.requests = []  # (method, path, status, content_type, body_len)
        self.metric_bodies = []  # raw bodies of accepted POST /metrics, in order
        self.connections = 0
        self._fail = None  # [status, message, remaining or None, match]
        self._server = None
        self._thread = None
        self._conns = set()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self):
        if self.tcp:
            return "http://127.0.0.1:%d" % self.port
        return "unix://" + self.unix_path

    def start(self):
        self.up()
        return self

    def up(self):
        """Listens (again) at the same address."""
        twin = self

        class Handler(_Handler):
            pass
        Handler.twin = twin
        if self.tcp:
            server = _TcpServer(("127.0.0.1", self.port), Handler, twin)
            self.port = server.server_address[1]
        else:
            if os.path.exists(self.unix_path):
                os.unlink(self.unix_path)
            server = _UnixServer(self.unix_path, Handler, twin)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def down(self):
        """Stops listening and breaks every open connection, as a crashed daemon would."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.shutdown()
        server.server_close()
        self._thread.join(5)
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if not self.tcp:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass

    def close(self):
        self.down()

    def fail(self, status, message="injected failure", count=None, match=""):
        """Answers the next `count` requests (all while count is None) whose path contains
        `match` with `status` and an error body; fail(None) ends it."""
        with self.lock:
            self._fail = None if status is None else [status, message, count, match]

    # --- inspection -----------------------------------------------------------------------

    def run(self, name="run-1"):
        return self.runs[name]

    def points(self, run="run-1", name=None):
        """[(step, timestamp, value)] of one series, in arrival order."""
        with self.lock:
            s = self.runs[run].series.get(name)
            if s is None:
                return []
            return list(zip(s["steps"], s["timestamps"], s["values"]))

    def metric_requests(self):
        with self.lock:
            return [r for r in self.requests if r[1].endswith("/metrics") and r[0] == "POST"]

    # --- request handling (called from handler threads) ------------------------------------

    def handle(self, method, path, headers, body):
        """Returns (status, content_type, body bytes)."""
        raw_path, _, query = path.partition("?")
        with self.lock:
            f = self._fail
            if f is not None and f[3] in raw_path:
                if f[2] is not None:
                    f[2] -= 1
                    if f[2] <= 0:
                        self._fail = None
                return self._error(f[0], "INJECTED", f[1])
        try:
            return self._route(method, raw_path, parse_qs(query), headers, body)
        except HttpError as e:
            return self._error(e.status, e.code, e.message)

    @staticmethod
    def _error(status, code, message):
        return status, "application/json", json.dumps(
            {"error": {"code": code, "message": message}}).encode()

    @staticmethod
    def _json(doc, status=200):
        return status, "application/json", json.dumps(doc, allow_nan=False).encode()

    def _route(self, method, path, query, headers, body):
        if path == "/api/v1/health":
            return self._json({"status": "ok", "version": "twin"})
        prefix = "/api/v1/jobs/"
        if not path.startswith(prefix):
            raise HttpError(404, "NOT_FOUND", "no route for %s" % path)
        rest = path[len(prefix):]
        run_enc, _, tail = rest.partition("/")
        run = unquote(run_enc)
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            raise HttpError(401, "UNAUTHENTICATED", "missing or unknown token")
        if self.tokens[auth[7:]] != run:
            raise HttpError(403, "PERMISSION_DENIED",
                            "the token is not valid for run %r" % run)
        state = self.runs.get(run)
        if state is None:
            raise HttpError(404, "NOT_FOUND", "no run %r" % run)
        parts = tail.split("/", 1)
        head, sub = parts[0], (parts[1] if len(parts) > 1 else None)
        ctype = headers.get("Content-Type", "").split(";")[0].strip()
        with self.lock:
            if head == "metrics" and sub is None and method == "POST":
                return self._post_metrics(state, ctype, body)
            if head == "metrics" and sub is None and method == "GET":
                return self._list_metrics(state)
            if head == "metrics" and sub and method == "GET":
                return self._get_metric(state, unquote(sub), query)
            if head == "entries" and sub is None and method == "POST":
                return self._post_entries(state, body)
            if head == "entries" and sub is None and method == "GET":
                name = query.get("name", [None])[0]
                return self._json({"entries": [e for e in state.entries
                                               if name is None or e["name"] == name]})
            if head == "tags" and sub is None and method == "GET":
                return self._json({"tags": state.tags})
            if head == "tags" and sub is None and method == "PATCH":
                doc = self._parse_json(body)
                sets, removes = doc.get("set", {}), doc.get("remove", [])
                if not isinstance(sets, dict) or not isinstance(removes, list) or \
                        not all(isinstance(v, str) for v in sets.values()):
                    raise HttpError(400, "INVALID_ARGUMENT",
                                    'expected {"set": {name: string}, "remove": [name]}')
                state.tags.update(sets)
                for k in removes:
                    state.tags.pop(k, None)
                return self._json({"tags": state.tags})
            if head == "properties" and sub is None and method == "GET":
                return self._json({"properties": state.properties})
            if head == "properties" and sub is None and method == "POST":
                doc = self._parse_json(body)
                if not isinstance(doc, dict) or not all(isinstance(v, str)
                                                        for v in doc.values()):
                    raise HttpError(400, "INVALID_ARGUMENT", "expected {name: string}")
                for k, v in doc.items():
                    if k in state.properties and state.properties[k] != v:
                        raise HttpError(409, "ALREADY_EXISTS",
                                        "property %r already has the value %r"
                                        % (k, state.properties[k]))
                state.properties.update(doc)
                return self._json({"properties": state.properties})
            if head == "files" and sub is None and method == "GET":
                return self._json([{"path": p, "size": len(b)}
                                   for p, b in sorted(state.files.items())])
            if head == "files" and sub and method in ("PUT", "GET"):
                fpath = unquote(sub)
                if method == "GET":
                    if fpath not in state.files:
                        raise HttpError(404, "NOT_FOUND", "no file %r" % fpath)
                    return 200, "application/octet-stream", state.files[fpath]
                segs = fpath.split("/")
                if fpath.startswith("/") or ".." in segs or "" in segs or \
                        segs[0] in ("code", "user_logs"):
                    raise HttpError(400, "INVALID_ARGUMENT", "bad file path %r" % fpath)
                state.files[fpath] = bytes(body)
                return self._json({"path": fpath, "size": len(body)}, 201)
            if head == "status" and sub is None and method == "POST":
                doc = self._parse_json(body)
                if doc.get("status") not in ("Completed", "Failed"):
                    raise HttpError(400, "INVALID_ARGUMENT",
                                    "status must be Completed or Failed")
                state.statuses.append({"status": doc["status"],
                                       "message": doc.get("message", "")})
                return self._json({"status": doc["status"]})
        raise HttpError(404 if method in ("GET", "POST", "PUT", "PATCH") else 405,
                        "NOT_FOUND", "no route for %s %s" % (method, path))

    @staticmethod
    def _parse_json(body):
        try:
            return json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise HttpError(400, "INVALID_ARGUMENT", "body is not JSON: %s" % e)

    def _post_metrics(self, state, ctype, body):
        if ctype == _wire.CONTENT_TYPE:
            try:
                series = _wire.decode_metrics(body)
            except _wire.DecodeError as e:
                raise HttpError(400, "INVALID_ARGUMENT", str(e))
        elif ctype == "application/json":
            series = self._metrics_from_json(self._parse_json(body))
        else:
            raise HttpError(415, "INVALID_ARGUMENT",
                            "Content-Type must be %s or application/json" % _wire.CONTENT_TYPE)
        now = int(time.time() * 1000)
        total = 0
        self.metric_bodies.append((ctype, bytes(body)))
        for name, values, steps, ts in series:  # everything validated: store
            s = state.series.setdefault(name, {"steps": [], "timestamps": [], "values": [],
                                               "max_step": -1})
            if steps is None:
                steps = list(range(s["max_step"] + 1, s["max_step"] + 1 + len(values)))
            if ts is None:
                ts = [now] * len(values)
            s["steps"].extend(steps)
            s["timestamps"].extend(ts)
            s["values"].extend(values)
            s["max_step"] = max(s["max_step"], max(steps))
            total += len(values)
        return self._json({"points": total})

    @staticmethod
    def _metrics_from_json(doc):
        if not isinstance(doc, dict) or not isinstance(doc.get("series"), list):
            raise HttpError(400, "INVALID_ARGUMENT", 'expected {"series": [...]}')
        out = []
        for i, s in enumerate(doc["series"]):
            label = "series %d" % i
            if not isinstance(s, dict):
                raise HttpError(400, "INVALID_ARGUMENT", "%s: not an object" % label)
            name = s.get("name")
            if not isinstance(name, str) or not 1 <= len(name.encode()) <= MAX_NAME_BYTES:
                raise HttpError(400, "INVALID_ARGUMENT",
                                "%s: name must be 1..250 UTF-8 bytes" % label)
            label = '%s ("%s")' % (label, name)
            values = s.get("values")
            if not isinstance(values, list) or not values:
                raise HttpError(400, "INVALID_ARGUMENT", "%s: values must be a non-empty "
                                "array" % label)
            vals = []
            for j, v in enumerate(values):
                try:
                    vals.append(_wire.number_from_json(v))
                except ValueError as e:
                    raise HttpError(400, "INVALID_ARGUMENT", "%s: point %d: %s" % (label, j, e))
            cols = []
            for key in ("steps", "timestamps"):
                col = s.get(key)
                if col is None:
                    cols.append(None)
                    continue
                if not isinstance(col, list) or len(col) != len(vals):
                    raise HttpError(400, "INVALID_ARGUMENT", "%s: %s must be an array of %d "
                                    "integers" % (label, key, len(vals)))
                for j, v in enumerate(col):
                    if isinstance(v, bool) or not isinstance(v, int) or \
                            not -(1 << 63) <= v < (1 << 63):
                        raise HttpError(400, "INVALID_ARGUMENT", "%s: point %d: %s must be "
                                        "a 64-bit integer" % (label, j, key[:-1]))
                cols.append(col)
            out.append((name, vals, cols[0], cols[1]))
        return out

    @staticmethod
    def _list_metrics(state):
        out = []
        for name, s in state.series.items():
            finite = [v for v in s["values"] if not math.isnan(v)]
            out.append({"name": name, "count": len(s["values"]),
                        "last_value": _num(s["values"][-1]), "last_step": s["steps"][-1],
                        "last_timestamp": s["timestamps"][-1],
                        "min": _num(min(finite)) if finite else "NaN",
                        "max": _num(max(finite)) if finite else "NaN"})
        return Twin._json({"metrics": out})

    def _get_metric(self, state, name, query):
        s = state.series.get(name)
        if s is None:
            raise HttpError(404, "NOT_FOUND", "no metric %r" % name)
        idx = list(range(len(s["values"])))
        downsampled = False
        mp = query.get("max_points", [None])[0]
        if mp is not None:
            try:
                n = int(mp)
                if n < 1:
                    raise ValueError
            except ValueError:
                raise HttpError(400, "INVALID_ARGUMENT", "max_points must be a positive integer")
            if len(idx) > n:  # keep each bucket's extremes
                downsampled = True
                buckets = max(1, n // 2)
                size = -(-len(idx) // buckets)
                keep = set()
                for b in range(0, len(idx), size):
                    chunk = idx[b:b + size]
                    vals = [(s["values"][i] if not math.isnan(s["values"][i]) else 0.0, i)
                            for i in chunk]
                    keep.add(min(vals)[1])
                    keep.add(max(vals)[1])
                idx = sorted(keep)[:n]
        if query.get("format", [""])[0] == "csv":
            lines = ["%d,%d,%s" % (s["steps"][i], s["timestamps"][i], _num(s["values"][i]))
                     for i in idx]
            return 200, "text/csv", ("\n".join(lines) + "\n").encode()
        return self._json({"name": name, "count": len(s["values"]), "downsampled": downsampled,
                           "steps": [s["steps"][i] for i in idx],
                           "timestamps": [s["timestamps"][i] for i in idx],
                           "values": [_num(s["values"][i]) for i in idx]})

    def _post_entries(self, state, body):
        doc = self._parse_json(body)
        entries = doc.get("entries") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise HttpError(400, "INVALID_ARGUMENT", 'expected {"entries": [...]}')
        now = int(time.time() * 1000)
        clean = []
        for i, e in enumerate(entries):
            label = "entry %d" % i

            def bad(msg):
                raise HttpError(400, "INVALID_ARGUMENT", "%s: %s" % (label, msg))
            if not isinstance(e, dict):
                bad("not an object")
            name, kind, value = e.get("name"), e.get("kind"), e.get("value")
            if not isinstance(name, str) or not 1 <= len(name.encode()) <= MAX_NAME_BYTES:
                bad("name must be 1..250 UTF-8 bytes")
            label = '%s ("%s")' % (label, name)

            def num(v):
                try:
                    return _wire.number_from_json(v)
                except ValueError as err:
                    bad(str(err))
            if kind == "list":
                if not isinstance(value, list):
                    bad("a list's value must be an array of numbers")
                [num(v) for v in value]
            elif kind == "row":
                if not isinstance(value, dict) or not value:
                    bad("a row's value must be an object of column -> number")
                [num(v) for v in value.values()]
            elif kind == "table":
                if not isinstance(value, dict) or not value or \
                        not all(isinstance(c, list) for c in value.values()):
                    bad("a table's value must be an object of column -> array")
                if len({len(c) for c in value.values()}) != 1:
                    bad("a table's columns must have one length")
                [num(v) for c in value.values() for v in c]
            elif kind == "image":
                if not isinstance(value, dict) or not isinstance(value.get("path"), str):
                    bad('an image\'s value must be {"path": ...}')
                if value["path"] not in state.files:
                    bad("image file %r was not uploaded" % value["path"])
            else:
                bad("kind must be list, row, table or image, not %r" % (kind,))
            step = e.get("step")
            if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
                bad("step must be an integer")
            ts = e.get("timestamp")
            clean.append({"name": name, "kind": kind, "value": value, "step": step,
                          "description": e.get("description") or "",
                          "timestamp": ts if isinstance(ts, int) else now})
        state.entries.extend(clean)
        return self._json({"entries": len(clean)})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    twin = None

    def log_message(self, *args):
        pass

    def address_string(self):
        return "twin-client"

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        if n > self.twin.max_body:
            while n > 0:  # read it anyway, so the client sees the answer, not a reset
                n -= len(self.rfile.read(min(n, 1 << 16)) or b"x" * n)
            return None
        return self.rfile.read(n) if n else b""

    def _do(self):
        method = self.command
        body = self._read_body()
        if body is None:
            status, ctype, data = Twin._error(
                413, "PAYLOAD_TOO_LARGE", "body is larger than the limit of %d bytes"
                % self.twin.max_body)
            self.close_connection = True
        else:
            try:
                status, ctype, data = self.twin.handle(method, self.path, self.headers, body)
            except Exception as e:  # a twin bug shows as 500 with the exception
                status, ctype, data = Twin._error(500, "INTERNAL", repr(e))
        with self.twin.lock:
            self.twin.requests.append((method, self.path, status,
                                       self.headers.get("Content-Type", ""),
                                       0 if body is None else len(body)))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _do


class _ConnTracking(object):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, twin):
        self.twin = twin
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self.twin.lock:
            self.twin._conns.add(request)
            self.twin.connections += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.twin.lock:
            self.twin._conns.discard(request)
        super().shutdown_request(request)


class _UnixServer(_ConnTracking, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    pass


class _TcpServer(_ConnTracking, socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True


def main():
    import argparse
    import signal
    import sys
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--socket", help="unix socket path (else TCP on 127.0.0.1)")
    ap.add_argument("--run", default="run-1")
    ap.add_argument("--token", default="token-1")
    args = ap.parse_args()
    twin = Twin(args.socket, runs={args.run: args.token}).start()
    print(twin.url, flush=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
