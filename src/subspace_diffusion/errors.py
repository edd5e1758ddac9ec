"""Exception types raised by the library.

Every error a user can cause derives from :class:`SubspaceDiffusionError`, so
the command line can print its message without a traceback.
"""


class SubspaceDiffusionError(Exception):
    """Base class of the library's own errors."""


class ConfigError(SubspaceDiffusionError, ValueError):
    """Invalid setting: an unknown name, an out-of-range value, a bad combination."""


class DataError(SubspaceDiffusionError):
    """Missing, unreadable or corrupt dataset file, or an impossible data split."""


class GraphError(SubspaceDiffusionError, ValueError):
    """Invalid graph: disconnected, wrong size, or an unreadable edge list."""


class InvalidCombinationMatrixError(SubspaceDiffusionError, ValueError):
    """Combination matrix that violates a condition the strategy relies on."""


class InfeasibleSubspaceError(SubspaceDiffusionError):
    """No valid combination matrix exists for this subspace on this graph."""


class DivergenceError(SubspaceDiffusionError, FloatingPointError):
    """Iterates became NaN or infinite during training."""
