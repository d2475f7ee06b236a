"""Typed exceptions: every user-facing failure is a ``ScanlearnError`` with a one-line message.

The CLI turns any ``ScanlearnError`` into one line on stderr and exit code 2; the API raises it.
"""


class ScanlearnError(Exception):
    """Base class: a problem the user can fix, with the fix named in the message."""


class ConfigError(ScanlearnError, ValueError):
    """A preset, YAML file or ``--set`` override is invalid."""


class DataError(ScanlearnError, ValueError):
    """Data is missing, empty, unreadable or too small for the requested settings."""


class CheckpointError(ScanlearnError):
    """A checkpoint is missing, corrupt or belongs to another model."""


class StageOrderError(ScanlearnError):
    """A stage was started before the stage whose output it needs."""


class RunMismatchError(ScanlearnError):
    """A run directory holds work made with a different config or different data."""


class TrainingError(ScanlearnError):
    """Training diverged (NaN/inf loss) or produced nothing usable."""


class DiskFullError(ScanlearnError, OSError):
    """The disk filled up while writing; the file being replaced is left intact."""


class ScanlearnWarning(UserWarning):
    """Something the user should know that does not stop the run (e.g. a corrupt checkpoint skipped)."""


class ClusterCollapseWarning(ScanlearnWarning):
    """Fewer distinct clusters were used than requested (like scikit-learn's ConvergenceWarning)."""


class RunDirError(ScanlearnError):
    """A --run-dir is not a scanlearn run directory (no marker) and holds other files; it is left untouched."""


class UnsafeFileError(CheckpointError):
    """A file holds pickled Python objects that could run code when loaded; it is refused unread."""


class RunBusyError(ScanlearnError):
    """Another scanlearn command holds the run directory's lock."""


class BudgetError(ScanlearnError):
    """A ``--time-budget`` cannot buy a minimal run on this machine, or is not a duration."""
