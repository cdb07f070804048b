"""The rivals every latent is scheduled beside (the workflow config's ``comparators:`` section).

For each M that a latent experiment's receivers read (``LatentArgs.read_slots``), the workflow adds
the token budget ``budget-M`` and the discrete comparators of :mod:`latentwire.evaluation.comparators`
at that M (``select-text-M`` only where a ``select`` experiment reads M slots: its checkpoint decides
the kept tokens). ``tuned`` adds matched-supervision text ceilings
(:mod:`latentwire.training.text_tuning`): LoRA on each receiver reading ``text`` or ``select-text-M``,
trained on the schedule and losses of the named latent experiment's Stage B, one job per seed. This
module builds training's settings (``TunedArgs``, ``LatentRunArgs``), so it sits with the plan, not
in :mod:`latentwire.evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from latentwire.config import ConfigError
from latentwire.evaluation.evaluate import EvalArgs
from latentwire.heads.lora import LoraArgs
from latentwire.prompt import PromptArgs
from latentwire.training.args import LatentRunArgs
from latentwire.training.text_tuning import TUNABLE, TunedArgs, stage_b_schedule

KINDS = ("tail", "lexical", "selfinfo", "select-text", "oracle")


@dataclass
class TunedPlanArgs:
    """Which tuned text ceilings to train (``comparators.tuned``)."""

    like: str = ""  # latent experiment whose Stage B schedule and losses they copy ("" = none)
    kinds: list[str] = field(default_factory=lambda: ["text", "select-text"])
    seeds: list[int] = field(default_factory=lambda: [0])
    lora: LoraArgs = field(default_factory=lambda: LoraArgs(rank=8))

    def validate(self) -> None:
        bad = sorted(set(self.kinds) - set(TUNABLE))
        if bad:
            raise ConfigError(f"comparators.tuned.kinds: {bad} not in {list(TUNABLE)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"comparators.tuned.seeds: {self.seeds} must be distinct seeds >= 0")
        if self.lora.rank < 1:
            raise ConfigError("comparators.tuned.lora.rank: must be >= 1")


@dataclass
class ComparatorArgs:
    """The ``comparators:`` section: discrete rivals at every latent M, and tuned text ceilings."""

    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    select_from: str = ""  # select experiment whose checkpoint select-text-M reads ("" = the first)
    tuned: TunedPlanArgs = field(default_factory=TunedPlanArgs)

    def validate(self) -> None:
        bad = sorted(set(self.kinds) - set(KINDS))
        if bad:
            raise ConfigError(f"comparators.kinds: {bad} not in {list(KINDS)}")


def is_select(run: LatentRunArgs) -> bool:
    return run.latent.encoder.name == "select"


def select_source(args: ComparatorArgs, experiments: dict[str, LatentRunArgs]) -> str | None:
    """The select experiment whose kept tokens ``select-text-M`` feeds as text, or None."""
    if args.select_from:
        if args.select_from not in experiments or not is_select(experiments[args.select_from]):
            raise ConfigError(
                f"comparators.select_from: {args.select_from!r} is not a select experiment of latent.experiments"
            )
        return args.select_from
    return next((e for e, run in experiments.items() if is_select(run)), None)


def rival_baselines(args: ComparatorArgs, experiments: dict[str, LatentRunArgs]) -> list[str]:
    """``budget-M`` and the comparators at every M that some latent reads, in a stable order."""
    ms = sorted({run.latent.read_slots() for run in experiments.values()})
    src = select_source(args, experiments)
    src_m = experiments[src].latent.read_slots() if src else None
    out = []
    for m in ms:
        out.append(f"budget-{m}")
        for kind in args.kinds:
            if kind != "select-text" or m == src_m:
                out.append(f"{kind}-{m}")
    return out


def tuned_kinds(args: ComparatorArgs, experiments: dict[str, LatentRunArgs]) -> list[str]:
    """The ``{tuned}`` wildcard values: ``text`` and/or ``select-text-M`` (M of the select source)."""
    if not args.tuned.like:
        return []
    if args.tuned.like not in experiments:
        raise ConfigError(f"comparators.tuned.like: {args.tuned.like!r} is not in latent.experiments")
    like = experiments[args.tuned.like].train
    if like.steps - like.encoder_warmup_steps < 1:  # else a tuned ceiling of 0 steps fails in its job
        raise ConfigError(
            f"comparators.tuned.like: {args.tuned.like!r} has no Stage B steps to copy (its train.steps "
            f"{like.steps} = encoder_warmup_steps {like.encoder_warmup_steps})"
        )
    out = []
    for kind in args.tuned.kinds:
        if kind == "text":
            out.append("text")
            continue
        src = select_source(args, experiments)
        if src is None:
            raise ConfigError("comparators.tuned.kinds: select-text needs a select experiment")
        out.append(f"select-text-{experiments[src].latent.read_slots()}")
    return out


def tuned_args(
    args: ComparatorArgs,
    experiments: dict[str, LatentRunArgs],
    kind: str,
    seed: int,
    prompt: PromptArgs,
    ev: EvalArgs,
) -> TunedArgs:
    """One tuned ceiling's settings: the ``like`` experiment's Stage B schedule and answer losses."""
    like = experiments[args.tuned.like]
    loss = replace(like.loss, w_kd=0.0, w_hidden=0.0, hidden_layers=[], w_gist=0.0)
    out = TunedArgs(kind, args.tuned.lora, loss, stage_b_schedule(like.train, seed), prompt, ev)
    out.validate()
    return out
