"""The plugin manager: entry-point discovery, isolation of broken plugins, the registry.

Built-in domains (``tapweight_mol``, ``tapweight_nlp``) come in through the ``tapweight``
entry-point group exactly as a third-party plugin does. ``TAPWEIGHT_LOAD_PLUGINS`` (a
comma-separated list of entry-point names; empty for none) restricts which are loaded.

A plugin that fails to import (even by raising ``SystemExit`` or ``KeyboardInterrupt``),
implements a hook that has no spec, or registers a malformed or duplicate name is recorded
as a problem and skipped: the others still load.

First come, first served, with the built-ins first: the ``tapweight`` distribution's own
entry points load before any other, every registry is filled plugin by plugin in that
order (whatever order pluggy calls hooks in), and a name that is taken stays with its
first owner while the newcomer is reported and dropped. An entry point of another
distribution named like a built-in domain is never loaded in its place.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import os
import traceback

import pluggy
from packaging.requirements import Requirement

from tapweight import interrupts
from tapweight.plugin import builtins, hookspecs
from tapweight.plugin.registry import CORE, KINDS, RegistrationError, Registry, Unavailable

ENTRY_POINT_GROUP = "tapweight"
ALLOW_ENV = "TAPWEIGHT_LOAD_PLUGINS"

BUILTIN_DISTRIBUTION = "tapweight"

pm = pluggy.PluginManager("tapweight")
pm.add_hookspecs(hookspecs)
pm.register(builtins, name=CORE)
_load_problems: list[Unavailable] = []
_loaded = False
_order: dict[str, tuple[int, int]] = {CORE: (0, 0)}  # plugin -> (0 built-in | 1 other, arrival)
_versions: dict[str, str] = {}  # plugin -> version of the distribution its entry point came from


def _missing_extra(ep: md.EntryPoint) -> tuple[list[str], str]:
    """Requirements of the extra named like the entry point that are not installed."""
    dist = ep.dist
    if dist is None:
        return [], ""
    missing = []
    for line in dist.requires or []:
        req = Requirement(line)
        in_extra = req.marker is not None and req.marker.evaluate({"extra": ep.name})
        if not in_extra or req.marker.evaluate({"extra": ""}):
            continue
        try:
            md.version(req.name)
        except md.PackageNotFoundError:
            missing.append(req.name)
    return missing, f"pip install '{dist.metadata['Name']}[{ep.name}]'"


def _unknown_hooks(plugin: object) -> list[str]:
    """Hook implementations of ``plugin`` that match no spec (a misspelt hook name)."""
    return [caller.name for caller in pm.get_hookcallers(plugin) or [] if caller.spec is None]


def _distribution(ep: md.EntryPoint) -> str:
    return ep.dist.metadata["Name"] if ep.dist is not None else "an unknown distribution"


def _is_builtin(ep: md.EntryPoint) -> bool:
    return _distribution(ep) == BUILTIN_DISTRIBUTION


def load_entry_points() -> None:
    """Import and register every allowed entry point once, built-ins first; record what fails."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    allow = os.environ.get(ALLOW_ENV)
    allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
    found = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: not _is_builtin(e))
    builtin_names = {ep.name for ep in found if _is_builtin(ep)}
    for ep in found:
        if allowed is not None and ep.name not in allowed:
            continue
        if not _is_builtin(ep) and (ep.name in builtin_names or pm.has_plugin(ep.name)):
            owner = "tapweight's built-in domain" if ep.name in builtin_names else "another plugin"
            _load_problems.append(Unavailable(
                f"{ep.name} ({_distribution(ep)})",
                f"entry point '{ep.name}' of {_distribution(ep)} is not loaded: the name belongs to "
                f"{owner}; rename the entry point"))
            continue
        if pm.has_plugin(ep.name):
            continue
        module = _import(ep)
        if module is not None:
            register_plugin(module, ep.name, builtin=_is_builtin(ep))
            if ep.dist is not None and ep.dist.metadata.get("Version"):
                _versions[ep.name] = ep.dist.metadata["Version"]


