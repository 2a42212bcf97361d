"""trainyard.core: submit and follow runs from Python, with the classes and methods of the
cloud service's v1 SDK (`azureml.core`), so its programs run on trainyard with their import
lines changed (or unchanged, with the optional `azureml-core-trainyard` package).

    from trainyard.core import Workspace, Environment, ScriptRunConfig, Experiment
    ws = Workspace.from_config()
    env = Environment("sklearn")
    env.docker.base_image = "python:3.11-slim"
    env.python.user_managed_dependencies = True
    src = ScriptRunConfig(source_directory="src", script="train.py", environment=env)
    run = Experiment(ws, "digits").submit(src)
    run.wait_for_completion(show_output=True)

Standard library only (Python 3.8+). It drives the `trainyard` command (found on PATH, or
$TRAINYARD_CLI) to find the workspace and snapshot code, and the daemon's REST API for the rest.
docs/python-sdk.md lists every class and method.
"""

from .compute import AmlCompute, ComputeTarget
from .conda_dependencies import CondaDependencies
from .dataset import Dataset
from .datastore import Datastore
from .environment import Environment
from .exceptions import (ActivityFailedException, ComputeTargetException,
                         ExperimentExecutionException, UserErrorException)
from .experiment import Experiment
from .model import Model
from .runconfig import (DockerConfiguration, MpiConfiguration, PyTorchConfiguration,
                        RunConfiguration, TensorflowConfiguration)
from .script_run_config import ScriptRunConfig
from .workspace import Workspace

__all__ = [
    "ActivityFailedException", "AmlCompute", "ComputeTarget", "ComputeTargetException",
    "CondaDependencies", "Dataset", "Datastore", "DockerConfiguration", "Environment", "Experiment",
    "ExperimentExecutionException", "Model", "MpiConfiguration", "PyTorchConfiguration", "Run",
    "RunConfiguration", "ScriptRunConfig", "TensorflowConfiguration", "UserErrorException",
    "Workspace",
]


def __getattr__(name: str) -> object:
    # Run loads on first use: it brings the in-run tracking machinery (trainyard.run), which
    # a program that only submits and follows runs never needs before its first submit.
    if name == "Run":
        from .run import Run
        globals()["Run"] = Run
        return Run
    raise AttributeError("module 'trainyard.core' has no attribute %r" % name)


def __dir__() -> "list[str]":
    return sorted(set(globals()) | set(__all__))
