"""Headless Chromium for tests of the HTML reports: find it (or skip), render a page's DOM, take a
screenshot, and count what each `<svg id=...>` plot holds."""
from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Browser:
    def __init__(self, profile_dir: Path) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.skip("chromium is not installed (apt-get install -y chromium); needed to render HTML reports")
        self.args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile_dir}"]

    def dom(self, page: Path) -> str:
        """The page's DOM after Chromium has rendered it."""
        done = subprocess.run([*self.args, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def screenshot(self, page: Path, shot: Path, size: str = "1400,2000") -> bytes:
        subprocess.run([*self.args, f"--screenshot={shot}", f"--window-size={size}", page.as_uri()],
                       capture_output=True, timeout=120, check=True)
        return shot.read_bytes()


class _Plots(HTMLParser):
    """Counts the elements inside each <svg id=...> of a DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self.found: dict[str, dict[str, int]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg" and a.get("id"):
            self.current = a["id"]
            self.found[self.current] = {}
        elif self.current is not None:
            key = f"{tag}.{a.get('class')}" if a.get("class") else tag
            self.found[self.current][key] = self.found[self.current].get(key, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.current = None


def svg_plots(dom: str) -> dict[str, dict[str, int]]:
    """Plot id → {"tag.class": count} of what the plot holds (e.g. "circle.point": 12)."""
    parser = _Plots()
    parser.feed(dom)
    return parser.found
