"""azureml.core.run on trainyard: trainyard.core.run."""

from trainyard.core.run import *  # noqa: F401,F403
