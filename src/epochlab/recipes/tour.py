"""The tour: every slide of the seed reproduced, corrected, and written as one HTML page.

This module owns running the slides in order and assembling the page:
:class:`Tour` is what every slide gets (the store it records runs in, study
names, the sizes of quick and full mode, results earlier slides left for
later ones), :func:`slides` lists the slides, and :func:`run_tour` runs them
with a progress display, turns a slide that raises into a section that says
so, and writes ``index.html`` with :mod:`epochlab.report.html`, the same
parts ``epochlab report --html`` uses.

The slides themselves live in :mod:`~epochlab.recipes.slides_mlp` (1-3, 6,
7: the seed's MLP on ``make_classification`` data),
:mod:`~epochlab.recipes.slides_studies` (4, 5, 8, 9, 13, 14: sweeps),
:mod:`~epochlab.recipes.slides_models` (10-12: CNN, transfer, LSTM) and
:mod:`~epochlab.recipes.slide_takeaways` (15).
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from epochlab.report.html import Section, write_page
from epochlab.store.base import Store
from epochlab.store.record import record_history
from epochlab.train.history import History

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from epochlab.data.base import DataBundle

__all__ = ["FULL", "QUICK", "Slide", "Tour", "TourResult", "TourSizes", "run_tour", "slides"]


@dataclass(frozen=True)
class TourSizes:
    """How much each slide trains: the seed's settings in full mode, a fraction in quick mode."""

    seeds: tuple[int, ...] = (0, 1, 2)
    accounting_epochs: int = 10          # slides 1-2: the seed's 10
    batch_epochs: int = 10               # slide 4
    lr_epochs: int = 50                  # slide 5
    es_max_epochs: int = 100             # slide 6
    reference_epochs: int = 10           # slide 7
    schedule_epochs: int = 20            # slide 8
    bn_epochs: int = 20                  # slide 9
    transfer_epochs: int = 10            # slide 10 (pretraining too)
    transfer_target: float = 0.95
    transfer_max_train: int | None = None
    cnn_epochs: int = 5                  # slide 11: the seed's 5 epochs at a constant rate
    cnn_one_cycle_epochs: int = 10       # ... and a better recipe beside it (0: skip)
    cnn_max_train: int | None = None
    mnist_max_train: int = 6000          # MNIST, when it is in the data folder: a subset
    lstm_epochs: int = 10                # slide 12: the seed's 5 are not enough here (see there)
    lstm_samples: int = 4000
    lstm_maxlen: int = 50
    imdb_max_train: int = 2000
    grid_epochs: tuple[int, ...] = (5, 10, 15)          # slides 13-14
    grid_batch_sizes: tuple[int, ...] = (32, 64, 128)
    grid_digits_test_size: float = 0.2


FULL = TourSizes()
"""``make demo``: the seed's epochs and batch sizes, three weight seeds where seeds matter."""

QUICK = TourSizes(
    seeds=(0, 1), accounting_epochs=4, batch_epochs=3, lr_epochs=6, es_max_epochs=25,
    reference_epochs=3, schedule_epochs=4, bn_epochs=4, transfer_epochs=2,
    transfer_target=0.8, transfer_max_train=250, cnn_epochs=2, cnn_one_cycle_epochs=0,
    cnn_max_train=400, mnist_max_train=1000, lstm_epochs=2, lstm_samples=600, lstm_maxlen=20,
    imdb_max_train=300, grid_epochs=(1, 2, 3), grid_batch_sizes=(32, 64, 128),
    grid_digits_test_size=0.7,
)
"""``epochlab tour --quick``: every section and figure, on little data and few epochs."""


