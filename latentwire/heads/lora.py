"""Scoped LoRA on a frozen receiver: rank-r adapters on attention projections of its first N layers.

Injected in place through PEFT (``inject_adapter_in_model``), so the model object stays the one the
rest of the code holds; base weights stay frozen and only the ``lora_`` tensors train. They are
saved and restored with the rest of the latent checkpoint (:func:`lora_state_dict`), and are active
at evaluation. :func:`lora_disabled` switches them off temporarily (for a text teacher that must be the
base model).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from latentwire.config import ConfigError

ADAPTER_NAME = "latentwire"


@dataclass
class LoraArgs:
    """LoRA on the receivers (rank 0 = off)."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    first_layers: int = 4  # LoRA on decoder layers 0 .. first_layers-1
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def validate(self) -> None:
        if self.rank < 0 or self.first_layers < 1 or not self.targets:
            raise ConfigError("lora: rank must be >= 0, first_layers >= 1, targets non-empty")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("lora.dropout: must be in [0, 1)")


def apply_lora(model: torch.nn.Module, args: LoraArgs) -> list[torch.nn.Parameter]:
    """Inject LoRA into ``model`` (once) and return its trainable LoRA parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    n_layers = model.config.get_text_config(decoder=True).num_hidden_layers
    if not any("lora_" in n for n, _ in model.named_parameters()):
        config = LoraConfig(
            r=args.rank,
            lora_alpha=args.alpha,
            lora_dropout=args.dropout,
            target_modules=list(args.targets),
            layers_to_transform=list(range(min(args.first_layers, n_layers))),
        )
        inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    if not params:
        raise ValueError(f"LoRA targets {args.targets} matched no module of {type(model).__name__}")
    for p in params:
        p.requires_grad_(True)
    return params


def lora_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every LoRA tensor of ``model`` (detached clones), by parameter name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def load_lora_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Strict inverse of :func:`lora_state_dict`."""
    own = dict((n, p) for n, p in model.named_parameters() if "lora_" in n)
    if set(own) != set(sd):
        raise KeyError(
            f"LoRA state mismatch: missing={sorted(set(own) - set(sd))[:3]} "
            f"unexpected={sorted(set(sd) - set(own))[:3]}"
        )
    with torch.no_grad():
        for n, p in own.items():
            p.copy_(sd[n])


@contextlib.contextmanager
def lora_disabled(model: torch.nn.Module):
    """Run ``model`` as its base model inside the block (no-op without LoRA)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        for m in layers:
            m.enable_adapters(True)
