"""The buffer between the logging calls and the daemon, and the thread that empties it.

Logging threads append items to `Pipeline.q` (a deque: append is atomic, no lock). One daemon
thread per process wakes every `interval` seconds, or when about `wake_at` items wait, turns
the items into compact request payloads (binary bodies for scalars, entry batches), and sends
them in order through a sink. A sink raises Retry for "try again later" (daemon unreachable,
5xx) and Reject for "never" (4xx); Retry is answered with capped, jittered exponential
back-off while the buffer keeps filling up to `cap` points, beyond which new points are
dropped with one warning.

flush() puts a Marker in the queue and waits until the thread has handled everything before
it. Waking the thread is a write to a pipe, so a signal handler may flush safely.
"""

import itertools
import os
import random
import select
import sys
import threading
import time
from collections import deque


class Retry(Exception):
    """The sink could not deliver now; the same payload will be offered again."""


class Reject(Exception):
    """The sink refused the payload for good (the daemon answered 4xx)."""

    def __init__(self, status, message):
        super().__init__("HTTP %s: %s" % (status, message) if status else message)
        self.status = status
        self.message = message


class Marker(object):
    """A flush request travelling through the queue."""
    __slots__ = ("event",)

    def __init__(self):
        self.event = threading.Event()


class Entry(object):
    """A list/row/table/image entry; `data` is an image's bytes to PUT at `file_path` first."""
    __slots__ = ("doc", "file_path", "data", "uploaded")

    def __init__(self, doc, file_path=None, data=None):
        self.doc = doc
        self.file_path = file_path
        self.data = data
        self.uploaded = False


class _Unit(object):
    __slots__ = ("send", "payload", "points", "marker")

    def __init__(self, send, payload, points, marker=None):
        self.send = send
        self.payload = payload
        self.points = points
        self.marker = marker


def warn(message):
    try:
        sys.stderr.write("trainyard: %s\n" % message)
        sys.stderr.flush()
    except Exception:  # stderr closed or replaced by something odd: never break training
        pass


def _split_runs(name, pts):
    """Series for one name: one per stretch of points that all have steps or all lack them."""
    steps = [p[2] for p in pts]
    ts = [int(p[3] * 1000) for p in pts]
    values = [p[1] for p in pts]
    if None not in steps:
        return [(name, values, steps, ts)]
    if steps.count(None) == len(steps):
        return [(name, values, None, ts)]
    runs = []
    start = 0
    for i in range(1, len(pts) + 1):
        if i == len(pts) or (steps[i] is None) != (steps[start] is None):
            runs.append((name, values[start:i],
                         None if steps[start] is None else steps[start:i], ts[start:i]))
            start = i
    return runs


