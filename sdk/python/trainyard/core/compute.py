"""Compute targets: AmlCompute clusters as trainyard docker computes, Slurm and the host.

A trainyard docker compute is a fixed pool of `max_nodes` nodes of one size on the daemon's
machine: nothing is provisioned, so `create` is ready at once and `get_status()` reports the
pool (busy nodes as running, free ones as idle). `vm_size` picks the node size from the
service's common sizes, reduced to what the machine has, with a warning naming the cut.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing stays out of the import time
    from typing import Any, Dict, List, Optional, Tuple

from ._connection import ApiError, seg
from .exceptions import ComputeTargetException, UserErrorException, warn

GIB = 1024 ** 3

# name: (vCPUs, memory GiB, GPUs). The service's common AmlCompute sizes.
VM_SIZES = {
    "STANDARD_D1_V2": (1, 3.5, 0), "STANDARD_D2_V2": (2, 7, 0), "STANDARD_D3_V2": (4, 14, 0),
    "STANDARD_D4_V2": (8, 28, 0), "STANDARD_D5_V2": (16, 56, 0),
    "STANDARD_D11_V2": (2, 14, 0), "STANDARD_D12_V2": (4, 28, 0),
    "STANDARD_D13_V2": (8, 56, 0), "STANDARD_D14_V2": (16, 112, 0),
    "STANDARD_DS1_V2": (1, 3.5, 0), "STANDARD_DS2_V2": (2, 7, 0), "STANDARD_DS3_V2": (4, 14, 0),
    "STANDARD_DS4_V2": (8, 28, 0), "STANDARD_DS5_V2": (16, 56, 0),
    "STANDARD_DS11_V2": (2, 14, 0), "STANDARD_DS12_V2": (4, 28, 0),
    "STANDARD_DS13_V2": (8, 56, 0), "STANDARD_DS14_V2": (16, 112, 0),
    "STANDARD_D2_V3": (2, 8, 0), "STANDARD_D4_V3": (4, 16, 0), "STANDARD_D8_V3": (8, 32, 0),
    "STANDARD_D16_V3": (16, 64, 0), "STANDARD_D32_V3": (32, 128, 0),
    "STANDARD_D64_V3": (64, 256, 0),
    "STANDARD_D2S_V3": (2, 8, 0), "STANDARD_D4S_V3": (4, 16, 0), "STANDARD_D8S_V3": (8, 32, 0),
    "STANDARD_D16S_V3": (16, 64, 0),
    "STANDARD_E2_V3": (2, 16, 0), "STANDARD_E4_V3": (4, 32, 0), "STANDARD_E8_V3": (8, 64, 0),
    "STANDARD_E16_V3": (16, 128, 0), "STANDARD_E32_V3": (32, 256, 0),
    "STANDARD_E64_V3": (64, 432, 0),
    "STANDARD_F2S_V2": (2, 4, 0), "STANDARD_F4S_V2": (4, 8, 0), "STANDARD_F8S_V2": (8, 16, 0),
    "STANDARD_F16S_V2": (16, 32, 0), "STANDARD_F32S_V2": (32, 64, 0),
    "STANDARD_F72S_V2": (72, 144, 0),
    "STANDARD_NC6": (6, 56, 1), "STANDARD_NC12": (12, 112, 2), "STANDARD_NC24": (24, 224, 4),
    "STANDARD_NC6S_V3": (6, 112, 1), "STANDARD_NC12S_V3": (12, 224, 2),
    "STANDARD_NC24S_V3": (24, 448, 4),
    "STANDARD_NC4AS_T4_V3": (4, 28, 1), "STANDARD_NC8AS_T4_V3": (8, 56, 1),
    "STANDARD_NC16AS_T4_V3": (16, 110, 1), "STANDARD_NC64AS_T4_V3": (64, 440, 4),
    "STANDARD_NC24ADS_A100_V4": (24, 220, 1),
    "STANDARD_ND40RS_V2": (40, 672, 8),
    "STANDARD_NV6": (6, 56, 1), "STANDARD_NV12": (12, 112, 2), "STANDARD_NV24": (24, 224, 4),
}
DEFAULT_VM_SIZE = "STANDARD_NC6"  # the service's default when vm_size is empty
RESERVED_NAMES = ("amlcompute", "local", "containerinstance")


def node_size(vm_size: str) -> Tuple[float, float, int]:
    """(cpus, memory GiB, GPUs) of a size name, any case; ComputeTargetException listing the
    known sizes when unknown."""
    size = VM_SIZES.get((vm_size or DEFAULT_VM_SIZE).upper())
    if size is None:
        raise ComputeTargetException(
            "vm_size %r is not a size trainyard knows. Known sizes: %s. Or give the node size "
            "directly: AmlCompute.provisioning_configuration(max_nodes=N, node_cpus=C, "
            "node_memory_gb=M, node_gpus=G)" % (vm_size, ", ".join(sorted(VM_SIZES))))
    return float(size[0]), float(size[1]), int(size[2])


def _size_name(cpus: float, memory_bytes: int, gpus: int) -> str:
    """The table's name for a node size, else a description of it."""
    for name, (c, m, g) in sorted(VM_SIZES.items()):
        if c == cpus and int(m * GIB) == memory_bytes and g == gpus:
            return name
    text = "%g CPUs, %.1f GiB" % (cpus, memory_bytes / GIB) if memory_bytes else "%g CPUs" % cpus
    return text + (", %d GPUs" % gpus if gpus else "")


