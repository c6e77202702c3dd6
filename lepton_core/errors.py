"""Errors that reach the user as one clear line (the CLI maps them to exit codes)."""

from __future__ import annotations


class LeptonError(Exception):
    """An error with a message fit to show a user as is; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(LeptonError):
    """Bad input from the user (a spec, a path, an option): exit code 2, never retried."""

    exit_code = 2


def is_transient(exc: BaseException) -> bool:
    """True for failures that may pass if tried again (a server down, throttling, a timeout);
    False for bad input, which fails the same way every time."""
    if isinstance(exc, UsageError):
        return False
    if getattr(exc, "transient", False):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))
