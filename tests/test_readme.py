"""The README's layout table names every sub-package and rule file, and every subcommand."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_layout_table_has_a_row_per_sub_package():
    packages = sorted(p.parent.name for p in (REPO / "latentwire").glob("*/__init__.py"))
    rows = set(re.findall(r"^\| `latentwire/(\w+)/` \|", README, flags=re.M))
    assert packages and set(packages) == rows, f"README rows {sorted(rows)} vs packages {packages}"


def test_every_rule_file_and_subcommand_is_named():
    from latentwire.cli.main import build_parser

    rules = sorted(p.stem for p in (REPO / "workflow" / "rules").glob("*.smk"))
    missing = [r for r in rules if f"`{r}`" not in README]
    assert not missing, f"rule files not in the README: {missing}"
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = [c for c in sub.choices if f"`{c}`" not in README and f"latentwire {c}" not in README]
    assert not missing, f"subcommands not in the README: {missing}"
