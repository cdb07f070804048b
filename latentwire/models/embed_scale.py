"""The factor a receiver's embedding layer applies to its table rows (``input_embed_scale``).

Soft tokens enter through ``inputs_embeds`` and so bypass the embedding layer; an adapter must
calibrate them to what that layer outputs, RMS(table) × this factor. Gemma's layer multiplies every
row by sqrt(hidden_size) (``GemmaTextScaledWordEmbedding``), XGLM's and BioGPT's by sqrt(d_model)
when their config sets ``scale_embedding``; Llama's and Qwen2's by 1. A model that scales
``inputs_embeds`` inside its forward instead needs 1 here (soft tokens get the factor there too),
which is what the probe measures, since it reads the layer and not the forward.

Three sources, which must agree: the registry entry's value (if set), the value the model exposes
(its config's ``scale_embedding``, else the embedding module's ``embed_scale``), and the ratio of
the layer's output to the table row measured on a probe id. A disagreement is a load error that
names the entry: a wrong scale puts every soft token off the embedding manifold by that factor.
"""

from __future__ import annotations

import math

import torch

from latentwire.models.loading import LoadedModel, ModelError
from latentwire.models.spec import ModelSpec

_PROBE_ROWS = 256  # the probe is the largest-norm row among the first ones (the pad row may be zero)


def probe_id(weight: torch.Tensor) -> int:
    """A token id whose table row is not zero: the largest-norm row of the first 256. weight (V, d)."""
    with torch.no_grad():
        return int(weight[:_PROBE_ROWS].float().norm(dim=1).argmax())


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-4


@torch.no_grad()
def measured_embed_scale(model: torch.nn.Module) -> tuple[float, int]:
    """(layer output / table row, probe id) of ``model``'s input-embedding layer on one probe id.

    Raises :class:`ModelError` if the output is not the row times one constant (a layer that mixes
    or shifts rows cannot be calibrated by a factor).
    """
    emb = model.get_input_embeddings()
    w = emb.weight  # (V, d)
    pid = probe_id(w)
    out = emb(torch.tensor([pid], device=w.device))[0].float()  # (d,)
    row = w[pid].float()  # (d,)
    scale = float(out.norm() / row.norm())
    if not torch.allclose(out, row * scale, rtol=_tolerance(w.dtype), atol=1e-6 * float(out.abs().max())):
        raise ModelError(f"embedding layer {type(emb).__name__} is not a table lookup times a constant")
    return scale, pid


def exposed_embed_scale(model: torch.nn.Module) -> float | None:
    """The scale ``model`` declares: its (text) config's ``scale_embedding`` flag (sqrt of the width
    when true), else its embedding module's ``embed_scale``; None when it declares none."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if hasattr(cfg, "scale_embedding"):
        width = getattr(cfg, "d_model", None) or cfg.hidden_size
        return math.sqrt(width) if cfg.scale_embedding else 1.0
    value = getattr(model.get_input_embeddings(), "embed_scale", None)
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def resolve_input_embed_scale(spec: ModelSpec, model: torch.nn.Module) -> float:
    """The embedding scale of registry entry ``spec``'s loaded ``model``, checked three ways (module
    docstring). Returns the exposed value, else the registry's, else the measured one."""
    measured, pid = measured_embed_scale(model)
    tol = _tolerance(model.get_input_embeddings().weight.dtype)
    exposed = exposed_embed_scale(model)
    for what, value in (("registry input_embed_scale", spec.input_embed_scale), ("model config", exposed)):
        if value is not None and not math.isclose(value, measured, rel_tol=tol):
            raise ModelError(
                f"model {spec.name!r}: {what} says {value:g}, but its embedding layer scales "
                f"table row {pid} by {measured:.6g}"
            )
    for value in (exposed, spec.input_embed_scale):
        if value is not None:
            return float(value)
    return measured


def input_embed_scale(lm: LoadedModel) -> float:
    """``lm``'s embedding scale: the resolved registry value, or, for a model not loaded through
    the registry (``spec.input_embed_scale`` None, e.g. a synthetic receiver), the measured one."""
    if lm.spec.input_embed_scale is not None:
        return float(lm.spec.input_embed_scale)
    return resolve_input_embed_scale(lm.spec, lm.model)
