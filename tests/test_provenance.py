"""Provenance block: keys, config hash stability, git revision and package versions."""

import importlib.metadata as md
import json
import re
from pathlib import Path

import pytest
import yaml

from latentwire.config import ConfigError
from latentwire.provenance import (
    SUPPORTED,
    config_hash,
    git_revision,
    package_versions,
    provenance,
    require_supported_versions,
    version_problems,
)

REPO = Path(__file__).resolve().parents[1]


def test_provenance_block_keys_and_values():
    cfg = {"name": "text", "eval": {"batch_size": 8}}
    block = provenance(cfg)
    assert set(block) == {
        "config",
        "config_hash",
        "git_revision",
        "packages",
        "supported_versions",
        "version_problems",
        "python",
        "platform",
        "created",
    }
    assert block["config"] == cfg
    assert block["config_hash"] == config_hash(cfg)
    assert block["packages"]["torch"] == md.version("torch")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", block["created"])
    json.dumps(block)  # the block goes into metrics.json as is


def test_config_hash_is_stable_and_sensitive():
    a = {"eval": {"batch_size": 8, "seed": 0}, "name": "text"}
    b = {"name": "text", "eval": {"seed": 0, "batch_size": 8}}  # same config, other key order
    assert config_hash(a) == config_hash(b)
    assert re.fullmatch(r"[0-9a-f]{16}", config_hash(a))
    assert config_hash(a) != config_hash({**a, "name": "closed"})
    assert config_hash({"x": 1}) != config_hash({"x": 1.5})
    # Pinned: a changed hash function would silently invalidate every recorded result.
    assert config_hash({"a": 1}) == "f9d86028c6e0d64e"


def test_git_revision_inside_and_outside_a_repository(tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", git_revision())
    assert git_revision(tmp_path) == "unknown"


def test_package_versions_lists_installed_tracked_packages():
    versions = package_versions()
    assert versions["latentwire"] == md.version("latentwire")
    assert versions["transformers"] == md.version("transformers")
    assert all(isinstance(v, str) and v for v in versions.values())


# --- supported versions (issue 16: NLL/token 0.95 vs 2.95 across transformers versions) ------------


def _constraints() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return dict(ln.split("==") for ln in lines if ln.strip() and not ln.startswith("#"))


def test_the_installed_versions_are_supported_and_recorded():
    assert version_problems() == []
    require_supported_versions()
    assert provenance({})["version_problems"] == [] and provenance({})["supported_versions"] == SUPPORTED


def test_transformers_5_17_is_refused_with_the_reason(monkeypatch):
    problems = version_problems({"transformers": "5.17.0", "torch": "2.11.0", "tokenizers": "0.23.3"})
    assert len(problems) == 1 and "transformers 5.17.0: its GGUF export" in problems[0]
    assert version_problems({"transformers": "5.30.1"}) == [
        "transformers 5.30.1 is outside the supported >=5.24,<5.25"
    ]
    monkeypatch.setattr("latentwire.provenance.package_versions", lambda: {"transformers": "5.17.0"})
    monkeypatch.delenv("LATENTWIRE_ALLOW_UNSUPPORTED", raising=False)
    with pytest.raises(ConfigError, match="unsupported package versions: transformers 5.17.0.*constraints"):
        require_supported_versions()
    monkeypatch.setenv("LATENTWIRE_ALLOW_UNSUPPORTED", "1")
    require_supported_versions()  # allowed, and the provenance says so
    assert provenance({})["version_problems"]


def test_constraints_pyproject_and_environments_agree_with_the_supported_ranges():
    from packaging.specifiers import SpecifierSet

    pins = _constraints()
    for name, spec in SUPPORTED.items():
        assert pins[name] in SpecifierSet(spec), name
    deps = (REPO / "pyproject.toml").read_text()
    for name, spec in SUPPORTED.items():
        assert f'"{name}{spec}"' in deps, name
    for env in ("environment.yml", "workflow/envs/latentwire.yaml"):
        pip = [d for d in yaml.safe_load((REPO / env).read_text())["dependencies"] if isinstance(d, dict)]
        listed = dict(x.split("==") for x in pip[0]["pip"] if "==" in x)
        assert {k: v for k, v in listed.items() if k in pins} == pins, env
    assert "-c constraints.txt" in (REPO / "scripts" / "bootstrap.sh").read_text()
