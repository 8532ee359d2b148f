"""What the user pages say, checked against their sources: result tables against the files in
docs/results/, one description of ``auto``, no project history outside the changelog, no
path that only exists on this project's machines, no Sphinx roles in the docstrings the API
reference renders, and a home page that starts with an install and a command."""

import contextlib
import csv
import json
import math
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
#: a result table is preceded by this comment naming its file(s) in docs/results/
MARKER = re.compile(r"^<!-- numbers from: (.+?) -->\n\n?((?:\|.*\n)+)", re.M)
#: a decimal number in a cell, with its sign (ASCII or Unicode minus)
NUMBER = re.compile(r"(?<![\w.])([−+-]?)(\d[\d,]*\.\d+)")


def numbers_of(value) -> list[float]:
    """Every number a results file holds, and what its tables derive from them: each list's
    minimum and maximum, and bytes in MiB and GiB."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        x = float(value)
        return [x, x / 2 ** 20, x / 2 ** 30]
    if isinstance(value, dict):
        return [x for v in value.values() for x in numbers_of(v)]
    if isinstance(value, list):
        own = [float(v) for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return [x for v in value for x in numbers_of(v)] + ([min(own), max(own)] if own else [])
    return []


def read_results(name: str) -> list[float]:
    path = DOCS / "results" / name
    if path.suffix == ".json":
        return numbers_of(json.loads(path.read_text()))
    found = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for cell in row.values():
                with contextlib.suppress(TypeError, ValueError):
                    found.append(float(cell))
    return [x for x in found if math.isfinite(x)]


def mismatches(table: str, known: list[float]) -> list[str]:
    """The cells of ``table`` (after the first column) holding a number that no value of
    ``known`` rounds to at the cell's precision."""
    wrong = []
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for cell in cells[1:]:
            for sign, digits in NUMBER.findall(cell):
                value = float(digits.replace(",", "")) * (-1 if sign in "−-" and sign else 1)
                tolerance = 0.5 * 10 ** -len(digits.split(".")[1]) + 1e-12
                if not any(abs(value - x) <= tolerance for x in known):
                    wrong.append(f"{cells[0]}: {sign}{digits}")
    return wrong


def marked_tables() -> list[tuple[str, str, str]]:
    return [(page.name, files, table) for page in PAGES
            for files, table in MARKER.findall(page.read_text())]


def test_every_marked_table_matches_its_results_files():
    tables = marked_tables()
    assert len(tables) >= 8  # the benchmark, estimator, GPU and comparison tables
    for page, files, table in tables:
        known = [x for name in files.split() for x in read_results(name)]
        assert known, (page, files)
        assert mismatches(table, known) == [], (page, files)


def test_the_table_check_finds_a_changed_number():
    page, files, table = marked_tables()[0]
    known = [x for name in files.split() for x in read_results(name)]
    row = table.strip().splitlines()[2]
    sign, digits = NUMBER.findall(row.split("|", 2)[2])[0]
    changed = f"{float(digits.replace(',', '')) + 3 * 10 ** -len(digits.split('.')[1]):.{len(digits.split('.')[1])}f}"
    assert mismatches(table.replace(row, row.replace(digits, changed, 1)), known) != []


#: a sentence that says which estimator ``auto`` is: only method.md's generated table may
AUTO_CLAIM = re.compile(r"`auto`\)?\s*(?:→|=|is|picks|chooses)\s+(?:the\s+)?(?:`(?:fd|fd-forward|jvp|neumann|cg)`"
                        r"|central|one-sided|forward)", re.I)


def test_what_auto_picks_is_written_in_one_place():
    said = [f"{page.name}: {m.group(0)}" for page in PAGES for m in AUTO_CLAIM.finditer(page.read_text())]
    assert said == []
    assert "<!-- reference: auto -->" in (DOCS / "method.md").read_text()
    linked = [p.name for p in PAGES if "what-auto-picks" in p.read_text()]
    assert {"benchmarks.md", "speed.md", "faq.md"} <= set(linked)