class ScaleSettings(object):
    def __init__(self, minimum_node_count: int, maximum_node_count: int,
                 idle_seconds_before_scaledown: Optional[int]) -> None:
        self.minimum_node_count = minimum_node_count
        self.maximum_node_count = maximum_node_count
        self.idle_seconds_before_scaledown = idle_seconds_before_scaledown

    def serialize(self) -> Dict[str, Any]:
        idle = self.idle_seconds_before_scaledown
        return {"minNodeCount": self.minimum_node_count, "maxNodeCount": self.maximum_node_count,
                "nodeIdleTimeBeforeScaleDown": "PT%dS" % idle if idle is not None else ""}


class ComputeTargetProvisioningConfiguration(object):
    """Base of the configurations ComputeTarget.create and attach take."""

    def _definition(self, workspace: Any, name: str) -> Dict[str, Any]:
        raise NotImplementedError


class AmlComputeProvisioningConfiguration(ComputeTargetProvisioningConfiguration):
    def __init__(self, vm_size: str = "", vm_priority: str = "dedicated", min_nodes: int = 0,
                 max_nodes: Optional[int] = None,
                 idle_seconds_before_scaledown: Optional[int] = 1800,
                 node_cpus: Optional[float] = None, node_memory_gb: Optional[float] = None,
                 node_gpus: Optional[int] = None, description: Optional[str] = None,
                 tags: Optional[Dict[str, str]] = None) -> None:
        self.vm_size = vm_size
        self.vm_priority = vm_priority
        self.min_nodes = min_nodes or 0
        self.max_nodes = max_nodes
        self.idle_seconds_before_scaledown = idle_seconds_before_scaledown
        self.node_cpus = node_cpus
        self.node_memory_gb = node_memory_gb
        self.node_gpus = node_gpus
        self.description = description
        self.tags = tags
        self.validate_configuration()

    def validate_configuration(self) -> None:
        if self.max_nodes is None:
            raise ComputeTargetException(
                "Invalid provisioning configuration, max nodes count is mandatory")
        if not isinstance(self.max_nodes, int) or self.max_nodes < 0:
            raise ComputeTargetException("Invalid provisioning configuration, max nodes count "
                                         "must be greater than or equal to 0")
        if self.max_nodes < self.min_nodes:
            raise ComputeTargetException(
                "Invalid provisioning configuration, max nodes count must be greater than or "
                "equal to min nodes count")
        if self.vm_priority not in ("dedicated", "lowpriority"):
            raise ComputeTargetException(
                "Invalid provisioning configuration, vm_priority must be 'dedicated' or "
                "'lowpriority', not %r" % self.vm_priority)
        if self.node_cpus is None:
            node_size(self.vm_size)  # an unknown size is refused here, before any request

    def _definition(self, workspace: Any, name: str) -> Dict[str, Any]:
        if self.max_nodes == 0:
            raise ComputeTargetException(
                "a trainyard compute needs max_nodes of at least 1 (it has no autoscaling to "
                "scale up from 0)")
        if self.node_cpus is not None:
            cpus = float(self.node_cpus)
            memory = float(self.node_memory_gb or 0)
            gpus = int(self.node_gpus or 0)
            what = "the node size given"
        else:
            cpus, memory, gpus = node_size(self.vm_size)
            what = "vm_size %s" % (self.vm_size or DEFAULT_VM_SIZE).upper()
        machine = workspace._machine()
        cut = []
        if machine["cpus"] and cpus > machine["cpus"]:
            cut.append("%g CPUs to %g" % (cpus, machine["cpus"]))
            cpus = machine["cpus"]
        if machine["memory_bytes"] and memory * GIB > machine["memory_bytes"]:
            cut.append("%.1f GiB of memory to %.1f" % (memory, machine["memory_bytes"] / GIB))
            memory = machine["memory_bytes"] / GIB
        if gpus > machine["gpus"]:
            cut.append("%d GPUs to %d" % (gpus, machine["gpus"]) +
                       (" (this machine has no GPU: the nodes run on CPUs)"
                        if machine["gpus"] == 0 else ""))
            gpus = machine["gpus"]
        if cut:
            warn("%s is more than the daemon's machine has; each node of %r gets %s"
                  % (what, name, "; ".join(cut)))
        if self.vm_priority == "lowpriority":
            warn("vm_priority 'lowpriority' has no meaning on trainyard: nodes are never "
                  "preempted")
        return {"name": name, "type": "docker", "max_nodes": self.max_nodes,
                "node_cpus": cpus, "node_memory_bytes": int(memory * GIB), "node_gpus": gpus,
                "idle_seconds": int(self.idle_seconds_before_scaledown or 0)}


