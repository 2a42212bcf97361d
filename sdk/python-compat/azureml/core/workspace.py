"""azureml.core.workspace on trainyard: trainyard.core.workspace."""

from trainyard.core.workspace import *  # noqa: F401,F403
