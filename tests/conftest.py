"""Shared fixtures: tiny random Llama- and Qwen2-shaped models, built once per session, offline.

``family`` is a session-scoped parameter, so every test that asks for ``tiny_dir``, ``tiny_spec``
or ``tiny_lm`` runs once per family. The models come from :func:`latentwire.models.tiny.save_tiny`
(2 layers, d=64, grouped-query attention, ChatML tokenizer) and load through the same registry
path as real models: a ``local`` source, ``materialize`` and ``load_model(device="cpu")``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from latentwire.config import from_dict
from latentwire.models import LoadedModel, ModelSpec, load_model, materialize
from latentwire.models.tiny import save_tiny

FAMILIES = ("llama", "qwen2")


def local_spec(name: str, path: str | Path, **overrides) -> ModelSpec:
    """A registry entry for a ``save_pretrained`` folder, built through the strict config path."""
    entry = {"name": name, "family": "tiny", "source": {"kind": "local", "path": str(path)}, **overrides}
    return from_dict(ModelSpec, entry, where=f"models.{name}")


@pytest.fixture(scope="session")
def make_local_spec():
    """:func:`local_spec` as a fixture, for tests that need their own registry entries."""
    return local_spec


@pytest.fixture(scope="session", params=FAMILIES)
def family(request) -> str:
    """The tiny model family under test."""
    return request.param


@pytest.fixture(scope="session")
def tiny_dir(family: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``save_pretrained`` folder (config, weights, tokenizer) of the tiny ``family`` model."""
    return save_tiny(family, tmp_path_factory.mktemp(f"tiny-{family}"))


@pytest.fixture(scope="session")
def tiny_spec(family: str, tiny_dir: Path) -> ModelSpec:
    """The registry entry of the tiny model (local source)."""
    return local_spec(f"tiny-{family}", tiny_dir, context_limit=1024)


@pytest.fixture(scope="session")
def tiny_lm(tiny_spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """The tiny model loaded frozen on CPU (fp32), exactly as the workflow loads registry models."""
    cache = tmp_path_factory.mktemp(f"cache-{tiny_spec.name}")
    materialize(tiny_spec, cache)
    return load_model(tiny_spec, cache / "manifest.json", device="cpu")
