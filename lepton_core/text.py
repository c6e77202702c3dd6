"""Small helpers for the text lepton shows people (reports, logs, the command line)."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """``1 object``, ``3 objects``, ``0 objects``: a count with its noun in the right number
    (nouns whose plural adds an s)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
