"""How a server-side exception shows on the wire, in one table shared by both front ends.

Each row is (exception class, HTTP status, canonical status code name). The gRPC front end answers
``grpc.StatusCode[code]``; the HTTP bridge answers ``status`` with ``code`` in its problem+json body.
Rows are tried in order, so subclasses come before ``PropForgeError``.
"""
from __future__ import annotations

from propforge.errors import BackendUnavailable, InputError, PropForgeError

from .jobs import JobNotFound, QueueFull, ResultNotReady, ShuttingDown

ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (InputError, 400, "INVALID_ARGUMENT"),
    (QueueFull, 429, "RESOURCE_EXHAUSTED"),
    (JobNotFound, 404, "NOT_FOUND"),
    (ResultNotReady, 409, "FAILED_PRECONDITION"),
    (ShuttingDown, 503, "UNAVAILABLE"),
    (BackendUnavailable, 400, "FAILED_PRECONDITION"),
    (PropForgeError, 400, "FAILED_PRECONDITION"),
)


def lookup(exc: BaseException) -> tuple[int, str] | None:
    """(HTTP status, code name) of the first row ``exc`` is an instance of; None when no row matches."""
    for cls, status, code in ERRORS:
        if isinstance(exc, cls):
            return status, code
    return None
