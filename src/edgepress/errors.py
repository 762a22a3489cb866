"""One small hierarchy of errors. Each message names what was wrong and how to fix it.

The CLI prints ``str(error)`` as one line and exits with ``exit_code``; a traceback is shown
only with ``--debug``. Code that raises these never has to think about presentation.
"""


class EdgepressError(Exception):
    """Base class: an error the user can fix; the message says how."""

    exit_code = 1


class RecipeError(EdgepressError):
    """The recipe or a command-line override is invalid."""

    exit_code = 2


class DataError(EdgepressError):
    """A dataset could not be read or is inconsistent."""


class ModelError(EdgepressError):
    """A model could not be found, is unsafe to load, or does not fit the task."""


class StageError(EdgepressError):
    """A stage failed for a reason the user can act on."""


class TargetError(EdgepressError):
    """A benchmark target is missing, not set up, or unreachable."""


class RunInUseError(EdgepressError):
    """Another edgepress process holds the run folder."""
