"""Reading heads: how a frozen receiver reads the shared latent Z.

``adapters`` (soft tokens in the input-embedding space), ``deep_prefix`` (per-layer K/V entries),
``coprocessor`` (deltas into the receiver's own cache of the latent), ``lora`` (scoped receiver LoRA),
``gist`` (the content-reconstruction head of the auxiliary loss) and ``vocab_align`` (a least-squares
start for an adapter from the shared vocabulary). Each head is one module; the interlingua
(:mod:`latentwire.latent.interlingua`) composes them.
"""