def test_the_generated_auto_table_is_what_resolve_returns():
    pytest.importorskip("torch")
    import sys

    sys.path.insert(0, str(DOCS))
    try:
        import gen_auto
    finally:
        sys.path.remove(str(DOCS))
    rows = {label: name for label, name, _ in gen_auto.picks()}
    assert rows["CPU, float32, unroll 1"] == "fd-forward"  # the studies' setting (benchmarks)
    assert rows["CPU, bf16 autocast, unroll 1"] == "fd"
    assert rows["any device, `reweight.unroll` > 1 (SGD)"] == "jvp"
    text = gen_auto.auto_reference()
    assert all(f"| {label} | `{name}` |" in text for label, name in rows.items())


def test_history_is_only_in_the_changelog():
    history = re.compile(r"issue [0-9]+|commit [0-9a-f]{7}|other developers|no GPU lent", re.I)
    found = [f"{p.name}: {m.group(0)}" for p in PAGES if p.name != "changelog.md"
             for m in history.finditer(p.read_text())]
    assert found == []


def test_no_code_comment_or_docstring_cites_history_or_a_file_outside_the_repository():
    pattern = re.compile(r"\bissue \d+|ARCHITECTURE\.md|commit [0-9a-f]{7}", re.I)
    found = [f"{path.relative_to(ROOT)}: {m.group(0)}"
             for folder in ("tapweight", "tapweight_mol", "tapweight_nlp", "bench", "plugins")
             for path in (ROOT / folder).rglob("*.py") for m in pattern.finditer(path.read_text())]
    assert found == []


def test_docstrings_hold_no_sphinx_roles():
    role = re.compile(r":(?:class|mod|func|meth|attr|data|obj|exc):`")
    found = [f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "tapweight").rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if role.search(line)]
    assert found == []


def test_only_the_developer_guide_and_the_quoted_set_up_block_name_the_projects_data_folder():
    for page in PAGES:
        if page.name == "developing.md":
            continue
        text = page.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            if "../shared" in line:
                assert page.name == "installation.md" and "pip install -e '.[mol]' && tapweight run" in line, \
                    f"{page.name}:{n}"
    quoted = " ".join((DOCS / "installation.md").read_text().split())
    assert "no internet" in quoted  # it says why the path is there


def test_the_home_page_shows_an_install_and_a_portable_run_in_its_first_screen():
    first = "\n".join((DOCS / "index.md").read_text().splitlines()[:12])
    assert "pip install 'tapweight[mol]'" in first and "tapweight run mol bbbp" in first
    assert "--data" not in first and "BibTeX" not in first  # the command needs no file
    text = (DOCS / "index.md").read_text()
    assert "@article{zhang2025tapweight," in text and "openreview.net" in text
    assert text.index("mol-bbbp-lambda-only.png") < text.index("mol-bbbp-lambda.png")


def test_getting_started_code_fits_90_columns():
    text = (DOCS / "getting-started.md").read_text()
    blocks = re.findall(r"^```\w*\n(.*?)^```", text, flags=re.S | re.M)
    wide = [line for block in blocks for line in block.splitlines() if len(line) > 90]  # ~90: one screen
    assert wide == []


def test_sidebar_labels_are_the_page_titles():
    def entries(nav):
        for item in nav:
            for label, target in item.items():
                if isinstance(target, str):
                    yield label, target
                else:
                    yield from entries(target)

    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert site["repo_url"] and site["site_url"]
    differ = []
    for label, target in entries(site["nav"]):
        title = (DOCS / target).read_text().splitlines()[0].removeprefix("# ").replace("`", "")
        if label != title:
            differ.append((label, title))
    assert differ == []


def test_the_readme_links_to_the_site_and_every_top_page():
    readme = (ROOT / "README.md").read_text()
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert site["site_url"] in readme
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", readme))
    assert sorted({p.name for p in PAGES} - linked - {"index.md"}) == []

