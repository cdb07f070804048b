"""The console command's failure contract: one clear line and exit 2 for a bad input, the traceback
only with ``--debug`` / ``LATENTWIRE_DEBUG=1``; ``--model`` checked against the registry and against
the manifest's own model name."""

import json
from pathlib import Path

import pytest
import yaml

from latentwire.cli.main import main
from latentwire.models import load_registry, materialize
from latentwire.models.tiny import save_tiny

REPO = Path(__file__).resolve().parents[2]
REGISTRY = str(REPO / "config" / "models.yaml")


def baseline_args(registry: str, model: str, manifest: str, tmp_path: Path) -> list[str]:
    cfg = json.dumps({"name": "text", "eval": {"device": "cpu"}})
    return [
        "baseline",
        *("--registry", registry, "--model", model, "--manifest", manifest),
        *("--data", str(tmp_path / "none.parquet"), "--config-json", cfg),
        *("--predictions", str(tmp_path / "p.jsonl"), "--metrics", str(tmp_path / "m.json")),
    ]


def test_an_unknown_model_is_one_line_naming_it_and_the_known_ones(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LATENTWIRE_DEBUG", raising=False)
    assert main(baseline_args(REGISTRY, "nope", "x.json", tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("latentwire baseline: error: --model 'nope': not in the registry")
    assert "qwen2.5-coder-0.5b" in err[0]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(tmp_path, monkeypatch, how):
    from latentwire.config import ConfigError

    args = baseline_args(REGISTRY, "nope", "x.json", tmp_path)
    if how == "flag":
        args = ["--debug", *args]
    else:
        monkeypatch.setenv("LATENTWIRE_DEBUG", "1")
    with pytest.raises(ConfigError, match="nope"):
        main(args)


def test_a_bad_config_value_is_one_line_with_its_key_path(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LATENTWIRE_DEBUG", raising=False)
    args = baseline_args(REGISTRY, "smollm2-135m", "x.json", tmp_path)
    args[args.index("--config-json") + 1] = json.dumps({"name": "text", "eval": {"device": "gpu"}})
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latentwire baseline: error: baseline.eval.device:") and "'gpu'" in err


def test_a_manifest_of_another_model_is_refused(tmp_path, capsys, monkeypatch):
    """--model A with B's manifest used to run B and label its metrics as A's."""
    monkeypatch.delenv("LATENTWIRE_DEBUG", raising=False)
    model = save_tiny("llama", tmp_path / "tiny")
    entry = {"family": "tiny", "source": {"kind": "local", "path": str(model)}}
    registry = tmp_path / "models.yaml"
    registry.write_text(yaml.safe_dump({"models": {"a": entry, "b": entry}}))
    materialize(load_registry(registry)["b"], tmp_path / "b")
    capsys.readouterr()  # the tiny model's save progress
    assert main(baseline_args(str(registry), "a", str(tmp_path / "b" / "manifest.json"), tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert "manifest" in err and "is of model 'b'" in err and len(err.splitlines()) == 1


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"latentwire {command}: error: ")
    return err[0]


@pytest.mark.parametrize("command", ["tune-text", "eval-tuned"])
def test_the_tuned_ceiling_commands_name_an_unknown_model_in_one_line(command, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LATENTWIRE_DEBUG", raising=False)
    args = [command, "--registry", REGISTRY, "--model", "nope", "--manifest", "x.json"]
    args += ["--config-json", json.dumps({"eval": {"device": "cpu"}})]
    if command == "tune-text":
        args += ["--train", "t.parquet", "--validation", "v.parquet", "--out-dir", str(tmp_path)]
    else:
        args += ["--checkpoint", "c", "--data", "d", "--predictions", "p", "--metrics", "m"]
    assert main(args) == 2
    assert "--model 'nope': not in the registry" in _one_error_line(capsys, command)


@pytest.mark.parametrize(
    "encoder, message",
    [
        ({"name": "meanpool"}, "latent.encoder.name: the experiment's encoder is 'meanpool', not select"),
        (
            {"name": "select", "source_model": "nope"},
            "latent.encoder.source_model 'nope': not in the registry",
        ),
    ],
    ids=["not-select", "unknown-source"],
)
def test_select_windows_errors_are_one_line(encoder, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LATENTWIRE_DEBUG", raising=False)
    cfg = json.dumps({"latent": {"encoder": encoder}, "eval": {"device": "cpu"}})
    args = ["select-windows", "--registry", REGISTRY, "--manifest", "x.json", "--config-json", cfg]
    args += ["--n-models", "2", "--checkpoint", "c", "--data", "d", "--out", str(tmp_path / "w.jsonl")]
    assert main(args) == 2
    assert message in _one_error_line(capsys, "select-windows")
