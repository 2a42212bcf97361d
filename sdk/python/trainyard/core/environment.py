"""Environment: what a run executes in, as the v1 SDK's class, mapped onto trainyard's
environment definitions (docs/api.md): a base image, an inline Dockerfile or a build context,
a private registry's credentials, and managed (layered pip) or user-managed dependencies."""

from __future__ import annotations

import json
import os
import re
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing stays out of the import time
    from typing import Any, Dict, List, Optional

from ._connection import LONGEST_CALL_SECONDS, ApiError, seg
from .conda_dependencies import CondaDependencies
from .exceptions import UserErrorException

_logger = None


def _warning(message: str, *args: Any) -> None:
    """A warning of the service's wording on the logger "trainyard.core.environment" (printed
    to stderr unless the program configured logging); logging loads on the first warning."""
    global _logger
    if _logger is None:
        import logging
        logger = logging.getLogger("trainyard.core.environment")
        if not logging.getLogger().handlers and not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.propagate = False
        _logger = logger
    _logger.warning(message, *args)

# An environment that names no image runs in the workspace's default image (workspace.json
# `default_image`, python:3.11-slim unless set): the service's default images are not
# reachable from a trainyard machine.
DEFAULT_CPU_IMAGE = "trainyard-workspace-default-image"
DEFAULT_GPU_IMAGE = DEFAULT_CPU_IMAGE
_DEFAULT_SHM_SIZE = "2g"


def _deprecated(name: str) -> None:
    _warning("'%s' is deprecated. Please use the trainyard.core.runconfig."
                 "DockerConfiguration object instead.", name)


def _exclusive(kept: str, reset: str) -> None:
    _warning("Property %s is mutually exclusive with %s. Reset %s to None", reset, kept,
                 reset)


