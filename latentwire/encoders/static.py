"""``static`` encoder: a learned Z that ignores the text, the prompt-tuning control.

Read through the input-embedding adapters this is prompt tuning (a soft prompt, reparameterised
by the adapter); read through the deep-prefix head it is prefix tuning. Any gain an input-dependent
encoder shows over it is what the text actually contributes. Its shuffled-Z control equals the
latent itself, since every example gets the same Z.
"""

from __future__ import annotations

import torch
from torch import nn

from latentwire.encoders.core import ENCODERS, EncoderArgs, EncoderDefaults, SourceModels


@ENCODERS.register("static")
class StaticBank(EncoderDefaults, nn.Module):
    """One learned bank (W, d_z), returned for every text: Z (B, W, d_z) float32."""

    # Identical outputs for every input are this control's nature, not a training failure: training
    # does not stop it as collapsed (evaluation still reports its diversity and flags it).
    input_independent = True

    def __init__(self, args: EncoderArgs, wire_slots: int, models: SourceModels | None = None) -> None:
        super().__init__()
        self.wire_slots, self.d_z = wire_slots, args.d_z
        # Unit scale, like the LayerNorm outputs of the other encoders, so adapters see the same
        # input statistics whichever encoder feeds them.
        self.bank = nn.Parameter(torch.randn(wire_slots, args.d_z))  # (W, d_z)

    def forward(self, texts: list[str]) -> torch.Tensor:
        # A copy, not an expanded view: callers may write into Z (controls, wire round trips).
        return self.bank.expand(len(texts), -1, -1).clone()  # (B, W, d_z)
