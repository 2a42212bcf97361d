"""azureml.core.environment on trainyard: trainyard.core.environment."""

from trainyard.core.environment import *  # noqa: F401,F403
