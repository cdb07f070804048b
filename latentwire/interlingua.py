"""The interlingua: one encoder writes Z, per-model adapters turn it into each model's soft tokens.

Z holds ``n_shared`` slots every receiver reads plus ``n_private`` slots per receiver, all under one
total budget ``M = n_shared + n_models * n_private`` (that is what goes over the wire). Receiver
``m`` reads ``[shared | private_m]`` (``n_shared + n_private`` slots) through its adapter.

Shapes: B batch, M total slots, d_z latent width, d model width of a receiver.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from latentwire.adapters import AdapterArgs, build_adapter
from latentwire.config import ConfigError
from latentwire.encoders import EncoderArgs, build_encoder, load_trainable_state_dict, trainable_state_dict


@dataclass
class LatentArgs:
    """The wire format and the modules that write and read it."""

    n_shared: int = 32  # slots every receiver reads
    n_private: int = 8  # extra slots per receiver
    encoder: EncoderArgs = field(default_factory=EncoderArgs)
    adapter: AdapterArgs = field(default_factory=AdapterArgs)

    def validate(self) -> None:
        if self.n_shared < 0 or self.n_private < 0 or self.n_shared + self.n_private < 1:
            raise ConfigError("latent: n_shared + n_private must be >= 1 and both >= 0")

    def total_slots(self, n_models: int) -> int:
        return self.n_shared + n_models * self.n_private

    def read_slots(self) -> int:
        return self.n_shared + self.n_private


class Interlingua(nn.Module):
    """Encoder + per-receiver adapters. ``receivers`` maps model name → (d_model, target_rms)."""

    def __init__(self, args: LatentArgs, receivers: dict[str, tuple[int, float]]) -> None:
        super().__init__()
        self.args = args
        self.names = sorted(receivers)
        if len({_key(n) for n in self.names}) != len(self.names):
            raise ValueError(f"receiver names {self.names} map to the same adapter key (dots become '_')")
        self.encoder = build_encoder(args.encoder, args.total_slots(len(self.names)))
        self.adapters = nn.ModuleDict(
            {
                _key(n): build_adapter(args.adapter, args.encoder.d_z, d, rms)
                for n, (d, rms) in receivers.items()
            }
        )

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Z for a batch of content texts. Returns (B, M, d_z)."""
        return self.encoder(list(texts))

    def slots_for(self, z: torch.Tensor, name: str) -> torch.Tensor:
        """The slots receiver ``name`` reads: (B, n_shared + n_private, d_z)."""
        a = self.args
        i = self.names.index(name)
        shared = z[:, : a.n_shared]
        start = a.n_shared + i * a.n_private
        return torch.cat([shared, z[:, start : start + a.n_private]], dim=1)

    def soft_tokens(self, z: torch.Tensor, name: str) -> torch.Tensor:
        """Receiver ``name``'s input embeddings for Z. Returns (B, read_slots, d_model)."""
        return self.adapters[_key(name)](self.slots_for(z, name))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor (encoder's own + adapters); frozen MiniLM is excluded."""
        sd = {f"encoder.{k}": v for k, v in trainable_state_dict(self.encoder).items()}
        # cloned like the encoder's part: a snapshot, not views that change as training goes on
        sd.update({f"adapters.{k}": v.detach().clone() for k, v in self.adapters.state_dict().items()})
        return sd

    def load_trainable_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Strict inverse of :meth:`trainable_state_dict`."""
        enc = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
        ada = {k[len("adapters.") :]: v for k, v in sd.items() if k.startswith("adapters.")}
        extra = set(sd) - {f"encoder.{k}" for k in enc} - {f"adapters.{k}" for k in ada}
        if extra:
            raise KeyError(f"unexpected checkpoint keys: {sorted(extra)[:5]}")
        load_trainable_state_dict(self.encoder, enc)
        self.adapters.load_state_dict(ada, strict=True)


def _key(name: str) -> str:
    """Module-safe key for a model name (``nn.ModuleDict`` keys may not contain dots)."""
    return name.replace(".", "_")


def mean_pairwise_cosine(z: torch.Tensor) -> float:
    """Mean cosine similarity between different examples' flattened Z (collapse gauge). z: (B, M, d_z)."""
    B = z.shape[0]
    if B < 2:
        return float("nan")
    flat = nn.functional.normalize(z.reshape(B, -1).float(), dim=-1)
    sim = flat @ flat.T  # (B, B)
    off = sim[~torch.eye(B, dtype=torch.bool, device=z.device)]
    return float(off.mean())
