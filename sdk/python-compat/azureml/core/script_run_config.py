"""azureml.core.script_run_config on trainyard: trainyard.core.script_run_config."""

from trainyard.core.script_run_config import *  # noqa: F401,F403
