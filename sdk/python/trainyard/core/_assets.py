"""What data assets and models share: registering a version and writing stored files."""

from __future__ import annotations

import hashlib
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

from ._connection import run_cli, seg
from .exceptions import UserErrorException

_REMOTE_PREFIXES = ("azureml:", "azureml://", "runs:/", "http://", "https://", "wasbs://",
                    "wasb://", "abfss://", "abfs://", "s3://")


def is_address(path: str) -> bool:
    return path.startswith(_REMOTE_PREFIXES)


def create(workspace: Any, kind: str, body: Dict[str, Any]) -> Dict[str, Any]:
    """Registers a version (POST /api/v1/data or /models). A local path is read by a local
    workspace's daemon itself; for a remote daemon the CLI uploads it first."""
    conn = workspace._conn
    path = body.get("path", "")
    if path and not is_address(path):
        path = os.path.abspath(path)
        if not os.path.exists(path):
            raise UserErrorException("%s does not exist" % path)
        body["path"] = path
        if conn.remote:
            import json
            args = [kind, "create", "--name", body["name"], "--path", path, "--output", "json"]
            for flag, key in (("--version", "version"), ("--type", "type"),
                              ("--description", "description"), ("--label", "label")):
                if body.get(key):
                    args += [flag, str(body[key])]
            for k, v in (body.get("tags") or {}).items():
                args += ["--tag", "%s=%s" % (k, v)]
            return json.loads(run_cli(args, conn.cwd, "registering %s" % path))
    prefix = "/api/v1/data" if kind == "data" else "/api/v1/models"
    return conn.post(prefix, body, timeout=3600)


def get(workspace: Any, kind: str, name: str, version: Optional[str] = None,
        label: Optional[str] = None) -> Dict[str, Any]:
    prefix = "/api/v1/data/" if kind == "data" else "/api/v1/models/"
    if version and version != "latest":
        return workspace._conn.get(prefix + seg(name) + "/versions/" + seg(str(version)))
    path = prefix + seg(name)
    if label:
        path += "?label=" + seg(label)
    return workspace._conn.get(path)


def download(workspace: Any, answer: Dict[str, Any], target: str) -> None:
    """Writes the stored files of a version under `target`, each checked against its digest."""
    conn = workspace._conn
    storage = answer.get("storage") or {}
    snapshot = storage.get("snapshot_id")
    if not snapshot:
        raise UserErrorException("%s is not kept by the workspace: it is read from %s"
                                 % (answer.get("id"), storage.get("uri")))
    manifest = conn.get("/api/v1/snapshots/" + seg(snapshot))
    for entry in manifest.get("entries", []):
        rel = entry["path"]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise UserErrorException("the manifest names an unsafe path %r" % rel)
        dest = os.path.join(target, *rel.split("/"))
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        if entry.get("type") == "symlink":
            os.symlink(entry["target"], dest)
            continue
        partial = dest + ".part"
        digest = hashlib.sha256()

        class _Sink(object):
            def __init__(self, f: Any) -> None:
                self.f = f

            def write(self, data: bytes) -> int:
                digest.update(data)
                return self.f.write(data)

        try:
            with open(partial, "wb") as f:
                status, body = conn.raw("GET", "/api/v1/objects/" + entry["digest"],
                                        sink=_Sink(f), timeout=3600)
            if status != 200:
                raise UserErrorException("downloading %s failed: HTTP %d" % (rel, status))
            if digest.hexdigest() != entry["digest"]:
                raise UserErrorException("%s: the bytes received do not match its digest %s"
                                         % (rel, entry["digest"]))
            os.chmod(partial, 0o755 if entry.get("mode") == "0755" else 0o644)
            os.replace(partial, dest)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
