"""The README and the documentation site (mkdocs.yml, docs/): short README, set-up block first,
every page reachable, every section of the former long README kept, and a strict build whose
generated references name every command and config key."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tapweight import config

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"

#: the sections of the README of release 0.1.0 (1,104 lines), each now a heading of some page
SECTIONS = [
    "Set-up: two commands", "The first hour", "Run", "Watch", "Interrupt and resume", "Look back",
    "Predict", "Export", "Compare methods", "From Python", "The command line",
    "Starting points: `--init` and `--model`", "Checkpoint size", "Base pretraining: `tapweight pretrain`",
    "Reliability", "The method", "Results on this project's CPU machines",
    "Molecules from a pretrained start: a base encoder, then none / uniform / tapweight",
    "Text from a pretrained start: SST-2 from a base made on its own sentences",
    "Molecules: BBBP (scaffold split), test ROC-AUC",
    "Text: SST-2 (GLUE protocol: dev as test, train split 8:1), test accuracy",
    "Molecules, regression: FreeSolv (scaffold split), test RMSE in kcal/mol",
    "Does learning λ work? Known-answer checks", "Tabular (breast-cancer, digits): 5 seeds, 300 steps",
    "BBBP (real molecules, random-init ResNet18): 5 seeds, 100 steps", "Plugins", "Speed",
    "Several GPUs, several machines",
]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```", text, flags=re.S | re.M)


def headings(text: str) -> list[str]:
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return [h.strip() for h in re.findall(r"^#{1,6} (.+?)(?:\{#[\w-]+\})?$", prose, flags=re.M)]


def nav_pages(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    items = nav.values() if isinstance(nav, dict) else nav
    return [page for item in items for page in nav_pages(item)]


def test_readme_is_short_and_starts_with_the_two_set_up_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    setup = code_blocks(text)[0]
    commands = [line for line in setup.splitlines() if line and not line.startswith("#")]
    assert commands == ["pip install -e '.[mol]' && tapweight run mol bbbp --data ../shared/data/moleculenet/bbbp.csv",
                        "pip install nox && nox"]
    assert setup in code_blocks((DOCS / "installation.md").read_text())  # the site shows the same


def test_readme_links_into_the_docs_resolve():
    links = re.findall(r"\]\((docs/[^)#]+)", README.read_text())
    assert links and all((ROOT / link).is_file() for link in links), links


def test_every_page_is_in_the_navigation_and_every_nav_entry_exists():
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = nav_pages(site["nav"])
    assert sorted(pages) == sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))


def test_every_section_of_the_former_readme_is_on_a_page():
    found = {h for page in DOCS.rglob("*.md") for h in headings(page.read_text())}
    assert [s for s in SECTIONS if s not in found] == []


def test_site_builds_strict_with_generated_references(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (site / "command-line" / "index.html").read_text()
    for command in ("run", "resume", "pretrain", "list", "plugins", "show", "predict", "export", "compare"):
        assert f"<code>tapweight {command}</code>" in cli, command
    keys = (site / "configuration" / "index.html").read_text()
    levels = {f.name for f in dataclasses.fields(config.RunConfig) if dataclasses.is_dataclass(f.default_factory)}
    for field in dataclasses.fields(config.RunConfig):
        if field.name in levels:
            names = [f"{field.name}.{f.name}" for f in dataclasses.fields(field.default_factory)]
        else:
            names = [field.name] if field.name != "options" else []
        for name in names:
            assert f"<code>{name}</code>" in keys, name
    for page in ("reference", "getting-started", "known-answer"):
        assert (site / page / "index.html").is_file()
    assert "tapweight.plugin.specs" in (site / "reference" / "index.html").read_text()
