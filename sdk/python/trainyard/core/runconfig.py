"""Run configurations: where and how a script runs (RunConfiguration and its parts)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing stays out of the import time
    from typing import Any, Dict, List, Optional, Union

from .exceptions import RunConfigurationException, UserErrorException


class DockerConfiguration(object):
    """Container settings of a run: shared memory size and extra `docker run` arguments.

    `use_docker` is accepted for compatibility: every trainyard run uses a container on
    docker and Slurm computes (a process compute runs on the host). Of `arguments`, trainyard
    honours `--shm-size`; others are refused at submit, naming them."""

    def __init__(self, use_docker: Optional[bool] = True,
                 shared_volumes: Optional[bool] = True, arguments: Optional[List[str]] = None,
                 shm_size: Optional[str] = None) -> None:
        self.use_docker = use_docker
        self.shared_volumes = shared_volumes
        self.arguments = list(arguments or [])
        self.shm_size = shm_size


class _Distribution(object):
    """Common base: `node_count` nodes started together, each with the rank variables."""

    type = ""

    def __init__(self, node_count: int = 1, process_count_per_node: int = 1) -> None:
        self.node_count = node_count
        self.process_count_per_node = process_count_per_node

    def _check(self) -> None:
        for what, value in (("node_count", self.node_count),
                            ("process_count_per_node", self.process_count_per_node)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserErrorException("%s.%s must be a whole number of at least 1, not %r"
                                         % (type(self).__name__, what, value))


class MpiConfiguration(_Distribution):
    """MPI: `node_count` nodes, `process_count_per_node` processes on each."""

    type = "mpi"

    def __init__(self, process_count_per_node: int = 1, node_count: int = 1) -> None:
        super().__init__(node_count, process_count_per_node)


class PyTorchConfiguration(_Distribution):
    """torch.distributed: `node_count` nodes; `process_count` processes in all (default: one per
    node)."""

    type = "pytorch"

    def __init__(self, communication_backend: str = "Nccl", process_count: Optional[int] = None,
                 node_count: int = 1) -> None:
        super().__init__(node_count, 1)
        if str(communication_backend).lower() not in ("nccl", "gloo"):
            raise RunConfigurationException(
                "%s is not a supported backend. 'communication_backend' must be 'Nccl' or "
                "'Gloo'." % communication_backend)
        self.communication_backend = str(communication_backend).lower()
        self.process_count = process_count

    def _check(self) -> None:
        super()._check()
        if self.process_count is not None:
            if not isinstance(self.process_count, int) or self.process_count < 1 or \
                    self.process_count % self.node_count:
                raise UserErrorException(
                    "PyTorchConfiguration.process_count (%r) must be a multiple of node_count "
                    "(%d)" % (self.process_count, self.node_count))
            self.process_count_per_node = self.process_count // self.node_count


class TensorflowConfiguration(_Distribution):
    """TensorFlow's parameter-server training: `worker_count` workers and
    `parameter_server_count` parameter servers, one node each (TF_CONFIG is set per node)."""

    type = "tensorflow"

    def __init__(self, worker_count: int = 1, parameter_server_count: int = 1) -> None:
        # As on the service, the nodes are the workers; TF_CONFIG lists them.
        super().__init__(worker_count, 1)
        self.worker_count = worker_count
        self.parameter_server_count = parameter_server_count


if TYPE_CHECKING:
    DistributedConfig = Union[MpiConfiguration, PyTorchConfiguration, TensorflowConfiguration]


class RunConfiguration(object):
    """What a run needs besides its script: environment, compute target, variables, nodes."""

    def __init__(self, script: Optional[str] = None, arguments: Optional[List[Any]] = None,
                 framework: Optional[str] = None, communicator: Optional[str] = None,
                 conda_dependencies: Any = None, _history_enabled: Any = None,
                 _path: Any = None, _name: Optional[str] = None,
                 command: Optional[Union[str, List[str]]] = None) -> None:
        from .environment import Environment
        self.script = script
        self.arguments = list(arguments or [])
        self.command = command or ""
        self.framework = framework or "Python"
        self.communicator = communicator or "None"
        self.target = "local"  # type: Any
        self.environment = Environment("default-environment")
        if conda_dependencies is not None:
            self.environment.python.conda_dependencies = conda_dependencies
        self.environment_variables = {}  # type: Dict[str, str]
        self.node_count = 1
        self.max_run_duration_seconds = None  # type: Optional[int]
        self.docker = DockerConfiguration()
        self.mpi = MpiConfiguration()
        self.pytorch = PyTorchConfiguration()
        self.tensorflow = TensorflowConfiguration()
        self.data = {}  # type: Dict[str, Any]
        self.output_data = {}  # type: Dict[str, Any]
        self.name = _name

    def _distribution(self) -> Optional[_Distribution]:
        """The distribution the framework/communicator pair names, if any."""
        comm = (self.communicator or "").lower()
        fw = (self.framework or "").lower()
        if comm in ("intelmpi", "openmpi", "mpi"):
            return self.mpi
        if comm in ("paramserver",) or fw == "tensorflow" and comm != "none":
            return self.tensorflow
        if fw == "pytorch" or comm == "nccl" or comm == "gloo":
            return self.pytorch
        return None
