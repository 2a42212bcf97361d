"""azureml.core.compute_target on trainyard: trainyard.core.compute_target."""

from trainyard.core.compute_target import *  # noqa: F401,F403
from trainyard.core.compute_target import ComputeTargetException  # noqa: F401