@dataclass
class Tour:
    """What every slide gets: where to record runs, how much to train, what came before.

    Attributes:
        store: runs are recorded here, one study per slide that trains.
        prefix: the studies' common name prefix (``tour-20260101-120000``).
        sizes: :data:`FULL` or :data:`QUICK`.
        quick: True in quick mode (the page says so).
        results: what a slide leaves for later ones (slide 15 reads them).
        studies: every study this tour wrote, in order.
    """

    store: Store
    prefix: str
    sizes: TourSizes
    quick: bool = False
    results: dict[str, Any] = field(default_factory=dict)
    studies: list[str] = field(default_factory=list)
    _data: dict[str, Any] = field(default_factory=dict)

    def study(self, number: int, slug: str) -> str:
        """The study name of slide ``number`` (recorded in :attr:`studies`)."""
        name = f"{self.prefix}-s{number:02d}-{slug}"
        if name not in self.studies:
            self.studies.append(name)
        return name

    def record(self, study: str, key: str, history: History, settings: dict[str, Any]) -> int:
        """Store one ``fit`` run of a slide, as ``epochlab fit`` does."""
        return record_history(self.store, study, key, settings, history)

    @property
    def synthetic(self) -> DataBundle:
        """The seed's slide-1 data: 1000 ``make_classification`` rows, 800 for training."""
        if "synthetic" not in self._data:
            from epochlab.data.synthetic import synthetic

            self._data["synthetic"] = synthetic()
        return self._data["synthetic"]


@dataclass(frozen=True)
class Slide:
    """One slide of the seed: its number, what the section is about, and the function."""

    number: int
    title: str
    run: Callable[[Tour], Section]


def slides() -> list[Slide]:
    """The fifteen slides, in the seed's order."""
    from epochlab.recipes import slide_takeaways, slides_mlp, slides_models, slides_studies

    return [
        Slide(1, "Epochs and iterations: the accounting of a real run", slides_mlp.slide_01),
        Slide(2, "Loss over epochs, and the number of updates", slides_mlp.slide_02),
        Slide(3, "One iteration opened up", slides_mlp.slide_03),
        Slide(4, "Batch size: 16, 32, 64, 128", slides_studies.slide_04),
        Slide(5, "Learning rates 0.1 to 0.0001 over epochs", slides_studies.slide_05),
        Slide(6, "Early stopping", slides_mlp.slide_06),
        Slide(7, "Mini-batch gradient descent from scratch, beside epochlab's loop",
              slides_mlp.slide_07),
        Slide(8, "Learning-rate schedules", slides_studies.slide_08),
        Slide(9, "Batch normalization on and off", slides_studies.slide_09),
        Slide(10, "Transfer learning: epochs saved by a pretrained backbone",
              slides_models.slide_10),
        Slide(11, "A CNN on handwritten digits", slides_models.slide_11),
        Slide(12, "An LSTM on a sequence task, against bag-of-words", slides_models.slide_12),
        Slide(13, "The epochs x batch-size grid", slides_studies.slide_13),
        Slide(14, "The heatmap", slides_studies.slide_14),
        Slide(15, "What to take away", slide_takeaways.slide_15),
    ]


@dataclass
class TourResult:
    """Where the page is, what each slide took, which studies hold the runs."""

    path: Path
    sections: list[Section]
    seconds: float
    slide_seconds: dict[int, float]
    studies: list[str]
    failed: list[int]
    cpu_seconds: float = 0.0


class _Progress:
    """Says which slide runs: a spinner on a terminal, and a line per slide always."""

    def __init__(self, console: Console | None, total: int) -> None:
        self.console, self.total = console, total

    def run(self, slide: Slide, fn: Callable[[], Section]) -> Section:
        label = f"slide {slide.number:>2}/{self.total}: {slide.title}"
        if self.console is None:
            return fn()
        t0, c0 = time.perf_counter(), time.process_time()
        if self.console.is_terminal:
            with self.console.status(f"[bold]{label}[/] ...", spinner="dots"):
                section = fn()
        else:
            self.console.print(f"{label} ...")
            section = fn()
        mark = "[green]done[/]" if section.status == "ok" else "[red]FAILED[/]"
        self.console.print(f"{label}  {mark} in {time.perf_counter() - t0:.1f} s "
                           f"(CPU {time.process_time() - c0:.1f} s)")
        return section


