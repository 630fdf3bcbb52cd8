"""``UsageError``: the user's own mistake (a flag value, a path, a name), found by our
code before any work starts or where only the user can fix it.

It lives here, in the bottom layer, so that every layer (``ingest``, ``serving``,
``components``, ``pipeline``, ``cli``) can raise it without importing upwards. The
command line turns it, and only it among ``ValueError``s, into one line on stderr and
exit code 2; any other ``ValueError`` is a bug of ours and exits 1 (see
``cli/errors.py``).
"""

from __future__ import annotations


class UsageError(ValueError):
    """A mistake in what the user gave. The message names the flag (or file, or
    field) and the value, and says what was expected:
    ``--min-accuracy 1.5: expected a number in [0, 1]``.

    A ``ValueError``, so code that catches ``ValueError`` keeps working."""


def usage_error(flag: str, value: object, expected: str) -> UsageError:
    """``UsageError("FLAG VALUE: EXPECTED")``, with the value quoted when it would
    otherwise be invisible or ambiguous (empty, or holding white space)."""
    text = str(value)
    shown = (
        text if text and not any(c.isspace() or not c.isprintable() for c in text) else repr(text)
    )
    return UsageError(f"{flag} {shown}: {expected}")
