"""Run: what a training script calls to log metrics, entries, tags, properties and files.

The API follows Azure ML's azureml.core.Run. Scalars logged with log() are buffered in
memory and sent by a background thread (see _pipeline.py); everything else that changes the
run on the daemon and can fail in a way the caller must know about (tags, properties, files,
status) is sent at the call.
"""

import atexit
import io
import os
import re
import signal
import sys
import threading
import time
import weakref

from ._backends import OfflineBackend, OnlineBackend, PropertyConflictError, TrackingError
from ._pipeline import Entry, Pipeline, warn
from ._wire import MAX_NAME_BYTES, json_number

__all__ = ["Run", "TrackingError", "PropertyConflictError"]

_time = time.time
_I64 = 1 << 63
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _env_number(environ, name, default, kind=float):
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = kind(raw)
        if v < 0:
            raise ValueError
        return v
    except ValueError:
        warn("ignoring %s=%r (not a non-negative number); using %s" % (name, raw, default))
        return default


def _check_name(name, what="metric name"):
    if not isinstance(name, str):
        raise TypeError("%s must be a str, got %s" % (what, type(name).__name__))
    if not name:
        raise ValueError("%s must not be empty" % what)
    if len(name) > MAX_NAME_BYTES:
        raise ValueError("%s is %d characters long; the limit is %d: %r..."
                         % (what, len(name), MAX_NAME_BYTES, name[:40]))
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("%s is not valid Unicode text: %r" % (what, name)) from None
    if len(raw) > MAX_NAME_BYTES:
        raise ValueError("%s is %d bytes in UTF-8; the limit is %d: %r..."
                         % (what, len(raw), MAX_NAME_BYTES, name[:40]))


def _to_float(value, name):
    """A metric value as float; TypeError for non-numbers, ValueError for huge ints."""
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise ValueError("value of %r is too large for a float: %d" % (name, value)) from None
    if value is None or isinstance(value, (str, bytes, bytearray, complex)) or \
            getattr(type(value), "__float__", None) is None:
        raise TypeError("value of %r must be a number (int, float or bool), got %s"
                        % (name, type(value).__name__))
    try:  # numpy scalars, 0-d arrays and tensors, Decimal, Fraction
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError("value of %r must be a single number, got %s: %s"
                        % (name, type(value).__name__, e)) from None
    except OverflowError:
        raise ValueError("value of %r is too large for a float" % (name,)) from None


def _to_step(step):
    if isinstance(step, bool) or not hasattr(type(step), "__index__"):
        raise TypeError("step must be an int, got %s" % type(step).__name__)
    step = step.__index__()
    if not -_I64 <= step < _I64:
        raise ValueError("step %d does not fit in 64 bits" % step)
    return step


def _numbers(values, name, what):
    try:
        items = list(values)
    except TypeError:
        raise TypeError("%s of %r must be a sequence of numbers, got %s"
                        % (what, name, type(values).__name__)) from None
    return [json_number(_to_float(v, name)) for v in items]


def _ms():
    return int(_time() * 1000)


def _file_component(name):
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return "_" if safe in (".", "..") else safe


def _check_file_name(name):
    if not isinstance(name, str):
        raise TypeError("file name must be a str, got %s" % type(name).__name__)
    rel = name.replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("file name must be a relative path without '.' or '..' parts: %r"
                         % name)
    if parts[0] in ("code", "user_logs"):
        raise ValueError("file name %r: %s/ belongs to the daemon" % (name, parts[0]))
    return rel


class _FileBody(object):
    """A file sent as a request body without reading it into memory (len() is its size)."""

    def __init__(self, f, size):
        self._f, self._start, self._size = f, f.tell(), size

    def __len__(self):
        return self._size

    def read(self, n=-1):
        return self._f.read(n)

    def seek(self, _pos):
        self._f.seek(self._start)


