"""The latent runs' Stage A / B / C jobs and the wildcards that name them.

Every latent experiment of the plan (``latent.experiments.<name>``, a sweep cell, or one seed of an
experiment that lists ``seeds``) is one *run*: its name ``exp`` stays the system name the tables
report (``latent:{exp}``). The rules ``stage_a`` / ``stage_b`` / ``stage_c`` (``workflow/rules/latent.smk``)
run it under the wildcards of :class:`LatentCell`: the encoder, M (the slots each receiver reads),
d_z and the reading head, which the run's settings decide, and the preset (the experiment's name in
the config) and train.seed, which tell two runs on the same axes apart. :func:`run_at` maps a job's
wildcards back to its run and refuses wildcards its settings do not have, so a path names the run's
real axes.

Stages of one run (``train.*`` of :class:`~latentwire.training.args.TrainArgs`): Stage A is the
first :meth:`~latentwire.training.args.TrainArgs.stage_a_end` steps (A0, the encoder's own warm-up,
``encoder_warmup_steps``, and A, the first-token warm-up, ``stage_a_steps``); Stage B continues the
same trajectory (optimizer, schedule, RNG) to ``train.steps`` from Stage A's state; Stage C evaluates
Stage B's checkpoint with the controls and wire formats.
"""

from __future__ import annotations

from dataclasses import dataclass

from latentwire.config import ConfigError
from latentwire.training.args import LatentRunArgs

#: wildcards of a latent run's folder (latentwire.plan.paths.LATENT), in path order
CELL_WILDCARDS = ("encoder", "M", "dz", "head", "preset", "seed")


@dataclass(frozen=True)
class LatentCell:
    """Where one run sits: its axes (set by its settings), its preset and its seed."""

    encoder: str  # latent.encoder.name
    M: int  # slots each receiver reads: n_shared + n_private (what budget-M matches)
    dz: int  # latent.encoder.d_z
    head: str  # reading heads (LatentArgs.head_name): shallow, deep, shallow+deep, ... (+lora)
    preset: str  # the latent.experiments (or sweep) name the run comes from
    seed: int  # train.seed

    def wildcards(self) -> dict[str, str | int]:
        """The run's wildcard values, for :mod:`latentwire.plan.paths` (``latent_dir(dataset, **…)``)."""
        return {k: getattr(self, k) for k in CELL_WILDCARDS}


def cell_of(run: LatentRunArgs, preset: str) -> LatentCell:
    """The cell a run's settings put it in."""
    lat = run.latent
    return LatentCell(
        lat.encoder.name, lat.read_slots(), lat.encoder.d_z, lat.head_name(), preset, run.train.seed
    )


def latent_cells(experiments: dict[str, LatentRunArgs], presets: dict[str, str]) -> dict[str, LatentCell]:
    """Each run's cell (``presets``: run name -> preset; a run missing there is its own preset). Two
    runs may not share a cell: the second would write the first one's files."""
    cells = {exp: cell_of(run, presets.get(exp, exp)) for exp, run in experiments.items()}
    seen: dict[LatentCell, str] = {}
    for exp, cell in cells.items():
        if cell in seen:
            raise ConfigError(
                f"latent.experiments: {seen[cell]!r} and {exp!r} are the same run (preset {cell.preset!r}, "
                f"train.seed {cell.seed}); give them different seeds or names"
            )
        seen[cell] = exp
    return cells


def run_at(cells: dict[str, LatentCell], wildcards: dict) -> str:
    """The run whose cell the job's wildcards name; ConfigError when its settings say otherwise (a
    path such as ``.../M16-dz256/...`` for a run that reads 48 slots)."""
    for exp, cell in cells.items():
        if cell.preset == wildcards["preset"] and str(cell.seed) == str(wildcards["seed"]):
            got = {k: str(wildcards[k]) for k in CELL_WILDCARDS}
            if got != {k: str(v) for k, v in cell.wildcards().items()}:
                raise ConfigError(f"latent run {exp!r} sits at {cell.wildcards()}, not at {got}")
            return exp
    raise ConfigError(f"no latent run of preset {wildcards['preset']!r} at seed {wildcards['seed']}")


def expand_seeds(name: str, overrides: dict | None) -> dict[str, tuple[str, dict]]:
    """An experiment's ``seeds: [s, ...]``: one run ``{name}-s{s}`` per seed (train.seed = s), each of
    preset ``name``; without ``seeds``, the experiment itself. Returns run name -> (preset, overrides)."""
    overrides = dict(overrides or {})
    if "seeds" not in overrides:
        return {name: (name, overrides)}
    seeds = overrides.pop("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"latent.experiments.{name}.seeds: {seeds!r} must be a list of seeds >= 0")
    if len(set(seeds)) != len(seeds) or "seed" in (overrides.get("train") or {}):
        raise ConfigError(f"latent.experiments.{name}.seeds: distinct seeds, and no train.seed beside them")
    out = {}
    for s in seeds:
        train = {**(overrides.get("train") or {}), "seed": s}
        out[f"{name}-s{s}"] = (name, {**overrides, "train": train})
    return out
