"""How the SDK reaches a workspace's daemon: through the `trainyard` command, which finds the
workspace exactly as the CLI does (and starts a local daemon when none runs), then over the
daemon's REST API (docs/api.md) with the workspace's token.

Snapshots are made by the same command (`trainyard snapshot create`), so the ignore rules,
limits and uploads are trainyard's own, never a second implementation.
"""

from __future__ import annotations

import json
import os
import time
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing stays out of the import time
    from typing import Any, Dict, List, Optional, Type

from .._http import CONNECTION_ERRORS, SinkError, Transport, error_message, quote
from .exceptions import AzureMLException, ProjectSystemException, UserErrorException


def cli_path() -> str:
    """The trainyard command: $TRAINYARD_CLI, else `trainyard` on PATH."""
    explicit = os.environ.get("TRAINYARD_CLI")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ProjectSystemException(
                "TRAINYARD_CLI names %s, which is not an executable file" % explicit)
        return explicit
    import shutil
    found = shutil.which("trainyard")
    if not found:
        raise ProjectSystemException(
            "the trainyard command was not found on PATH; install trainyard or set "
            "TRAINYARD_CLI to its path")
    return found


def _cli_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("TRAINYARD_CLI", None)
    return env


def run_cli(args, cwd: str, what: str, error: Type[AzureMLException] = UserErrorException,
            timeout: Optional[float] = None) -> str:
    """Runs `trainyard -C CWD ARGS`; its stdout, or `error` with its message."""
    try:
        code, out, err = _spawn([cli_path(), "-C", cwd] + list(args), timeout)
    except OSError as e:
        raise ProjectSystemException("could not run the trainyard command: %s" % e, e)
    except _TimedOut as e:
        raise ProjectSystemException("%s took longer than %.0f s" % (what, timeout or 0), e)
    if code != 0:
        text = err.decode("utf-8", "replace").strip()
        if text.startswith("error: "):
            text = text[len("error: "):]
        raise error("%s failed: %s" % (what, text or "exit code %d" % code))
    return out.decode("utf-8", "replace")


class _TimedOut(Exception):
    pass


def _spawn(argv, timeout: Optional[float]):
    """(exit code, stdout, stderr) of `argv`, stdin from /dev/null.

    posix_spawn and two pipes, not the subprocess module, whose import costs an SDK program
    milliseconds it has no other use for; safe beside threads (nothing runs in a forked
    Python). The child is killed on timeout (_TimedOut) and on any exception here, such as
    Ctrl-C.
    """
    import select
    import signal
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = 0
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            # The child starts with default signal handling and no blocked signal (Python
            # ignores SIGPIPE, and the caller may block signals), as a shell would start it.
            pid = os.posix_spawn(argv[0], argv, _cli_env(), file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2)],
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ), setsigmask=())
        finally:
            for fd in (out_w, err_w, devnull):
                os.close(fd)
        chunks = {out_r: [], err_r: []}  # type: Dict[int, List[bytes]]
        poller = select.poll()  # not select(): descriptors may be numbered above 1023
        for fd in chunks:
            poller.register(fd, select.POLLIN)
        open_fds = len(chunks)
        deadline = None if timeout is None else time.monotonic() + timeout
        while open_fds:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise _TimedOut(" ".join(argv[3:5]))
            for fd, _ in poller.poll(None if left is None else max(1, int(left * 1000))):
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    poller.unregister(fd)
                    open_fds -= 1
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # SIGCHLD ignored by the program: reaped already
            status = 0
        pid = 0
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        os.close(out_r)
        os.close(err_r)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    return code, b"".join(chunks[out_r]), b"".join(chunks[err_r])


# How long one call may take: most answer at once; a build answers when the image is ready.
DEFAULT_CALL_SECONDS = 90.0
LONGEST_CALL_SECONDS = 6 * 3600.0
# A snapshot reads the folder: up to the workspace's limits (300 MB by default).
SNAPSHOT_CALL_SECONDS = 900.0


