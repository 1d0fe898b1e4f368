"""Rebuild ``offline.html``: DVC's plot page with vega, vega-lite and vega-embed inlined.

``dvc plots show`` writes a page that loads these three libraries from a CDN, so offline
every vega chart is blank. DVC takes its own page template (``plots.html_template`` in
``.dvc/config``, or ``--html-template``); this one carries the very versions DVC's page
asks for, taken from the npm registry, so the charts draw with no network.

    python vendor/dvc-plots/build.py     # needs npm; writes offline.html and the licences here
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The versions dvc-render 1.0's page loads (dvc_render/vega.py, VegaRenderer.SCRIPTS).
PACKAGES = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- {credits}: inlined so the page draws with no network (licences in vendor/dvc-plots/) -->
{inlined}
    <script>
        // Draw every chart as SVG: crisp when zoomed, and a headless browser can check that it was drawn.
        (function () {
            var embed = window.vegaEmbed;
            window.vegaEmbed = function (el, spec, options) {
                return embed(el, spec, Object.assign({renderer: "svg"}, options || {}));
            };
        })();
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def main() -> None:
    scripts, credits = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, version in PACKAGES.items():
            subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=tmp, check=True, capture_output=True)
            with tarfile.open(Path(tmp) / f"{name}-{version}.tgz") as archive:
                script = archive.extractfile(f"package/build/{name}.min.js").read().decode()
                licence = archive.extractfile("package/LICENSE").read().decode()
            for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}", "</script"):
                if placeholder in script:
                    raise SystemExit(f"{name}.min.js contains {placeholder!r}: it cannot be inlined as is")
            (HERE / f"LICENSE.{name}").write_text(licence)
            scripts.append(f"    <script>{script}</script>")
            credits.append(f"{name} {version}")
    page = PAGE.replace("{credits}", ", ".join(credits)).replace("{inlined}", "\n".join(scripts))
    (HERE / "offline.html").write_text(page, encoding="utf-8")
    print(f"wrote {HERE / 'offline.html'} ({len(page) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
