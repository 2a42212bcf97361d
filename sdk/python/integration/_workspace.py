"""What the SDK integration tests share: a workspace of their own in a temporary folder."""

import json
import os
import shutil
import signal


def end_workspace(tmp, old_home):
    """Stops the daemon of the workspace at `tmp`/ws, gives TRAINYARD_HOME back its value from
    before the test (`old_home`, None when unset) and removes `tmp`."""
    try:
        with open(os.path.join(tmp, "ws", "server.json")) as f:
            os.kill(json.load(f)["pid"], signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        pass
    if old_home is None:
        os.environ.pop("TRAINYARD_HOME", None)
    else:
        os.environ["TRAINYARD_HOME"] = old_home
    shutil.rmtree(tmp, ignore_errors=True)
