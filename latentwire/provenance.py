"""Provenance: what produced an output (resolved config, git revision, package versions).

:data:`SUPPORTED` holds the version ranges of the packages that shape metrics (``constraints.txt``
pins one version inside each; ``pyproject.toml`` declares the same ranges). The ``latentwire``
command checks them at start (:func:`require_supported_versions`) and every output records whether
they held: the same text prompt must give the same NLL on every machine.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
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
    "huggingface-hub",
    "safetensors",
    "accelerate",
    "gguf",
    "numpy",
    "pandas",
    "pyarrow",
    "snakemake",
    "sentence-transformers",
    "peft",
)


#: Supported ranges (PEP 440) of the packages whose versions change metrics.
SUPPORTED = {
    "torch": ">=2.11,<2.14",
    "transformers": ">=5.24,<5.25",
    "tokenizers": ">=0.23,<0.24",
}

#: Versions known to give wrong numbers, with what goes wrong (shown in the error).
KNOWN_BAD = {
    ("transformers", "5.17"): "its GGUF export gives the Qwen2 tokenizer eos <|endoftext|> instead of the "
    "model's <|im_end|>, so every Qwen answer NLL is scored against the wrong end token (0.95 -> 2.95)",
}

#: Set to 1 to run under other versions anyway (recorded in every output's provenance).
ALLOW_ENV = "LATENTWIRE_ALLOW_UNSUPPORTED"


def version_problems(versions: dict[str, str] | None = None) -> list[str]:
    """One line per installed package outside :data:`SUPPORTED` (or known to be bad); [] when all hold."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    versions = package_versions() if versions is None else versions
    problems = []
    for name, spec in SUPPORTED.items():
        if name not in versions:
            continue
        v = Version(versions[name])
        minor = f"{v.major}.{v.minor}"
        if (name, minor) in KNOWN_BAD:
            problems.append(f"{name} {versions[name]}: {KNOWN_BAD[name, minor]}")
        elif Version(v.base_version) not in SpecifierSet(spec):
            problems.append(f"{name} {versions[name]} is outside the supported {spec}")
    return problems


def require_supported_versions() -> None:
    """Fail (one :class:`~latentwire.config.ConfigError`) unless the metric-shaping versions hold."""
    from latentwire.config import ConfigError

    problems = version_problems()
    if problems and os.environ.get(ALLOW_ENV, "") in ("", "0"):
        raise ConfigError(
            "unsupported package versions: "
            + "; ".join(problems)
            + f". Install the pinned ones (pip install -c constraints.txt ...) or set {ALLOW_ENV}=1"
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
        "supported_versions": SUPPORTED,
        "version_problems": version_problems(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
