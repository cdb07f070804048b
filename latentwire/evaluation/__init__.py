"""Evaluation: generate and score answers for any prompt maker, and the systems it compares.

``evaluate`` (the one generate + score path and its metrics rows), ``metrics`` (pure answer metrics),
``baselines`` (text, token budgets, closed book and the discrete comparators as prompt makers),
``comparators`` (which content tokens each discrete rival keeps), ``latent_eval`` (a trained
interlingua's latent, controls and wire formats through that path), ``joint`` (rescoring over every
receiver) and ``nll_check`` (the pipeline's gold NLL beside a hand computation). Evaluation never
imports training.
"""
