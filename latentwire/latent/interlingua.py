"""The interlingua: one encoder writes Z, per-model adapters turn it into each model's soft tokens.

Z holds ``n_shared`` slots every receiver reads plus ``n_private`` slots per receiver:
``W = n_shared + n_models * n_private`` wire slots (``total_slots``, ``wire_slots``: what goes over
the wire). Receiver ``m`` reads ``[shared | private_m]``, ``M = n_shared + n_private`` slots
(``read_slots``: what budget-M and the comparators match), through its adapter.

Shapes: B batch, W wire slots, M slots one receiver reads, d_z latent width, d model width of a
receiver.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from latentwire.config import ConfigError, must
from latentwire.encoders import EncoderArgs, build_encoder, load_trainable_state_dict, trainable_state_dict
from latentwire.encoders.core import SourceModels
from latentwire.heads.adapters import AdapterArgs, build_adapter
from latentwire.heads.coprocessor import Coprocessor, CoprocessorArgs
from latentwire.heads.deep_prefix import DeepPrefix, DeepPrefixArgs, KVShape
from latentwire.heads.gist import GistHead
from latentwire.heads.lora import LoraArgs, load_lora_state_dict, lora_state_dict
from latentwire.kv_prefix import KVPrefix
from latentwire.latent.wire import WireArgs


@dataclass
class LatentArgs:
    """The wire format and the modules that write and read it."""

    n_shared: int = 32  # slots every receiver reads
    n_private: int = 8  # extra slots per receiver
    encoder: EncoderArgs = field(default_factory=EncoderArgs)
    adapter: AdapterArgs = field(default_factory=AdapterArgs)
    # reading heads: soft tokens through inputs_embeds (shallow) and/or a per-layer K/V prefix (deep)
    shallow: bool = True
    deep_prefix: DeepPrefixArgs = field(default_factory=DeepPrefixArgs)
    coprocessor: CoprocessorArgs = field(default_factory=CoprocessorArgs)  # K/V deltas on the soft tokens
    lora: LoraArgs = field(default_factory=LoraArgs)  # scoped LoRA on the receivers (rank 0 = off)
    gist_tokens: int = 0  # > 0: a gist head per receiver rebuilds up to this many content embeddings
    wire: WireArgs = field(default_factory=WireArgs)  # quantized wire formats evaluated (see wire.py)
    # send and read only the slots a text fills (an encoder that fills fewer than W slots for a short
    # text: pooled-lm, pool_mode factor); off: every message carries W slots, the rest the pad vector
    trim_pad: bool = False

    def validate(self) -> None:
        must(self.n_shared >= 0, "n_shared", self.n_shared, ">= 0")
        must(self.n_private >= 0, "n_private", self.n_private, ">= 0")
        if self.n_shared + self.n_private < 1:
            raise ConfigError("latent: n_shared + n_private must be >= 1")
        if not self.shallow and not self.deep_prefix.enabled:
            raise ConfigError("latent: enable at least one reading head (shallow or deep_prefix.enabled)")
        if self.gist_tokens < 0:
            raise ConfigError("latent.gist_tokens: must be >= 0")
        if self.coprocessor.enabled and not self.shallow:
            raise ConfigError("latent.coprocessor: augments the soft tokens' cache; needs shallow: true")
        if self.trim_pad and (
            self.n_private or not self.shallow or self.deep_prefix.enabled or self.coprocessor.enabled
        ):
            raise ConfigError(
                "latent.trim_pad: only with shared slots read through the shallow head "
                "(n_private 0, no deep_prefix, no coprocessor)"
            )
        if self.coprocessor.enabled and self.adapter.markers:
            raise ConfigError(
                "latent.adapter.markers: not with the coprocessor (it reads the soft tokens only)"
            )

    def head_name(self) -> str:
        """Short name of the reading-head combination, for tables: shallow, deep, shallow+deep, +lora."""
        heads = (
            ("shallow", self.shallow),
            ("deep", self.deep_prefix.enabled),
            ("coproc", self.coprocessor.enabled),
        )
        parts = [n for n, on in heads if on]
        return "+".join(parts) + ("+lora" if self.lora.rank else "")

    def total_slots(self, n_models: int) -> int:
        """W: the slots on the wire (every receiver's shared and private), what the encoder writes."""
        return self.n_shared + n_models * self.n_private

    def read_slots(self) -> int:
        """M: the slots one receiver reads (shared + its private), what budget-M matches."""
        return self.n_shared + self.n_private


@dataclass(frozen=True)
class Receiver:
    """What the interlingua needs to know about one frozen receiver."""

    d_model: int  # input-embedding width
    embed_rms: float  # target RMS of its soft tokens
    kv: KVShape | None = None  # cache shape + K/V RMS; needed by the deep prefix


@dataclass
class Reading:
    """How one receiver reads Z: soft tokens for the content slot and/or a per-layer K/V prefix."""

    soft: torch.Tensor | None  # (B, S, d_model) or None when the shallow head is off
    prefix: KVPrefix | None  # keys/values (B, H_kv, S, D) per layer, or None
    slots: torch.Tensor | None = None  # (B, S, d_z) the slots read (the coprocessor's input)


class Interlingua(nn.Module):
    """Encoder + per-receiver reading heads (adapters, deep-prefix generators).

    ``receivers`` maps model name → :class:`Receiver` (or a ``(d_model, embed_rms)`` tuple).
    Receiver LoRA tensors live inside the receiver models; :meth:`attach_lora` registers them so
    they join :meth:`trainable_parameters` and the checkpoint.

    ``private_of`` (an extended wire, :mod:`latentwire.training.extend`): receivers that joined after the
    wire was trained, each mapped to the wire receiver whose private slots it reads. Only the other
    receivers (:attr:`wire_names`) size Z and own private slots, so adding one leaves Z unchanged.
    """

    def __init__(
        self,
        args: LatentArgs,
        receivers: dict[str, Receiver | tuple[int, float]],
        models: SourceModels | None = None,  # loaded models by name, for an encoder's source_model
        private_of: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        args.validate()
        self.args = args
        receivers = {n: r if isinstance(r, Receiver) else Receiver(*r) for n, r in receivers.items()}
        self.names = sorted(receivers)
        if len({_key(n) for n in self.names}) != len(self.names):
            raise ValueError(f"receiver names {self.names} map to the same adapter key (dots become '_')")
        self.private_of = dict(private_of or {})
        self.wire_names = [n for n in self.names if n not in self.private_of]
        bad = {k: v for k, v in self.private_of.items() if k not in self.names or v not in self.wire_names}
        if bad or not self.wire_names:
            raise ValueError(f"private_of {bad}: newcomers must read the private slots of a wire receiver")
        self.encoder = build_encoder(args.encoder, args.total_slots(len(self.wire_names)), models)
        if args.trim_pad and not self.encoder.fills_partially:
            raise ConfigError(
                f"latent.trim_pad: encoder {args.encoder.name!r} fills every slot (nothing to trim)"
            )
        d_z = args.encoder.d_z
        self.adapters = nn.ModuleDict(
            {_key(n): build_adapter(args.adapter, d_z, r.d_model, r.embed_rms) for n, r in receivers.items()}
            if args.shallow
            else {}
        )
        self.deep = nn.ModuleDict()
        if args.deep_prefix.enabled:
            for n, r in receivers.items():
                if r.kv is None:
                    raise ValueError(f"receiver {n!r}: the deep prefix needs its KV shape (Receiver.kv)")
                self.deep[_key(n)] = DeepPrefix(args.deep_prefix, d_z, r.kv)
        self.coproc = nn.ModuleDict()
        if args.coprocessor.enabled:
            for n, r in receivers.items():
                if r.kv is None:
                    raise ValueError(f"receiver {n!r}: the coprocessor needs its KV shape (Receiver.kv)")
                self.coproc[_key(n)] = Coprocessor(args.coprocessor, d_z, r.d_model, r.kv)
        self.gist = nn.ModuleDict(
            {
                _key(n): GistHead(d_z, r.d_model, args.gist_tokens, args.encoder.n_heads)
                for n, r in receivers.items()
            }
            if args.gist_tokens
            else {}
        )
        self.embed_rms = {n: r.embed_rms for n, r in receivers.items()}
        self._lora: dict[str, nn.Module] = {}  # receiver name -> model holding its LoRA tensors
        self._memo: dict | None = None  # text (or (question, text)) -> Z row (W, d_z); see memoize_latents
        self._frozen: list[nn.Module] = []  # modules kept frozen in eval mode (see freeze_except)
        self._frozen_lora: set[str] = set()  # receivers whose LoRA is frozen

    def freeze_except(self, names: list[str]) -> None:
        """Freeze the encoder and every reading head (and attached LoRA) not of receivers ``names``:
        :meth:`trainable_parameters` leaves them out (``requires_grad`` is kept, so the checkpoint
        keeps its keys), and they stay in eval mode even under ``train()``, so the encoder writes
        exactly the Z it writes at evaluation (no dropout, no training-only reading of answers).
        """
        keep = {_key(n) for n in names}
        parts = (self.adapters, self.deep, self.coproc, self.gist)
        self._frozen = [self.encoder] + [part[k] for part in parts for k in part if k not in keep]
        self._frozen_lora = {n for n in self._lora if _key(n) not in keep}
        self.train(self.training)

    def train(self, mode: bool = True) -> Interlingua:
        super().train(mode)
        for m in self._frozen:  # frozen parts read as at evaluation
            m.train(False)
        return self

    def wire_slots(self) -> int:
        """Slots Z carries over the wire (W): shared + private of each wire receiver."""
        return self.args.total_slots(len(self.wire_names))

    def attach_lora(self, name: str, model: nn.Module) -> None:
        """Register receiver ``name``'s model, whose ``lora_`` tensors this interlingua trains and saves."""
        self._lora[name] = model

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Everything the optimizer updates: encoder, reading heads and receiver LoRA tensors, less
        what :meth:`freeze_except` froze."""
        frozen = {id(p) for m in self._frozen for p in m.parameters()}  # see freeze_except
        own = [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]
        lora = [
            p
            for n in sorted(set(self._lora) - self._frozen_lora)
            for k, p in self._lora[n].named_parameters()
            if "lora_" in k
        ]
        return own + lora

    def read(self, z: torch.Tensor, name: str, filled: Sequence[int] | None = None) -> Reading:
        """Receiver ``name``'s view of Z (B, W, d_z): its M slots through every enabled reading head.
        ``filled`` (:meth:`filled`): the slots each message carries; the soft tokens stay (B, M, d)
        and the caller keeps the first ``filled`` of them (:func:`latentwire.latent.prompts.trim_soft`)."""
        slots = self.slots_for(z, name)  # (B, M, d_z)
        key = _key(name)
        soft = self.adapters[key](slots, filled) if self.args.shallow else None
        prefix = self.deep[key](slots) if self.args.deep_prefix.enabled else None
        return Reading(soft, prefix, slots)

    def coprocess(self, name: str, slots: torch.Tensor, hidden: torch.Tensor | None) -> dict[int, tuple]:
        """Receiver ``name``'s coprocessor deltas {layer: (ΔK, ΔV)} for its soft tokens."""
        return self.coproc[_key(name)](slots, hidden)

    def reconstruct(self, z: torch.Tensor, name: str, n_tokens: int) -> torch.Tensor:
        """Receiver ``name``'s gist-head reconstruction of its content embeddings: (B, T, d_model),
        in units of the embedding RMS (see :mod:`latentwire.heads.gist`)."""
        return self.gist[_key(name)](z, n_tokens)

    def diagnostics(self) -> dict:
        """Per-receiver RMS of the last coprocessor deltas per layer (empty without a coprocessor)."""
        return {
            n: {str(layer): v for layer, v in self.coproc[_key(n)].last_delta_rms.items()}
            for n in self.names
            if _key(n) in self.coproc
        }

    def filled(self, texts: Sequence[str]) -> list[int] | None:
        """With ``latent.trim_pad``: per content text, the slots of Z it fills, the only ones sent and
        read (the first n of the M shared slots); otherwise None (all M)."""
        return self.encoder.filled_slots(list(texts)) if self.args.trim_pad else None

    def positions(self, filled: int | None = None) -> int:
        """Prompt positions the latent occupies in each receiver (soft tokens + deep prefix length);
        ``filled``: the slots of one trimmed message (:meth:`filled`) instead of M."""
        S, shallow = filled or self.args.read_slots(), int(self.args.shallow)
        markers = 2 * shallow * int(self.args.adapter.markers)  # begin / end marker tokens
        return S * shallow + markers + S * int(self.args.deep_prefix.enabled)  # coprocessor: in place

    def encode(
        self,
        texts: Sequence[str],
        answers: Sequence[list[str]] | None = None,
        questions: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Z for a batch of content texts. Returns (B, W, d_z).

        ``answers`` (training only): the gold answers, handed to encoders that train an auxiliary
        head on them (``reads_answers``, e.g. ``select``'s scorer); evaluation never passes them, and
        such encoders ignore them outside training mode. ``questions``: each text's question, handed
        to encoders that read it beside the text (``reads_questions``); the others ignore it.
        """
        kw = {"questions": list(questions)} if questions is not None and self.encoder.reads_questions else {}
        wire_frozen = self.encoder in self._frozen  # then Z is the evaluation Z, also in training
        if answers is not None and self.encoder.reads_answers and not wire_frozen:
            return self.encoder(list(texts), answers=[list(a) for a in answers], **kw)
        if self._memo is None or (self.training and not wire_frozen):
            return self.encoder(list(texts), **kw)
        keys = list(zip(kw["questions"], texts)) if kw else list(texts)  # Z depends on these alone
        missing = [k for k in dict.fromkeys(keys) if k not in self._memo]
        if missing:  # only inputs not seen before are encoded, in one batch
            if kw:
                rows = self.encoder([t for _, t in missing], questions=[q for q, _ in missing])
            else:
                rows = self.encoder(missing)
            for k, row in zip(missing, rows):
                self._memo[k] = row
        return torch.stack([self._memo[k] for k in keys])  # (B, W, d_z)

    def memoize_latents(self, on: bool = True) -> None:
        """Evaluation only: remember Z per text, so the variants, controls, receivers and joint
        rescoring of one evaluation encode each text once (Z depends on the text alone in eval
        mode; with a question-reading encoder, per question and text). Never on while training:
        the encoder changes between steps."""
        self._memo = {} if on else None

    def encoder_aux_loss(self) -> torch.Tensor | None:
        """The encoder's auxiliary loss from its last training forward (None if it has none)."""
        return self.encoder.aux_loss

    def encoder_aux_record(self, aux: torch.Tensor) -> dict[str, float]:
        """Log entries of that auxiliary loss: its value and the encoder's own diagnostics."""
        return {"aux_loss": float(aux.detach()), **self.encoder.last_stats}

    def adapter(self, name: str) -> nn.Module:
        """Receiver ``name``'s adapter (shallow head)."""
        return self.adapters[_key(name)]

    def slots_for(self, z: torch.Tensor, name: str) -> torch.Tensor:
        """The slots receiver ``name`` reads: (B, n_shared + n_private, d_z)."""
        a = self.args
        i = self.wire_names.index(self.private_of.get(name, name))
        shared = z[:, : a.n_shared]
        start = a.n_shared + i * a.n_private
        return torch.cat([shared, z[:, start : start + a.n_private]], dim=1)

    def soft_tokens(self, z: torch.Tensor, name: str) -> torch.Tensor:
        """Receiver ``name``'s input embeddings for Z. Returns (B, read_slots (+ 2 markers), d_model)."""
        return self.adapters[_key(name)](self.slots_for(z, name))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor (encoder's own, adapters, deep-prefix generators, receiver LoRA);
        frozen text models are excluded."""
        sd = {f"encoder.{k}": v for k, v in trainable_state_dict(self.encoder).items()}
        # cloned like the encoder's part: a snapshot, not views that change as training goes on
        for part in ("adapters", "deep", "coproc", "gist"):
            sd.update(
                {f"{part}.{k}": v.detach().clone() for k, v in getattr(self, part).state_dict().items()}
            )
        for name, model in self._lora.items():
            sd.update({f"lora.{_key(name)}.{k}": v for k, v in lora_state_dict(model).items()})
        return sd

    def load_trainable_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Strict inverse of :meth:`trainable_state_dict`."""
        split: dict[str, dict[str, torch.Tensor]] = {
            "encoder": {},
            "adapters": {},
            "deep": {},
            "coproc": {},
            "gist": {},
            "lora": {},
        }
        for k, v in sd.items():
            part, _, rest = k.partition(".")
            if part not in split:
                raise KeyError(f"unexpected checkpoint keys: {k}")
            split[part][rest] = v
        load_trainable_state_dict(self.encoder, split["encoder"])
        self.adapters.load_state_dict(split["adapters"], strict=True)
        self.deep.load_state_dict(split["deep"], strict=True)
        self.coproc.load_state_dict(split["coproc"], strict=True)
        self.gist.load_state_dict(split["gist"], strict=True)
        lora_keys = {_key(n) for n in self._lora}
        seen = {k.partition(".")[0] for k in split["lora"]}
        if seen != lora_keys:
            raise KeyError(f"checkpoint LoRA receivers {sorted(seen)} != attached {sorted(lora_keys)}")
        for name, model in self._lora.items():
            pre = _key(name) + "."
            load_lora_state_dict(
                model, {k[len(pre) :]: v for k, v in split["lora"].items() if k.startswith(pre)}
            )


def _key(name: str) -> str:
    """Module-safe key for a model name (``nn.ModuleDict`` keys may not contain dots)."""
    return name.replace(".", "_")


def mean_pairwise_cosine(z: torch.Tensor) -> float:
    """Mean cosine similarity between different examples' flattened Z (collapse gauge). z: (B, W, d_z)."""
    B = z.shape[0]
    if B < 2:
        return float("nan")
    flat = nn.functional.normalize(z.reshape(B, -1).float(), dim=-1)
    sim = flat @ flat.T  # (B, B)
    off = sim[~torch.eye(B, dtype=torch.bool, device=z.device)]
    return float(off.mean())
