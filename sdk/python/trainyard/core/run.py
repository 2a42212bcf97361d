"""Run: a submitted run seen from the program that submitted it (status, details, the live
log, metrics, files, tags), and Run.get_context() inside a run, as in the v1 SDK."""

from __future__ import annotations

import json
import os
import sys
import time
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing stays out of the import time
    from typing import Any, Dict, List, Optional

    from ..run import Run as _ContextRun

from .._http import error_message, quote
from ._connection import ApiError, seg
from .exceptions import (ActivityFailedException, ExperimentExecutionException,
                         ProjectSystemException, UserErrorException)

RUNNING_STATES = ("NotStarted", "Queued", "Preparing", "Starting", "Provisioning", "Running",
                  "Finalizing", "CancelRequested")
BUILD_LOG = "azureml-logs/20_image_build_log.txt"
USER_LOG = "user_logs/std_log.txt"
_INTERRUPTED = ("The output streaming for the run interrupted.\n"
                "But the run is still executing on the compute target. \n"
                "Cancel it with run.cancel(), or `trainyard job cancel %s`.")


def _iso(ms: Optional[int]) -> Optional[str]:
    if not ms:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000.0)) + \
        ".%03dZ" % (ms % 1000)


class Run(object):
    """A run of an experiment. Logging methods (log, tag, upload_file...) work on it too."""

    def __init__(self, experiment: Any, run_id: str, _answer: Optional[Dict[str, Any]] = None,
                 **kwargs: Any) -> None:
        self._id = run_id
        self._experiment_obj = experiment
        self._conn = experiment.workspace._conn
        self._answer = _answer or {}
        self._tracker_run = None  # type: Optional[_ContextRun]

    @staticmethod
    def get_context(allow_offline: bool = True, **kwargs: Any) -> _ContextRun:
        """The run this process is part of (inside a run), else an offline run."""
        from ..run import Run as ContextRun
        return ContextRun.get_context(allow_offline=allow_offline)

    def _tracker(self) -> _ContextRun:
        """The in-run tracking client for this run (metrics, tags, properties, files), made on
        first use: submitting and following a run never needs it."""
        if self._tracker_run is None:
            from .._backends import OnlineBackend
            from ..run import Run as ContextRun
            backend = OnlineBackend(self._conn.url, self._conn.token, self._id,
                                    ca_pem=self._conn.ca_pem)
            self._tracker_run = ContextRun(self._id, self._experiment_obj.name, backend)
        return self._tracker_run

    # --- tracking, as inside a run (trainyard.Run; docs/tracking.md) -----------------------

    def log(self, name: str, value: Any, step: Optional[int] = None,
            description: str = "") -> None:
        self._tracker().log(name, value, step=step, description=description)

    def log_list(self, name: str, values: Any, description: str = "") -> None:
        self._tracker().log_list(name, values, description=description)

    def log_row(self, name: str, description: str = "", **cols: Any) -> None:
        self._tracker().log_row(name, description=description, **cols)

    def log_table(self, name: str, value: Any, description: str = "") -> None:
        self._tracker().log_table(name, value, description=description)

    def log_image(self, name: str, path: Optional[str] = None, plot: Any = None,
                  description: str = "", step: Optional[int] = None) -> None:
        self._tracker().log_image(name, path=path, plot=plot, description=description,
                                  step=step)

    def tag(self, key: str, value: Optional[str] = None) -> None:
        self._tracker().tag(key, value)

    def set_tags(self, tags: Dict[str, Any]) -> None:
        self._tracker().set_tags(tags)

    def remove_tags(self, keys: Any) -> None:
        self._tracker().remove_tags(keys)

    def get_tags(self) -> Dict[str, str]:
        return self._tracker().get_tags()

    def add_properties(self, properties: Dict[str, Any]) -> None:
        self._tracker().add_properties(properties)

    def add_property(self, key: str, value: Any) -> None:
        self._tracker().add_property(key, value)

    def get_properties(self) -> Dict[str, str]:
        return self._tracker().get_properties()

    def upload_file(self, name: str, path_or_stream: Any) -> None:
        self._tracker().upload_file(name, path_or_stream)

    def get_metrics(self, name: Optional[str] = None) -> Dict[str, Any]:
        return self._tracker().get_metrics(name)

    def flush(self, timeout_seconds: float = 300) -> bool:
        """Waits until everything logged so far was sent; False if the time ran out."""
        return self._tracker_run is None or self._tracker_run.flush(timeout_seconds)

    def complete(self) -> None:
        self._tracker().complete()

    def fail(self, message: Optional[str] = None, error_details: Any = None) -> None:
        self._tracker().fail(message, error_details)

    # --- identity --------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def experiment(self) -> Any:
        return self._experiment_obj

    @property
    def display_name(self) -> str:
        return self._answer.get("display_name") or self._id

    @property
    def status(self) -> str:
        return self._answer.get("status", "")

    def __repr__(self) -> str:
        return "Run(Experiment: %s,\nId: %s,\nType: azureml.scriptrun,\nStatus: %s)" % (
            self._experiment_obj.name, self._id, self.status)

    def _refresh(self) -> Dict[str, Any]:
        self._answer = self._conn.get("/api/v1/jobs/" + seg(self._id))
        return self._answer

    def get_status(self) -> str:
        return self._refresh().get("status", "")

    def get_portal_url(self) -> str:
        """Where the run is described: its address on the daemon."""
        return self._answer.get("url") or "%s/api/v1/jobs/%s" % (self._conn.url, seg(self._id))

    # --- details ---------------------------------------------------------------------------

    def get_details(self) -> Dict[str, Any]:
        """The run's details with the service's keys."""
        r = self._refresh()
        times = {t.get("status"): t.get("at_ms") for t in r.get("transitions", [])}
        start = times.get("Running") or times.get("Starting")
        end = r.get("ended_ms") or None
        try:
            properties = (self._conn.get("/api/v1/jobs/%s/properties" % seg(self._id))
                          or {}).get("properties", {})
        except Exception:  # the details stay useful without them
            properties = {}
        request_env = r.get("environment_name") or ""
        details = {
            "runId": self._id,
            "target": r.get("compute"),
            "status": r.get("status"),
            "startTimeUtc": _iso(start),
            "endTimeUtc": _iso(end) if r.get("status") not in RUNNING_STATES else None,
            "properties": properties,
            "inputDatasets": [],
            "outputDatasets": [],
            "runDefinition": {
                "command": r.get("command"),
                "target": r.get("compute"),
                "environment": {"name": request_env,
                                "version": r.get("environment_version") or None},
                "image": r.get("image"),
                "snapshotId": r.get("snapshot_id"),
            },
            "logFiles": self._log_files(),
            "submittedBy": os.environ.get("USER", ""),
            "tags": r.get("tags", {}),
        }
        if r.get("exit_code") is not None:
            details["exitCode"] = r.get("exit_code")
        if r.get("status") in ("Failed", "Canceled"):
            code = "Canceled" if r.get("status") == "Canceled" else "UserError"
            details["error"] = {"error": {"code": code,
                                          "message": r.get("failure_reason") or r.get("status")}}
        if r.get("wait_reason"):
            details["warnings"] = [{"message": r["wait_reason"]}]
        return details

    def _files(self) -> List[Dict[str, Any]]:
        return self._conn.get("/api/v1/jobs/%s/files" % seg(self._id)) or []

    def _log_files(self) -> Dict[str, str]:
        base = "%s/api/v1/jobs/%s/files/" % (self._conn.url, seg(self._id))
        try:
            files = self._files()
        except ApiError:
            return {}
        return {f["path"]: base + quote(f["path"]) for f in files
                if f["path"].startswith("logs/")}

    # --- models ----------------------------------------------------------------------------

    def register_model(self, model_name: str, model_path: Optional[str] = None,
                       tags: Optional[Dict[str, str]] = None,
                       properties: Optional[Dict[str, str]] = None,
                       model_framework: Optional[str] = None,
                       model_framework_version: Optional[str] = None,
                       description: Optional[str] = None, **kwargs: Any) -> Any:
        """Registers a file or folder of the run's outputs (`outputs/model`) as the next version
        of `model_name`, with the run as its lineage."""
        from . import _assets
        from .model import Model
        rel = (model_path or "outputs").strip("/")
        if rel != "outputs" and not rel.startswith("outputs/"):
            raise UserErrorException("model_path is a path of the run's outputs (outputs/...), "
                                     "not %r" % model_path)
        rel = rel[len("outputs"):].lstrip("/")
        answer = _assets.create(self._experiment_obj.workspace, "model", {
            "name": model_name,
            "type": "mlflow_model" if model_framework == "MLflow" else "custom_model",
            "path": "azureml://jobs/%s/outputs/artifacts/paths/%s" % (self._id, rel),
            "description": description or "", "tags": dict(tags or {}),
            "properties": {str(k): str(v) for k, v in (properties or {}).items()}})
        return Model(self._experiment_obj.workspace, _answer=answer)

    # --- files -----------------------------------------------------------------------------

    def get_file_names(self) -> List[str]:
        """The run's files: outputs/..., logs/..., uploads."""
        return [f["path"] for f in self._files()]

    def download_file(self, name: str, output_file_path: Optional[str] = None,
                      _validate_checksum: bool = False) -> None:
        """Writes the run file `name` to `output_file_path` (a folder or a file; default: its
        base name here)."""
        target = output_file_path or os.path.basename(name)
        if os.path.isdir(target):
            target = os.path.join(target, os.path.basename(name))
        folder = os.path.dirname(target)
        if folder:
            os.makedirs(folder, exist_ok=True)
        # The file streams to a partial file beside the target (no whole file in memory),
        # which takes the target's name only once complete.
        partial = target + ".part"
        try:
            with open(partial, "wb") as f:
                status, body = self._conn.raw("GET", "/api/v1/jobs/%s/files/%s"
                                              % (seg(self._id), quote(name)), sink=f)
            if status == 404:
                raise UserErrorException("run %s has no file %s" % (self._id, name))
            if status != 200:
                raise UserErrorException("downloading %s of run %s failed: HTTP %d: %s"
                                         % (name, self._id, status,
                                            error_message(status, body)))
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)

    def download_files(self, prefix: Optional[str] = None,
                       output_directory: Optional[str] = None,
                       output_paths: Optional[List[str]] = None, batch_size: int = 100,
                       append_prefix: bool = True, timeout_seconds: Optional[int] = None
                       ) -> None:
        """Downloads every file under `prefix` into `output_directory` (default: here)."""
        names = [n for n in self.get_file_names() if not prefix or n.startswith(prefix)]
        out = os.path.abspath(output_directory or ".")
        for i, name in enumerate(names):
            rel = name if append_prefix or not prefix else name[len(prefix):].lstrip("/")
            dest = output_paths[i] if output_paths else os.path.join(out, rel)
            if not output_paths and not os.path.abspath(dest).startswith(out + os.sep):
                # A run names its own files: none may land outside the folder asked for.
                raise UserErrorException("run %s has a file %r that would land outside %s"
                                         % (self._id, name, out))
            self.download_file(name, dest)

    # --- control ---------------------------------------------------------------------------

    def cancel(self) -> None:
        try:
            self._conn.post("/api/v1/jobs/%s/cancel" % seg(self._id), {})
        except ApiError as e:
            if e.status != 409:  # already ended
                raise UserErrorException("canceling run %s failed: %s" % (self._id, e.message))

    def wait_for_completion(self, show_output: bool = False, wait_post_processing: bool = False,
                            raise_on_error: bool = True) -> Dict[str, Any]:
        """Waits until the run ends; with show_output, prints its log live. Returns the
        details; raises ActivityFailedException for a failed or canceled run when
        raise_on_error."""
        if show_output:
            try:
                self._stream(sys.stdout)
            except KeyboardInterrupt:
                raise ExperimentExecutionException(_INTERRUPTED % self._id)
        else:
            while self._through_restarts(self.get_status) in RUNNING_STATES:
                self._through_restarts(self._wait_change)
        details = self.get_details()
        error = details.get("error")
        if show_output:
            out = sys.stdout
            out.write("\nExecution Summary\n=================\n")
            out.write("RunId: %s\nWeb View: %s\n" % (self._id, self.get_portal_url()))
            warnings = [w.get("message") for w in details.get("warnings", []) if w.get("message")]
            if warnings:
                out.write("\nWarnings:\n%s\n" % "\n".join(warnings))
            if error:
                out.write("\nError:\n%s\n" % json.dumps(error, indent=4))
            out.write("\n")
            out.flush()
        if error and raise_on_error:
            raise ActivityFailedException("Activity Failed:\n" + json.dumps(error, indent=4))
        return details

    def _through_restarts(self, call: Any) -> Any:
        """call(), retried for about 30 s while the daemon cannot be reached (restarting: a
        restarted local daemon is found again, with its new port and token)."""
        for attempt in range(60):
            try:
                return call()
            except ProjectSystemException:
                if attempt == 59:
                    raise
                time.sleep(0.5)
                try:
                    self._conn.reconnect()
                except ProjectSystemException:
                    pass
        raise AssertionError("unreachable")

    def _wait_change(self) -> None:
        status = self._answer.get("status", "")
        path = "/api/v1/jobs/%s/stream?status=%s&build_offset=%d&log_offset=%d&wait_ms=15000" % (
            seg(self._id), quote(status), 1 << 62, 1 << 62)
        try:
            self._conn.get(path, timeout=60)
        except ApiError:
            time.sleep(1)

    def _stream(self, out: Any) -> None:
        out.write("RunId: %s\nWeb View: %s\n" % (self._id, self.get_portal_url()))
        out.flush()
        build_offset = log_offset = 0
        status = ""
        current = None  # the log being printed
        while True:
            path = "/api/v1/jobs/%s/stream?build_offset=%d&log_offset=%d&status=%s&wait_ms=15000" \
                % (seg(self._id), build_offset, log_offset, quote(status))
            answer = self._through_restarts(lambda: self._conn.get(path, timeout=60))
            for name, key in ((BUILD_LOG, "build"), (USER_LOG, "log")):
                text = answer.get(key) or ""
                if not text:
                    continue
                if current != name:
                    out.write("\nStreaming %s\n%s\n\n" % (name, "=" * (len(name) + 10)))
                    current = name
                out.write(text)
            out.flush()
            build_offset = answer.get("build_offset", build_offset)
            log_offset = answer.get("log_offset", log_offset)
            status = answer.get("status", status)
            self._answer["status"] = status
            if answer.get("done"):
                return