class SlurmComputeAttachConfiguration(ComputeTargetProvisioningConfiguration):
    """A Slurm partition as a compute target (trainyard's own; docs/slurm.md)."""

    def __init__(self, partition: str, max_nodes: int = 1, account: str = "", qos: str = "",
                 gpus_per_node: int = 0, container_runtime: str = "docker",
                 sbatch_args: Optional[List[str]] = None, shared_dir: str = "",
                 registry_address: str = "", registry_username: str = "",
                 registry_password: str = "") -> None:
        self.partition = partition
        self.max_nodes = max_nodes
        self.account = account
        self.qos = qos
        self.gpus_per_node = gpus_per_node
        self.container_runtime = container_runtime
        self.sbatch_args = list(sbatch_args or [])
        self.shared_dir = shared_dir
        self.registry = None
        if registry_address:
            self.registry = {"address": registry_address, "username": registry_username,
                             "password": registry_password}

    def _definition(self, workspace: Any, name: str) -> Dict[str, Any]:
        d = {"name": name, "type": "slurm", "max_nodes": self.max_nodes,
             "partition": self.partition, "account": self.account, "qos": self.qos,
             "gpus_per_node": self.gpus_per_node, "container_runtime": self.container_runtime,
             "sbatch_args": self.sbatch_args, "shared_dir": self.shared_dir}
        if self.registry:
            d["registry"] = self.registry
        return d


class ComputeTargetStatus(object):
    def __init__(self, provisioning_state: str) -> None:
        self.provisioning_state = provisioning_state

    def serialize(self) -> Dict[str, Any]:
        return {"provisioningState": self.provisioning_state}


class AmlComputeNodeStateCounts(object):
    def __init__(self, idle: int, running: int) -> None:
        self.idle_node_count = idle
        self.running_node_count = running
        self.preparing_node_count = 0
        self.unusable_node_count = 0
        self.leaving_node_count = 0
        self.preempted_node_count = 0

    def serialize(self) -> Dict[str, int]:
        return {"preparingNodeCount": 0, "runningNodeCount": self.running_node_count,
                "idleNodeCount": self.idle_node_count, "unusableNodeCount": 0,
                "leavingNodeCount": 0, "preemptedNodeCount": 0}


