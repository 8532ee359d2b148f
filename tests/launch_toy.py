"""``tapweight`` with the toy plugin registered, for tests that need a real process
(kill and resume, torchrun): ``python tests/launch_toy.py run toy blobs ...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tapweight.commands.cli import main  # noqa: E402
from tapweight.plugin import manager as plugins  # noqa: E402
from tests import toy_plugin  # noqa: E402

plugins.register_plugin(toy_plugin, "toy")
main(sys.argv[1:])
