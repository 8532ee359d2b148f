"""The one exception a user can cause: the CLI prints its message on one line and exits 2.

Bugs are not ``TapweightError``: they keep their tracebacks.
"""

import sys
from collections.abc import Callable


class TapweightError(Exception):
    """A mistake in the user's input (task, option, file); the message says how to fix it."""


class RankZeroFailed(TapweightError):
    """Rank 0's user error, raised on the other ranks too so that all stop; only rank 0
    prints it (`tapweight.distributed.on_main`)."""


def run_main(main: Callable[[], object]) -> None:
    """A ``python -m`` entry point: ``main()``, a ``TapweightError`` printed as one
    ``error:`` line with exit status 2, as the CLI does."""
    try:
        main()
    except TapweightError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
