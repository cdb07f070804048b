"""Frozen LLMs: the registry of models (config/models.yaml), their sources, and loading."""

from latentwire.models.loading import LoadedModel, load_model, materialize
from latentwire.models.spec import ModelSpec, get_spec, load_registry

__all__ = ["LoadedModel", "ModelSpec", "get_spec", "load_model", "load_registry", "materialize"]
