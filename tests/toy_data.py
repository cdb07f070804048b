"""Toy "capital of" QA rows in the prepared-data schema (id, question, context, answers, title, split,
dataset), shared by the tests that train or evaluate on a handful of examples."""

from __future__ import annotations

import pandas as pd


def capital_frame(
    split: str,
    rows: list[tuple[str, str]],
    start: int,
    *,
    context: str = "{city} is the capital and largest city of {country}.",
    id_format: str = "q{n}",
    city_alias: bool = False,
) -> pd.DataFrame:
    """One row per (city, country) of ``rows``; ids count from ``start`` (``id_format`` gets ``n`` and
    ``split``); ``context`` is formatted with ``city`` and ``country``; ``city_alias`` adds the gold
    answer "<city> city" beside "<city>"."""
    return pd.DataFrame(
        [
            {
                "id": id_format.format(n=start + i, split=split),
                "question": f"What is the capital of {country}?",
                "context": context.format(city=city, country=country),
                "answers": [city, f"{city} city"] if city_alias else [city],
                "title": country,
                "split": split,
                "dataset": "toy",
            }
            for i, (city, country) in enumerate(rows)
        ]
    )
