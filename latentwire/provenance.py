"""Provenance: what produced an output (resolved config, git revision, package versions)."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "latentwire",
    "torch",
    "transformers",
    "tokenizers",
    "gguf",
    "numpy",
    "pandas",
    "pyarrow",
    "snakemake",
    "sentence-transformers",
    "peft",
)


def git_revision(cwd: str | Path | None = None) -> str:
    """The current commit (with ``-dirty`` if the tree has changes), or ``unknown`` outside git."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results (missing ones are omitted)."""
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def config_hash(cfg: Any) -> str:
    """A short stable hash of a JSON-serialisable config."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def provenance(resolved_config: Any) -> dict[str, Any]:
    """The block every output carries: config, its hash, git revision, versions, host, time."""
    return {
        "config": resolved_config,
        "config_hash": config_hash(resolved_config),
        "git_revision": git_revision(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
