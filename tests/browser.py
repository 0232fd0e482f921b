"""Render a report in headless Chromium and read back what the browser laid out.

A copy of the page gets a small probe script (the report itself has none) that runs after the
page's ``load`` event and writes, into the DOM, every image's decoded size and displayed width
and every table's row count and laid-out box; ``--dump-dom`` returns that DOM. A screenshot of
the top of the page is taken too. Chromium is optional on a user's machine (the tests skip);
CI installs it and sets ``METSYNTH_REQUIRE_BROWSER=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

PROBE = """<script>
window.addEventListener('load', () => {
  const box = e => e.getBoundingClientRect();
  const images = [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                                  height: i.naturalHeight, shown: box(i).width}));
  const tables = [...document.querySelectorAll('table')].map(t => ({
    section: t.closest('section') ? t.closest('section').id : '', rows: t.rows.length,
    cells: t.querySelectorAll('td').length, width: box(t).width, height: box(t).height}));
  const sections = [...document.querySelectorAll('section')].map(s => ({id: s.id, height: box(s).height}));
  const out = document.createElement('pre');
  out.id = 'metsynth-probe';
  out.textContent = JSON.stringify({images, tables, sections, height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>"""

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars")


@dataclass
class Rendering:
    images: list[dict]
    tables: list[dict]
    sections: list[dict]
    height: float
    screenshot: Path


def chromium_or_skip() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        message = "chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("METSYNTH_REQUIRE_BROWSER"):
            pytest.fail(message + "; METSYNTH_REQUIRE_BROWSER is set, so the browser test must run")
        pytest.skip(message)
    return found


def render(html: Path, work: Path, width: int = 1280, height: int = 2400) -> Rendering:
    """Load ``html`` in headless Chromium; return what the browser decoded and laid out."""
    chromium = chromium_or_skip()
    work.mkdir(parents=True, exist_ok=True)
    probe = work / "probe.html"
    text = html.read_text(encoding="utf-8")
    assert "</body>" in text, f"{html}: no </body>"
    probe.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    base = [chromium, *FLAGS, f"--user-data-dir={work / 'profile'}", f"--window-size={width},{height}"]
    dom = subprocess.run([*base, "--virtual-time-budget=10000", "--dump-dom", probe.resolve().as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="metsynth-probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run in Chromium; DOM starts: {dom[:300]!r}"
    data = json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))
    shot = work / "screenshot.png"
    subprocess.run([*base, f"--screenshot={shot}", html.resolve().as_uri()], check=True, capture_output=True,
                   timeout=120)
    assert shot.is_file(), "Chromium wrote no screenshot"
    return Rendering(data["images"], data["tables"], data["sections"], data["height"], shot)


def assert_fully_rendered(r: Rendering, min_images: int, min_tables: int) -> None:
    """Every image decoded and shown, every table laid out with rows, every section has height."""
    assert len(r.images) >= min_images, [i["alt"] for i in r.images]
    for img in r.images:
        assert img["complete"] and img["width"] > 50 and img["height"] > 50, f"image not decoded: {img}"
        assert img["shown"] > 100, f"image laid out too small: {img}"
    assert len(r.tables) >= min_tables, r.tables
    for table in r.tables:
        assert table["rows"] >= 2 and table["cells"] >= 1, f"empty table: {table}"
        assert table["width"] > 50 and table["height"] > 20, f"table not laid out: {table}"
    for section in r.sections:
        assert section["height"] > 40, f"section {section['id']} is empty on screen"
