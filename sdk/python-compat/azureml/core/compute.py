"""azureml.core.compute on trainyard: trainyard.core.compute."""

from trainyard.core.compute import *  # noqa: F401,F403
from trainyard.core.compute import (AmlCompute, AmlComputeProvisioningConfiguration,  # noqa: F401
                                    ComputeTarget, ProcessCompute, SlurmCompute)
