"""Imports put off until they are needed, so that the command line starts in a blink.

Every ``tapweight`` command, ``--help`` included, loads the plugins and asks them what they
register; only a run calls what they registered. A plugin's ``plugin.py`` therefore
registers `deferred` stand-ins for its builders and loaders (``deferred("pkg.mod:fn")``
imports ``pkg.mod`` on the first call, not at registration) and checks that its extra is
installed with `require`, which finds a module without importing it. Importing torch,
RDKit or transformers takes seconds; finding them takes microseconds.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any


class deferred:  # noqa: N801  (reads like the function it stands for)
    """A callable standing for ``module:attribute``; the module is imported at the first call.

    ``deferred("tapweight_mol.data:build_data")`` registers like ``build_data`` itself and
    pickles by name (DataLoader workers, ``spawn``)."""

    def __init__(self, target: str):
        module, _, attribute = target.partition(":")
        if not module or not attribute:
            raise ValueError(f"deferred() takes 'module:attribute', got '{target}'")
        self.target = target
        self._function = None

    def resolve(self) -> Any:
        """The object named by the target, importing its module if need be."""
        if self._function is None:
            module, _, attribute = self.target.partition(":")
            value = importlib.import_module(module)
            for part in attribute.split("."):
                value = getattr(value, part)
            self._function = value
        return self._function

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __reduce__(self):
        return deferred, (self.target,)

    def __repr__(self) -> str:
        return f"deferred({self.target!r})"


def require(*modules: str) -> None:
    """Raise ``ModuleNotFoundError`` (naming the module) unless every top-level module in
    ``modules`` is installed; nothing is imported. In a plugin's ``plugin.py`` it makes a
    missing extra show up as the plugin loader's "pip install 'pkg[extra]'" line."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
