"""Extend a trained interlingua to a new receiver: the wire stays fixed, only the newcomer's head trains.

A finished experiment's checkpoint holds the encoder and the reading heads of its receivers (the
*wire receivers*). A newcomer joins by training its own reading head only (adapter, and the deep
prefix / coprocessor / gist head / LoRA where the experiment has them) on the same train split,
with the experiment's validation and best-checkpoint selection (:func:`latentwire.training.loop.train` on
the newcomer alone, with the extended interlingua prebuilt here):

- **Z is unchanged.** The encoder is built for the wire receivers' slot count and loaded from the
  checkpoint; the newcomer reads the shared slots plus the private slots of one wire receiver
  (``read_private_of``; none exist when ``n_private`` is 0), so the wire carries no new slot.
- The newcomer may also get LoRA of its own (``lora``) on a wire trained without any.
- **Everything old is frozen**, in eval mode (:meth:`Interlingua.freeze_except`): the encoder
  writes its evaluation Z while the newcomer trains, and no old tensor is in the optimizer.
- **Verified by hash.** The sha256 of the source checkpoint file and of its tensors are recorded
  (``extension.json``); every checkpoint the extension writes must hold exactly those tensors
  besides the newcomer's own, checked after training and again before evaluation.

The old receivers' Z, soft tokens and predictions are therefore bit-identical to the experiment's
(``tests/training/test_extend.py``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from latentwire.config import ConfigError, from_dict, to_dict
from latentwire.heads.lora import LoraArgs, apply_lora
from latentwire.io import read_json, write_json
from latentwire.latent.build import build_interlingua
from latentwire.latent.interlingua import Interlingua, _key
from latentwire.models import LoadedModel
from latentwire.training.args import LatentRunArgs, TrainArgs
from latentwire.training.loop import train
from latentwire.training.losses import LossArgs

log = logging.getLogger(__name__)

#: TrainArgs an extension cannot set: the encoder never trains and the newcomer is the only receiver
FORCED_TRAIN = {"encoder_warmup_steps": 0, "stage_b_models": [], "stage_b_encoder": False}


@dataclass
class ExtendArgs:
    """One new receiver on a trained wire and how its head trains."""

    receiver: str = ""  # registry name of the newcomer
    read_private_of: str = ""  # wire receiver whose private slots it reads ("" = first by name)
    train: TrainArgs = field(default_factory=TrainArgs)  # the experiment's, with the overrides
    loss: LossArgs = field(default_factory=LossArgs)
    # LoRA on the newcomer alone, for an experiment without receiver LoRA (rank 0 = none; with
    # experiment LoRA the newcomer gets the experiment's, like every other head)
    lora: LoraArgs = field(default_factory=LoraArgs)

    def validate(self) -> None:
        if not self.receiver:
            raise ConfigError("receiver: name the registry model to add")
        clash = {k: getattr(self.train, k) for k, v in FORCED_TRAIN.items() if getattr(self.train, k) != v}
        if clash:
            raise ConfigError(
                f"train: {sorted(clash)} cannot be set for an added receiver (the encoder is frozen "
                "and the newcomer is the only receiver that trains)"
            )


def extension_train_args(experiment: TrainArgs, overrides: dict) -> TrainArgs:
    """The experiment's TrainArgs with ``overrides``, the Stage A0 / Stage B subset keys reset."""
    bad = sorted(set(overrides) & set(FORCED_TRAIN))
    if bad:
        raise ConfigError(f"train: {bad} cannot be set for an added receiver (its encoder is frozen)")
    merged = {**to_dict(experiment), **FORCED_TRAIN, **overrides}
    return from_dict(TrainArgs, merged, where="train")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(sd: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted keys, dtypes, shapes and raw bytes of a state dict (file-format free)."""
    digest = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        digest.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def own_keys(sd: dict[str, torch.Tensor], receiver: str) -> set[str]:
    """The checkpoint keys of ``receiver``'s own reading heads and LoRA (see Interlingua's state)."""
    k = _key(receiver)
    prefixes = [f"{part}.{k}." for part in ("adapters", "deep", "coproc", "gist", "lora")]
    return {key for key in sd if any(key.startswith(p) for p in prefixes)}


def frozen_part(sd: dict[str, torch.Tensor], receiver: str) -> dict[str, torch.Tensor]:
    own = own_keys(sd, receiver)
    return {k: v for k, v in sd.items() if k not in own}


def extension_run(run: LatentRunArgs, ext: ExtendArgs) -> LatentRunArgs:
    """The run the newcomer trains under: the experiment's wire, prompt and eval; the extension's
    train schedule and loss."""
    return replace(run, train=ext.train, loss=ext.loss)


def build_extended(
    run: LatentRunArgs,
    ext: ExtendArgs,
    wire_lms: list[LoadedModel],
    new_lm: LoadedModel,
    checkpoint: str | Path,
    device: torch.device,
    sources: list[LoadedModel] | None = None,
) -> tuple[Interlingua, dict]:
    """The experiment's interlingua loaded from ``checkpoint`` plus a fresh head for ``new_lm``,
    everything but that head frozen. Returns (interlingua, record of what was frozen, with hashes).

    ``checkpoint`` is the experiment's (``best.safetensors``) or an extension's own: either way its
    tensors besides the newcomer's are the frozen part, and the newcomer's, if present, are loaded.
    """
    wire = sorted(lm.spec.name for lm in wire_lms)
    if new_lm.spec.name in wire:
        raise ConfigError(f"receiver {new_lm.spec.name!r} is already on the wire {wire}")
    donor = ext.read_private_of or wire[0]
    if donor not in wire:
        raise ConfigError(f"read_private_of: {donor!r} is not a receiver of the experiment ({wire})")
    torch.manual_seed(ext.train.seed)  # the newcomer's head init
    private_of = {new_lm.spec.name: donor}
    if ext.lora.rank and run.latent.lora.rank:
        raise ConfigError("lora: the experiment has receiver LoRA already; the newcomer gets its own")
    il = build_interlingua(run.latent, [*wire_lms, new_lm], device, sources, private_of)
    if ext.lora.rank:
        apply_lora(new_lm.model, ext.lora)
        il.attach_lora(new_lm.spec.name, new_lm.model)
    fresh = il.trainable_state_dict()
    saved = load_file(str(checkpoint))
    frozen = frozen_part(saved, new_lm.spec.name)
    expected = {k: v.shape for k, v in frozen_part(fresh, new_lm.spec.name).items()}
    if {k: v.shape for k, v in frozen.items()} != expected:
        missing, extra = sorted(set(expected) - set(frozen))[:5], sorted(set(frozen) - set(expected))[:5]
        shapes = sorted(k for k in set(frozen) & set(expected) if frozen[k].shape != expected[k])[:5]
        raise ConfigError(
            f"{checkpoint}: not a checkpoint of this experiment's receivers {wire} "
            f"(missing {missing}, unexpected {extra}, other shapes {shapes})"
        )
    own = {k: v for k, v in saved.items() if k not in frozen}
    il.load_trainable_state_dict({**fresh, **frozen, **own})
    il.freeze_except([new_lm.spec.name])
    record = {
        "receiver": new_lm.spec.name,
        "reads_private_of": donor if run.latent.n_private else None,
        "wire_receivers": wire,
        "wire_slots": il.wire_slots(),
        "frozen_tensors": len(frozen),
        "frozen_sha256": tensors_sha256(frozen),
        "trainable_keys": sorted(own_keys(fresh, new_lm.spec.name)),
    }
    return il, record


def check_frozen(path: str | Path, receiver: str, frozen_sha256: str) -> None:
    """Raise unless the checkpoint at ``path`` holds exactly the frozen tensors hashed before."""
    got = tensors_sha256(frozen_part(load_file(str(path)), receiver))
    if got != frozen_sha256:
        raise RuntimeError(f"{path}: the frozen wire changed (tensor sha256 {got}, expected {frozen_sha256})")


def add_receiver(
    run: LatentRunArgs,
    ext: ExtendArgs,
    wire_lms: list[LoadedModel],
    new_lm: LoadedModel,
    checkpoint: str | Path,
    train_df,
    val_df,
    out_dir: str | Path,
    device: torch.device,
    sources: list[LoadedModel] | None = None,
    teacher_path: str | None = None,
) -> dict:
    """Train ``new_lm``'s head on the experiment's frozen wire; write ``extension.json``.

    Checkpoints, log and summary land in ``out_dir`` as for :func:`latentwire.training.loop.train`; every
    checkpoint holds the whole interlingua (frozen part included, so evaluation loads one file) and
    is checked against the source's hash. Returns ``{"summary", "extension"}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source_sha = file_sha256(checkpoint)
    il, record = build_extended(run, ext, wire_lms, new_lm, checkpoint, device, sources)
    record = {"source_checkpoint": str(checkpoint), "source_sha256": source_sha, **record}
    n_train = sum(p.numel() for p in il.trainable_parameters())
    log.info(
        "adding %s to the wire of %s: %d trainable parameters",
        new_lm.spec.name,
        record["wire_receivers"],
        n_train,
    )
    summary = train(
        [new_lm],
        extension_run(run, ext),
        train_df,
        val_df,
        out_dir,
        device,
        [teacher_path],
        il=il,
        identity_extra={"wire": {"source_sha256": source_sha, "receivers": record["wire_receivers"]}},
    )
    check_frozen(out_dir / "best.safetensors", new_lm.spec.name, record["frozen_sha256"])
    record["frozen_verified"] = True
    write_json(out_dir / "extension.json", record)
    return {"summary": summary, "extension": record}


