"""Errors a user can cause. The CLI and servers print ``str(err)`` and never a traceback for these."""


class PropForgeError(Exception):
    """Base class of errors with a user-facing message."""


class InputError(PropForgeError, ValueError):
    """Bad input image or bad option value; the message names the problem."""


class ModelLoadError(PropForgeError):
    """A checkpoint could not be found or does not match what the code expects."""


class BackendUnavailable(PropForgeError):
    """The requested backend cannot run here (no GPU, no weights, not implemented)."""


class Cancelled(PropForgeError):
    """Raised from a progress callback to stop a generation at the next stage or sampler step."""
