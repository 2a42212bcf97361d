"""trainyard: log metrics, entries, tags, properties and files of a trainyard run.

    from trainyard import Run
    run = Run.get_context()
    run.log("loss", 0.25, step=10)

Standard library only (Python 3.8+). The wire protocol is docs/tracking.md.
"""

from ._backends import PropertyConflictError, TrackingError
from .run import Run

__all__ = ["Run", "TrackingError", "PropertyConflictError"]
__version__ = "0.1.0"