def load_added(
    run: LatentRunArgs,
    ext: ExtendArgs,
    wire_lms: list[LoadedModel],
    new_lm: LoadedModel,
    source_checkpoint: str | Path,
    extension_dir: str | Path,
    device: torch.device,
    sources: list[LoadedModel] | None = None,
) -> tuple[Interlingua, dict]:
    """The extended interlingua from ``extension_dir/best.safetensors``, after checking that the
    source checkpoint is the one trained on (file sha256) and that the frozen part is unchanged."""
    record = read_json(Path(extension_dir) / "extension.json")
    if file_sha256(source_checkpoint) != record["source_sha256"]:
        raise ConfigError(f"{source_checkpoint}: not the checkpoint {new_lm.spec.name!r} was trained on")
    best = Path(extension_dir) / "best.safetensors"
    check_frozen(best, new_lm.spec.name, record["frozen_sha256"])
    il, _ = build_extended(run, ext, wire_lms, new_lm, best, device, sources)
    return il, record


# --- workflow config: latent.extensions ------------------------------------------------------


@dataclass
class Extension:
    """One ``latent.extensions`` entry: experiment ``exp``'s wire extended by ``args.receiver``."""

    name: str
    exp: str
    args: ExtendArgs

    @property
    def label(self) -> str:
        """The extended wire's experiment name in system names: ``latent:{exp}+{receiver}``."""
        return f"{self.exp}+{self.args.receiver}"


