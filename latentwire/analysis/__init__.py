"""Analysis: read the pipeline's result files and turn them into tables, intervals and figures.

``results`` (every metrics / predictions file as one typed set), ``stats`` (bootstrap intervals,
paired and clustered), ``intervals`` and ``hypotheses`` (the report's tables over them), ``tables``
(the results table), ``figures`` (PNG + SVG). Analysis reads only JSON / JSONL files, never
checkpoints; of the packages above it, it imports only ``evaluation.baselines.parse_baseline``
(to name a baseline's kind and M).
"""
