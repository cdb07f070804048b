"""Provenance block: keys, config hash stability, git revision and package versions."""

import importlib.metadata as md
import json
import re

from latentwire.provenance import config_hash, git_revision, package_versions, provenance


def test_provenance_block_keys_and_values():
    cfg = {"name": "text", "eval": {"batch_size": 8}}
    block = provenance(cfg)
    assert set(block) == {
        "config",
        "config_hash",
        "git_revision",
        "packages",
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
