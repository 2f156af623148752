"""The tour: ``epochlab tour --quick`` writes one self-contained page with every slide.

One quick tour runs for the whole module (through the CLI, into a temporary
store); the tests read what it wrote. The browser test renders the page in
headless Chromium, checks that every section and image is there and that
nothing failed to load, and keeps a screenshot in its temporary folder.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from epochlab.cli import main
from epochlab.store import SQLiteStore

N_SLIDES = 15


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tour")
    store = folder / "epochlab.db"
    result = CliRunner().invoke(main, ["tour", "--quick", "--out", str(folder / "out"),
                                       "--store", str(store), "--study-prefix", "t"])
    assert result.exit_code == 0, result.output
    page = (folder / "out" / "index.html").read_text(encoding="utf-8")
    return {"folder": folder, "store": store, "page": page, "output": result.output}


def test_the_page_has_every_slide_in_order_and_none_failed(tour):
    ids = re.findall(r'<section id="slide-(\d+)" data-status="(\w+)"', tour["page"])
    assert [int(i) for i, _ in ids] == list(range(1, N_SLIDES + 1))
    assert {status for _, status in ids} == {"ok"}


def test_every_section_says_what_it_shows_and_the_slides_mistakes_are_named(tour):
    sections = re.findall(r"<section .*?</section>", tour["page"], flags=re.S)
    for s in sections:
        assert '<p class="shows">' in s
    # Slides whose code or claim is wrong carry the claim and what is true.
    wrong = [1, 2, 3, 6, 7, 8, 9, 10, 12, 13, 14, 15]
    for n in wrong:
        s = sections[n - 1]
        assert 'class="claim"' in s and 'class="truth"' in s, f"slide {n}"
    assert "ceil(640 / 32) = 20" in sections[0]
    assert "32x32" in sections[2]  # slide 3's broadcasting bug
    assert "identical to the constant schedule" in sections[7]
    assert "fused" in sections[4]


def test_figures_are_embedded_and_nothing_links_outside(tour):
    page = tour["page"]
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) >= 10
    assert all(src.startswith("data:image/png;base64,") for src in images)
    targets = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert all(t.startswith(("#", "data:")) for t in targets)
    assert "http://" not in page and "https://" not in page


def test_the_progress_display_names_each_slide(tour):
    for n in range(1, N_SLIDES + 1):
        assert f"slide {n:>2}/{N_SLIDES}" in tour["output"]


def test_every_training_is_in_the_store_as_studies(tour):
    with SQLiteStore(tour["store"], create=False) as store:
        studies = {s["name"] for s in store.studies()}
        runs = store.runs()
    assert {"t-s01-accounting", "t-s04-batch-size", "t-s05-learning-rate", "t-s13-grid"} <= studies
    assert all(r.status in ("completed", "early_stopped") for r in runs)
    assert sum(r.study == "t-s13-grid" for r in runs) == 9
    # slide 13's grid trains 3 runs and reads the other 6 off them
    assert sum(r.study == "t-s13-grid" and r.shared_from is not None for r in runs) == 6


def test_a_study_of_the_tour_gets_its_own_page(tour, tmp_path):
    result = CliRunner().invoke(main, ["report", "--study", "t-s05-learning-rate", "--store",
                                       str(tour["store"]), "--out", str(tmp_path), "--html"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Curves by lr" in page and page.count("data:image/png;base64,") >= 3


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("No Chromium here: `make test` installs Debian's `chromium` package when it "
                "runs as root with apt-get; elsewhere install it (`apt-get install chromium`).")


_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--hide-scrollbars"]

# Injected into a copy of the page, before anything loads: it records every resource that
# fails and, once the page has loaded, writes what it found into the DOM for --dump-dom.
_PROBE = """<script>
window.__failed = [];
window.addEventListener('error', function (e) {
  var t = e.target || {}; window.__failed.push(t.src || t.href || String(e.message));
}, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var report = {
    images: imgs.length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
    sections: Array.prototype.map.call(document.querySelectorAll('section'),
                                       function (s) { return s.id; }),
    failed: window.__failed,
    height: document.documentElement.scrollHeight
  };
  var pre = document.createElement('pre'); pre.id = '__probe';
  pre.textContent = JSON.stringify(report); document.body.appendChild(pre);
});
</script>"""


def test_chromium_renders_every_section_and_image(tour, tmp_path):
    chromium = _chromium()
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(tour["page"].replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    run = subprocess.run(
        [chromium, *_FLAGS, f"--user-data-dir={tmp_path / 'profile-dom'}",
         "--virtual-time-budget=20000", "--dump-dom", probe_page.as_uri()],
        capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="__probe">(.*?)</pre>', run.stdout, flags=re.S)
    assert found, f"Chromium printed no probe: {run.stderr[-2000:]}"
    report = json.loads(html.unescape(found.group(1)))
    assert report["sections"] == [f"slide-{n}" for n in range(1, N_SLIDES + 1)]
    assert report["images"] >= 10 and report["broken"] == 0
    assert report["failed"] == []

    shot = tmp_path / "tour.png"  # kept in the test's temporary folder, to look at
    page = tour["folder"] / "out" / "index.html"
    subprocess.run(
        [chromium, *_FLAGS, f"--user-data-dir={tmp_path / 'profile-shot'}",
         f"--window-size=1200,{min(int(report['height']), 30000)}", f"--screenshot={shot}",
         page.as_uri()], capture_output=True, timeout=180, check=False)
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG"
    print(f"screenshot: {shot}")


@pytest.mark.parametrize("args,match", [
    (["--out", "{file}"], "a file"),
    (["--store", "{dir}"], "a folder"),
    (["--study-prefix", ""], "study_prefix"),
    (["--out", "{page}"], "already holds a run (index.html)"),
])
def test_bad_tour_options_are_one_usage_line_before_any_training(tmp_path, args, match):
    (tmp_path / "f").write_text("x")
    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "index.html").write_text("<html></html>")  # an earlier tour's page
    args = [a.format(file=tmp_path / "f", dir=tmp_path, page=tmp_path / "page") for a in args]
    result = CliRunner().invoke(main, ["tour", "--quick", *args], standalone_mode=True)
    assert result.exit_code == 2
    assert match in result.output and "Traceback" not in result.output
    assert "slide" not in result.output  # nothing trained
