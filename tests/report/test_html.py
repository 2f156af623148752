"""The report page: self-contained, every figure labelled, text escaped; figures never touch pyplot."""

from __future__ import annotations

import subprocess
import sys

import pytest

import epochlab as el
from epochlab.report.figures import FigureCheckError, check_figure, new_figure
from epochlab.report.html import Section, Table, check_self_contained, render_page, write_page
from epochlab.report.study import study_sections, write_html_report
from epochlab.store import MemoryStore


def _labelled():
    fig, (ax,) = new_figure(3, 2)
    ax.plot([1, 2], [0.5, 0.4], label="training loss")
    ax.set(title="loss", xlabel="epoch", ylabel="loss (nats)")
    ax.legend()
    return fig


def test_a_figure_without_labels_or_legend_is_refused():
    fig, (ax,) = new_figure(3, 2)
    ax.plot([1, 2], [3, 4])
    ax.set(title="t", xlabel="epoch")
    with pytest.raises(FigureCheckError, match="no y label, no legend"):
        check_figure(fig)
    with pytest.raises(FigureCheckError):
        render_page("p", [Section("s", "shows", figures=[(fig, "alt")])])


def test_the_page_embeds_figures_and_escapes_text(tmp_path):
    s = Section("A <b>title</b>", "x < y & z", claim="the slide says <script>",
                tables=[Table(["a", "b"], [[1, 0.123456], ["<i>", None]])],
                figures=[(_labelled(), "loss per epoch")])
    path = write_page(tmp_path / "index.html", "T", [s])
    page = path.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 1
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;title&lt;/b&gt;" in page and "0.1235" in page
    assert f'href="#{s.anchor}"' in page
    assert path.stat().st_mode & 0o044  # readable by others: a page to share


@pytest.mark.parametrize("bad", ['<img src="http://x/a.png">', '<a href="https://x">x</a>',
                                 '<link href="style.css">', "<style>@import 'x.css';</style>",
                                 '<div style="background:url(x.png)"></div>'])
def test_anything_that_loads_from_outside_the_page_is_refused(bad):
    with pytest.raises(ValueError, match="outside"):
        check_self_contained(bad)


def test_study_page_for_a_sweep_has_every_part(tmp_path):
    store = MemoryStore()
    el.sweep(el.SweepSpec(data_options={"n_samples": 120}, epochs=(1, 2), lr=(1e-3, 1e-2),
                          seed=(0, 1), name="p"), store, progress=False)
    titles = [s.title for s in study_sections(store, "p")]
    assert titles == ["Study p", "Heatmap: val_accuracy by epochs and lr", "Curves by lr",
                      "The best run", "Advice"]
    page = write_html_report(store, "p", tmp_path).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3


def test_drawing_a_history_leaves_pyplot_and_the_backend_alone():
    code = (
        "import matplotlib; matplotlib.use('svg'); import sys\n"
        "import epochlab as el\n"
        "from epochlab.report import plot_curves, plot_lr\n"
        "h = el.fit(el.models.mlp(20), el.data.synthetic(n_samples=100).train, epochs=2,"
        " batch_size=32, validation_split=0.2, verbose=0)\n"
        "plot_curves(h, 'loss'); plot_lr(h)\n"
        "assert 'plot' not in dir(h)\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["svg", "False"]


def test_the_history_module_imports_no_plotting():
    code = ("import sys; import epochlab.train.history\n"
            "print(any(m.startswith('matplotlib') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
