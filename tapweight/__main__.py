"""``python -m tapweight`` (and ``torchrun -m tapweight``) runs the command line."""

from tapweight.cli import main

main()