class ApiError(UserErrorException):
    """An error answer of the daemon: `status` (HTTP) and `code` (e.g. NOT_FOUND) beside the
    message."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Connection:
    """One workspace's daemon: its URL and token, and the folder the workspace was found from."""

    def __init__(self, url: str, token: str, cwd: str, folder: Optional[str] = None,
                 found_by: str = "", remote: bool = False,
                 ca_file: Optional[str] = None) -> None:
        ca_pem = None
        if ca_file:
            with open(ca_file, encoding="utf-8") as f:
                ca_pem = f.read()
        self.url = url
        self.token = token
        self.ca_pem = ca_pem
        self.cwd = cwd
        self.folder = folder
        self.found_by = found_by
        self.remote = remote
        # The longest call (Environment.build) bounds the transport; others pass their own.
        self._transport = Transport(url, token, timeout=LONGEST_CALL_SECONDS, ca_pem=ca_pem)

    @classmethod
    def discover(cls, cwd: str) -> "Connection":
        """The workspace the CLI would use in `cwd`, its daemon started when local."""
        out = run_cli(["workspace", "connect"], cwd, "finding the workspace",
                      error=ProjectSystemException, timeout=120)
        try:
            info = json.loads(out)
        except ValueError:
            # Its output is not repeated: it may hold the token.
            raise ProjectSystemException("`trainyard workspace connect` printed something other "
                                         "than its JSON answer (%d bytes)" % len(out))
        if not isinstance(info, dict) or not info.get("url"):
            raise ProjectSystemException("`trainyard workspace connect` answered no url")
        if info.get("tls_pin") and not info.get("ca_file"):
            raise ProjectSystemException(
                "the workspace's daemon %s is trusted by its key pin, which the Python SDK cannot "
                "check; log in with `trainyard login URL --ca-file FILE` (its certificate) instead"
                % info.get("url"))
        return cls(info["url"], info.get("token", ""), cwd, folder=info.get("folder"),
                   found_by=info.get("found_by", ""), remote=bool(info.get("remote")),
                   ca_file=info.get("ca_file") or None)

    def close(self) -> None:
        self._transport.close()

    def reconnect(self) -> None:
        """Finds the daemon again (a restarted local daemon has a new port and token)."""
        fresh = Connection.discover(self.cwd)
        self._transport.close()
        self.url, self.token, self.ca_pem = fresh.url, fresh.token, fresh.ca_pem
        self._transport = fresh._transport

    # --- REST ------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None,
                timeout: Optional[float] = None) -> Any:
        """Sends a JSON request; the parsed answer, or ApiError with the daemon's message."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        status, answer = self.raw(method, path, timeout, data)
        if status >= 400:
            code = ""
            try:
                err = json.loads(answer.decode("utf-8")).get("error", {})
                code = err.get("code", "") if isinstance(err, dict) else ""
            except (ValueError, AttributeError):
                pass
            raise ApiError(error_message(status, answer), status, code)
        if not answer:
            return None
        return json.loads(answer.decode("utf-8"))

    def raw(self, method: str, path: str, timeout: Optional[float] = None,
            json_body: Optional[bytes] = None, sink: Any = None):
        """(status, bytes) of a request, whatever its status: for answers that are not JSON
        (files; with `sink`, a 2xx body is written to it and b"" returned);
        ProjectSystemException when the daemon cannot be reached."""
        try:
            return self._transport.request(
                method, path, body=json_body,
                content_type="application/json" if json_body is not None else None,
                timeout=DEFAULT_CALL_SECONDS if timeout is None else timeout, sink=sink)
        except SinkError as e:
            raise e.error  # the sink's own failure (a full disk, say), as it happened
        except CONNECTION_ERRORS as e:
            raise ProjectSystemException("the workspace's daemon at %s did not answer %s %s: %s"
                                         % (self.url, method, path, e), e)

    def get(self, path: str, timeout: Optional[float] = None) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any, timeout: Optional[float] = None) -> Any:
        return self.request("POST", path, body, timeout=timeout)

    # --- the CLI's own work ----------------------------------------------------------------

    def snapshot(self, folder: str) -> Dict[str, Any]:
        """Snapshots `folder` into the workspace: {"id", "files", "bytes"}.

        A local workspace's daemon reads the folder itself (POST /api/v1/snapshots/from-folder:
        the snapshot code, ignore rules, limits and stat cache of a local CLI, without starting
        a second process); for a remote daemon, `trainyard snapshot create` hashes here and
        uploads what the daemon lacks."""
        path = os.path.abspath(folder)
        if self.remote:
            out = run_cli(["snapshot", "create", path, "--output", "json"], self.cwd,
                          "snapshotting %s" % folder)
            return json.loads(out)
        return self.post("/api/v1/snapshots/from-folder", {"path": path},
                         timeout=SNAPSHOT_CALL_SECONDS)


def seg(text: str) -> str:
    """One URL path segment."""
    return quote(text, safe="")
