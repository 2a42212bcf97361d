"""Shared test setup: a twin daemon on a unix socket in a temp folder, runs pointed at it, and
child Python processes that use the package."""

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from tests.twin import Twin
from trainyard.run import Run

SDK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until(predicate, timeout=20.0, interval=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class TwinTestCase(unittest.TestCase):
    """Starts a twin with runs run-1 (token-1) and run-2 (token-2) for each test."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ty-sdk-")
        self.twin = Twin(os.path.join(self.tmp, "api.sock"),
                         runs={"run-1": "token-1", "run-2": "token-2"}).start()
        self.env = {
            "TRAINYARD_RUN_ID": "run-1",
            "TRAINYARD_TRACKING_URL": self.twin.url,
            "TRAINYARD_RUN_TOKEN": "token-1",
            "TRAINYARD_EXPERIMENT": "exp-1",
            "TRAINYARD_RETRY_MAX_SECONDS": "0.5",
            "TRAINYARD_RETRY_SECONDS": "5",
        }
        self._runs = []

    def tearDown(self):
        for r in self._runs:
            r._close()
        self.twin.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def make_run(self, **env):
        merged = dict(self.env)
        merged.update(env)
        run = Run._from_environ(merged)
        self._runs.append(run)
        return run

    def child_env(self, **env):
        merged = dict(os.environ)
        for k in list(merged):
            if k.startswith("TRAINYARD_"):
                del merged[k]
        merged.update(self.env)
        merged.update(env)
        merged["PYTHONPATH"] = SDK_DIR
        return merged

    def start_child(self, code, **env):
        """Runs `code` as a script file (so multiprocessing's spawn can import it)."""
        fd, script = tempfile.mkstemp(suffix=".py", prefix="child-", dir=self.tmp)
        with os.fdopen(fd, "w") as f:
            f.write(textwrap.dedent(code))
        return subprocess.Popen([sys.executable, script],
                                env=self.child_env(**env), cwd=self.tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run_child(self, code, timeout=120, **env):
        p = self.start_child(code, **env)
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out.decode(), err.decode()


@contextlib.contextmanager
def captured_stderr():
    """Captures sys.stderr, including what the sender thread writes meanwhile."""
    buf = io.StringIO()
    old = sys.stderr
    sys.stderr = buf
    try:
        yield buf
    finally:
        sys.stderr = old
