"""``launch_toy.py`` with the steps' collectives limited to ``STEP`` seconds and rank 0's final
fine-tune slowed to ``SLOW`` seconds past it: ``python tests/launch_slow_rank_zero.py STEP SLOW
run toy blobs ...`` under ``torchrun`` (the other ranks wait for rank 0 that long)."""

import runpy
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tapweight import distributed  # noqa: E402
from tapweight.job import seed  # noqa: E402

step, slow = float(sys.argv[1]), float(sys.argv[2])
distributed.STEP_TIMEOUT = timedelta(seconds=step)
if "--wait-as-long" in sys.argv:  # the ranks wait no longer than a step: the test's failing case
    sys.argv.remove("--wait-as-long")
    distributed.RANK_ZERO_WAIT = distributed.STEP_TIMEOUT
refinetune = seed.refinetune


def slowed(*args, **kwargs):
    time.sleep(slow)
    return refinetune(*args, **kwargs)


seed.refinetune = slowed
sys.argv = [str(Path(__file__).with_name("launch_toy.py")), *sys.argv[3:]]
runpy.run_path(sys.argv[0], run_name="__main__")
