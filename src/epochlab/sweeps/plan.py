"""The plan of a sweep: which trainings to run so that every configuration gets its result.

This module owns the grouping, and says why it grouped as it did:

- **Epoch-prefix sharing.** Configurations that differ only in ``epochs``
  train identically up to the smaller count when their schedule does not
  depend on the run's length (``not Schedule.depends_on_total``) and no early
  stopping can end them at different epochs. They become ONE
  :class:`Task` trained to the largest count and *read out* at every
  requested count: the metrics of epochs 1..e, the test metrics of the model
  as it was at the end of epoch e, and the accounting of e epochs. This is
  exact (bit for bit on the CPU), not an approximation.
- **Fusion.** Trainings that share the model, its architecture, the data,
  the batch size, the optimizer, the validation split, early stopping and
  the epochs (and read-outs) train together as one vectorized model
  (:mod:`epochlab.sweeps.fused`) when the model is fusable
  (:func:`epochlab.sweeps.fused_layers.is_fusable`): members may differ in
  learning rate, seed (split and shuffle), weight decay and schedule. A
  :class:`Task` is ``(members, epochs, read_outs)``: every member is trained
  to ``epochs`` and read out at every count of ``read_outs``, so fusion and
  epoch-prefix sharing combine. Whether a model fuses is decided by its
  structure (:func:`epochlab.sweeps.fused_layers.is_fusable`), not its name;
  models that cannot be fused (batch norm, LSTM), data the engine does
  not take (a Dataset) and optimizers without a fused update (rmsprop) train
  one by one, and the plan says why.

:class:`Plan` keeps one :class:`PlanEntry` per configuration: which task
produces it, whether it is read off a longer training and why not when not
(e.g. "cosine depends on the run length"), and why it is not fused when not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from epochlab import schedules
from epochlab.data.base import DataBundle
from epochlab.sweeps.fused_layers import is_fusable
from epochlab.sweeps.spec import Config
from epochlab.sweeps.workload import NO_SOURCES, Sources, build_model, load_data
from epochlab.train.data import check_forward, probe_rows
from epochlab.train.runtime import fused_or_one_by_one

__all__ = ["FUSED_OPTIMIZERS", "Plan", "PlanEntry", "Task", "fusion_reason", "make_plan"]

FUSED_OPTIMIZERS = ("adam", "adamw", "sgd")
"""Optimizers the fused engine implements (as ``torch.optim`` does, per member)."""


@dataclass(frozen=True)
class Task:
    """One training: its members, trained for ``epochs``, read out at ``read_outs``.

    Every ``(member, e)`` with ``e`` in ``read_outs`` is one configuration's
    result; the one at ``e == epochs`` is the trained run, the others are
    read off it.

    Example:
        >>> from epochlab.sweeps.spec import SweepSpec
        >>> c = SweepSpec(epochs=[15]).configs()[0]
        >>> t = Task(label="t1", members=(c,), epochs=15, read_outs=(5, 10, 15))
        >>> [r.epochs for r in t.runs()], t.trained(c).epochs
        ([5, 10, 15], 15)
    """

    label: str
    members: tuple[Config, ...]
    epochs: int
    read_outs: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError(f"Task {self.label!r} has no members; a task trains at least one.")
        if not self.read_outs or max(self.read_outs) != self.epochs:
            raise ValueError(
                f"Task {self.label!r}: the largest read-out {max(self.read_outs, default=None)} "
                f"must equal `epochs` {self.epochs}."
            )
        for m in self.members:
            if m.epochs != self.epochs:
                raise ValueError(
                    f"Task {self.label!r}: member trains {m.epochs} epochs, the task {self.epochs}."
                )

    def runs(self) -> list[Config]:
        """Every configuration this task produces, member by member, read-outs ascending."""
        return [m.with_epochs(e) for m in self.members for e in sorted(self.read_outs)]

    def trained(self, member: Config) -> Config:
        """The configuration actually trained for ``member`` (the longest)."""
        return member.with_epochs(self.epochs)

    @property
    def shared(self) -> bool:
        """True when some result is read off a longer training."""
        return len(self.read_outs) > 1

    @property
    def fused(self) -> bool:
        """True when several members train together as one vectorized model."""
        return len(self.members) > 1


@dataclass(frozen=True)
class PlanEntry:
    """What the plan does for one configuration.

    Attributes:
        config: the configuration.
        task: label of the task that produces it.
        shared: True when its result is read off a longer training of the same task.
        reason: why it is (or is not) shared, in words.
        fused: True when its task trains several members together.
        fuse_reason: why it is not fused ("" when it is).
    """

    config: Config
    task: str
    shared: bool
    reason: str
    fused: bool = False
    fuse_reason: str = ""


@dataclass
class Plan:
    """Tasks to train and, per configuration, which task produces it and why."""

    tasks: list[Task] = field(default_factory=list)
    entries: list[PlanEntry] = field(default_factory=list)

    @property
    def n_configs(self) -> int:
        return len(self.entries)

    @property
    def n_trained(self) -> int:
        """Trainings actually run (members over all tasks)."""
        return sum(len(t.members) for t in self.tasks)

    @property
    def trained_epochs(self) -> int:
        """Epochs trained over the whole plan (what the time is spent on)."""
        return sum(t.epochs * len(t.members) for t in self.tasks)

    def entry(self, config: Config) -> PlanEntry:
        for e in self.entries:
            if e.config == config:
                return e
        raise KeyError(f"Configuration {config.key} is not in this plan.")

    def describe(self) -> str:
        """A few lines for people: counts, then one line per task, then why not fused/shared."""
        separate = sum(e.config.epochs for e in self.entries)
        n_fused = sum(len(t.members) for t in self.tasks if t.fused)
        lines = [
            f"{self.n_configs} configurations -> {self.n_trained} training runs "
            f"({self.trained_epochs} epochs trained instead of {separate}); "
            f"{n_fused} run(s) fused into {sum(t.fused for t in self.tasks)} task(s), "
            f"{len(self.tasks)} task(s) in all"
        ]
        by_label = {t.label: t for t in self.tasks}
        reasons = sorted({e.reason for e in self.entries
                          if e.reason and not by_label[e.task].shared})
        for t in self.tasks:
            m = t.members[0]
            outs = ",".join(str(e) for e in sorted(t.read_outs))
            what = f"read out at epochs {outs}" if t.shared else "not shared"
            if t.fused:
                lrs = ",".join(sorted({f"{c.lr:g}" for c in t.members}, key=float))
                seeds = ",".join(str(s) for s in sorted({c.seed for c in t.members}))
                extra = _varied(t.members)
                lines.append(f"  {t.label}: fused {len(t.members)} runs, train {t.epochs} epochs, "
                             f"batch {m.batch_size}, lr {lrs}, seed {seeds}{extra} -> {what}")
            else:
                lines.append(f"  {t.label}: train {t.epochs} epochs, batch {m.batch_size}, "
                             f"lr {m.lr:g}, seed {m.seed}{_setting(m)} -> {what}")
        for r in reasons:
            lines.append(f"  not shared: {r}")
        not_fused: dict[str, list[str]] = {}
        for e in self.entries:
            if not e.fused and e.fuse_reason:
                not_fused.setdefault(e.fuse_reason, []).append(e.task)
        for r, labels in not_fused.items():
            tasks = sorted(set(labels), key=lambda x: int(x[1:]))
            lines.append(f"  not fused ({', '.join(tasks)}): {r}")
        return "\n".join(lines)


def _setting(c: Config) -> str:
    """The settings a task line shows besides batch, lr and seed, when not the defaults."""
    out = ""
    if c.batch_norm:
        out += ", batch norm"
    if c.weight_decay:
        out += f", wd {c.weight_decay:g}"
    if c.schedule:
        out += f", {c.schedule}"
    return out


def _varied(members: tuple[Config, ...]) -> str:
    wds = sorted({c.weight_decay for c in members})
    scheds = sorted({c.schedule or "constant" for c in members})
    out = ""
    if wds != [0.0]:
        out += ", wd " + ",".join(f"{w:g}" for w in wds)
    if scheds != ["constant"]:
        out += ", schedule " + " | ".join(scheds)
    return out


def _no_share_reason(config: Config) -> str | None:
    """Why ``config`` cannot be read off a longer run, or None when it can."""
    if config.early_stopping is not None:
        return "early stopping decides where each run ends"
    if config.schedule is not None:
        sched = schedules.parse(config.schedule)
        if sched.depends_on_total:
            return f"{sched.name} depends on the run length"
    return None


def fusion_reason(config: Config, sources: Sources = NO_SOURCES,
                  precision: str = "auto") -> str | None:
    """Why ``config`` cannot train fused, or None when it can.

    Builds the configuration's model on its data (both cached per process)
    and asks :func:`epochlab.sweeps.fused_layers.is_fusable`: fusion is decided
    by the model's structure, whatever its name. Then speed: the fused engine
    computes in float32, so a model that trains faster one by one in bf16 at
    ``precision`` (large CNNs on a CPU with native bf16; see
    :func:`epochlab.train.runtime.fused_or_one_by_one`) trains one by one.

    Example:
        >>> from epochlab.sweeps.spec import SweepSpec
        >>> c = SweepSpec(data_options={"n_samples": 100}, batch_norm=[True]).configs()[0]
        >>> fusion_reason(c) is None
        True
        >>> fusion_reason(SweepSpec(optimizer=["rmsprop"]).configs()[0])
        'optimizer rmsprop has no fused update (fused: adam, adamw, sgd)'
    """
    if config.optimizer not in FUSED_OPTIMIZERS:
        return (f"optimizer {config.optimizer} has no fused update "
                f"(fused: {', '.join(FUSED_OPTIMIZERS)})")
    probe = replace(config, epochs=1, batch_size=1, lr=1.0, seed=0, optimizer="adam",
                    weight_decay=0.0, schedule=None, validation_split=0.0, early_stopping=None)
    if probe not in _MODEL_REASONS:
        _MODEL_REASONS[probe] = _model_reason(probe, sources)
    if _MODEL_REASONS[probe] is not None:
        return _MODEL_REASONS[probe]
    key = (probe, config.batch_size, precision)
    if key not in _SPEED_REASONS:
        data = load_data(probe, sources)
        model = build_model(probe, data, sources)
        check_forward(model, data, probe.model, probe.data)  # before anything trains
        fast, why = fused_or_one_by_one(model, probe_rows(data, model), config.batch_size,
                                        precision)
        _SPEED_REASONS[key] = None if fast else why
    return _SPEED_REASONS[key]


_MODEL_REASONS: dict[Config, str | None] = {}
_SPEED_REASONS: dict[tuple[Config, int, str], str | None] = {}


def _model_reason(probe: Config, sources: Sources) -> str | None:
    name = probe.model + (" (batch norm)" if probe.batch_norm else "")
    try:
        data = load_data(probe, sources)
        model = build_model(probe, data, sources)
    except (ValueError, TypeError) as e:  # the sweep's preflight reports bad names
        return f"model {name}: it cannot be built ({e})"
    if not isinstance(data, DataBundle):
        return f"the data is a {type(data).__name__}; fused training takes arrays"
    y = np.asarray(data.y_train)
    if y.ndim > 1 and y.shape[1] > 1 and data.task != "regression":
        return "the targets are one-hot rows; fused training takes class labels"
    check = is_fusable(model)
    return None if check else f"model {name}: {check.reason}"


def _fusion_key(c: Config) -> Config:
    """What members of one fused task share: everything but lr, seed, weight decay, schedule."""
    return replace(c, lr=1.0, seed=0, weight_decay=0.0, schedule=None)


def make_plan(
    configs: list[Config],
    *,
    share_prefixes: bool = True,
    fuse: bool = True,
    fusable: Callable[[Config], str | None] | None = None,
    max_members: int | None = None,
    sources: Sources = NO_SOURCES,
    precision: str = "auto",
) -> Plan:
    """Group ``configs`` into training tasks: epoch prefixes shared, fusable runs fused.

    First, configurations equal in every setting but ``epochs`` become one
    training to the largest count when sharing is exact (see the module
    docstring); otherwise every configuration is its own training, with the
    reason recorded. Then, with ``fuse``, trainings that differ only in
    learning rate, seed, weight decay or schedule (same epochs and read-outs)
    become one fused task when ``fusable`` says their model can be fused.

    Args:
        configs: the configurations to produce (e.g. the unfinished ones of a study).
        share_prefixes: False trains every configuration separately (for comparisons).
        fuse: False trains every training one by one (for comparisons).
        fusable: ``config -> reason it cannot be fused, or None``; default
            :func:`fusion_reason` (with ``sources`` and ``precision``).
        max_members: at most this many trainings in one fused task (a larger
            group is split into near-equal tasks, e.g. to keep several worker
            processes busy); None: no limit (the engine chunks to its memory
            budget itself).
        sources: the data and model factories a user brought (see
            :class:`~epochlab.sweeps.workload.Sources`).
        precision: the sweep's ``precision`` (see :func:`fusion_reason`).

    Example:
        >>> from epochlab.sweeps.spec import SweepSpec
        >>> plan = make_plan(SweepSpec(epochs=[5, 10, 15], batch_size=[32, 64]).configs())
        >>> plan.n_configs, len(plan.tasks), plan.tasks[0].read_outs
        (6, 2, (5, 10, 15))
        >>> cos = SweepSpec(epochs=[5, 10], schedule="cosine").configs()
        >>> make_plan(cos).entries[0].reason
        'cosine depends on the run length'
        >>> lrs = SweepSpec(epochs=[5, 10], lr=[1e-2, 1e-3], seed=[0, 1]).configs()
        >>> plan = make_plan(lrs, fusable=lambda c: None)
        >>> len(plan.tasks), len(plan.tasks[0].members), plan.tasks[0].read_outs
        (1, 4, (5, 10))
    """
    groups: dict[Config, list[Config]] = {}
    for c in configs:
        groups.setdefault(replace(c, epochs=1), []).append(c)
    # units: (trained member, epochs, read_outs, [(config, shared, reason)])
    units: list[tuple[Config, int, tuple[int, ...], list[tuple[Config, bool, str]]]] = []
    for members in groups.values():
        reason = _no_share_reason(members[0])
        if not share_prefixes:
            reason = "prefix sharing turned off"
        counts = sorted({c.epochs for c in members})
        if reason is None:
            top = max(counts)
            rows = []
            for c in members:
                shared = c.epochs < top
                why = f"read off the {top}-epoch run" if shared else (
                    "trained; shorter runs read off it" if len(counts) > 1 else "")
                rows.append((c, shared, why))
            units.append((members[0].with_epochs(top), top, tuple(counts), rows))
            continue
        for c in members:
            units.append((c, c.epochs, (c.epochs,),
                          [(c, False, reason if len(counts) > 1 else "")]))
    check = (lambda c: fusion_reason(c, sources, precision)) if fusable is None else fusable
    batches: dict[tuple, list[int]] = {}
    why_not: dict[int, str] = {}
    for i, (member, epochs, outs, _) in enumerate(units):
        reason = "fusion turned off" if not fuse else check(member)
        if reason is None:
            batches.setdefault((_fusion_key(member), epochs, outs), []).append(i)
        else:
            why_not[i] = reason
    if max_members is not None and (isinstance(max_members, bool) or max_members < 1):
        raise ValueError(f"The value of `max_members` is {max_members!r}, but must be None or "
                         "`max_members >= 1`.")
    plan = Plan()
    by_first: dict[int, list[int]] = {}
    for idx in batches.values():
        if len(idx) == 1:
            why_not[idx[0]] = ("no other run shares its model, batch size, optimizer, "
                               "epochs and read-outs")
            continue
        parts = 1 if max_members is None else -(-len(idx) // max_members)
        for p in range(parts):
            part = idx[p::parts]
            if len(part) == 1:
                why_not[part[0]] = f"fused groups split to at most {max_members} per task"
            else:
                by_first[part[0]] = part
    for i in range(len(units)):
        if i in why_not:
            idx = [i]
        elif i in by_first:
            idx = by_first[i]
        else:
            continue  # fused into an earlier task
        label = f"t{len(plan.tasks) + 1}"
        _, epochs, outs, _ = units[i]
        task = Task(label, tuple(units[j][0] for j in idx), epochs, outs)
        plan.tasks.append(task)
        for j in idx:
            for c, shared, why in units[j][3]:
                plan.entries.append(PlanEntry(c, label, shared, why, task.fused,
                                              why_not.get(j, "")))
    order = {c: i for i, c in enumerate(configs)}
    plan.entries.sort(key=lambda e: order[e.config])
    return plan
