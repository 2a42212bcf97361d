"""An in-memory twin of the daemon's workspace API (docs/api.md) for the trainyard.core tests:
the workspace, computes, environments, jobs (submit, list, show, cancel, stream) on top of the
tracking twin, plus a stand-in `trainyard` command (TRAINYARD_CLI) that answers
`workspace connect` with the twin's address and `snapshot create` with an id of the folder.

Runs do not execute: a test moves them along with advance(run, status, build=..., log=...).
"""

import hashlib
import json
import os
import stat
import sys
import threading
import time

from tests.twin import HttpError, RunState, Twin

WS_TOKEN = "workspace-token"
_SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TERMINAL = ("Completed", "Failed", "Canceled")

_FAKE_CLI = r'''#!%(python)s
import json, os, sys
sys.path.insert(0, %(sdk)r)
from tests.workspace_twin import SnapshotError, stand_in_snapshot
state = %(state)r
args = sys.argv[1:]
if args[:1] == ["-C"]:
    os.chdir(args[1])
    args = args[2:]
with open(state + ".calls", "a") as f:
    f.write(json.dumps({"args": args, "cwd": os.getcwd()}) + "\n")
if args[:2] == ["workspace", "connect"]:
    if os.isatty(1):
        sys.exit("error: not to a terminal")
    print(json.dumps({"url": %(url)r, "token": %(token)r,
                      "remote": os.environ.get("TWIN_REMOTE") == "1",
                      "folder": %(folder)r, "found_by": "twin"}))
elif args[:2] == ["snapshot", "create"]:
    try:
        print(json.dumps(stand_in_snapshot(args[2])))
    except SnapshotError as e:
        sys.exit("error: %%s" %% e)
else:
    sys.exit("error: the twin CLI does not know %%s" %% args)
'''


class SnapshotError(Exception):
    pass


def stand_in_snapshot(folder):
    """What the twin's CLI and its POST /api/v1/snapshots/from-folder answer: an id made of
    the folder's paths and contents, its file count, and the limit error of a snapshot over
    TWIN_SNAPSHOT_MAX_FILES (default 1000)."""
    if not os.path.isdir(folder):
        raise SnapshotError("%s: no such folder" % folder)
    h = hashlib.sha256()
    files = 0
    for root, dirs, names in sorted(os.walk(folder)):
        dirs.sort()
        for n in sorted(names):
            p = os.path.join(root, n)
            h.update(os.path.relpath(p, folder).encode())
            with open(p, "rb") as f:
                h.update(f.read())
            files += 1
    limit = int(os.environ.get("TWIN_SNAPSHOT_MAX_FILES", "1000"))
    if files > limit:
        raise SnapshotError("snapshot of %s has %d files, over the limit of %d "
                            "(snapshot_max_files)" % (folder, files, limit))
    return {"id": h.hexdigest(), "files": files, "bytes": 0}


