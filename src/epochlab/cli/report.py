"""``epochlab report``: a stored study as a heatmap, validation curves and results.csv,
or (``--html``) as one self-contained HTML page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from epochlab.cli.output import console, escape

if TYPE_CHECKING:
    from epochlab.store import Store


@click.command("report")
@click.option("--study", default=None,
              help="The study's name (see `epochlab sweep`) [default: the store's only study].")
@click.option("--store", "store_path", default=None, help="SQLite file [default: $EPOCHLAB_STORE or ./epochlab.db].")
@click.option("--out", default=None, help="Output folder [default: runs/report-<study>].")
@click.option("--metric", default=None, help="Epoch metric [default: the study's; for `fit` runs val_accuracy, else val_loss].")
@click.option("--mode", type=click.Choice(["max", "min"]), default=None,
              help="Which way the metric is better [default: the study's for its metric; "
                   "min for loss/error names, max for accuracy/auc/f1/precision/recall].")
@click.option("--x", "x", default=None, help="Setting on the heatmap's x axis [default: auto].")
@click.option("--y", "y", default=None, help="Setting on the heatmap's y axis [default: auto].")
@click.option("--select", type=click.Choice(["final", "best"]), default="final", show_default=True,
              help="final: at the weights each run ends with; best: its best epoch (slide 13).")
@click.option("--html", "html", is_flag=True,
              help="Also write OUT/index.html: the study on one self-contained page (the tour's "
                   "parts: results, heatmap, curves, best run, advice).")
def report_command(study, store_path, out, metric, mode, x, y, select, html) -> None:
    """Write heatmap.png, curves_<setting>.png and results.csv for a study; print the best run.

    With --html, also index.html: one page, figures embedded, no network needed.

    Example: epochlab report --study slide13 --x batch_size --y epochs --html
    """
    from epochlab.report.study import write_report
    from epochlab.store import open_store
    from epochlab.validation import check_name, check_out_dir

    if study is not None:
        check_name("study", study)
    with open_store(store_path, create=False) as store:
        if study is None:
            study = _only_study(store)
        folder = (check_out_dir(out, overwrite=True) if out
                  else Path("runs") / f"report-{_path_safe(study)}")
        result = write_report(store, study, folder, metric=metric, mode=mode, x=x, y=y,
                              select=select)
        if html:
            from epochlab.report.study import write_html_report

            result["files"]["index.html"] = write_html_report(
                store, study, folder, metric=metric, mode=mode, select=select)
        _remove_stale(folder, set(result["files"].values()), study)
    best, config = result["best"], result.get("config")
    if config is not None:  # several seeds: the configuration, as the sweep and advice rank
        from epochlab.sweeps.ranking import SWEPT

        params = {k: v for k, v in config["settings"].items() if k in SWEPT}
        spread = f", sd {config['std']:.4f}" if config["std"] is not None else ""
        console.print(f"[bold]Best configuration[/] by {escape(result['metric'])} ({select}, "
                      f"{result['mode']}): {config['mean']:.4f}, mean of {config['seeds']} "
                      f"seeds{spread}  {escape(str(params))}; its best seed: run "
                      f"{config['runs'][0].id}")
    elif best is None:
        console.print(f"[red]No finished run has a finite {escape(result['metric'])}.[/]")
    else:
        from epochlab.sweeps.ranking import SWEPT

        settings = {k: best.settings[k] for k in SWEPT if k in best.settings}
        row = next(r for r in result["rows"] if r["run"] == best.id)
        console.print(f"[bold]Best run[/] {best.id} by {escape(result['metric'])} ({select}, "
                      f"{result['mode']}): {row[result['metric'] + '_' + select]:.4f}  "
                      f"{escape(str(settings))}")
    if result["advice"]:
        from epochlab.diagnose.advice import format_advice

        console.print("[bold]Advice[/]")
        console.print(format_advice(result["advice"]), markup=False, highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in result["files"].values()), markup=False)


_MARKER = "report.json"


def _remove_stale(folder: Path, written: set[Path], study: str) -> None:
    """Remove the files the previous report in ``folder`` wrote (as its report.json lists
    them) that this one did not write (another study's curves, an index.html from an
    earlier --html), so the folder describes one study; any other file is left alone.
    Then list this report's files for the next one."""
    import json

    marker = folder / _MARKER
    try:
        before = json.loads(marker.read_text()).get("files", []) if marker.is_file() else []
    except (OSError, ValueError, AttributeError):
        before = []
    names = {p.name for p in written}
    for name in before:
        p = folder / str(name)
        if isinstance(name, str) and "/" not in name and name not in names and p.is_file():
            p.unlink()
    marker.write_text(json.dumps({"study": study, "files": sorted(names)}))


def _path_safe(name: str) -> str:
    """A study name as one folder name: no separators, no ``..``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def _only_study(store: Store) -> str:
    """The name of the store's one study; a usage error naming them when there are several."""
    names = [st["name"] for st in store.studies()]
    where = getattr(store, "path", "the store")
    if len(names) == 1:
        console.print(f"study {names[0]} (the only one in {where})", markup=False,
                      highlight=False)
        return names[0]
    if not names:
        raise click.UsageError(f"{where} holds no studies yet: run `epochlab sweep` first.")
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    raise click.UsageError(f"{where} holds several studies; pass --study NAME, one of: {shown}.")