class AmlComputeStatus(ComputeTargetStatus):
    """The pool's state now, with the service's attribute names and serialize() keys."""

    def __init__(self, view: Dict[str, Any]) -> None:
        super().__init__("Succeeded")
        nodes = view.get("nodes") or {}
        total = int(nodes.get("total", view.get("max_nodes", 0)))
        busy = int(nodes.get("busy", 0))
        idle_seconds = view.get("idle_seconds")
        self.current_node_count = total
        self.target_node_count = total
        self.node_state_counts = AmlComputeNodeStateCounts(max(0, total - busy), busy)
        self.allocation_state = "Steady"
        self.allocation_state_transition_time = None
        self.creation_time = None
        self.modified_time = None
        self.provisioning_state_transition_time = None
        self.errors = [view["slurm"]["error"]] if (view.get("slurm") or {}).get("error") \
            else None
        self.scale_settings = ScaleSettings(0, int(view.get("max_nodes", total)), idle_seconds)
        self.vm_priority = "Dedicated"
        self.vm_size = _size_name(float(view.get("node_cpus", 0)),
                                  int(view.get("node_memory_bytes", 0)),
                                  int(view.get("node_gpus", 0)))
        self.running_runs = list(view.get("running") or [])
        self.queued_runs = list(view.get("queued") or [])

    def serialize(self) -> Dict[str, Any]:
        return {
            "currentNodeCount": self.current_node_count,
            "targetNodeCount": self.target_node_count,
            "nodeStateCounts": self.node_state_counts.serialize(),
            "allocationState": self.allocation_state,
            "allocationStateTransitionTime": None,
            "errors": self.errors,
            "creationTime": None,
            "modifiedTime": None,
            "provisioningState": self.provisioning_state,
            "provisioningStateTransitionTime": None,
            "scaleSettings": self.scale_settings.serialize(),
            "vmPriority": self.vm_priority,
            "vmSize": self.vm_size,
        }


class ComputeTarget(object):
    """A compute target of the workspace. `ComputeTarget(ws, name)` finds an existing one (an
    AmlCompute, SlurmCompute or ProcessCompute by its type) or raises ComputeTargetException."""

    _compute_type = ""

    def __new__(cls, workspace: Any = None, name: Optional[str] = None) -> "ComputeTarget":
        if workspace is None or name is None or cls is not ComputeTarget:
            return super().__new__(cls)
        view = cls._get_view(workspace, name)
        sub = {"docker": AmlCompute, "slurm": SlurmCompute,
               "process": ProcessCompute}.get(view.get("type"), ComputeTarget)
        obj = super().__new__(sub)
        obj._view = view
        return obj

    def __init__(self, workspace: Any = None, name: Optional[str] = None) -> None:
        if workspace is None or name is None:
            return
        self.workspace = workspace
        self.name = name
        if getattr(self, "_view", None) is None:
            self._view = self._get_view(workspace, name)
        self._refresh_from(self._view)

    @staticmethod
    def _get_view(workspace: Any, name: str) -> Dict[str, Any]:
        try:
            return workspace._conn.get("/api/v1/computes/" + seg(name))
        except ApiError as e:
            if e.status == 404:
                raise ComputeTargetException(
                    "ComputeTargetNotFound: Compute Target with name %s not found in provided "
                    "workspace" % name)
            raise ComputeTargetException(e.message)

    def _refresh_from(self, view: Dict[str, Any]) -> None:
        self._view = view
        self.type = {"docker": "AmlCompute", "slurm": "Slurm",
                     "process": "Process"}.get(view.get("type", ""), view.get("type", ""))
        self.provisioning_state = "Succeeded"
        self.provisioning_errors = None
        self.max_nodes = int(view.get("max_nodes", 1))

    def refresh_state(self) -> None:
        self._refresh_from(self._get_view(self.workspace, self.name))

    @staticmethod
    def create(workspace: Any, name: str,
               provisioning_configuration: ComputeTargetProvisioningConfiguration
               ) -> "ComputeTarget":
        """Creates a compute target; one of the same name and settings is attached as is, one
        with other settings is an error naming them."""
        if name.lower() in RESERVED_NAMES:
            raise UserErrorException(
                "Please specify a different target name. %s is a reserved name." % name)
        definition = provisioning_configuration._definition(workspace, name)
        try:
            workspace._conn.post("/api/v1/computes", definition)
        except ApiError as e:
            raise ComputeTargetException("creating compute target %s failed: %s"
                                         % (name, e.message))
        return ComputeTarget(workspace, name)

    @staticmethod
    def attach(workspace: Any, name: str,
               attach_configuration: ComputeTargetProvisioningConfiguration) -> "ComputeTarget":
        return ComputeTarget.create(workspace, name, attach_configuration)

    @staticmethod
    def list(workspace: Any) -> List["ComputeTarget"]:
        return [ComputeTarget(workspace, d["name"])
                for d in workspace._conn.get("/api/v1/computes")]

    def wait_for_completion(self, show_output: bool = False, min_node_count: Optional[int] = None,
                            timeout_in_minutes: int = 25, is_delete_operation: bool = False
                            ) -> None:
        """trainyard computes are ready when created: reports that at once."""
        if show_output:
            print("Succeeded")
            print('Provisioning operation finished, operation "Succeeded"')
            print("%s wait for completion finished\n" % (self.type or "Compute"))
            print("Minimum number of nodes requested have been provisioned")

    def get_status(self) -> ComputeTargetStatus:
        self.refresh_state()
        return ComputeTargetStatus(self.provisioning_state)

    def delete(self) -> None:
        """Deletes the compute target; refused while runs use it, naming them."""
        try:
            self.workspace._conn.request("DELETE", "/api/v1/computes/" + seg(self.name))
        except ApiError as e:
            raise ComputeTargetException(e.message)
        self.provisioning_state = "Deleting"

    def detach(self) -> None:
        self.delete()

    def serialize(self) -> Dict[str, Any]:
        return {"name": self.name, "properties": {"computeType": self.type,
                                                  "provisioningState": self.provisioning_state,
                                                  "status": self.get_status().serialize()}}

    def __repr__(self) -> str:
        return "%s(workspace=%r, name=%s, type=%s, provisioning_state=%s)" % (
            type(self).__name__, getattr(self, "workspace", None), getattr(self, "name", None),
            getattr(self, "type", None), getattr(self, "provisioning_state", None))


