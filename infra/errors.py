"""Errors the factory distinguishes: a bad input fails one sample; anything else is retried."""

from __future__ import annotations


class BadInput(ValueError):
    """An input that cannot be used, whatever the retries: a corrupt photo, an empty mask.

    The sample that needs it is recorded as failed with this reason; the run goes on.
    Names the input and the reason, so the summary says what to fix.
    """

    def __init__(self, name: str, reason: str, code: str = "bad_input"):
        self.name = name
        self.reason = reason
        self.code = code
        super().__init__(f"{name}: {reason}")
