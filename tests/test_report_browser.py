"""The HTML report in headless Chromium: it opens offline, every image loads, and the
verdict is what a reader sees first."""

import re
import shutil
import subprocess

import pytest

from lossbench.report.render import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROBE = ('<script>window.addEventListener("load", () => { const i = [...document.images]; '
         'document.body.setAttribute("data-images", i.filter(x => x.complete && x.naturalWidth > 0)'
         '.length + "/" + i.length); });</script></body>')


# Where the verdict table sits on a laptop screen (1280 x 800 CSS pixels), once laid out.
FIRST_SCREEN = ('<script>window.addEventListener("load", () => { const h = [...document.'
                'querySelectorAll("h2")].find(x => x.textContent === "Verdict"); let t = h && '
                'h.nextElementSibling; while (t && t.tagName !== "TABLE") t = t.nextElementSibling; '
                'const row = t && t.querySelector("tbody tr"); '
                'document.body.setAttribute("data-verdict", h ? [h.getBoundingClientRect().top, '
                'row.getBoundingClientRect().bottom, window.innerHeight].join(",") : "none"); '
                '});</script></body>')
SCREEN = "--window-size=1280,800"
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="chromium not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from helpers import tiny_suite

    from lossbench.suite.load import load_suite
    from lossbench.sweep.sweep import run_suite

    tmp_path = tmp_path_factory.mktemp("browser")
    out = tmp_path / "out"
    run_suite(load_suite(tiny_suite(tmp_path)), out, workers=1)
    return build_report(out, tmp_path / "report")


def chromium(tmp_path, *args) -> str:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", SCREEN,
                           "--virtual-time-budget=5000", *args], capture_output=True, text=True,
                          timeout=120).stdout


@needs_chromium
@pytest.mark.slow
def test_the_verdict_is_on_the_first_screen(report, tmp_path):
    shot = tmp_path / "first-screen.png"
    chromium(tmp_path, f"--screenshot={shot}", (report / "index.html").as_uri())
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    probe = report / "first-screen.html"
    probe.write_text((report / "index.html").read_text().replace("</body>", FIRST_SCREEN))
    found = re.search(r'data-verdict="([^"]*)"', chromium(tmp_path, "--dump-dom", probe.as_uri()))
    assert found and found.group(1) != "none", "no Verdict section"
    heading_top, first_row_bottom, screen = map(float, found.group(1).split(","))
    assert heading_top < first_row_bottom <= screen  # heading and the best loss, unscrolled


@needs_chromium
@pytest.mark.slow
def test_every_image_loads_in_headless_chromium(report, tmp_path):
    html = (report / "index.html").read_text()
    n_images = html.count("<img ")
    assert n_images >= 8
    probe = report / "probe.html"
    probe.write_text(html.replace("</body>", PROBE))
    dom = chromium(tmp_path, "--dump-dom", probe.as_uri())
    assert re.search(r'data-images="(\d+)/(\d+)"', dom).groups() == (str(n_images), str(n_images))