class WorkspaceTwin(Twin):
    def __init__(self, folder):
        super().__init__(os.path.join(folder, "api.sock"), runs={})
        self.folder = folder
        self.computes = {"local": {"name": "local", "type": "docker", "max_nodes": 1,
                                   "node_cpus": 2.0, "node_memory_bytes": 4 << 30,
                                   "node_gpus": 0, "idle_seconds": 0}}
        self.environments = {}  # name -> [answer]
        self.jobs = {}  # name -> record
        self.requests_json = []  # (method, path, doc)
        self.changed = threading.Condition(self.lock)
        self.default_image = "python:3.11-slim"
        # What GET /workspace says the daemon's machine has; the local compute is smaller, as
        # a user may define it, and the SDK must cut VM sizes to the machine, not to it.
        self.machine = {"cpus": 2.0, "memory_bytes": 4 << 30, "gpus": 0}
        self.computes["local"].update(node_cpus=1.0, node_memory_bytes=1 << 30)

    def write_cli(self):
        """Writes the stand-in trainyard command; returns its path."""
        path = os.path.join(self.folder, "trainyard")
        with open(path, "w") as f:
            f.write(_FAKE_CLI % {"python": sys.executable, "sdk": _SDK, "state": path,
                                 "url": self.url,
                                 "token": WS_TOKEN, "folder": self.folder})
        os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        return path

    def cli_calls(self):
        path = os.path.join(self.folder, "trainyard.calls")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f]

    # --- test controls ---------------------------------------------------------------------

    def advance(self, name, status=None, build="", log="", failure_reason="", exit_code=None):
        with self.changed:
            job = self.jobs[name]
            job["build"] += build
            job["log"] += log
            if status:
                job["status"] = status
                job["transitions"].append({"status": status, "at_ms": int(time.time() * 1000)})
                if status in TERMINAL:
                    job["ended_ms"] = int(time.time() * 1000)
            if failure_reason:
                job["failure_reason"] = failure_reason
            if exit_code is not None:
                job["exit_code"] = exit_code
            self.changed.notify_all()

    # --- routes ----------------------------------------------------------------------------

    def _route(self, method, path, query, headers, body):
        if path == "/api/v1/health":
            return self._json({"status": "ok", "version": "twin"})
        auth = headers.get("Authorization", "")
        if auth != "Bearer " + WS_TOKEN:
            raise HttpError(401, "UNAUTHENTICATED", "missing or invalid bearer token")
        parts = [p for p in path.split("/") if p][2:]  # after /api/v1
        tracking = parts[:1] == ["jobs"] and len(parts) >= 3 and \
            parts[2] not in ("stream", "cancel")
        doc = self._parse_json(body) if body and not tracking else None
        with self.lock:
            self.requests_json.append((method, path, doc))
        if parts == ["workspace"]:
            return self._json({"root": self.folder, "version": "twin",
                               "default_image": self.default_image, "machine": self.machine})
        if parts == ["snapshots", "from-folder"] and method == "POST":
            if not isinstance(doc, dict) or not str(doc.get("path", "")).startswith("/"):
                raise HttpError(400, "INVALID_ARGUMENT", "'path' must be an absolute folder")
            try:
                return self._json(stand_in_snapshot(doc["path"]), 201)
            except SnapshotError as e:
                raise HttpError(400, "INVALID_ARGUMENT", str(e))
        if parts[:1] == ["computes"]:
            return self._computes(method, parts[1:], doc)
        if parts[:1] == ["environments"]:
            return self._environments(method, parts[1:], doc)
        if parts[:1] == ["jobs"]:
            if tracking:
                # Tracking routes: as the run's own token.
                run = parts[1]
                headers = dict(headers)
                headers["Authorization"] = "Bearer token-" + run
                return super()._route(method, path, query, headers, body)
            return self._jobs(method, parts[1:], query, doc)
        raise HttpError(404, "NOT_FOUND", "no route for %s %s" % (method, path))

    def _computes(self, method, rest, doc):
        with self.lock:
            if not rest and method == "GET":
                return self._json(list(self.computes.values()))
            if not rest and method == "POST":
                name = doc.get("name")
                have = self.computes.get(name)
                if have is not None:
                    differs = [k for k, v in doc.items() if k != "update" and have.get(k) != v]
                    if differs:
                        raise HttpError(409, "ALREADY_EXISTS",
                                        "compute %s exists with other settings: %s"
                                        % (name, ", ".join(differs)))
                    return self._json(dict(have, outcome="unchanged"))
                self.computes[name] = dict(doc)
                return self._json(dict(doc, outcome="created"), 201)
            name = rest[0]
            if name not in self.computes:
                raise HttpError(404, "NOT_FOUND", "compute target %s does not exist" % name)
            if method == "GET":
                view = dict(self.computes[name])
                busy = sum(1 for j in self.jobs.values()
                           if j["compute"] == name and j["status"] == "Running")
                view["nodes"] = {"busy": busy, "idle": view["max_nodes"] - busy,
                                 "total": view["max_nodes"]}
                view["running"], view["queued"] = [], []
                return self._json(view)
            if method == "DELETE":
                del self.computes[name]
                return self._json({"deleted": name})
        raise HttpError(405, "METHOD_NOT_ALLOWED", "no")

    def _environments(self, method, rest, doc):
        with self.lock:
            if not rest and method == "POST":
                if "password" in json.dumps(doc.get("image_registry") or {}) and \
                        (doc.get("image_registry") or {}).get("password") == "wrong":
                    raise HttpError(400, "INVALID_ARGUMENT", "registry refused the credentials")
                versions = self.environments.setdefault(doc["name"], [])
                shown = json.loads(json.dumps(doc))
                if shown.get("image_registry"):
                    shown["image_registry"]["password"] = "***"
                for v in versions:
                    if json.dumps(v["definition"], sort_keys=True) == \
                            json.dumps(dict(shown, version=v["version"]), sort_keys=True):
                        return self._json(v)
                version = str(len(versions) + 1)
                shown["version"] = version
                answer = {"name": doc["name"], "version": version,
                          "image": "trainyard/env:" + hashlib.sha256(
                              json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16],
                          "definition": shown}
                versions.append(answer)
                return self._json(answer, 201)
            if not rest and method == "GET":
                return self._json([v for vs in self.environments.values() for v in vs])
            versions = self.environments.get(rest[0])
            if not versions:
                raise HttpError(404, "NOT_FOUND", "environment %s does not exist" % rest[0])
            if len(rest) == 4 and rest[1] == "versions" and rest[3] == "build" and \
                    method == "POST":
                found = [v for v in versions if v["version"] == rest[2]]
                if not found:
                    raise HttpError(404, "NOT_FOUND", "no version %s" % rest[2])
                return self._json({"name": rest[0], "version": rest[2], "status": "Succeeded",
                                   "image": found[0]["image"], "log": "Step 1/1 : FROM x\n"})
            if len(rest) == 3 and rest[1] == "versions":
                if rest[2] == "latest":
                    return self._json(versions[-1])
                for v in versions:
                    if v["version"] == rest[2]:
                        return self._json(v)
                raise HttpError(404, "NOT_FOUND", "environment %s has no version %s"
                                % (rest[0], rest[2]))
            return self._json(versions)

    def _job_view(self, job):
        return {k: job[k] for k in ("name", "display_name", "experiment", "status", "compute",
                                    "command", "environment_name", "environment_version",
                                    "image", "snapshot_id", "exit_code", "failure_reason",
                                    "wait_reason", "tags", "transitions", "ended_ms", "url")}

    def _jobs(self, method, rest, query, doc):
        if not rest and method == "POST":
            with self.lock:
                if doc.get("compute", "local") not in self.computes:
                    raise HttpError(404, "NOT_FOUND",
                                    "compute target %s does not exist" % doc.get("compute"))
                name = "%s_%d" % (doc.get("experiment_name", "Default"), len(self.jobs) + 1)
                now = int(time.time() * 1000)
                job = {"name": name, "display_name": name,
                       "experiment": doc.get("experiment_name", "Default"),
                       "status": "Queued", "compute": doc.get("compute", "local"),
                       "command": doc.get("command", ""),
                       "environment_name": doc.get("environment_name", ""),
                       "environment_version": doc.get("environment_version", ""),
                       "image": "", "snapshot_id": doc.get("snapshot_id", ""),
                       "exit_code": None, "failure_reason": "", "wait_reason": "",
                       "tags": dict(doc.get("tags") or {}),
                       "transitions": [{"status": "Queued", "at_ms": now}], "ended_ms": 0,
                       "url": self.url + "/api/v1/jobs/" + name, "build": "", "log": "",
                       "request": doc}
                self.jobs[name] = job
                self.runs[name] = RunState()
                self.runs[name].tags = job["tags"]
                self.tokens["token-" + name] = name
                return self._json(self._job_view(job), 201)
        if not rest and method == "GET":
            limit = query.get("limit", ["50"])[0]
            if not limit.isdigit() or not 1 <= int(limit) <= 10000:
                raise HttpError(400, "INVALID_ARGUMENT",
                                "limit must be an integer from 1 to 10000")
            exp = query.get("experiment", [None])[0]
            with self.lock:
                jobs = [self._job_view(j) for j in reversed(list(self.jobs.values()))
                        if exp is None or j["experiment"] == exp]
            return self._json(jobs)
        with self.lock:
            job = self.jobs.get(rest[0])
            if job is None:
                raise HttpError(404, "NOT_FOUND", "run %s does not exist" % rest[0])
            job["tags"] = self.runs[rest[0]].tags
            if len(rest) == 1 and method == "GET":
                return self._json(self._job_view(job))
            if rest[1:] == ["cancel"] and method == "POST":
                if job["status"] in TERMINAL:
                    raise HttpError(409, "FAILED_PRECONDITION", "run %s already ended" % rest[0])
                job["cancel_requested"] = True
                return self._json(self._job_view(job))
        if rest[1:] == ["stream"] and method == "GET":
            return self._stream(job, query)
        raise HttpError(404, "NOT_FOUND", "no route")

    def _stream(self, job, query):
        b0 = int(query.get("build_offset", ["0"])[0])
        l0 = int(query.get("log_offset", ["0"])[0])
        status = query.get("status", [""])[0]
        wait = int(query.get("wait_ms", ["0"])[0]) / 1000.0
        deadline = time.monotonic() + wait
        with self.changed:
            while True:
                build, log = job["build"].encode(), job["log"].encode()
                if len(build) > b0 or len(log) > l0 or job["status"] != status:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            b0, l0 = min(b0, len(build)), min(l0, len(log))
            done = job["status"] in TERMINAL
            return self._json({"status": job["status"], "build": build[b0:].decode(),
                               "build_offset": len(build), "log": log[l0:].decode(),
                               "log_offset": len(log), "done": done,
                               "failure_reason": job["failure_reason"]})
