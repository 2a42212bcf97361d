"""azureml.core.dataset on trainyard: trainyard.core.dataset."""

from trainyard.core.dataset import *  # noqa: F401,F403
from trainyard.core.dataset import Dataset, FileDataset  # noqa: F401
