"""azureml.core.runconfig on trainyard: trainyard.core.runconfig."""

from trainyard.core.runconfig import *  # noqa: F401,F403
