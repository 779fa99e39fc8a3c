"""The one exception type users see.

A `UserError` is a problem with the user's input or environment (a missing file, a bad checksum,
an empty corpus). The CLI prints its message on one line and exits with status 2, with no
traceback. Its message names the file or source and the problem.
"""


class UserError(Exception):
    """Bad input or environment; the message is shown to the user as one line."""
