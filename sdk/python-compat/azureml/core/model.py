"""azureml.core.model on trainyard: trainyard.core.model."""

from trainyard.core.model import *  # noqa: F401,F403
from trainyard.core.model import Model  # noqa: F401
