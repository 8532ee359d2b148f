"""The generated parts of the docs site: an MkDocs hook (mkdocs.yml, ``hooks:``).

Two pages carry a marker that this hook replaces with a reference while the site is built,
so that the reference is read from the code and cannot drift from it (and is never committed):

- ``<!-- reference: cli -->`` (command-line.md): every command of the Typer app
  ``tapweight.commands.cli:app`` with its usage, arguments and options, as ``--help`` gives them;
- ``<!-- reference: config -->`` (configuration.md): every config key of tapweight/config.py's
  dataclasses, then the built-in domains' options, with its type, default and meaning. The
  meaning is the field's ``setting(default, "meaning")`` text; a field a subclass redefines
  without one keeps its parent's. Sources are parsed, not imported (a domain's extra need not
  be installed to build the site).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: (key prefix, file, dataclass) of the domain options documented after the core's keys
DOMAIN_OPTIONS = [
    ("mol", "tapweight_mol/options.py", "MolOptions"),
    ("nlp", "tapweight_nlp/plugin.py", "NlpOptions"),
    ("tabular", "plugins/tapweight-tabular/tapweight_tabular/options.py", "TabularOptions"),
]


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- reference: cli -->" in markdown:
        markdown = markdown.replace("<!-- reference: cli -->", cli_reference())
    if "<!-- reference: config -->" in markdown:
        markdown = markdown.replace("<!-- reference: config -->", config_reference())
    return markdown


def cell(text: str) -> str:
    """Markdown for a table cell: reST's double backticks as single ones, pipes escaped, and
    <...> outside code escaped (else read as HTML)."""
    parts = text.replace("``", "`").replace("|", "\\|").split("`")
    parts[::2] = [p.replace("<", "&lt;").replace(">", "&gt;") for p in parts[::2]]
    return " ".join("`".join(parts).split())


def cli_reference() -> str:
    import typer

    from tapweight.commands.cli import app

    group = typer.main.get_command(app)
    root = group.make_context("tapweight", [], resilient_parsing=True)
    out = [f"Usage: `tapweight [OPTIONS] COMMAND [ARGS]...` {group.help}", "", *_params(group, root)]
    for name, command in group.commands.items():
        ctx = command.make_context(name, [], parent=root, resilient_parsing=True)
        args = [p.name.upper() if p.required else f"[{p.name.upper()}]"
                for p in command.get_params(ctx) if p.param_type_name == "argument"]
        out += [f"### `tapweight {name}`", "", " ".join(command.help.split()), "",
                f"Usage: `tapweight {name} [OPTIONS] {' '.join(args)}`", "", *_params(command, ctx)]
    return "\n".join(out)


def _params(command, ctx) -> list[str]:
    rows = ["| argument or option | meaning |", "|---|---|"]
    for param in command.get_params(ctx):
        name, meaning = param.get_help_record(ctx)
        rows.append(f"| `{name}` | {cell(meaning)} |")
    return [*rows, ""]


def config_reference() -> str:
    core = _dataclasses(ROOT / "tapweight/config.py")
    out = ["## Run", "", *_table(core, "RunConfig", "")]
    for name, annotation, _, _ in _fields(core, "RunConfig"):
        if annotation in core:  # a level: its own table
            out += [f"## `{name}.*`", "", core[annotation]["doc"], "", *_table(core, annotation, f"{name}.")]
    for prefix, path, cls in DOMAIN_OPTIONS:
        options = _dataclasses(ROOT / path)
        intro = options[cls]["doc"] or f"`--set {prefix}.<option>=...`"
        out += [f"## `{prefix}.*`: domain options", "", f"From `{path}`. {cell(intro)}", "",
                *_table(options, cls, f"{prefix}.")]
    return "\n".join(out)


def _table(classes: dict, cls: str, prefix: str) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, annotation, default, meaning in _fields(classes, cls):
        if annotation not in classes and name != "options":  # levels and options have their own tables
            rows.append(f"| `{prefix}{name}` | `{annotation}` | `{default}` | {cell(meaning)} |")
    return [*rows, ""]


def _fields(classes: dict, cls: str) -> list[tuple[str, str, str, str]]:
    """(name, type, default, meaning) of a dataclass's fields, its bases' first."""
    merged: dict[str, tuple[str, str, str, str]] = {}
    for base in classes[cls]["bases"]:
        merged.update((f[0], f) for f in _fields(classes, base))
    for name, annotation, default, meaning in classes[cls]["fields"]:
        inherited = merged.get(name, ("", "", "", ""))[3]  # a redefinition without a text keeps its base's
        merged[name] = (name, annotation, default, meaning or inherited)
    return list(merged.values())


def _dataclasses(path: Path) -> dict[str, dict]:
    """Each class of a module: its bases (in the module), docstring and annotated fields."""
    source = path.read_text()
    classes = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = []
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                value, meaning = item.value, ""
                if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "setting":
                    value, meaning = value.args[0], ast.literal_eval(value.args[1])
                fields.append((item.target.id, ast.unparse(item.annotation), _default(source, value), meaning))
        bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
        doc = " ".join((ast.get_docstring(node) or "").split())
        classes[node.name] = {"bases": [b for b in bases if b in classes], "doc": doc, "fields": fields}
    return classes


def _default(source: str, value: ast.expr | None) -> str:
    """A field's default as written: ``field(default_factory=...)`` as the value it makes."""
    if value is None:
        return ""
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
        factory = next(k.value for k in value.keywords if k.arg == "default_factory")
        if isinstance(factory, ast.Lambda):
            return ast.get_source_segment(source, factory.body)
        return {"list": "[]", "dict": "{}"}.get(factory.id, f"{factory.id}()")
    return re.sub(r"\s+", " ", ast.get_source_segment(source, value))
