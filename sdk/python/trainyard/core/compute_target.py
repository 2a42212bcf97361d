"""The module the v1 SDK's programs import ComputeTargetException from."""

from .compute import ComputeTarget, ComputeTargetProvisioningConfiguration
from .exceptions import ComputeTargetException

__all__ = ["ComputeTarget", "ComputeTargetException", "ComputeTargetProvisioningConfiguration"]
