"""azureml.core.conda_dependencies on trainyard: trainyard.core.conda_dependencies."""

from trainyard.core.conda_dependencies import *  # noqa: F401,F403
