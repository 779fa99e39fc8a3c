"""The one exception type users see.

A `UserError` is a problem with the user's input or environment (a missing file, a bad checksum,
an empty corpus). The CLI prints its message on one line and exits with status 2, with no
traceback. Its message names the file or source and the problem.
"""


class UserError(Exception):
    """Bad input or environment; the message is shown to the user as one line."""


CONFIG_VALUE_ERRORS = (KeyError, TypeError, ValueError, OverflowError)
"""What reading a parsed JSON config into typed values raises when a value is missing or malformed: a missing
key, a wrong type, a bad literal, or JSON's `Infinity` where an integer belongs (`int(inf)` raises
OverflowError). Config loaders catch these and raise a UserError naming the file."""
