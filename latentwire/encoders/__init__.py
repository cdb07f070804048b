"""Text → Z encoders: ``build_encoder(args, n_slots)`` returns a module mapping list[str] → (B, M, d_z).

Importing this package registers every encoder in :data:`ENCODERS`:
``byte`` (byte.py, trained from scratch) and ``simple-st``, ``stq``, ``meanpool`` (minilm.py, on a
frozen all-MiniLM-L6-v2 that never enters a checkpoint). See core.py for the args and the
trainable-only checkpoint helpers.
"""

from latentwire.encoders import byte, minilm  # noqa: F401  (registers the encoders)
from latentwire.encoders.core import (
    ENCODERS,
    EncoderArgs,
    build_encoder,
    load_trainable_state_dict,
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
    "trainable_state_dict",
]
