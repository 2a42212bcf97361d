"""The exceptions the cloud service's v1 SDK raises, under the same names and bases.

Programs written for that SDK catch these by name (`except ComputeTargetException:`), so each
mistake raises the type a user of the service expects, with trainyard's message.
"""

from __future__ import annotations

import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing stays out of the import time
    from typing import Any, Optional


def warn(message: str) -> None:
    """What the SDK does on the program's behalf but differently than asked (a size cut to the
    machine, a setting ignored), on stderr."""
    sys.stderr.write("Warning: %s\n" % message)
    sys.stderr.flush()


class AzureMLException(Exception):
    """The base of every SDK error. `message` is the text; `inner_exception` what caused it."""

    def __init__(self, exception_message: str, inner_exception: Optional[BaseException] = None,
                 **kwargs: Any) -> None:
        super().__init__(exception_message)
        self.message = exception_message
        self.inner_exception = inner_exception
        self.details = kwargs

    def __str__(self) -> str:
        return self.message


class UserErrorException(AzureMLException):
    """A mistake in what the program asked for: a bad argument, an unknown name."""


class ProjectSystemException(AzureMLException):
    """No workspace could be found or reached."""


class WorkspaceException(AzureMLException):
    """A workspace operation failed."""


class ComputeTargetException(AzureMLException):
    """A compute target is absent, or creating, updating or deleting it failed."""


class ExperimentExecutionException(AzureMLException):
    """Submitting a run failed: its snapshot, environment or compute was refused."""


class ActivityFailedException(AzureMLException):
    """A run ended Failed or Canceled while `wait_for_completion(raise_on_error=True)` waited."""


class RunConfigurationException(AzureMLException):
    """A run configuration that cannot be run as given."""


class SnapshotException(AzureMLException):
    """The source folder could not be snapshotted (missing, or over the workspace's limits)."""


class ActivityCanceledException(AzureMLException):
    """A run was canceled."""


class RunEnvironmentException(AzureMLException):
    """Run.get_context() outside a run, where no offline run is allowed."""


class WebserviceException(AzureMLException):
    """A deployment operation failed."""


class TrainyardConnectionError(ProjectSystemException):
    """The workspace's daemon could not be reached or started."""
