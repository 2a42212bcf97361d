"""Workspace: the trainyard workspace a program works in, found as the CLI finds it."""

from __future__ import annotations

import json
import os
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing stays out of the import time
    from typing import Any, Dict, Optional

from ._connection import Connection
from .exceptions import UserErrorException

# Config files the cloud service's programs carry, looked for walking up from the start folder
# (trainyard's own `.trainyard/config.json` is the CLI's, which picks the workspace).
_SERVICE_CONFIGS = (os.path.join(".azureml", "config.json"),
                    os.path.join("aml_config", "config.json"), "config.json")


def _yours(path: str) -> bool:
    """A small regular file of this user's: a config another local user left in a shared
    folder (/tmp) is not read."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    import stat
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_size <= (1 << 20)


def _find_upwards(start: str, names: Any) -> Optional[str]:
    folder = os.path.abspath(start)
    for name in names:
        d = folder
        while True:
            candidate = os.path.join(d, name)
            if _yours(candidate):
                return candidate
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
    return None


class Workspace(object):
    """A trainyard workspace: its daemon (started when local and not running), environments,
    compute targets and experiments."""

    def __init__(self, subscription_id: Optional[str] = None,
                 resource_group: Optional[str] = None, workspace_name: Optional[str] = None,
                 _connection: Optional[Connection] = None, _cwd: Optional[str] = None,
                 **kwargs: Any) -> None:
        self._conn = _connection or Connection.discover(os.path.abspath(_cwd or os.getcwd()))
        self._info = None  # type: Optional[Dict[str, Any]]
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self._name = workspace_name

    @staticmethod
    def from_config(path: Optional[str] = None, auth: Any = None, _logger: Any = None,
                    _file_name: Optional[str] = None) -> "Workspace":
        """The workspace for `path` (default: the current folder): the one its
        `.trainyard/config.json` (walking up) names, else the local workspace
        ($TRAINYARD_HOME, else ~/.trainyard). A service `config.json` (`.azureml/config.json`,
        `config.json`) only lends its workspace_name."""
        start = os.path.abspath(path or ".")
        if os.path.isfile(start):
            config, start = start, os.path.dirname(start)
        elif path is not None and not os.path.isdir(start):
            raise UserErrorException("Workspace.from_config: %s is neither a folder nor a file"
                                     % start)
        else:
            names = (_file_name,) if _file_name else _SERVICE_CONFIGS
            config = _find_upwards(start, names)
        fields = {}  # type: Dict[str, Any]
        if config and os.path.basename(os.path.dirname(config)) != ".trainyard":
            try:
                with open(config, encoding="utf-8") as f:
                    doc = json.load(f)
                if isinstance(doc, dict):
                    fields = {k: doc.get(k) for k in
                              ("subscription_id", "resource_group", "workspace_name")}
            except (OSError, ValueError) as e:
                raise UserErrorException("cannot read the workspace configuration %s: %s"
                                         % (config, e))
        return Workspace(_cwd=start, **fields)

    @staticmethod
    def get(name: Optional[str] = None, auth: Any = None, subscription_id: Optional[str] = None,
            resource_group: Optional[str] = None, **kwargs: Any) -> "Workspace":
        """The workspace found from the current folder (there is one per daemon; `name` is
        kept as its display name)."""
        return Workspace(subscription_id, resource_group, name)

    # --- properties ------------------------------------------------------------------------

    def _workspace_info(self) -> Dict[str, Any]:
        if self._info is None:
            self._info = self._conn.get("/api/v1/workspace")
        return self._info

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        root = self._conn.folder or self._workspace_info().get("root") or self._conn.url
        return os.path.basename(str(root).rstrip("/")) or str(root)

    @property
    def location(self) -> str:
        return "local"

    @property
    def folder(self) -> Optional[str]:
        """The workspace folder on the daemon's machine."""
        return self._conn.folder or self._workspace_info().get("root")

    @property
    def url(self) -> str:
        """The daemon's address."""
        return self._conn.url

    def _default_image(self) -> str:
        return self._workspace_info().get("default_image") or "python:3.11-slim"

    def _machine(self) -> Dict[str, Any]:
        """The daemon's machine: its CPUs, memory and GPUs (GET /workspace `machine`)."""
        machine = self._workspace_info().get("machine") or {}
        return {"cpus": float(machine.get("cpus") or 0),
                "memory_bytes": int(machine.get("memory_bytes") or 0),
                "gpus": int(machine.get("gpus") or 0)}

    @property
    def environments(self) -> Dict[str, Any]:
        from .environment import Environment
        return Environment.list(self)

    @property
    def compute_targets(self) -> Dict[str, Any]:
        from .compute import ComputeTarget
        return {t.name: t for t in ComputeTarget.list(self)}

    @property
    def datastores(self) -> Dict[str, Any]:
        from .datastore import Datastore
        return {d.name: d for d in Datastore.list(self)}

    def get_default_datastore(self) -> Any:
        """workspaceblobstore: the datastore every workspace has, a folder inside it."""
        from .datastore import Datastore
        return Datastore.get(self, "workspaceblobstore")

    @property
    def experiments(self) -> Dict[str, Any]:
        from .experiment import Experiment
        names = sorted({r.get("experiment") or "Default"
                        for r in self._conn.get("/api/v1/jobs?limit=10000")})
        return {n: Experiment(self, n) for n in names}

    def get_details(self) -> Dict[str, Any]:
        info = self._workspace_info()
        return {"name": self.name, "location": "local", "workspaceFolder": info.get("root"),
                "version": info.get("version"), "url": self._conn.url}

    def write_config(self, path: Optional[str] = None, file_name: Optional[str] = None) -> None:
        """Writes .azureml/config.json with the workspace's name, as the service does."""
        folder = os.path.join(path or ".", ".azureml")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, file_name or "config.json"), "w",
                  encoding="utf-8") as f:
            json.dump({"subscription_id": self.subscription_id,
                       "resource_group": self.resource_group,
                       "workspace_name": self.name}, f, indent=4)

    def __repr__(self) -> str:
        return "Workspace.create(name='%s', subscription_id='%s', resource_group='%s')" % (
            self.name, self.subscription_id, self.resource_group)
