"""The one exception a user can cause: the CLI prints its message on one line and exits 2.

Bugs are not ``TapweightError``: they keep their tracebacks.
"""


class TapweightError(Exception):
    """A mistake in the user's input (task, option, file); the message says how to fix it."""