class AmlCompute(ComputeTarget):
    """A docker compute: `max_nodes` containers of one size on the daemon's machine."""

    @staticmethod
    def provisioning_configuration(vm_size: str = "", vm_priority: str = "dedicated",
                                   min_nodes: int = 0, max_nodes: Optional[int] = None,
                                   idle_seconds_before_scaledown: Optional[int] = 1800,
                                   admin_username: Optional[str] = None,
                                   admin_user_password: Optional[str] = None,
                                   admin_user_ssh_key: Optional[str] = None,
                                   vnet_resourcegroup_name: Optional[str] = None,
                                   vnet_name: Optional[str] = None,
                                   subnet_name: Optional[str] = None,
                                   tags: Optional[Dict[str, str]] = None,
                                   description: Optional[str] = None,
                                   remote_login_port_public_access: str = "NotSpecified",
                                   identity_type: Optional[str] = None,
                                   identity_id: Optional[List[str]] = None,
                                   location: Optional[str] = None,
                                   enable_node_public_ip: bool = True,
                                   node_cpus: Optional[float] = None,
                                   node_memory_gb: Optional[float] = None,
                                   node_gpus: Optional[int] = None
                                   ) -> AmlComputeProvisioningConfiguration:
        """The service's settings; those about Azure networking, identity and logins have no
        meaning here and are ignored. `node_cpus`, `node_memory_gb` and `node_gpus` (trainyard's
        own) give the node size instead of `vm_size`."""
        ignored = [n for n, v in (("admin_username", admin_username),
                                  ("vnet_name", vnet_name), ("subnet_name", subnet_name),
                                  ("identity_type", identity_type), ("location", location))
                   if v]
        if ignored:
            warn("ignored on trainyard (its nodes are containers on the daemon's machine): %s"
                  % ", ".join(ignored))
        return AmlComputeProvisioningConfiguration(
            vm_size=vm_size, vm_priority=vm_priority, min_nodes=min_nodes, max_nodes=max_nodes,
            idle_seconds_before_scaledown=idle_seconds_before_scaledown, node_cpus=node_cpus,
            node_memory_gb=node_memory_gb, node_gpus=node_gpus, description=description,
            tags=tags)

    def _refresh_from(self, view: Dict[str, Any]) -> None:
        super()._refresh_from(view)
        self.status = AmlComputeStatus(view)
        self.vm_size = self.status.vm_size
        self.vm_priority = "dedicated"
        self.scale_settings = self.status.scale_settings

    def get_status(self) -> AmlComputeStatus:
        self.refresh_state()
        return self.status

    @staticmethod
    def supported_vmsizes(workspace: Any, location: Optional[str] = None) -> List[Dict[str, Any]]:
        return [{"name": n, "vCPUs": c, "memoryGB": m, "gpus": g}
                for n, (c, m, g) in sorted(VM_SIZES.items())]


class SlurmCompute(AmlCompute):
    """A Slurm partition (docs/slurm.md): runs are submitted with sbatch."""

    @staticmethod
    def attach_configuration(partition: str, max_nodes: int = 1, **kwargs: Any
                             ) -> SlurmComputeAttachConfiguration:
        return SlurmComputeAttachConfiguration(partition, max_nodes, **kwargs)


class ProcessCompute(ComputeTarget):
    """Runs the command on the daemon's machine itself, without a container."""
