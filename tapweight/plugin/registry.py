"""Name tables for everything plugins register, with the checks that keep them sane.

Names are namespaced by domain (``mol.jpp``); inside a domain the short name (``jpp``)
resolves too. Registering a name twice is a `RegistrationError` that names both
plugins; the plugin loader reports it and carries on.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from tapweight.errors import TapweightError
from tapweight.plugin.specs import (
    BackboneSpec,
    DatasetSpec,
    Domain,
    EstimatorSpec,
    HeadSpec,
    LoggerSpec,
    MethodSpec,
    ObjectiveSpec,
    TaskSpec,
)

#: registry kind -> (hook that fills it, spec type)
KINDS: dict[str, tuple[str, type]] = {
    "domains": ("register_domains", Domain),
    "backbones": ("register_backbones", BackboneSpec),
    "objectives": ("register_objectives", ObjectiveSpec),
    "heads": ("register_heads", HeadSpec),
    "datasets": ("register_datasets", DatasetSpec),
    "tasks": ("register_tasks", TaskSpec),
    "loggers": ("register_loggers", LoggerSpec),
    "methods": ("register_methods", MethodSpec),
    "estimators": ("register_estimators", EstimatorSpec),
}
#: kinds whose names are plain words, not namespaced by domain: they serve every domain
PLAIN = ("domains", "loggers", "methods", "estimators")
CORE = "core"
#: the repository's root, when tapweight runs from a checkout (an editable install)
CHECKOUT = Path(__file__).resolve().parents[2]


def in_repository() -> dict[str, tuple[str, str]]:
    """The plugins kept in tapweight's repository, each a distribution of its own in a folder of
    ``plugins/``, when tapweight runs from a checkout: entry-point name (the domain) ->
    (top-level module, folder), read from each folder's ``pyproject.toml``."""
    found = {}
    for project in sorted((CHECKOUT / "plugins").glob("*/pyproject.toml")):
        meta = tomllib.loads(project.read_text()).get("project", {})
        for name, target in meta.get("entry-points", {}).get("tapweight", {}).items():
            found[name] = (target.split(":")[0].split(".")[0], str(project.parent.relative_to(CHECKOUT)))
    return found


def install_hint(domain: str) -> str:
    """How to get a domain of a plugin kept in the repository that is not loaded (``""`` for any
    other): its pip command, with the folder's path (relative when run inside the checkout)."""
    known = in_repository()
    if domain not in known:
        return ""
    module, folder = known[domain]
    if importlib.util.find_spec(module) is not None:
        return (f" {module} is installed but did not load: see `tapweight plugins` "
                "(and TAPWEIGHT_LOAD_PLUGINS, if set)")
    path = CHECKOUT / folder
    relative = os.path.relpath(path)
    folder = f"./{relative}" if not relative.startswith("..") else str(path)
    return f" It is the example plugin in tapweight's repository, installed on its own: pip install -e {folder}"


class RegistrationError(Exception):
    """A plugin registered something malformed or a name that is already taken."""


@dataclass
class Unavailable:
    """A plugin that could not load: why, and the command that fixes it (if known)."""

    plugin: str
    message: str
    fix: str = ""
    traceback: str = ""


@dataclass
class Registry:
    tables: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: {} for k in KINDS})
    owners: dict[tuple[str, str], str] = field(default_factory=dict)
    problems: list[Unavailable] = field(default_factory=list)

    # -- filling ---------------------------------------------------------------------------
    def add(self, kind: str, spec: Any, plugin: str) -> None:
        expected = KINDS[kind][1]
        if not isinstance(spec, expected):
            raise RegistrationError(f"{kind} takes {expected.__name__}, got {type(spec).__name__}")
        key = self._key(kind, spec)
        if key in self.tables[kind]:
            first = self.owners[(kind, key)]
            raise RegistrationError(f"{kind[:-1]} '{key}' is already registered by plugin '{first}'")
        self.tables[kind][key] = spec
        self.owners[(kind, key)] = plugin

    def _key(self, kind: str, spec: Any) -> str:
        if kind in PLAIN:
            if not spec.name or any(c in spec.name for c in "./:"):
                raise RegistrationError(f"{kind[:-1]} name '{spec.name}' must be a plain word (no '.', '/' or ':')")
            return spec.name
        if kind == "tasks":
            self._check_domain(spec.domain, spec.key)
            return spec.key
        prefix = spec.name.split(".", 1)[0]
        if "." not in spec.name:
            raise RegistrationError(f"{kind[:-1]} '{spec.name}' must be namespaced: '<domain>.{spec.name}'")
        self._check_domain(prefix, spec.name)
        return spec.name

    def _check_domain(self, domain: str, name: str) -> None:
        if domain != CORE and domain not in self.tables["domains"]:
            raise RegistrationError(f"'{name}' names domain '{domain}', which no plugin registered")

    # -- lookup ----------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.tables[kind])

    def get(self, kind: str, name: str, domain: str | None = None) -> Any:
        """The spec called ``name``; a short name resolves inside ``domain``, then ``core``."""
        table = self.tables[kind]
        for candidate in (name, f"{domain}.{name}", f"{CORE}.{name}"):
            if candidate in table:
                return table[candidate]
        if kind == "domains":
            self.require_domain(name)
        hint = difflib.get_close_matches(name, list(table), n=1)
        hint_text = f" Did you mean '{hint[0]}'?" if hint else ""
        raise TapweightError(
            f"unknown {kind[:-1]} '{name}'.{hint_text} See `tapweight list {kind}`."
        )

    def require_domain(self, name: str) -> Domain:
        """The domain, or a one-line error saying how to make it available."""
        if name in self.tables["domains"]:
            return self.tables["domains"][name]
        for problem in self.problems:
            if problem.plugin == name:
                fix = f" Fix: {problem.fix}" if problem.fix else ""
                raise TapweightError(f"domain '{name}' is unavailable: {problem.message}.{fix}")
        known = ", ".join(self.names("domains")) or "none"
        hint = install_hint(name) or " See `tapweight plugins`."
        raise TapweightError(f"unknown domain '{name}' (available: {known}).{hint}")

    def task(self, domain: str, name: str) -> TaskSpec:
        self.require_domain(domain)
        key = f"{domain}/{name}"
        if key not in self.tables["tasks"]:
            mine = [k.split("/", 1)[1] for k in self.names("tasks") if k.startswith(f"{domain}/")]
            hint = difflib.get_close_matches(name, mine, n=1)
            hint_text = f" Did you mean '{hint[0]}'?" if hint else ""
            raise TapweightError(
                f"unknown task '{name}' in domain '{domain}'.{hint_text} Tasks: {', '.join(mine)}"
            )
        return self.tables["tasks"][key]
