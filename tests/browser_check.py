"""Does a `dvc plots show` page draw its charts, offline, in a real browser?

Headless Chromium opens the page with no network, runs its scripts, and dumps the DOM;
each vega chart is drawn when its div holds an SVG with marks in it, and each image plot
when its file sits beside the page. Used by the pipeline
test (skipped where Chromium is absent) and by hand:

    python tests/browser_check.py demo-run/dvc_plots/index.html
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# No sandbox (root), and none of the background connections a closed network refuses.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
)
DRAWN = ("path", "rect", "line", "text")


def chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def rendered_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, as Chromium serialises it."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", Path(page).resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed on {page}: {result.stderr[-2000:]}")
    return result.stdout


class _Charts(HTMLParser):
    """Per top-level plot div (DVC gives each an id): how many drawn SVG marks it holds."""

    def __init__(self):
        super().__init__()
        self.stack: list[str | None] = []  # the plot id each open element belongs to
        self.marks: dict[str, int] = {}
        self.in_svg: dict[str, int] = {}
        self.images: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        owner = self.stack[-1] if self.stack else None
        if owner is None and tag == "div" and attrs.get("id"):
            owner = attrs["id"]
            self.marks.setdefault(owner, 0)
        if owner is not None and tag == "img":
            self.images.setdefault(owner, []).append(attrs.get("src", ""))
        if owner is not None and tag == "svg":
            self.in_svg[owner] = self.in_svg.get(owner, 0) + 1
        elif owner is not None and self.in_svg.get(owner) and tag in DRAWN:
            self.marks[owner] += 1
        if tag not in ("br", "img", "meta", "link", "input"):
            self.stack.append(owner)

    def handle_endtag(self, tag):
        if self.stack:
            owner = self.stack.pop()
            if tag == "svg" and owner is not None:
                self.in_svg[owner] -= 1


def drawn_marks(dom: str, page: Path | None = None) -> dict[str, int]:
    """Plot id -> number of SVG marks drawn in it, or of its images found beside ``page`` (0: blank)."""
    parser = _Charts()
    parser.feed(dom)
    marks = dict(parser.marks)
    for plot, sources in parser.images.items():
        if page is not None:
            marks[plot] += sum(1 for src in sources if src and (Path(page).parent / src).is_file())
    return marks


def main() -> None:
    if not chromium():
        sys.exit("no Chromium found: apt-get install chromium")
    page = Path(sys.argv[1])
    marks = drawn_marks(rendered_dom(page), page)
    for plot, count in sorted(marks.items()):
        print(f"{plot:<40} {'drawn' if count else 'BLANK':<6} {count} SVG marks or images")
    sys.exit(0 if marks and all(marks.values()) else 1)


if __name__ == "__main__":
    main()