def parse_size(text: Any, what: str) -> int:
    """Bytes of "2g", "512m", "1024" and the like."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", str(text), re.IGNORECASE)
    if not m:
        raise UserErrorException("%s %r is not a size such as 2g or 512m" % (what, text))
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * factor)


class ContainerRegistry(object):
    """A private registry's address and credentials (the password is sent to the daemon only,
    which keeps it sealed)."""

    def __init__(self) -> None:
        self.address = None  # type: Optional[str]
        self.username = None  # type: Optional[str]
        self.password = None  # type: Optional[str]

    def _is_set(self) -> bool:
        return bool(self.address or self.username or self.password)

    def __repr__(self) -> str:
        return "ContainerRegistry(address=%r, username=%r, password=%s)" % (
            self.address, self.username, "'***'" if self.password else None)


class DockerBuildContext(object):
    """A folder with a Dockerfile, snapshotted into the workspace when the environment is
    registered or submitted."""

    def __init__(self, location_type: Optional[str] = None, location: Optional[str] = None,
                 dockerfile_path: str = "Dockerfile") -> None:
        self.location_type = location_type
        self.location = location
        self.dockerfile_path = dockerfile_path

    @staticmethod
    def from_local_directory(workspace: Any, path: str,
                             dockerfile_path: str = "Dockerfile") -> "DockerBuildContext":
        if not os.path.isdir(path):
            raise UserErrorException("build context %s is not a folder" % path)
        if not os.path.isfile(os.path.join(path, dockerfile_path)):
            raise UserErrorException("build context %s has no %s" % (path, dockerfile_path))
        return DockerBuildContext("local", os.path.abspath(path), dockerfile_path)


class PythonSection(object):
    def __init__(self, _skip_defaults: bool = False) -> None:
        self.user_managed_dependencies = False
        self.interpreter_path = "python"
        self.conda_dependencies = None if _skip_defaults else CondaDependencies()
        self.base_conda_environment = None  # type: Optional[str]


class DockerSection(object):
    """Where the image comes from: base_image, base_dockerfile or build_context (setting one
    resets the others, with the service's warnings)."""

    def __init__(self, _skip_defaults: bool = False) -> None:
        self._enabled = False
        self._base_image = None if _skip_defaults else DEFAULT_CPU_IMAGE  # type: Optional[str]
        self._base_dockerfile = None  # type: Optional[str]
        self._build_context = None  # type: Optional[DockerBuildContext]
        self.base_image_registry = ContainerRegistry()
        self._shm_size = _DEFAULT_SHM_SIZE  # type: Optional[str]
        self._arguments = []  # type: List[str]
        self._shared_volumes = True

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        _warning("'enabled' is deprecated. Please use the trainyard.core.runconfig."
                     "DockerConfiguration object with the 'use_docker' param instead.")
        self._enabled = value

    @property
    def base_image(self) -> Optional[str]:
        return self._base_image

    @base_image.setter
    def base_image(self, value: Optional[str]) -> None:
        if value:
            if self._base_dockerfile:
                _exclusive("base_image", "base_dockerfile")
                self._base_dockerfile = None
            if self._build_context:
                _exclusive("base_image", "build_context")
                self._build_context = None
        self._base_image = value

    @property
    def base_dockerfile(self) -> Optional[str]:
        return self._base_dockerfile

    @base_dockerfile.setter
    def base_dockerfile(self, value: Any) -> None:
        """A Dockerfile's text, or the path of one (read now), or a readable file object."""
        if hasattr(value, "read"):
            value = value.read()
        elif value and isinstance(value, str) and "\n" not in value and os.path.isfile(value):
            with open(value, encoding="utf-8") as f:
                value = f.read()
        elif value and isinstance(value, str) and "\n" not in value and \
                not re.match(r"^\s*FROM\s", value, re.IGNORECASE) and \
                (value.startswith(".") or "/" in value or value.lower().endswith("dockerfile")):
            raise UserErrorException("base_dockerfile %r names no file (it is read as a path "
                                     "when it looks like one)" % value)
        if value:
            if self._base_image:
                _exclusive("base_dockerfile", "base_image")
                self._base_image = None
            if self._build_context:
                _exclusive("base_dockerfile", "build_context")
                self._build_context = None
        self._base_dockerfile = value

    @property
    def build_context(self) -> Optional[DockerBuildContext]:
        return self._build_context

    @build_context.setter
    def build_context(self, value: Optional[DockerBuildContext]) -> None:
        if value:
            if self._base_dockerfile:
                _exclusive("build_context", "base_dockerfile")
                self._base_dockerfile = None
            if self._base_image:
                _exclusive("build_context", "base_image")
                self._base_image = None
        self._build_context = value

    @property
    def shm_size(self) -> Optional[str]:
        return self._shm_size

    @shm_size.setter
    def shm_size(self, value: Optional[str]) -> None:
        _deprecated("shm_size")
        if value is not None:
            parse_size(value, "docker.shm_size")
        self._shm_size = value

    @property
    def arguments(self) -> List[str]:
        return self._arguments

    @arguments.setter
    def arguments(self, value: List[str]) -> None:
        _deprecated("arguments")
        self._arguments = list(value or [])

    @property
    def shared_volumes(self) -> bool:
        return self._shared_volumes

    @shared_volumes.setter
    def shared_volumes(self, value: bool) -> None:
        _deprecated("shared_volumes")
        self._shared_volumes = value


class Environment(object):
    """What a run executes in. Register it to reuse it by name; a changed definition registered
    under the same name becomes its next version."""

    def __init__(self, name: Optional[str], _skip_defaults: bool = False) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError("Environment name expected str, %s found" % type(name).__name__)
        self.name = name
        self.version = None  # type: Optional[str]
        self.python = PythonSection(_skip_defaults)
        self.docker = DockerSection(_skip_defaults)
        self._environment_variables = {} if _skip_defaults else \
            {"EXAMPLE_ENV_VAR": "EXAMPLE_VALUE"}  # type: Dict[str, str]
        self.image_hash = None  # type: Optional[str]
        self.image = None  # type: Optional[str]

    @property
    def environment_variables(self) -> Dict[str, str]:
        return self._environment_variables

    @environment_variables.setter
    def environment_variables(self, value: Dict[str, str]) -> None:
        _warning("Property environment_variables is deprecated. Use "
                     "RunConfiguration.environment_variables to set runtime variables.")
        self._environment_variables = dict(value or {})

    def __str__(self) -> str:
        return "Environment(Name: %s,\nVersion: %s)" % (self.name, self.version)

    def __repr__(self) -> str:
        return json.dumps(self._serialize(), indent=4, sort_keys=True)

    # --- constructors ----------------------------------------------------------------------

    @staticmethod
    def _python_spec(env: "Environment", conda_specification: Optional[str],
                     pip_requirements: Optional[str]) -> None:
        if conda_specification and pip_requirements:
            raise UserErrorException("Only one of conda_specification or pip_requirements can be "
                                     "specified as python dependencies")
        if conda_specification:
            env.python.conda_dependencies = CondaDependencies(conda_specification)
        elif pip_requirements:
            env.python.conda_dependencies = _pip_file(pip_requirements)
        else:
            env.python.user_managed_dependencies = True

    @staticmethod
    def from_conda_specification(name: str, file_path: str) -> "Environment":
        """The file goes to the daemon as written (which reads the full conda format) unless
        the program changes the dependencies afterwards."""
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies._from_file_whole(file_path)
        return env

    @staticmethod
    def from_pip_requirements(name: str, file_path: str,
                              pip_version: Optional[str] = None) -> "Environment":
        env = Environment(name)
        env.python.conda_dependencies = _pip_file(file_path, pip_version)
        return env

    @staticmethod
    def from_dockerfile(name: str, dockerfile: str, conda_specification: Optional[str] = None,
                        pip_requirements: Optional[str] = None) -> "Environment":
        env = Environment(name)
        Environment._python_spec(env, conda_specification, pip_requirements)
        env.docker._base_image = None
        env.docker.base_dockerfile = dockerfile
        return env

    @staticmethod
    def from_docker_image(name: str, image: str, container_registry: Any = None,
                          conda_specification: Optional[str] = None,
                          pip_requirements: Optional[str] = None) -> "Environment":
        env = Environment(name)
        Environment._python_spec(env, conda_specification, pip_requirements)
        env.docker.base_image = image
        if container_registry is not None:
            env.docker.base_image_registry = container_registry
        return env

    @staticmethod
    def from_docker_build_context(name: str,
                                  docker_build_context: DockerBuildContext) -> "Environment":
        env = Environment(name, _skip_defaults=True)
        env.python.user_managed_dependencies = True
        env.docker.build_context = docker_build_context
        return env

    def clone(self, new_name: str) -> "Environment":
        if not new_name:
            raise UserErrorException("Name is required to instantiate an Environment object")
        import copy
        env = copy.deepcopy(self)
        env.name = new_name
        env.version = None
        env.image = env.image_hash = None
        return env

    # --- the workspace ---------------------------------------------------------------------

    def _definition(self, workspace: Any) -> Dict[str, Any]:
        """The definition the daemon takes (docs/api.md); snapshots a build context."""
        d = {"name": self.name or "", "version": "",
             "environment_variables": dict(self._environment_variables),
             "user_managed_dependencies": bool(self.python.user_managed_dependencies)
             }  # type: Dict[str, Any]
        docker = self.docker
        if docker.build_context is not None:
            ctx = docker.build_context
            if ctx.location_type == "snapshot":
                d["build_context"] = ctx.location
            else:
                d["build_context"] = workspace._conn.snapshot(ctx.location)["id"]
            d["dockerfile_path"] = ctx.dockerfile_path or "Dockerfile"
        elif docker.base_dockerfile:
            d["dockerfile"] = docker.base_dockerfile
        elif docker.base_image and docker.base_image != DEFAULT_CPU_IMAGE:
            d["image"] = docker.base_image
        else:
            d["image"] = workspace._default_image()
        reg = docker.base_image_registry
        if reg is not None and reg._is_set():
            if not reg.address:
                raise UserErrorException("docker.base_image_registry has credentials but no "
                                         "address")
            d["image_registry"] = {"address": reg.address, "username": reg.username or "",
                                   "password": reg.password or ""}
        conda = self.python.conda_dependencies
        if not self.python.user_managed_dependencies and conda is not None and \
                conda._has_packages():
            d["conda"] = {"text": conda._text_for_daemon()}
        return d

    def _changed_since_fetched(self, now: Dict[str, Any]) -> bool:
        """Whether this environment, fetched by name and version, was changed since: `now` is
        its _definition()."""
        fetched = getattr(self, "_fetched", None)
        if fetched is None:
            return False
        keys = ("image", "dockerfile", "build_context", "dockerfile_path",
                "user_managed_dependencies", "environment_variables")
        same = all((now.get(k) or None) == (fetched.get(k) or None) for k in keys)
        reg_now = {k: v for k, v in (now.get("image_registry") or {}).items() if k != "password"}
        reg_then = {k: v for k, v in (fetched.get("image_registry") or {}).items()
                    if k != "password"}
        conda_now = (now.get("conda") or {}).get("text")
        conda_then = (fetched.get("conda") or {}).get("text")
        return not (same and reg_now == reg_then and conda_now == conda_then)

    @staticmethod
    def _from_answer(answer: Dict[str, Any]) -> "Environment":
        d = answer.get("definition") or answer
        env = Environment(d.get("name") or answer.get("name"), _skip_defaults=True)
        env.version = str(answer.get("version") or d.get("version") or "") or None
        env._environment_variables = dict(d.get("environment_variables") or {})
        env.python.user_managed_dependencies = bool(d.get("user_managed_dependencies"))
        if (d.get("conda") or {}).get("text"):
            env.python.conda_dependencies = CondaDependencies._from_text(d["conda"]["text"])
        if d.get("build_context"):
            env.docker._build_context = DockerBuildContext(
                "snapshot", d["build_context"], d.get("dockerfile_path") or "Dockerfile")
        elif d.get("dockerfile"):
            env.docker._base_dockerfile = d["dockerfile"]
        else:
            env.docker._base_image = d.get("image") or None
        reg = d.get("image_registry")
        if reg:
            env.docker.base_image_registry.address = reg.get("address")
            env.docker.base_image_registry.username = reg.get("username")
            env.docker.base_image_registry.password = None  # never answered in the clear
        env.image = answer.get("image")
        env.image_hash = answer.get("image_hash")
        env._fetched = {k: v for k, v in d.items() if k not in ("name", "version")}
        if (env._fetched.get("conda") or {}).get("text"):
            env._fetched["conda"] = {"text": env.python.conda_dependencies._text_for_daemon()}
        if env._fetched.get("build_context"):
            env._fetched["dockerfile_path"] = d.get("dockerfile_path") or "Dockerfile"
        return env

    def register(self, workspace: Any) -> "Environment":
        """Registers this definition under its name; returns the registered version."""
        if not self.name:
            raise UserErrorException("Name is required to register an Environment")
        if self.version is not None:
            _warning("Environment version is set. Attempting to register desired version. "
                         "To auto-version, reset version to None.")
        try:
            answer = workspace._conn.post("/api/v1/environments", self._definition(workspace))
        except ApiError as e:
            raise UserErrorException("registering environment %s failed: %s"
                                     % (self.name, e.message))
        registered = Environment._from_answer(answer)
        if self.docker.base_image_registry._is_set():
            registered.docker.base_image_registry.password = self.docker.base_image_registry.password
        return registered

    @staticmethod
    def get(workspace: Any, name: str, version: Optional[str] = None,
            label: Optional[str] = None) -> "Environment":
        if version is not None and label is not None:
            raise UserErrorException("Only one of version or label can be specified")
        if label is not None and label != "latest":
            raise UserErrorException("label %r: trainyard environments have versions, and the "
                                     "label 'latest'" % label)
        path = "/api/v1/environments/%s/versions/%s" % (seg(name), seg(str(version or "latest")))
        try:
            return Environment._from_answer(workspace._conn.get(path))
        except ApiError as e:
            if e.status == 404:
                raise UserErrorException("Environment %s%s not found in the workspace: %s"
                                         % (name, ":" + str(version) if version else "",
                                            e.message))
            raise

    @staticmethod
    def list(workspace: Any) -> Dict[str, "Environment"]:
        """The latest version of every environment, by name."""
        out = {}  # type: Dict[str, Environment]
        for answer in workspace._conn.get("/api/v1/environments"):
            env = Environment._from_answer(answer)
            held = out.get(env.name or "")
            if held is None or _version_key(env.version) > _version_key(held.version):
                out[env.name or ""] = env
        return out

    def build(self, workspace: Any, image_build_compute: Any = None) -> "ImageBuildDetails":
        """Registers this environment (when it has no version) and builds its image now, as a
        run would (once per content hash: an image built before is found at once)."""
        if self.version is None:
            _warning("Building a non-registered environment is not supported. "
                         "Registering environment.")
            env = self.register(workspace)
        else:
            env = self
        path = "/api/v1/environments/%s/versions/%s/build" % (seg(env.name or ""),
                                                             seg(str(env.version)))
        try:
            answer = workspace._conn.post(path, {}, timeout=LONGEST_CALL_SECONDS)
        except ApiError as e:
            raise UserErrorException("building environment %s:%s failed: %s"
                                     % (env.name, env.version, e.message))
        return ImageBuildDetails(answer)

    def get_image_details(self, workspace: Any) -> Dict[str, Any]:
        """The image trainyard builds (or built) for this environment: its cache tag."""
        registered = self.register(workspace) if self.image is None else self
        return {"imageExistsInRegistry": False,
                "dockerImage": {"name": registered.image, "registry": None},
                "pythonEnvironment": {"interpreterPath": self.python.interpreter_path},
                "ingredients": {"dockerfile": self.docker.base_dockerfile}}

    # --- files -----------------------------------------------------------------------------

    def _serialize(self) -> Dict[str, Any]:
        reg = self.docker.base_image_registry
        ctx = self.docker.build_context
        return {
            "name": self.name, "version": self.version,
            "environmentVariables": self._environment_variables,
            "python": {"userManagedDependencies": self.python.user_managed_dependencies,
                       "interpreterPath": self.python.interpreter_path,
                       "baseCondaEnvironment": self.python.base_conda_environment,
                       "condaDependencies": self.python.conda_dependencies.serialize_to_string()
                       if self.python.conda_dependencies else None},
            "docker": {"enabled": self.docker.enabled, "baseImage": self.docker.base_image,
                       "baseDockerfile": self.docker.base_dockerfile,
                       "buildContext": None if ctx is None else {
                           "locationType": ctx.location_type, "location": ctx.location,
                           "dockerfilePath": ctx.dockerfile_path},
                       "sharedVolumes": self.docker.shared_volumes,
                       "shmSize": self.docker.shm_size, "arguments": self.docker.arguments,
                       "baseImageRegistry": {"address": reg.address, "username": reg.username,
                                             "password": None}},
        }

    def save_to_directory(self, path: str, overwrite: bool = False) -> None:
        """Writes azureml_environment.json, conda_dependencies.yml and BaseDockerfile (the
        registry password is never written)."""
        os.makedirs(path, exist_ok=overwrite)
        doc = self._serialize()
        conda = doc["python"].pop("condaDependencies")
        dockerfile = doc["docker"].pop("baseDockerfile")
        if conda:
            with open(os.path.join(path, "conda_dependencies.yml"), "w", encoding="utf-8") as f:
                f.write(conda)
        if dockerfile:
            with open(os.path.join(path, "BaseDockerfile"), "w", encoding="utf-8") as f:
                f.write(dockerfile)
        with open(os.path.join(path, "azureml_environment.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=4)

    @staticmethod
    def load_from_directory(path: str) -> "Environment":
        spec = os.path.join(path, "azureml_environment.json")
        if not os.path.isfile(spec):
            raise FileNotFoundError(spec)
        with open(spec, encoding="utf-8") as f:
            doc = json.load(f)
        env = Environment(doc.get("name"), _skip_defaults=True)
        env.version = doc.get("version")
        env._environment_variables = dict(doc.get("environmentVariables") or {})
        py = doc.get("python") or {}
        env.python.user_managed_dependencies = bool(py.get("userManagedDependencies"))
        env.python.interpreter_path = py.get("interpreterPath") or "python"
        conda_file = os.path.join(path, "conda_dependencies.yml")
        if os.path.isfile(conda_file):
            env.python.conda_dependencies = CondaDependencies(conda_file)
        dk = doc.get("docker") or {}
        env.docker._base_image = dk.get("baseImage")
        dockerfile = os.path.join(path, "BaseDockerfile")
        if os.path.isfile(dockerfile):
            with open(dockerfile, encoding="utf-8") as f:
                env.docker._base_dockerfile = f.read()
        ctx = dk.get("buildContext")
        if ctx:
            env.docker._build_context = DockerBuildContext(
                ctx.get("locationType"), ctx.get("location"), ctx.get("dockerfilePath"))
        if dk.get("shmSize"):
            env.docker._shm_size = dk["shmSize"]
        env.docker._arguments = list(dk.get("arguments") or [])
        reg = dk.get("baseImageRegistry") or {}
        env.docker.base_image_registry.address = reg.get("address")
        env.docker.base_image_registry.username = reg.get("username")
        return env


class ImageBuildDetails(object):
    """The outcome of Environment.build: `status` (Succeeded or Failed), the image, the log."""

    def __init__(self, answer: Dict[str, Any]) -> None:
        self.status = answer.get("status", "")
        self.image = answer.get("image")
        self.error = answer.get("error")
        self._log = answer.get("log", "")

    def get_log(self) -> str:
        return self._log

    def wait_for_completion(self, show_output: bool = True) -> "ImageBuildDetails":
        """The build is already over when build() returns; prints its log and status."""
        if show_output:
            print("Image Build Status: %s\n" % self.status)
            print(self._log, end="" if self._log.endswith("\n") else "\n")
            if self.error:
                print(self.error)
        return self

    def __repr__(self) -> str:
        return "ImageBuildDetails(status=%s, image=%s)" % (self.status, self.image)


def _version_key(version: Optional[str]) -> Any:
    try:
        return (1, int(version or 0), "")
    except ValueError:
        return (0, 0, version or "")


def _pip_file(file_path: str, pip_version: Optional[str] = None) -> CondaDependencies:
    with open(file_path, encoding="utf-8") as f:
        lines = [ln.strip() for ln in f.read().splitlines()]
    cd = CondaDependencies()
    cd.add_conda_package("pip" if not pip_version else "pip=" + pip_version)
    for number, ln in enumerate(lines, 1):
        if not ln or ln.startswith("#"):
            continue
        if re.match(r"^(-r|-c|-e|--requirement|--constraint|--editable)\b", ln):
            raise UserErrorException(
                "%s:%d: %r names a file or folder on this machine, which the image build does "
                "not see; list its requirements here instead" % (file_path, number, ln))
        if ln.startswith("-"):
            cd.set_pip_option(ln)
        else:
            cd.add_pip_package(ln)
    return cd
