"""Run ``tapweight`` command lines one after another in this fresh process, the toy plugin
registered, each in its own working folder with its own stdout and stderr captured at the
file descriptors: what a library's own handler, RDKit's C++ log or a Python warning prints
is caught too, as a user's terminal would show it (pytest's capsys sees ``sys.stderr`` only).

``python tests/run_commands.py JOBS.json``; JOBS.json is a list of ``{"argv": [...], "cwd":
FOLDER, "out": FOLDER}``; each job's exit code goes to ``out/code``, its output to
``out/stdout`` and ``out/stderr``.
"""

import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tapweight.plugin import manager as plugins  # noqa: E402
from tests import toy_plugin  # noqa: E402
from tests.test_cli import cli  # noqa: E402


def captured(argv: list[str], cwd: Path, out: Path) -> int:
    """``cli(argv)`` in ``cwd``, fds 1 and 2 into ``out/stdout`` and ``out/stderr``."""
    saved = os.dup(1), os.dup(2)
    os.chdir(cwd)
    with open(out / "stdout", "wb") as stdout, open(out / "stderr", "wb") as stderr:
        os.dup2(stdout.fileno(), 1)
        os.dup2(stderr.fileno(), 2)
        try:
            return cli(*argv)
        except Exception:  # a traceback is a finding: the test reads it in the stderr file
            traceback.print_exc()
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)


if __name__ == "__main__":
    plugins.register_plugin(toy_plugin, "toy")
    for job in json.loads(Path(sys.argv[1]).read_text()):
        out = Path(job["out"])
        code = captured(job["argv"], Path(job["cwd"]), out)
        (out / "code").write_text(str(code))
