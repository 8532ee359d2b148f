"""The one exception a user can cause: the CLI prints its message on one line and exits 2.

Bugs are not ``TapweightError``: they keep their tracebacks.
"""


class TapweightError(Exception):
    """A mistake in the user's input (task, option, file); the message says how to fix it."""


class RankZeroFailed(TapweightError):
    """Rank 0's user error, raised on the other ranks too so that all stop; only rank 0
    prints it (:func:`tapweight.distributed.on_main`)."""
