"""Test sessions. `nox` runs the default ones (what CI runs): lint, core, tests, docs.

- core:    the core alone (no RDKit, no transformers): `pip install tapweight` must suffice.
- tests:   everything installed (both domains, every plugin in plugins/): core, domain and
           plugin tests together.
- mol, nlp: one domain's tests.  plugins(folder): one plugin next to the core.
- lint:    ruff.  bench: the benchmark harness (not a test).
- docs:    the documentation site (mkdocs.yml) built with --strict into site/: a broken link or
           anchor, a missing page or a failing reference generator fails it.
"""

from pathlib import Path

import nox

nox.options.sessions = ["lint", "core", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True

# CUDA builds that also run on CPU; a plain `torch` may pull a newer multi-GB build
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
# the reference engine's library; it declares Python < 3.11, so it is never a dependency
BETTY = ["--no-deps", "--ignore-requires-python", "betty-ml==0.2.1"]
PLUGINS = sorted(str(p) for p in Path("plugins").iterdir() if (p / "pyproject.toml").is_file())
PYTEST = ["pytest", "-q", "-ra", "-p", "no:cacheprovider"]


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "tapweight", "tapweight_mol", "tapweight_nlp", "plugins", "tests",
                "bench", "docs", "noxfile.py")


@nox.session
def core(session):
    session.install(*TORCH)
    session.install("-e", ".[dev]")
    session.install(*BETTY)
    session.run(*PYTEST, "tests", "--ignore=tests/mol", "--ignore=tests/nlp", *session.posargs)


@nox.session
def tests(session):
    session.install(*TORCH)
    session.install("-e", ".[all,dev]", *[f"-e{p}" for p in PLUGINS])
    session.install(*BETTY)
    session.run(*PYTEST, "tests", *session.posargs)
    for folder in PLUGINS:  # each plugin's tests in their own run: their own rootdir and conftest
        session.run(*PYTEST, f"{folder}/tests", *session.posargs)


@nox.session
@nox.parametrize("domain", ["mol", "nlp"])
def domain(session, domain):
    session.install(*TORCH)
    session.install("-e", f".[{domain},dev]")
    session.run(*PYTEST, f"tests/{domain}", *session.posargs)


@nox.session
@nox.parametrize("folder", PLUGINS)
def plugins(session, folder):
    session.install(*TORCH)
    session.install("-e", ".[dev]", "-e", folder)
    session.run(*PYTEST, f"{folder}/tests", *session.posargs)
    session.run(*PYTEST, "tests", "--ignore=tests/mol", "--ignore=tests/nlp", *session.posargs)


@nox.session
def docs(session):
    """The site; its CLI and config references are generated while it builds (docs/gen_reference.py)."""
    session.install(*TORCH)
    session.install("-e", ".[docs,dev]")
    session.run("mkdocs", "build", "--strict", *session.posargs)
    session.run(*PYTEST, "tests/test_site.py")


@nox.session
def bench(session):
    """`nox -s bench -- step --shape paper --device cuda` (default: the cpu shape)."""
    session.install(*TORCH)
    session.install("-e", ".[mol,dev]")
    session.install(*BETTY)
    session.run("python", "-m", "bench", *(session.posargs or ["step", "--shape", "cpu"]))
