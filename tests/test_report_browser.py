"""The HTML report in headless Chromium: it opens offline and every image loads."""

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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_every_image_loads_in_headless_chromium(tmp_path):
    from helpers import tiny_suite
    from lossbench.runner import run_suite
    from lossbench.suites import load_suite

    out = tmp_path / "out"
    run_suite(load_suite(tiny_suite(tmp_path)), out, workers=1)
    report = build_report(out, tmp_path / "report")
    html = (report / "index.html").read_text()
    n_images = html.count("<img ")
    assert n_images >= 8
    probe = report / "probe.html"
    probe.write_text(html.replace("</body>", PROBE))
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert re.search(r'data-images="(\d+)/(\d+)"', dom).groups() == (str(n_images), str(n_images))