def parse_extensions(
    raw: dict, experiments: dict[str, LatentRunArgs], receivers: list[str], registry: dict
) -> dict[str, Extension]:
    """``latent.extensions`` → validated :class:`Extension` per name. Each entry: ``from`` (an
    experiment), ``receiver`` (a registry model that is not already a receiver), optional
    ``read_private_of``, ``train`` and ``loss`` overrides of the experiment's settings, ``lora``."""
    out, labels = {}, {}
    for name, entry in raw.items():
        where = f"latent.extensions.{name}"
        entry = dict(entry or {})
        exp, receiver = entry.pop("from", None), entry.get("receiver")
        if exp not in experiments:
            raise ConfigError(
                f"{where}.from: {exp!r} is not a latent experiment; known: {sorted(experiments)}"
            )
        if receiver not in registry:
            raise ConfigError(
                f"{where}.receiver: {receiver!r} not in the registry; known: {sorted(registry)}"
            )
        if receiver in receivers:
            raise ConfigError(f"{where}.receiver: {receiver!r} is already a receiver of {exp!r} (models)")
        run = experiments[exp]
        try:
            entry["train"] = to_dict(extension_train_args(run.train, entry.get("train") or {}))
        except ConfigError as e:
            raise ConfigError(f"{where}.{e}") from None
        entry["loss"] = {**to_dict(run.loss), **(entry.get("loss") or {})}
        args = from_dict(ExtendArgs, entry, where=where)
        if args.read_private_of and args.read_private_of not in receivers:
            raise ConfigError(f"{where}.read_private_of: {args.read_private_of!r} is not one of {receivers}")
        ext = Extension(name, exp, args)
        if ext.label in labels:
            raise ConfigError(
                f"{where}: adds {receiver!r} to {exp!r} like latent.extensions.{labels[ext.label]}"
            )
        labels[ext.label] = name
        out[name] = ext
    return out
