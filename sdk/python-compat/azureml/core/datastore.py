"""azureml.core.datastore on trainyard: trainyard.core.datastore."""

from trainyard.core.datastore import *  # noqa: F401,F403
from trainyard.core.datastore import Datastore  # noqa: F401