def _unique_prefix(store: Store, prefix: str) -> str:
    names = {s["name"] for s in store.studies()}
    taken = any(n.startswith(prefix + "-s") for n in names)
    if not taken:
        return prefix
    i = 2
    while any(n.startswith(f"{prefix}.{i}-s") for n in names):
        i += 1
    return f"{prefix}.{i}"


def run_tour(
    out: str | os.PathLike,
    *,
    quick: bool = False,
    store: Store | None = None,
    prefix: str | None = None,
    console: Console | None = None,
    only: tuple[int, ...] | None = None,
) -> TourResult:
    """Run every slide, record its runs in ``store`` and write ``out/index.html``.

    Args:
        out: the folder of the page.
        quick: little data and few epochs (tests); the full tour is ``make demo``.
        store: where runs are recorded; None keeps them in memory.
        prefix: the studies' name prefix; default ``tour-<date>-<time>`` (``-quick``).
        console: a rich Console for the progress display; None shows nothing.
        only: run only these slide numbers (the others are left out of the page).

    Example:
        >>> import tempfile
        >>> r = run_tour(tempfile.mkdtemp(), quick=True, only=(1, 2))  # doctest: +SKIP
        >>> r.path.name, len(r.sections)  # doctest: +SKIP
        ('index.html', 2)
    """
    if store is None:
        from epochlab.store.memory import MemoryStore

        store = MemoryStore()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    prefix = _unique_prefix(store, prefix or f"tour-{stamp}" + ("-quick" if quick else ""))
    tour = Tour(store, prefix, QUICK if quick else FULL, quick)
    every = slides()
    chosen = [s for s in every if only is None or s.number in only]
    progress = _Progress(console, len(every))
    sections, seconds, failed = [], {}, []
    t0, c0 = time.perf_counter(), time.process_time()
    for slide in chosen:
        s0 = time.perf_counter()
        section = progress.run(slide, lambda slide=slide: _run_slide(slide, tour))
        seconds[slide.number] = time.perf_counter() - s0
        section.anchor = f"slide-{slide.number}"
        section.notes.append(f"Took {seconds[slide.number]:.1f} s of wall time.")
        if section.status != "ok":
            failed.append(slide.number)
        sections.append(section)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    path = write_page(Path(out) / "index.html", "epochlab tour: the seed's slides, reproduced "
                      "and corrected", sections, intro=_INTRO, meta=_meta(tour, total, cpu))
    return TourResult(path, sections, total, seconds, tour.studies, failed, cpu)


def _run_slide(slide: Slide, tour: Tour) -> Section:
    try:
        section = slide.run(tour)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one broken slide must not cost the other fourteen
        return Section(f"Slide {slide.number}: {slide.title}",
                       "This slide could not be reproduced in this run.", status="failed",
                       notes=[f"{type(e).__name__}: {e}", traceback.format_exc(limit=-4)])
    section.title = f"Slide {slide.number}: {slide.title}"
    return section


_INTRO = (
    "The slide deck \"Epochs and Iterations in Neural Network Training\" shows, in Keras, what "
    "epochs, iterations, batch sizes, learning rates, schedules and early stopping are. Every "
    "slide is run again here with epochlab (PyTorch) on data that ships with the install, with "
    "the numbers it measures. Where a slide is wrong, its section says what the slide claims "
    "and what is true.\n\n"
    "Every run is recorded in the store: `epochlab runs --study NAME` lists a slide's runs and "
    "`epochlab report --study NAME --html` writes the same kind of page for any study."
)


def _meta(tour: Tour, seconds: float, cpu: float) -> list[str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return [
        f"Mode: {'quick (little data, few epochs: for tests)' if tour.quick else 'full'}; "
        f"{seconds:.0f} s of wall time ({cpu:.0f} s of CPU time) on {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch "
        f"thread(s), load average {load[0]:.2f} at the end; torch {torch.__version__}, "
        f"Python {platform.python_version()}.",
        f"Studies (prefix {tour.prefix}): {', '.join(tour.studies)}.",
    ]
