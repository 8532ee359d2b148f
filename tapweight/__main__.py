"""``python -m tapweight`` (and ``torchrun -m tapweight``) runs the command line."""

from tapweight.commands.cli import main

main()