class Pipeline(object):
    """Buffer + sender thread for one run in one process. See the module comment.

    sink: object with encode_metrics(series) -> payload, send_metrics(payload),
    send_entries(list of Entry), each send raising Retry or Reject.
    cap: most points held (queued + encoded but unsent); wake_at: queue length that wakes the
    thread early; batch: most points per metrics payload.
    """

    def __init__(self, sink, cap=5000000, wake_at=50000, interval=1.0, batch=50000,
                 backoff_max=30.0, entries_per_request=1000, on_start=None):
        self.sink = sink
        self.cap = cap
        self.wake_at = wake_at
        self.interval = interval
        self.batch = batch
        self.backoff_max = backoff_max
        self.entries_per_request = entries_per_request
        self.on_start = on_start  # called when a process starts its sender thread
        self._reset()

    def _reset(self):
        self.q = deque()
        self.limit = 0  # the first append goes through slow(), which starts the thread
        self._pending = deque()
        self.pending_points = 0
        self._thread = None
        self._pid = os.getpid()
        self._rfd = self._wfd = None
        self._start_lock = threading.Lock()
        self._urgent = False
        self._exit_mode = False
        self._stopping = False
        self.dropped_full = 0
        self.dropped_rejected = 0
        self.sent_points = 0
        self.last_error = None
        self._full_warned = itertools.count()
        self._reject_warned = itertools.count()

    def after_fork_child(self):
        """A forked child starts empty: the parent still owns and sends what was queued."""
        for fd in (self._rfd, self._wfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._reset()

    # --- the logging side ---------------------------------------------------------------

    def slow(self, item):
        """Append when the fast check failed: start the thread, wake it, or drop when full."""
        if self._thread is None or self._pid != os.getpid():
            self.start()
        q = self.q
        room = self.cap - self.pending_points
        n = len(q)
        if n >= room:
            self.dropped_full += 1
            if next(self._full_warned) == 0:
                warn("the tracking buffer is full (%d points; TRAINYARD_BUFFER_POINTS): "
                     "dropping new points until the daemon takes them (%s)"
                     % (self.cap, self.last_error or "daemon slow or unreachable"))
            return
        if n >= self.wake_at:
            self.wake()
            self.limit = room
        else:
            self.limit = min(self.wake_at, room)
        q.append(item)

    def put(self, item):
        """Appends a non-scalar item (an Entry) with the same bound and wake-up rules."""
        if len(self.q) >= self.limit:
            self.slow(item)
        else:
            self.q.append(item)

    def idle(self):
        return not self.q and not self._pending

    def unsent(self):
        queued = sum(1 for it in list(self.q) if type(it) is not Marker)
        return queued + self.pending_points

    def start(self):
        # A timeout, not a hang, if a signal handler's flush interrupted this very call.
        lock = self._start_lock
        if not lock.acquire(timeout=2):
            return
        try:
            self._start_locked()
        finally:
            lock.release()

    def _start_locked(self):
        if self._thread is not None and self._pid == os.getpid():
            return
        if self._pid != os.getpid():
            self.after_fork_child()
        rfd, wfd = os.pipe()
        try:
            os.set_blocking(rfd, False)
            os.set_blocking(wfd, False)
        except (AttributeError, OSError):  # old Windows: wake-ups just wait for the tick
            pass
        self._rfd, self._wfd = rfd, wfd
        t = threading.Thread(target=self._loop, name="trainyard-sender", daemon=True)
        try:
            t.start()
        except RuntimeError:  # interpreter shutting down: flush() sends inline
            self._thread = False
            return
        self._thread = t
        self.limit = min(self.wake_at, self.cap - self.pending_points)
        if self.on_start is not None:
            self.on_start()

    def wake(self):
        try:
            os.write(self._wfd, b"\0")
        except (OSError, TypeError):  # pipe full (a wake-up is pending anyway) or not started
            pass

    def flush(self, timeout=None, final=False):
        """Waits until everything queued before the call was sent or refused.

        Returns False when `timeout` seconds passed first. final: the process is ending, so
        back-off between retries is kept short.
        """
        if self._pid != os.getpid() or not self._thread:
            if self.idle():
                return True
            self.start()
        if final:
            self._exit_mode = True
        if not self._thread:  # no thread could be started: send from this one
            deadline = None if timeout is None else time.monotonic() + timeout
            self._drain()
            return self._send_pending(deadline)
        m = Marker()
        self.q.append(m)
        self._urgent = True
        self.wake()
        return m.event.wait(timeout)

    def stop(self):
        """Ends the thread after the current step (tests; queued items are not sent)."""
        self._stopping = True
        self.wake()
        t = self._thread
        if t and t is not threading.current_thread():
            t.join(5)

    # --- the thread -----------------------------------------------------------------------

    def _loop(self):
        while not self._stopping:
            self._wait(self.interval)
            try:
                self._drain()
                self._send_pending(None)
            except Exception as e:  # a bug must not end the thread silently
                warn("internal error in the sender thread: %r" % (e,))

    def _wait(self, timeout):
        try:
            ready, _, _ = select.select([self._rfd], [], [], timeout)
        except (OSError, ValueError, TypeError):
            time.sleep(timeout)
            return
        if ready:
            try:
                os.read(self._rfd, 4096)
            except OSError:
                pass

    def _update_limit(self):
        self.limit = min(self.wake_at, self.cap - self.pending_points)

    def _add(self, unit):
        self._pending.append(unit)
        self.pending_points += unit.points

    def _drain(self):
        """Moves everything queued into encoded units, in order."""
        q = self.q
        pop = q.popleft
        while True:
            n = min(len(q), self.batch)
            if n <= 0:
                break
            # Popped items stay counted until they are units, so the bound holds meanwhile.
            self.pending_points += n
            groups = {}
            entries = []
            for _ in range(n):
                it = pop()
                if type(it) is tuple:
                    g = groups.get(it[0])
                    if g is None:
                        groups[it[0]] = [it]
                    else:
                        g.append(it)
                elif type(it) is Marker:
                    self._emit(groups, entries)
                    groups, entries = {}, []
                    self._pending.append(_Unit(None, None, 0, it))
                else:
                    entries.append(it)
            self._emit(groups, entries)
            self.pending_points -= n
        self._update_limit()

    def _emit(self, groups, entries):
        bodies = []
        for name, pts in groups.items():
            for i, series in enumerate(_split_runs(name, pts)):
                if i == len(bodies):
                    bodies.append([])
                bodies[i].append(series)
        for series in bodies:
            points = sum(len(s[1]) for s in series)
            try:
                payload = self.sink.encode_metrics(series)
            except Exception as e:
                self.dropped_rejected += points
                warn("could not encode %d points: %r" % (points, e))
                continue
            self._add(_Unit(self.sink.send_metrics, payload, points))
        step = self.entries_per_request
        for i in range(0, len(entries), step):
            chunk = entries[i:i + step]
            self._add(_Unit(self.sink.send_entries, chunk, len(chunk)))

    def _send_pending(self, deadline):
        """Sends units until none is left; True, or False if `deadline` passed first."""
        attempt = 0
        pending = self._pending
        while pending:
            u = pending[0]
            if u.marker is not None:
                pending.popleft()
                u.marker.event.set()
                continue
            try:
                u.send(u.payload)
                self.sent_points += u.points
            except Retry as e:
                self.last_error = str(e)
                attempt += 1
                delay = min(self.backoff_max, 0.25 * 2 ** min(attempt - 1, 20))
                if self._exit_mode:
                    delay = min(delay, 0.5)
                if not self._backoff(delay * random.uniform(0.5, 1.0), deadline):
                    return False
                continue
            except Reject as e:
                self.dropped_rejected += u.points
                if next(self._reject_warned) == 0:
                    warn("the tracking daemon refused %d points/entries, which are dropped "
                         "(further refusals are not reported one by one): %s"
                         % (u.points, e))
            except Exception as e:
                self.dropped_rejected += u.points
                if next(self._reject_warned) == 0:
                    warn("could not send %d points/entries, which are dropped: %r"
                         % (u.points, e))
            attempt = 0
            pending.popleft()
            self.pending_points -= u.points
            self._update_limit()
        return True

    def _backoff(self, delay, deadline):
        """Sleeps `delay`, draining the queue meanwhile; a flush cuts it short.

        Returns False if `deadline` passes or the pipeline is stopping.
        """
        end = time.monotonic() + delay
        while not self._stopping:
            if self._urgent:
                self._urgent = False
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if now >= end:
                return True
            left = end - now
            if deadline is not None:
                left = min(left, deadline - now)
            if self._thread:
                self._wait(min(left, self.interval))
                self._drain()
            else:
                time.sleep(min(left, 0.1))
        return False
