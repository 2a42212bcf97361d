"""Where a run's records go: the daemon over HTTP (OnlineBackend) or a local folder
(OfflineBackend). Each is both the Pipeline's sink (buffered scalars and entries) and the
target of the synchronous calls (tags, properties, files, status, reading metrics).
"""

import json
import os
import random
import threading
import time

from . import _wire
from ._http import CONNECTION_ERRORS, Transport, error_message, quote
from ._pipeline import Reject, Retry


class TrackingError(RuntimeError):
    """The daemon refused a request (status is the HTTP status) or could not be reached
    within the retry budget (status is None)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status
        self.message = message


class PropertyConflictError(TrackingError, ValueError):
    """A property was set again with another value (properties are immutable)."""


def _entries_body(entries):
    return json.dumps({"entries": [e.doc for e in entries]}, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def _dumps(doc):
    return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode("utf-8")


class OnlineBackend(object):
    """Talks to the daemon at `url` for run `run_id` with `token`. Thread-safe."""

    def __init__(self, url, token, run_id, timeout=30.0, retry_seconds=60.0, ca_pem=None):
        self.transport = Transport(url, token, timeout=timeout, ca_pem=ca_pem)
        self.url = url
        self.run_id = run_id
        self.retry_seconds = retry_seconds

    def describe(self):
        return self.url

    def reset_after_fork(self):
        self.transport.reset_after_fork()

    def _path(self, tail):
        return self.transport.run_path(self.run_id, tail)

    # --- Pipeline sink --------------------------------------------------------------------

    def _send(self, method, tail, body, content_type, headers=None):
        try:
            status, data = self.transport.request(method, self._path(tail), body, content_type,
                                                  headers=headers)
        except CONNECTION_ERRORS as e:
            raise Retry("%s unreachable: %s" % (self.url, e or type(e).__name__))
        if status >= 500 or status in (408, 429):
            raise Retry("HTTP %d from %s: %s" % (status, self.url, error_message(status, data)))
        if status >= 400:
            raise Reject(status, "%s %s: %s" % (method, tail.split("?")[0],
                                                 error_message(status, data)))
        return data

    def encode_metrics(self, series):
        # Each body carries a key of its own, so a retry after a lost answer is not stored twice.
        return _wire.encode_metrics(series), os.urandom(16).hex()

    def send_metrics(self, payload):
        body, key = payload
        self._send("POST", "/metrics", body, _wire.CONTENT_TYPE, {"Idempotency-Key": key})

    def send_entries(self, entries):
        for e in entries:
            if e.data is not None and not e.uploaded:
                self._send("PUT", "/files/" + quote(e.file_path, safe="/"), e.data,
                           "image/png")
                e.uploaded = True
        self._send("POST", "/entries", _entries_body(entries), "application/json")

    # --- synchronous calls ----------------------------------------------------------------

    def call(self, method, tail, doc=None, body=None, content_type="application/json"):
        """One request, retried on unreachable/5xx for up to retry_seconds.

        Returns the parsed JSON answer (None when empty). Raises TrackingError on 4xx or when
        the budget runs out.
        """
        if doc is not None:
            body = _dumps(doc)
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0
        while True:
            if hasattr(body, "seek"):
                body.seek(0)
            try:
                data = self._send(method, tail, body, content_type)
            except Reject as e:
                raise TrackingError(e.message, e.status)
            except Retry as e:
                attempt += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TrackingError("%s %s: gave up after %g s: %s"
                                        % (method, tail, self.retry_seconds, e))
                time.sleep(min(left, min(5.0, 0.1 * 2 ** attempt) * random.uniform(0.5, 1)))
                continue
            if not data.strip():
                return None
            try:
                return json.loads(data.decode("utf-8"))
            except ValueError:
                return None

    def get_tags(self):
        return (self.call("GET", "/tags") or {}).get("tags", {})

    def update_tags(self, set_=None, remove=None):
        doc = {}
        if set_:
            doc["set"] = set_
        if remove:
            doc["remove"] = list(remove)
        self.call("PATCH", "/tags", doc)

    def get_properties(self):
        return (self.call("GET", "/properties") or {}).get("properties", {})

    def add_properties(self, props):
        try:
            self.call("POST", "/properties", props)
        except TrackingError as e:
            if e.status == 409:
                raise PropertyConflictError(e.message, 409)
            raise

    def upload_file(self, name, data):
        self.call("PUT", "/files/" + quote(name, safe="/"), body=data,
                  content_type="application/octet-stream")

    def set_status(self, status, message=None):
        doc = {"status": status}
        if message is not None:
            doc["message"] = message
        self.call("POST", "/status", doc)

    def read_metrics(self, name=None):
        """Returns ({name: [values]}, [entry docs]) from the daemon."""
        series = {}
        if name is None:
            names = [m["name"] for m in (self.call("GET", "/metrics") or {}).get("metrics", [])]
        else:
            names = [name]
        for n in names:
            try:
                doc = self.call("GET", "/metrics/" + quote(n, safe=""))
            except TrackingError as e:
                if e.status == 404 and name is not None:
                    continue
                raise
            series[n] = [_wire.number_from_json(v) for v in (doc or {}).get("values", [])]
        tail = "/entries" if name is None else "/entries?name=" + quote(name, safe="")
        entries = (self.call("GET", tail) or {}).get("entries", [])
        return series, entries


def _atomic_write(path, data):
    d = os.path.dirname(path)
    import tempfile  # only offline runs write files: kept out of the import time
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _append(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


class OfflineBackend(object):
    """Writes a run to a folder: metrics.jsonl, entries.jsonl, tags.json, properties.json,
    status.json and files/. Steps are assigned as the daemon would."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(os.path.join(folder, "files"), exist_ok=True)
        self._lock = threading.Lock()
        self._next_step = {}
        self._tags = {}
        self._props = {}
        self._write_json("tags.json", self._tags)
        self._write_json("properties.json", self._props)

    def describe(self):
        return self.folder

    def reset_after_fork(self):
        self._lock = threading.Lock()

    def _write_json(self, fname, doc):
        _atomic_write(os.path.join(self.folder, fname),
                      json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"))

    def _file(self, rel):
        path = os.path.join(self.folder, "files", *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    # --- Pipeline sink --------------------------------------------------------------------

    def encode_metrics(self, series):
        lines = []
        for name, values, steps, ts in series:
            if steps is None:
                start = self._next_step.get(name, 0)
                steps = range(start, start + len(values))
            for v, s, t in zip(values, steps, ts):
                lines.append(_dumps({"name": name, "step": s, "timestamp": t,
                                     "value": _wire.json_number(v)}))
            top = max(steps) + 1
            if top > self._next_step.get(name, 0):
                self._next_step[name] = top
        return b"\n".join(lines) + b"\n"

    def send_metrics(self, data):
        try:
            _append(os.path.join(self.folder, "metrics.jsonl"), data)
        except OSError as e:
            raise Reject(None, "cannot write %s: %s" % (self.folder, e))

    def send_entries(self, entries):
        try:
            for e in entries:
                if e.data is not None and not e.uploaded:
                    _atomic_write(self._file(e.file_path), e.data)
                    e.uploaded = True
            _append(os.path.join(self.folder, "entries.jsonl"),
                    b"".join(_dumps(e.doc) + b"\n" for e in entries))
        except OSError as e:
            raise Reject(None, "cannot write %s: %s" % (self.folder, e))

    # --- synchronous calls ----------------------------------------------------------------

    def get_tags(self):
        with self._lock:
            return dict(self._tags)

    def update_tags(self, set_=None, remove=None):
        with self._lock:
            self._tags.update(set_ or {})
            for k in remove or ():
                self._tags.pop(k, None)
            self._write_json("tags.json", self._tags)

    def get_properties(self):
        with self._lock:
            return dict(self._props)

    def add_properties(self, props):
        with self._lock:
            for k, v in props.items():
                if k in self._props and self._props[k] != v:
                    raise PropertyConflictError(
                        "property %r already has the value %r" % (k, self._props[k]), 409)
            self._props.update(props)
            self._write_json("properties.json", self._props)

    def upload_file(self, name, data):
        if hasattr(data, "read"):
            data.seek(0)
            data = data.read()
        _atomic_write(self._file(name), data)

    def set_status(self, status, message=None):
        doc = {"status": status}
        if message is not None:
            doc["message"] = message
        self._write_json("status.json", doc)

    def read_metrics(self, name=None):
        series = {}
        entries = []
        try:
            with open(os.path.join(self.folder, "metrics.jsonl"), "rb") as f:
                for line in f:
                    if line.strip():
                        d = json.loads(line)
                        if name is None or d["name"] == name:
                            series.setdefault(d["name"], []).append(
                                _wire.number_from_json(d["value"]))
        except FileNotFoundError:
            pass
        try:
            with open(os.path.join(self.folder, "entries.jsonl"), "rb") as f:
                for line in f:
                    if line.strip():
                        d = json.loads(line)
                        if name is None or d["name"] == name:
                            entries.append(d)
        except FileNotFoundError:
            pass
        return series, entries
