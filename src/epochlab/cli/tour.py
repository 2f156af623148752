"""``epochlab tour``: every slide of the seed reproduced and corrected, as one HTML page."""

from __future__ import annotations

import click

from epochlab.cli.output import console, escape
from epochlab.validation import MAX_THREADS


@click.command("tour")
@click.option("--out", default=None,
              help="Folder of the page (index.html) [default: a new runs/tour-<time>-<suffix>].")
@click.option("--overwrite", is_flag=True,
              help="Replace the page of an earlier tour in --out (`make demo` does).")
@click.option("--quick", is_flag=True,
              help="Little data and few epochs: every section and figure in well under a minute.")
@click.option("--store", "store_path", default=None,
              help="SQLite file the runs are recorded in [default: $EPOCHLAB_STORE or "
                   "./epochlab.db].")
@click.option("--study-prefix", default=None,
              help="Prefix of the studies' names [default: tour-<date>-<time>].")
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS), default=1, show_default=True,
              help="torch threads: the seed's models are tiny, one thread is fastest on a "
                   "shared CPU.")
def tour_command(out, overwrite, quick, store_path, study_prefix, threads) -> None:
    """Run every slide of the seed (15 sections) and write OUT/index.html.

    Every run is recorded in the store, one study per slide that trains
    (`epochlab runs` lists them). The page is one file: figures embedded, no
    network needed to open it.

    Example: epochlab tour --quick --out /tmp/tour
    """
    import os
    import time
    from pathlib import Path

    import torch

    from epochlab.cli.common import out_dir
    from epochlab.recipes import run_tour
    from epochlab.store import default_store_path, open_store
    from epochlab.validation import check_name, check_out_dir

    # Checked before any training: the page's folder (an earlier tour's page is replaced
    # only with --overwrite, as `make demo` asks), the prefix, the store.
    if out is not None:
        check_out_dir(out, overwrite=overwrite, marker="index.html")
    if study_prefix is not None:
        check_name("study_prefix", study_prefix)
    path = Path(store_path) if store_path else default_store_path()
    store = open_store(path)
    out = out_dir(out, "tour", overwrite=overwrite, marker="index.html")
    torch.set_num_threads(threads)
    console.print(f"[bold]epochlab tour[/] ({'quick' if quick else 'full'}): 15 slides of the "
                  f"seed; runs recorded in {escape(str(path))}")
    t0 = time.perf_counter()
    try:
        result = run_tour(out, quick=quick, store=store, prefix=study_prefix, console=console)
    finally:
        store.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    console.print(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB, "
                  f"{len(result.sections)} sections) in {time.perf_counter() - t0:.0f} s "
                  f"(CPU {result.cpu_seconds:.0f} s, load average {load:.1f}); studies "
                  + (f"{result.studies[0]} ... {result.studies[-1]}" if result.studies else "none"),
                  markup=False)
    if result.failed:
        raise click.ClickException(
            f"slide(s) {', '.join(map(str, result.failed))} failed; the page says why.")
