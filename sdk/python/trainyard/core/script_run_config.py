"""ScriptRunConfig: a script (or command) in a source folder, with its run configuration."""

from __future__ import annotations

import os
import shlex
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing stays out of the import time
    from typing import Any, List, Optional, Union

from .exceptions import RunConfigurationException, UserErrorException, warn
from .runconfig import (DockerConfiguration, MpiConfiguration, PyTorchConfiguration,
                        RunConfiguration, TensorflowConfiguration)

_DEFAULT_MAX_SECONDS = 2592000
_SHELL_OPERATORS = ("&&", "||", ";", "|", "&", ">", ">>", "<", "2>", "2>&1")


def _arg(value: Any) -> str:
    from .dataset import DatasetConsumptionConfig
    if isinstance(value, DatasetConsumptionConfig):
        return str(value)  # ${{inputs.<name>}}: the daemon puts the input's path there
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float, str)):
        return str(value)
    raise UserErrorException("argument %r: arguments are strings, numbers, booleans or datasets "
                             "(as_named_input(...).as_mount()), not %s"
                             % (value, type(value).__name__))


class ScriptRunConfig(object):
    """What to run and where: `script` with `arguments` (or a shell `command`) in
    `source_directory`, which is snapshotted at submit."""

    def __init__(self, source_directory: str, script: Optional[str] = None,
                 arguments: Optional[List[Any]] = None,
                 run_config: Optional[RunConfiguration] = None,
                 _telemetry_values: Any = None, compute_target: Any = None,
                 environment: Any = None, distributed_job_config: Any = None,
                 resume_from: Any = None,
                 max_run_duration_seconds: Optional[int] = _DEFAULT_MAX_SECONDS,
                 command: Optional[Union[str, List[str]]] = None,
                 docker_runtime_config: Optional[DockerConfiguration] = None) -> None:
        self.source_directory = source_directory
        self.script = script
        self.command = command
        self.arguments = list(arguments or [])
        if resume_from is not None:
            raise UserErrorException("resume_from (a DataPath) is not supported by trainyard")
        if run_config is not None:
            if compute_target is not None or environment is not None or \
                    distributed_job_config is not None or docker_runtime_config is not None or \
                    max_run_duration_seconds != _DEFAULT_MAX_SECONDS:
                warn("If 'run_config' is specified, the following parameters will be ignored: "
                      "'compute_target', 'environment', 'distributed_job_config', "
                      "'max_run_duration_seconds', and 'docker_runtime_config'.")
            self.run_config = run_config
            return
        rc = RunConfiguration()
        rc.target = compute_target if compute_target is not None else "local"
        if environment is not None:
            rc.environment = environment
        rc.max_run_duration_seconds = max_run_duration_seconds
        if distributed_job_config is not None:
            if isinstance(distributed_job_config, TensorflowConfiguration):
                rc.tensorflow = distributed_job_config
                rc.framework, rc.communicator = "TensorFlow", "ParameterServer"
            elif isinstance(distributed_job_config, MpiConfiguration):
                rc.mpi = distributed_job_config
                rc.framework, rc.communicator = "Python", "IntelMpi"
            elif isinstance(distributed_job_config, PyTorchConfiguration):
                rc.pytorch = distributed_job_config
                rc.framework = "PyTorch"
                rc.communicator = distributed_job_config.communication_backend
            else:
                raise RunConfigurationException(
                    "'distributed_job_config' must be a 'TensorflowConfiguration', "
                    "'MpiConfiguration', or 'PyTorchConfiguration' object.")
            rc.node_count = distributed_job_config.node_count
        if docker_runtime_config is not None:
            if not isinstance(docker_runtime_config, DockerConfiguration):
                raise RunConfigurationException(
                    "'docker_runtime_config' must be a 'DockerConfiguration' object.")
            rc.docker = docker_runtime_config
        self.run_config = rc

    # --- what the daemon gets --------------------------------------------------------------

    def _command(self) -> str:
        """The shell command the run executes."""
        script = self.script if self.script is not None else self.run_config.script
        command = self.command if self.command else self.run_config.command
        if script and command:
            raise RunConfigurationException(
                "Both command and script/arguments were given: a run has one or the other "
                "(script=%r, command=%r)" % (script, command))
        if command:
            if isinstance(command, (list, tuple)):
                # Each item is one word, quoted, except the shell's operators between commands.
                return " ".join(_arg(c) if _arg(c) in _SHELL_OPERATORS else shlex.quote(_arg(c))
                                for c in command)
            return str(command)
        if not script:
            raise RunConfigurationException(
                "ScriptRunConfig needs a script (and arguments) or a command")
        folder = self.source_directory or "."
        if not os.path.isfile(os.path.join(folder, script)):
            raise UserErrorException("script %s is not a file in the source directory %s"
                                     % (script, os.path.abspath(folder)))
        args = self.arguments or self.run_config.arguments
        interpreter = self.run_config.environment.python.interpreter_path or "python"
        return " ".join([shlex.quote(interpreter), shlex.quote(script)] +
                        [shlex.quote(_arg(a)) for a in args])
