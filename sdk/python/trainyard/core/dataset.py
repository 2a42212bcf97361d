"""Datasets: the v1 SDK's `Dataset.File` on trainyard's data assets.

    ds = Dataset.File.from_files(path="data/")               # a local folder, a datastore path
    ds = ds.register(ws, name="cifar", create_new_version=True)
    ds = Dataset.get_by_name(ws, "cifar")                     # version="latest" by default
    src = ScriptRunConfig(source_directory="src", script="train.py",
                          arguments=["--data", ds.as_named_input("cifar").as_mount()])

A registered local folder is kept content-addressed by the workspace (identical files once);
a datastore path or URL is read where it is, through the daemon's data cache.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

import os

from . import _assets
from ._connection import ApiError
from .exceptions import UserErrorException


def _source(path: Any) -> str:
    """One source as the daemon takes it: a local path, an address, or (datastore, path)."""
    if isinstance(path, (list, tuple)) and len(path) == 2 and hasattr(path[0], "name") \
            and isinstance(path[1], str):
        return "azureml://datastores/%s/paths/%s" % (path[0].name, path[1].lstrip("/"))
    if isinstance(path, str):
        return path if _assets.is_address(path) else os.path.abspath(path)
    raise UserErrorException("a dataset's path is a string or a (datastore, path) pair, not %r"
                             % (path,))


class DatasetConsumptionConfig(object):
    """How a run reads a dataset: an input `name`, mounted (read-only) or downloaded."""

    def __init__(self, name: str, dataset: "FileDataset", mode: str = "mount") -> None:
        self.name = name
        self.dataset = dataset
        self.mode = mode

    def as_mount(self) -> "DatasetConsumptionConfig":
        return DatasetConsumptionConfig(self.name, self.dataset, "mount")

    def as_download(self, path_on_compute: Optional[str] = None) -> "DatasetConsumptionConfig":
        return DatasetConsumptionConfig(self.name, self.dataset, "download")

    def _input(self) -> Dict[str, Any]:
        """The job's input for it."""
        ds = self.dataset
        path = "azureml:%s:%s" % (ds.name, ds.version) if ds.name else ds._path
        return {"kind": ds._type, "type": ds._type, "path": path,
                "mode": "download" if self.mode == "download" else "ro_mount", "value": ""}

    def __str__(self) -> str:
        return "${{inputs.%s}}" % self.name


class FileDataset(object):
    """A file or a folder of files, registered (name and version) or not yet."""

    def __init__(self, path: str = "", type: str = "uri_folder") -> None:
        self._path = path
        self._type = type
        self.name = None  # type: Optional[str]
        self.version = None  # type: Optional[str]
        self.workspace = None  # type: Any
        self._answer = {}  # type: Dict[str, Any]

    @staticmethod
    def _from_answer(workspace: Any, answer: Dict[str, Any]) -> "FileDataset":
        ds = FileDataset(answer.get("source", ""), answer.get("type", "uri_folder"))
        ds.name = answer.get("name")
        ds.version = answer.get("version")
        ds.workspace = workspace
        ds._answer = dict(answer)
        return ds

    @property
    def id(self) -> Optional[str]:
        return self._answer.get("id")

    @property
    def description(self) -> str:
        return self._answer.get("description", "")

    @property
    def tags(self) -> Dict[str, str]:
        return dict(self._answer.get("tags") or {})

    def register(self, workspace: Any, name: str, description: Optional[str] = None,
                 tags: Optional[Dict[str, str]] = None,
                 create_new_version: bool = False) -> "FileDataset":
        """Registers it as the next version of `name`. Without create_new_version an existing
        name is an error (UserErrorException), as in the v1 SDK."""
        if not create_new_version:
            try:
                _assets.get(workspace, "data", name)
            except ApiError as e:
                if e.status != 404:
                    raise
            else:
                raise UserErrorException("data asset %r exists; pass create_new_version=True to "
                                         "register a new version" % name)
        answer = _assets.create(workspace, "data", {
            "name": name, "type": self._type, "path": self._path,
            "description": description or "", "tags": dict(tags or {})})
        return FileDataset._from_answer(workspace, answer)

    def as_named_input(self, name: str) -> DatasetConsumptionConfig:
        return DatasetConsumptionConfig(name, self)

    def as_mount(self) -> DatasetConsumptionConfig:
        return DatasetConsumptionConfig(self.name or "input", self, "mount")

    def as_download(self) -> DatasetConsumptionConfig:
        return DatasetConsumptionConfig(self.name or "input", self, "download")

    def __repr__(self) -> str:
        return "FileDataset(name=%r, version=%r, path=%r)" % (self.name, self.version, self._path)


class _FileFactory(object):
    @staticmethod
    def from_files(path: Any, validate: bool = True) -> FileDataset:
        """A dataset of one file or folder: a local path, a (datastore, path) pair, a datastore
        path (azureml://datastores/...), a URL, wasbs://, abfss:// or s3://."""
        paths = path if isinstance(path, list) else [path]
        if len(paths) != 1:
            raise UserErrorException("from_files takes one file or folder here, not %d; put the "
                                     "files in one folder" % len(paths))
        source = _source(paths[0])
        if _assets.is_address(source):
            kind = "uri_file" if source.startswith(("http://", "https://")) else "uri_folder"
        else:
            if validate and not os.path.exists(source):
                raise UserErrorException("%s does not exist" % source)
            kind = "uri_file" if os.path.isfile(source) else "uri_folder"
        return FileDataset(source, kind)


class Dataset(object):
    """`Dataset.File.from_files(...)`, `Dataset.get_by_name(ws, name, version)`."""

    File = _FileFactory

    @staticmethod
    def get_by_name(workspace: Any, name: str, version: Any = "latest") -> FileDataset:
        return FileDataset._from_answer(
            workspace, _assets.get(workspace, "data", name, str(version)))

    @staticmethod
    def list(workspace: Any) -> List[FileDataset]:
        return [FileDataset._from_answer(workspace, a)
                for a in workspace._conn.get("/api/v1/data")]
