"""azureml.core.experiment on trainyard: trainyard.core.experiment."""

from trainyard.core.experiment import *  # noqa: F401,F403