def _import(ep: md.EntryPoint):
    """The entry point's module, or None with the reason recorded."""
    try:
        return ep.load()
    except ModuleNotFoundError as err:
        missing, fix = _missing_extra(ep)
        if missing:
            message = f"missing {', '.join(missing)} (module '{err.name}')"
            _load_problems.append(Unavailable(ep.name, message, fix))
        else:
            _load_problems.append(
                Unavailable(ep.name, f"import failed: {err}", traceback=traceback.format_exc()))
    except Exception as err:  # a broken plugin must not take the others down
        _load_problems.append(
            Unavailable(ep.name, f"import failed: {err!r}", traceback=traceback.format_exc()))
    except (SystemExit, KeyboardInterrupt) as err:  # nor end the command line
        if isinstance(err, KeyboardInterrupt) and interrupts.last_received is not None:
            raise  # the user's own Ctrl-C
        _load_problems.append(Unavailable(
            ep.name, f"import raised {type(err).__name__}({', '.join(map(repr, err.args))})",
            traceback=traceback.format_exc()))
    return None


def register_plugin(plugin: object, name: str, builtin: bool = False) -> bool:
    """Register ``plugin``; refuse it (recording why) if it implements unknown hooks.

    Built-in plugins rank before all others in every registry, whenever they arrive."""
    pm.register(plugin, name=name)
    _order.setdefault(name, (0 if builtin else 1, len(_order)))
    unknown = _unknown_hooks(plugin)
    if unknown:
        pm.unregister(plugin)
        specs = [k for k in dir(hookspecs) if k.startswith("register_")]
        hints = []
        for hook in unknown:
            close = difflib.get_close_matches(hook, specs, n=1)
            hints.append(f"'{hook}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        _load_problems.append(Unavailable(name, f"implements unknown hook {', '.join(hints)}"))
        return False
    return True


def build_registry() -> Registry:
    """Ask every registered plugin, hook by hook, what it provides."""
    load_entry_points()
    registry = Registry(problems=list(_load_problems))
    failed: set[str] = set()
    for kind, (hook_name, _) in KINDS.items():
        for impl in in_registration_order(getattr(pm.hook, hook_name).get_hookimpls()):
            if impl.plugin_name in failed:
                continue
            staged = Registry(tables={k: dict(v) for k, v in registry.tables.items()},
                              owners=dict(registry.owners))
            try:
                impl.function(register=lambda spec, r=staged, k=kind, n=impl.plugin_name: r.add(k, spec, n))
            except RegistrationError as err:
                registry.problems.append(Unavailable(impl.plugin_name, f"registration refused: {err}"))
                failed.add(impl.plugin_name)
                continue
            except (Exception, SystemExit) as err:
                registry.problems.append(Unavailable(
                    impl.plugin_name, f"{hook_name} raised {err!r}", traceback=traceback.format_exc()))
                failed.add(impl.plugin_name)
                continue
            registry.tables, registry.owners = staged.tables, staged.owners
    if failed:  # a half-registered plugin is worse than none: drop what it did register
        for key, owner in list(registry.owners.items()):
            if owner in failed:
                del registry.owners[key]
                del registry.tables[key[0]][key[1]]
    return registry


def in_registration_order(impls: list) -> list:
    """Hook implementations, first-registered plugin first (pluggy calls the last first)."""
    return sorted(impls, key=lambda impl: _order.get(impl.plugin_name, (1, len(_order))))


def plugin_report() -> list[dict]:
    """What ``tapweight plugins`` prints: one entry per plugin, loaded or not."""
    registry = build_registry()
    rows = []
    for name, plugin in pm.list_name_plugin():
        version = _versions.get(name) or _version_of(plugin)
        provides = {kind: sorted(k for (kd, k), owner in registry.owners.items()
                                 if owner == name and kd == kind) for kind in KINDS}
        rows.append({
            "name": name,
            "version": version,
            "hooks": sorted(c.name for c in pm.get_hookcallers(plugin) or []),
            "provides": {k: v for k, v in provides.items() if v},
            "status": "loaded",
        })
    by_name = {row["name"]: row for row in rows}
    for problem in registry.problems:
        row = by_name.setdefault(problem.plugin, {"name": problem.plugin, "hooks": []})
        row["status"] = "unavailable" if problem.fix else "error"
        row["problem"] = problem.message
        if problem.fix:
            row["fix"] = problem.fix
    return sorted(by_name.values(), key=lambda r: (r["name"] != CORE, r["name"]))


def _version_of(module: object) -> str | None:
    """The version of the distribution that holds ``module`` (a plugin registered in code,
    not through an entry point; slow: it reads every installed distribution's file list)."""
    top = getattr(module, "__name__", "").split(".")[0]
    if top == "tapweight":
        return md.version("tapweight")
    for dist in md.packages_distributions().get(top, []):
        return md.version(dist)
    return None
