"""Text → Z encoders: ``build_encoder(args, wire_slots, models)`` returns a module mapping list[str] → (B, W, d_z)
(W = ``wire_slots``: every slot on the wire; see core.py).

Importing this package registers every encoder in :data:`ENCODERS`:
``byte`` (byte.py, trained from scratch), ``simple-st``, ``stq``, ``meanpool`` (minilm.py, on a
frozen all-MiniLM-L6-v2 that never enters a checkpoint), ``embed`` and ``lm-hidden`` (lm.py, on a
frozen registry LLM ``source_model``, see source.py), ``select`` (select.py, a question-aware
extractive compressor on a source model: one slot per kept token), ``pooled-lm`` (pooled.py, an
ARC-Encoder-style trainable LLM trunk pooling in its last block) and ``static`` (static.py, a learned Z that
ignores the text). See core.py for the args and the trainable-only checkpoint helpers, pooling.py
for the token → slot poolers.
"""

from latentwire.encoders import byte, lm, minilm, pooled, select, static  # noqa: F401  (registers the encoders)
from latentwire.encoders.core import (
    ENCODERS,
    EncoderArgs,
    build_encoder,
    load_trainable_state_dict,
    source_model_name,
    trainable_state_dict,
)
from latentwire.encoders.minilm import load_minilm, resolve_minilm_path

__all__ = [
    "ENCODERS",
    "EncoderArgs",
    "build_encoder",
    "load_minilm",
    "load_trainable_state_dict",
    "resolve_minilm_path",
    "source_model_name",
    "trainable_state_dict",
]
