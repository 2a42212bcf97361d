"""Models: the v1 SDK's `Model` on trainyard's models.

    model = run.register_model(model_name="digits", model_path="outputs/model")
    model = Model.register(ws, model_path="model/", model_name="digits", tags={"acc": "0.97"})
    Model(ws, "digits").download(target_dir="here")    # every file checked against its digest
    Model.list(ws)

A model is kept content-addressed by the workspace whatever its source; registering the same
name again makes the next version. A model registered from a run records the run, its code
snapshot, environment and inputs (its lineage).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

import os

from . import _assets
from .exceptions import UserErrorException


class Model(object):
    """A version of a registered model. Model(ws, name, version=None) fetches it (the latest
    when no version is given)."""

    def __init__(self, workspace: Any, name: Optional[str] = None, id: Optional[str] = None,
                 tags: Any = None, properties: Any = None, version: Optional[int] = None,
                 run_id: Optional[str] = None, model_framework: Optional[str] = None,
                 _answer: Optional[Dict[str, Any]] = None) -> None:
        self.workspace = workspace
        if _answer is None:
            if id and not name:
                name, _, id_version = id.partition(":")
                version = version or (id_version or None)
            if not name:
                raise UserErrorException("Model needs a name (or an id NAME:VERSION)")
            _answer = _assets.get(workspace, "model", name,
                                  str(version) if version is not None else None)
        self._answer = _answer

    name = property(lambda self: self._answer.get("name"))
    description = property(lambda self: self._answer.get("description", ""))
    tags = property(lambda self: dict(self._answer.get("tags") or {}))
    properties = property(lambda self: dict(self._answer.get("properties") or {}))
    type = property(lambda self: self._answer.get("type"))
    created_time = property(lambda self: self._answer.get("created_at"))

    @property
    def version(self) -> Any:
        v = self._answer.get("version", "")
        return int(v) if v.isdigit() else v

    @property
    def id(self) -> str:
        return "%s:%s" % (self.name, self._answer.get("version"))

    @property
    def run_id(self) -> Optional[str]:
        return (self._answer.get("lineage") or {}).get("run")

    def serialize(self) -> Dict[str, Any]:
        return dict(self._answer)

    def __repr__(self) -> str:
        return "Model(workspace=%r, name=%s, id=%s, version=%s, tags=%s, properties=%s)" % (
            getattr(self.workspace, "name", ""), self.name, self.id, self.version, self.tags,
            self.properties)

    @staticmethod
    def register(workspace: Any, model_path: str, model_name: str,
                 tags: Optional[Dict[str, str]] = None,
                 properties: Optional[Dict[str, str]] = None,
                 description: Optional[str] = None, model_framework: Optional[str] = None,
                 model_framework_version: Optional[str] = None, **kwargs: Any) -> "Model":
        """Registers the file or folder `model_path` (or a run's output / datastore address) as
        the next version of `model_name`."""
        model_type = "mlflow_model" if model_framework == "MLflow" else "custom_model"
        answer = _assets.create(workspace, "model", {
            "name": model_name, "type": model_type, "path": model_path,
            "description": description or "", "tags": dict(tags or {}),
            "properties": {str(k): str(v) for k, v in (properties or {}).items()}})
        return Model(workspace, _answer=answer)

    @staticmethod
    def list(workspace: Any, name: Optional[str] = None, tags: Any = None,
             properties: Any = None, run_id: Optional[str] = None,
             latest: bool = False) -> List["Model"]:
        """Models, newest first: every version of `name`, or the latest of each name."""
        path = "/api/v1/models"
        if name:
            from ._connection import seg
            path += "?name=" + seg(name)
        models = [Model(workspace, _answer=a) for a in workspace._conn.get(path)]
        if run_id:
            models = [m for m in models if m.run_id == run_id]
        if tags:
            wanted = tags if isinstance(tags, list) else [tags]
            models = [m for m in models
                      if all((t[0] in m.tags and m.tags[t[0]] == t[1]) if isinstance(t, list)
                             else t in m.tags for t in wanted)]
        if latest and name:
            models = models[:1]
        return models

    @staticmethod
    def get_model_path(model_name: str, version: Any = None, _workspace: Any = None) -> str:
        raise UserErrorException("Model.get_model_path is for scoring scripts; deploying models "
                                 "is not available yet")

    def download(self, target_dir: str = ".", exist_ok: bool = False,
                 exists_ok: Optional[bool] = None) -> str:
        """Writes the model's files under `target_dir` (each checked against its digest) and
        returns the path of the model there: its file, or its folder."""
        if exists_ok is not None:
            exist_ok = exists_ok
        storage = self._answer.get("storage") or {}
        single = storage.get("file") or ""
        base = single or os.path.basename(
            (self._answer.get("source") or "").rstrip("/")) or self.name
        dest = os.path.join(target_dir, base)
        if os.path.exists(dest) and not exist_ok:
            raise UserErrorException("%s exists; pass exist_ok=True to write over it" % dest)
        _assets.download(self.workspace, self._answer,
                         target_dir if single else dest)
        return dest
