"""Experiment: a named group of runs; submitting a ScriptRunConfig to it starts a run."""

from __future__ import annotations

import os
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing stays out of the import time
    from typing import Any, Dict, Iterator, Optional

from ._connection import ApiError, seg
from .compute import ComputeTarget
from .environment import Environment, parse_size
from .exceptions import (ComputeTargetException, ExperimentExecutionException,
                         SnapshotException, UserErrorException, warn)
from .script_run_config import ScriptRunConfig


def _dataset_inputs(arguments: Any) -> Dict[str, Any]:
    """The job's inputs for the datasets among the arguments (as_named_input(n).as_mount())."""
    from .dataset import DatasetConsumptionConfig
    inputs = {}  # type: Dict[str, Any]
    for a in arguments:
        if isinstance(a, DatasetConsumptionConfig):
            spec = a._input()
            if a.name in inputs and inputs[a.name] != spec:
                raise UserErrorException("two different datasets are both named input %r"
                                         % a.name)
            inputs[a.name] = spec
    return inputs


def _shm_from_arguments(arguments: Any) -> Optional[str]:
    """The size of a `--shm-size=X` / `--shm-size X` docker argument; any other argument is an
    error naming it (trainyard starts the containers itself)."""
    shm = None
    i = 0
    while i < len(arguments):
        a = str(arguments[i])
        if a.startswith("--shm-size="):
            shm = a.split("=", 1)[1]
        elif a == "--shm-size" and i + 1 < len(arguments):
            shm = str(arguments[i + 1])
            i += 1
        else:
            raise UserErrorException("docker argument %r is not supported by trainyard (only "
                                     "--shm-size is; or use shm_size)" % a)
        i += 1
    return shm


def _target_name(target: Any) -> str:
    if target is None:
        return "local"
    if isinstance(target, ComputeTarget):
        return target.name
    if isinstance(target, str):
        return target or "local"
    raise UserErrorException("compute target %r: expected a ComputeTarget, its name or 'local'"
                             % (target,))


class Experiment(object):
    """The runs of one experiment name in a workspace."""

    def __init__(self, workspace: Any, name: str, _skip_name_validation: bool = False,
                 _id: Optional[str] = None, **kwargs: Any) -> None:
        if not name or not isinstance(name, str):
            raise UserErrorException("an experiment needs a name")
        self.workspace = workspace
        self.name = name
        self.id = _id or name

    def __repr__(self) -> str:
        return "Experiment(Name: %s,\nWorkspace: %s)" % (self.name, self.workspace.name)

    def _request(self, config: ScriptRunConfig, tags: Optional[Dict[str, str]]) -> Dict[str, Any]:
        rc = config.run_config
        folder = config.source_directory or "."
        if not os.path.isdir(folder):
            raise UserErrorException("source_directory %s is not a folder"
                                     % os.path.abspath(folder))
        command = config._command()
        env = rc.environment if rc.environment is not None else Environment("default-environment")
        if not isinstance(env, Environment):
            raise UserErrorException("run_config.environment must be an Environment, not %s"
                                     % type(env).__name__)
        conn = self.workspace._conn
        try:
            snapshot = conn.snapshot(folder)
        except UserErrorException as e:
            raise SnapshotException(e.message)
        request = {"experiment_name": self.name, "command": command,
                   "snapshot_id": snapshot["id"], "tags": dict(tags or {}),
                   "environment_variables": {str(k): str(v) for k, v in
                                             (rc.environment_variables or {}).items()},
                   "instance_count": int(rc.node_count or 1),
                   "compute": _target_name(rc.target)}  # type: Dict[str, Any]
        # Made once (it may snapshot a build context): compared with what was fetched, and sent
        # when it differs.
        definition = env._definition(self.workspace)
        if env.name and env.version and not env._changed_since_fetched(definition):
            request["environment_name"] = env.name
            request["environment_version"] = str(env.version)
        else:
            if env.name and env.version:
                warn("environment %s:%s was changed after it was fetched; the run gets the "
                     "changed definition (registered as its next version)"
                     % (env.name, env.version))
            request["environment"] = definition
        inputs = _dataset_inputs(list(config.arguments or rc.arguments or []))
        if inputs:
            request["inputs"] = inputs
        if rc.max_run_duration_seconds:
            request["timeout_seconds"] = int(rc.max_run_duration_seconds)
        shm = _shm_from_arguments(list(env.docker.arguments or []) +
                                  list(rc.docker.arguments or [])) \
            or rc.docker.shm_size or env.docker.shm_size
        if shm:
            request["shm_size_bytes"] = parse_size(shm, "shm_size")
        dist = rc._distribution()
        if dist is not None:
            dist._check()
            # The distribution's nodes, or the run configuration's when it says more (the
            # classic form: node_count on the RunConfiguration, the communicator beside it).
            request["instance_count"] = max(int(dist.node_count), int(rc.node_count or 1))
            request["distribution"] = {"type": dist.type,
                                       "process_count_per_instance": dist.process_count_per_node}
        elif request["instance_count"] > 1:
            raise UserErrorException("node_count %d needs a distributed_job_config "
                                     "(PyTorchConfiguration, MpiConfiguration or "
                                     "TensorflowConfiguration)" % request["instance_count"])
        return request

    def submit(self, config: ScriptRunConfig, tags: Optional[Dict[str, str]] = None,
               **kwargs: Any) -> Any:
        """Snapshots the source folder and submits the run; returns its Run at once."""
        from .run import Run
        if not isinstance(config, ScriptRunConfig):
            raise UserErrorException("Experiment.submit takes a ScriptRunConfig, not %s"
                                     % type(config).__name__)
        request = self._request(config, tags)
        try:
            answer = self.workspace._conn.post("/api/v1/jobs", request)
        except ApiError as e:
            if "compute" in e.message.lower() and e.status in (400, 404):
                raise ComputeTargetException(e.message)
            raise ExperimentExecutionException("submitting to experiment %s failed: %s"
                                               % (self.name, e.message))
        return Run(self, answer["name"], _answer=answer)

    def get_runs(self, type: Optional[str] = None, tags: Any = None,
                 properties: Any = None, include_children: bool = False) -> Iterator[Any]:
        """The experiment's runs, newest first."""
        from .run import Run
        answer = self.workspace._conn.get("/api/v1/jobs?limit=10000&experiment=" + seg(self.name))
        for r in answer:
            run = Run(self, r["name"], _answer=r)
            if tags is not None:
                want = {tags: None} if isinstance(tags, str) else dict(tags)
                have = run.get_tags()
                if any(k not in have or (v is not None and have[k] != v)
                       for k, v in want.items()):
                    continue
            yield run

    @staticmethod
    def list(workspace: Any, experiment_name: Optional[str] = None) -> Any:
        found = workspace.experiments
        if experiment_name is not None:
            return [found[experiment_name]] if experiment_name in found else []
        return list(found.values())
