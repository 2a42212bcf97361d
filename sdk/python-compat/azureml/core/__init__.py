"""azureml.core on trainyard: every name comes from trainyard.core (Run on first use, as there)."""

import trainyard.core as _core
from trainyard.core import __all__  # noqa: F401

globals().update({_name: getattr(_core, _name) for _name in __all__ if _name != "Run"})


def __getattr__(name):
    return getattr(_core, name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
