"""azureml.core on trainyard: every name comes from trainyard.core."""

from trainyard.core import *  # noqa: F401,F403
from trainyard.core import __all__  # noqa: F401
