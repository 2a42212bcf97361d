"""azureml.exceptions on trainyard: trainyard.core.exceptions."""

from trainyard.core.exceptions import *  # noqa: F401,F403
