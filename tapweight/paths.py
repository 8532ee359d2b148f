"""Where tapweight keeps downloads and caches; both are overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """Labelled data files: ``$TAPWEIGHT_DATA_DIR``, else ``~/.cache/tapweight/data``."""
    return Path(os.environ.get("TAPWEIGHT_DATA_DIR") or cache_dir() / "data")


def cache_dir() -> Path:
    """Derived artefacts (rendered images, tokenizers, clusters): ``$TAPWEIGHT_CACHE_DIR``,
    else ``~/.cache/tapweight``."""
    return Path(os.environ.get("TAPWEIGHT_CACHE_DIR") or Path.home() / ".cache" / "tapweight")
