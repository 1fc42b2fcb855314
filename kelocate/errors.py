"""User-facing errors.

A `KelocateError` is a user mistake (bad path, subject not in prompt, malformed file, ...): its message
is one line that names the problem and the fix. The CLI prints it and exits with code 2, without a
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class KelocateError(ValueError):
    """A mistake in what the user asked for; the message says what is wrong and how to fix it."""


class SubjectNotFoundError(KelocateError):
    """The subject string does not occur in the prompt."""
