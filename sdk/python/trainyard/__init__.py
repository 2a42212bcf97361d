"""trainyard: log metrics, entries, tags, properties and files of a trainyard run.

    from trainyard import Run
    run = Run.get_context()
    run.log("loss", 0.25, step=10)

Standard library only (Python 3.8+). The wire protocol is docs/tracking.md.

The names below load on first use, so that `import trainyard.core` (submitting runs from a
notebook or a program) does not pay for the in-run tracking machinery.
"""

__all__ = ["Run", "TrackingError", "PropertyConflictError"]
__version__ = "0.1.0"

_LAZY = {"Run": ".run", "TrackingError": "._backends", "PropertyConflictError": "._backends"}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'trainyard' has no attribute %r" % name)
    import importlib
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
