"""The latent itself: the interlingua Z, how it is built, read into prompts and sent over the wire.

``interlingua`` (encoder + every receiver's reading heads, the slot routing), ``prompts`` (the prompt
contract's scaffold around a receiver's reading of Z, and the shuffled / zero controls), ``payload``
and ``wire`` (Z's byte counts and quantized wire formats). Evaluation and training both build on
this package; it imports neither.
"""
