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
- A :class:`Task` is ``(members, epochs, read_outs)``. Today every task has
  one member; the shape is ready for fused training, where members that
  differ in learning rate, seed or weight decay train together as one
  vectorized model.

:class:`Plan` keeps one :class:`PlanEntry` per configuration: which task
produces it, whether it is read off a longer training, and why not when not
(e.g. "cosine depends on the run length").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from epochlab import schedules
from epochlab.sweep.spec import Config

__all__ = ["Plan", "PlanEntry", "Task", "make_plan"]


@dataclass(frozen=True)
class Task:
    """One training: its members, trained for ``epochs``, read out at ``read_outs``.

    Every ``(member, e)`` with ``e`` in ``read_outs`` is one configuration's
    result; the one at ``e == epochs`` is the trained run, the others are
    read off it.

    Example:
        >>> from epochlab.sweep.spec import SweepSpec
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


@dataclass(frozen=True)
class PlanEntry:
    """What the plan does for one configuration.

    Attributes:
        config: the configuration.
        task: label of the task that produces it.
        shared: True when its result is read off a longer training of the same task.
        reason: why it is (or is not) shared, in words.
    """

    config: Config
    task: str
    shared: bool
    reason: str


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
        """A few lines for people: counts, then one line per task."""
        separate = sum(e.config.epochs for e in self.entries)
        lines = [
            f"{self.n_configs} configurations -> {self.n_trained} training runs "
            f"({self.trained_epochs} epochs trained instead of {separate})"
        ]
        by_label = {t.label: t for t in self.tasks}
        reasons = sorted({e.reason for e in self.entries
                          if e.reason and not by_label[e.task].shared})
        for t in self.tasks:
            m = t.members[0]
            outs = ",".join(str(e) for e in sorted(t.read_outs))
            what = f"read out at epochs {outs}" if t.shared else "not shared"
            lines.append(f"  {t.label}: train {t.epochs} epochs, batch {m.batch_size}, "
                         f"lr {m.lr:g}, seed {m.seed} -> {what}")
        for r in reasons:
            lines.append(f"  not shared: {r}")
        return "\n".join(lines)


def _no_share_reason(config: Config) -> str | None:
    """Why ``config`` cannot be read off a longer run, or None when it can."""
    if config.early_stopping is not None:
        return "early stopping decides where each run ends"
    if config.schedule is not None:
        sched = schedules.parse(config.schedule)
        if sched.depends_on_total:
            return f"{sched.name} depends on the run length"
    return None


def make_plan(configs: list[Config], *, share_prefixes: bool = True) -> Plan:
    """Group ``configs`` into training tasks, sharing epoch prefixes where exact.

    Configurations equal in every setting but ``epochs`` form one task
    trained to the largest count when sharing is exact (see the module
    docstring); otherwise every configuration is its own task, with the
    reason recorded.

    Args:
        configs: the configurations to produce (e.g. the unfinished ones of a study).
        share_prefixes: False trains every configuration separately (for comparisons).

    Example:
        >>> from epochlab.sweep.spec import SweepSpec
        >>> plan = make_plan(SweepSpec(epochs=[5, 10, 15], batch_size=[32, 64]).configs())
        >>> plan.n_configs, len(plan.tasks), plan.tasks[0].read_outs
        (6, 2, (5, 10, 15))
        >>> cos = SweepSpec(epochs=[5, 10], schedule="cosine").configs()
        >>> make_plan(cos).entries[0].reason
        'cosine depends on the run length'
    """
    groups: dict[Config, list[Config]] = {}
    for c in configs:
        groups.setdefault(replace(c, epochs=1), []).append(c)
    plan = Plan()
    for members in groups.values():
        reason = _no_share_reason(members[0])
        if not share_prefixes:
            reason = "prefix sharing turned off"
        counts = sorted({c.epochs for c in members})
        if reason is None:
            top = max(counts)
            task = Task(f"t{len(plan.tasks) + 1}", (members[0].with_epochs(top),), top,
                        tuple(counts))
            plan.tasks.append(task)
            for c in members:
                shared = c.epochs < top
                why = f"read off the {top}-epoch run" if shared else (
                    "trained; shorter runs read off it" if len(counts) > 1 else "")
                plan.entries.append(PlanEntry(c, task.label, shared, why))
            continue
        for c in members:
            task = Task(f"t{len(plan.tasks) + 1}", (c,), c.epochs, (c.epochs,))
            plan.tasks.append(task)
            plan.entries.append(PlanEntry(c, task.label, False, reason if len(counts) > 1 else ""))
    order = {c: i for i, c in enumerate(configs)}
    plan.entries.sort(key=lambda e: order[e.config])
    return plan