class Run(object):
    """A run as seen from its script. Thread-safe; get one with Run.get_context()."""

    _context = None
    _context_lock = threading.Lock()

    def __init__(self, run_id, experiment, backend, environ=None, offline=False):
        """Internal: scripts call Run.get_context()."""
        environ = os.environ if environ is None else environ
        self._id = run_id
        self._experiment = experiment
        self._backend = backend
        self._offline = offline
        self._names = set()
        self._image_counts = {}
        self._lock = threading.Lock()
        self._props = {}
        self._exit_seconds = _env_number(environ, "TRAINYARD_EXIT_FLUSH_SECONDS", 30.0)
        self._pipe = Pipeline(
            backend,
            cap=_env_number(environ, "TRAINYARD_BUFFER_POINTS", 5000000, int),
            interval=_env_number(environ, "TRAINYARD_FLUSH_INTERVAL_SECONDS", 1.0),
            backoff_max=_env_number(environ, "TRAINYARD_RETRY_MAX_SECONDS", 30.0),
            on_start=self._register_child_exit)
        self._exit_done = False
        _live_runs.add(self)

    # --- identity -------------------------------------------------------------------------

    @property
    def id(self):
        """The run's name (TRAINYARD_RUN_ID), or the generated id of an offline run."""
        return self._id

    @property
    def experiment(self):
        """The experiment's name (TRAINYARD_EXPERIMENT)."""
        return self._experiment

    @property
    def offline(self):
        """True when logging to a local folder instead of the daemon."""
        return self._offline

    @property
    def offline_dir(self):
        """The folder of an offline run, else None."""
        return self._backend.folder if self._offline else None

    def __repr__(self):
        return "Run(id=%r, experiment=%r%s)" % (self._id, self._experiment,
                                                ", offline" if self._offline else "")

    @classmethod
    def get_context(cls, allow_offline=True):
        """The run this process belongs to; the same object on every call.

        Inside a run (TRAINYARD_RUN_ID set) it reports to the daemon at
        TRAINYARD_TRACKING_URL. Elsewhere it is an offline run writing to
        ./trainyard-offline/<id>/ (a RuntimeError if allow_offline is False).
        """
        with cls._context_lock:
            run = cls._context
            if run is not None:
                return run
            run = cls._from_environ(os.environ, allow_offline)
            run._install_signal_handler()
            cls._context = run
            return run

    @classmethod
    def _from_environ(cls, environ, allow_offline=True, offline_root=None):
        run_id = environ.get("TRAINYARD_RUN_ID") or ""
        url = environ.get("TRAINYARD_TRACKING_URL") or ""
        experiment = environ.get("TRAINYARD_EXPERIMENT") or ""
        why = None
        if run_id and url:
            try:
                backend = OnlineBackend(
                    url, environ.get("TRAINYARD_RUN_TOKEN") or "", run_id,
                    timeout=_env_number(environ, "TRAINYARD_HTTP_TIMEOUT_SECONDS", 30.0),
                    retry_seconds=_env_number(environ, "TRAINYARD_RETRY_SECONDS", 60.0),
                    ca_pem=environ.get("TRAINYARD_TRACKING_CA") or None)
                return cls(run_id, experiment, backend, environ)
            except ValueError as e:
                why = str(e)
        elif run_id:
            why = "TRAINYARD_RUN_ID is set but TRAINYARD_TRACKING_URL is not"
        if not allow_offline:
            raise RuntimeError("not inside a trainyard run: %s"
                               % (why or "TRAINYARD_RUN_ID is not set"))
        offline_id = "offline_%s_%s" % (time.strftime("%Y%m%d_%H%M%S"), os.urandom(4).hex())
        root = offline_root or os.path.join(os.getcwd(), "trainyard-offline")
        folder = os.path.join(root, offline_id)
        warn("%s; logging offline to %s" % (why or "not inside a run (TRAINYARD_RUN_ID unset)",
                                             folder))
        return cls(offline_id, experiment or "offline", OfflineBackend(folder), environ,
                   offline=True)

    # --- scalars: the hot path ------------------------------------------------------------

    def log(self, name, value, step=None, description=""):
        """Logs one point of the scalar series `name` (int, float or bool; NaN and ±Inf kept).

        Returns at once: the point is buffered and sent in the background. Without a step
        the daemon numbers the points 0, 1, 2, ... `description` is accepted for
        compatibility and not stored. Raises TypeError/ValueError for bad arguments.
        """
        if name not in self._names:
            _check_name(name)
            self._names.add(name)
        if type(value) is not float:
            value = _to_float(value, name)
        if step is not None and (type(step) is not int or not -_I64 <= step < _I64):
            step = _to_step(step)
        p = self._pipe
        q = p.q
        if len(q) >= p.limit:
            p.slow((name, value, step, _time()))
        else:
            q.append((name, value, step, _time()))

    # --- entries --------------------------------------------------------------------------

    def _entry(self, name, kind, value, description, step=None, file_path=None, data=None):
        doc = {"name": name, "kind": kind, "value": value, "description": str(description or ""),
               "timestamp": _ms()}
        if step is not None:
            doc["step"] = step
        self._pipe.put(Entry(doc, file_path, data))

    def log_list(self, name, values, description=""):
        """Logs a list of numbers under `name` (one entry)."""
        _check_name(name)
        self._entry(name, "list", _numbers(values, name, "values"), description)

    def log_row(self, name, description="", **cols):
        """Logs one row (column=number keyword arguments) of the table `name`."""
        _check_name(name)
        if not cols:
            raise ValueError("log_row(%r) needs at least one column=value" % (name,))
        row = {}
        for col, v in cols.items():
            row[col] = json_number(_to_float(v, "%s.%s" % (name, col)))
        self._entry(name, "row", row, description)

    def log_table(self, name, value, description=""):
        """Logs a table: a dict of column -> list of numbers, all of one length."""
        _check_name(name)
        if not isinstance(value, dict) or not value:
            raise TypeError("log_table(%r) needs a non-empty dict of column -> list of numbers"
                            % (name,))
        table = {}
        length = None
        for col, vals in value.items():
            if not isinstance(col, str):
                raise TypeError("column names must be str, got %r" % (col,))
            if isinstance(vals, (str, bytes)):
                raise TypeError("column %r of %r must be a list of numbers" % (col, name))
            table[col] = _numbers(vals, "%s.%s" % (name, col), "column")
            if length is None:
                length = len(table[col])
            elif len(table[col]) != length:
                raise ValueError("columns of table %r differ in length (%r has %d, not %d)"
                                 % (name, col, len(table[col]), length))
        self._entry(name, "table", table, description)

    def log_image(self, name, path=None, plot=None, description="", step=None):
        """Logs a PNG image from a file (`path`) or a matplotlib figure (`plot`).

        The image is read at the call; it is uploaded as images/NAME/STEP.png (STEP is
        `step`, else 0, 1, 2, ... per name in this process) and then logged as an entry.
        """
        _check_name(name)
        if (path is None) == (plot is None):
            raise ValueError("log_image(%r) needs exactly one of path= or plot=" % (name,))
        if step is not None:
            step = _to_step(step)
        if path is not None:
            with open(path, "rb") as f:
                data = f.read()
            if not data.startswith(_PNG_MAGIC):
                raise ValueError("log_image(%r): %s is not a PNG file" % (name, path))
        else:
            buf = io.BytesIO()
            plot.savefig(buf, format="png")
            data = buf.getvalue()
        with self._lock:
            n = self._image_counts.get(name, 0)
            self._image_counts[name] = n + 1
        index = n if step is None else step
        rel = "images/%s/%d.png" % (_file_component(name), index)
        self._entry(name, "image", {"path": rel}, description, step=index, file_path=rel,
                    data=data)

    # --- tags and properties --------------------------------------------------------------

    def tag(self, key, value=None):
        """Sets a tag (mutable); value None means an empty string, others are str()'d."""
        self.set_tags({key: value})

    def set_tags(self, tags):
        """Sets several tags at once."""
        if not isinstance(tags, dict):
            raise TypeError("set_tags needs a dict, got %s" % type(tags).__name__)
        clean = {}
        for k, v in tags.items():
            _check_name(k, "tag name")
            clean[k] = "" if v is None else str(v)
        if clean:
            self._backend.update_tags(set_=clean)

    def remove_tags(self, keys):
        """Removes tags by name."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        for k in keys:
            _check_name(k, "tag name")
        if keys:
            self._backend.update_tags(remove=keys)

    def get_tags(self):
        """The run's tags as a dict."""
        return self._backend.get_tags()

    def add_properties(self, properties):
        """Adds immutable properties (values are str()'d).

        Raises PropertyConflictError (a ValueError) if a key already has another value.
        """
        if not isinstance(properties, dict):
            raise TypeError("add_properties needs a dict, got %s" % type(properties).__name__)
        clean = {}
        for k, v in properties.items():
            _check_name(k, "property name")
            clean[k] = "" if v is None else str(v)
        with self._lock:
            for k, v in clean.items():
                if k in self._props and self._props[k] != v:
                    raise PropertyConflictError(
                        "property %r already has the value %r; properties are immutable"
                        % (k, self._props[k]), 409)
        self._backend.add_properties(clean)
        with self._lock:
            self._props.update(clean)

    def add_property(self, key, value):
        self.add_properties({key: value})

    def get_properties(self):
        return self._backend.get_properties()

    # --- files ----------------------------------------------------------------------------

    def upload_file(self, name, path_or_stream):
        """Stores a file of the run as `name` (a relative path, e.g. outputs/model.pkl)."""
        rel = _check_file_name(name)
        if hasattr(path_or_stream, "read"):
            stream = path_or_stream
            try:
                if isinstance(stream, io.TextIOBase):
                    raise ValueError("text: read it and encode it as UTF-8")
                start = stream.tell()
                size = stream.seek(0, io.SEEK_END) - start
                stream.seek(start)
                body = _FileBody(stream, size)
            except (AttributeError, OSError, ValueError):
                data = stream.read()
                body = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            self._backend.upload_file(rel, body)
        else:
            with open(os.fspath(path_or_stream), "rb") as f:
                self._backend.upload_file(rel, _FileBody(f, os.fstat(f.fileno()).st_size))

    # --- reading back ---------------------------------------------------------------------

    def get_metrics(self, name=None):
        """Metrics of the run: name -> value (logged once) or list of values, like Azure's.

        Lists are lists (a list of lists if logged more than once), rows and tables are
        dicts of column -> list, images the stored path (or a list of paths). Flushes first.
        """
        if name is not None:
            _check_name(name)
        self.flush()
        series, entries = self._backend.read_metrics(name)
        out = {}
        for n, values in series.items():
            out[n] = values[0] if len(values) == 1 else values
        by_name = {}
        for e in entries:
            by_name.setdefault(e.get("name"), []).append(e)
        for n, es in by_name.items():
            kind = es[0].get("kind")
            if kind == "row" or kind == "table":
                cols = {}
                for e in es:
                    for col, v in (e.get("value") or {}).items():
                        target = cols.setdefault(col, [])
                        if isinstance(v, list):
                            target.extend(_from_json(x) for x in v)
                        else:
                            target.append(_from_json(v))
                out[n] = cols
            elif kind == "image":
                paths = [(e.get("value") or {}).get("path") for e in es]
                out[n] = paths[0] if len(paths) == 1 else paths
            else:
                lists = [[_from_json(x) for x in (e.get("value") or [])] for e in es]
                out[n] = lists[0] if len(lists) == 1 else lists
        return out

    # --- flushing and ending --------------------------------------------------------------

    def flush(self, timeout_seconds=300):
        """Waits until everything logged so far was sent; False if the time ran out."""
        return self._pipe.flush(timeout_seconds)

    def complete(self):
        """Flushes and reports the script's verdict Completed."""
        self.flush()
        self._backend.set_status("Completed")

    def fail(self, message=None, error_details=None):
        """Flushes and reports the script's verdict Failed with `message`."""
        if message is None:
            message = error_details
        self.flush()
        self._backend.set_status("Failed", "" if message is None else str(message))

    def _exit_flush(self, why="exit"):
        """Sends what is buffered within TRAINYARD_EXIT_FLUSH_SECONDS; reports what is lost."""
        p = self._pipe
        if not p.idle():
            if not p.flush(self._exit_seconds, final=True):
                warn("%d points of run %s could not be sent to %s within %g s at %s (%s)"
                     % (p.unsent(), self._id, self._backend.describe(), self._exit_seconds,
                        why, p.last_error or "the daemon did not answer"))
        if not self._exit_done:
            lost = p.dropped_full + p.dropped_rejected
            if lost:
                self._exit_done = True
                warn("%d points/entries of run %s were dropped (%d: buffer full, %d: refused "
                     "by the daemon)" % (lost, self._id, p.dropped_full, p.dropped_rejected))

    def _register_child_exit(self):
        # A multiprocessing child made by fork ends with os._exit(), skipping atexit; its
        # finalizers still run. (Registered when the sender starts, after multiprocessing
        # cleared the registry it inherited; in other processes it only flushes twice.)
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            try:
                mp_util.Finalize(None, self._exit_flush, args=("process exit",),
                                 exitpriority=100)
            except Exception:
                pass

    def _after_fork_child(self):
        self._pipe.after_fork_child()
        self._backend.reset_after_fork()
        self._lock = threading.Lock()
        self._exit_done = False

    def _close(self):
        """Stops the sender thread without flushing (tests)."""
        _live_runs.discard(self)
        self._pipe.stop()
        if hasattr(self._backend, "transport"):
            self._backend.transport.close()

    def _install_signal_handler(self):
        if threading.current_thread() is not threading.main_thread():
            return
        global _previous_sigterm
        try:
            prev = signal.getsignal(signal.SIGTERM)
            if prev is _on_sigterm or prev == signal.SIG_IGN:
                return
            signal.signal(signal.SIGTERM, _on_sigterm)
            _previous_sigterm = prev
        except (ValueError, OSError, AttributeError):
            pass


def _from_json(v):
    if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity"):
        return float(v.replace("Infinity", "inf"))
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


_live_runs = weakref.WeakSet()
_previous_sigterm = None


def _on_sigterm(signum, frame):
    for run in list(_live_runs):
        try:
            run._exit_flush("SIGTERM")
        except Exception:
            pass
    prev = _previous_sigterm
    if callable(prev):
        prev(signum, frame)
        return
    if prev == signal.SIG_IGN:
        return
    # The default action: end the process by this signal, as it would have without us.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    time.sleep(1)
    os._exit(128 + signum)


def _at_exit():
    for run in list(_live_runs):
        try:
            run._exit_flush("exit")
        except Exception:
            pass


def _after_fork_in_child():
    Run._context_lock = threading.Lock()  # another thread may have held it at the fork
    for run in list(_live_runs):
        run._after_fork_child()


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
