"""The project's two DVC plot templates, written into each workspace's ``.dvc/plots/``.

DVC's own line templates colour by revision and tell files apart by dash alone, so in one
workspace every model is the same colour. These colour by what a reader compares and dash by
revision, so ``dvc plots diff`` between two experiments stays readable:

- ``medjson_models``: comparison charts, one line per model (``evaluation/<model>/...``), each
  model in its colour from ``MODEL_COLOURS``, the same in every chart;
- ``medjson_series``: training curves, one colour per curve (training and held-out of a phase
  side by side).

    python -m medjson.workspace.plot_templates .dvc/plots     # rewrite the project's own copies
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medjson.core.choices import MODEL_COLOURS

MODELS, SERIES = "medjson_models", "medjson_series"


def _anchor(name: str) -> str:
    return f"<DVC_METRIC_{name.upper()}>"  # dvc_render's anchor format


def template(colour: dict, calculate: dict | None) -> dict:
    """A vega-lite line chart over DVC's data, coloured by ``colour`` and dashed by revision."""
    x = {"field": _anchor("x"), "type": "quantitative", "title": _anchor("x_label")}
    y = {"field": _anchor("y"), "type": "quantitative", "title": _anchor("y_label"), "scale": {"zero": False}}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": _anchor("data")},
        "title": {"text": _anchor("title"), "anchor": "middle"},
        "width": _anchor("plot_width"),
        "height": _anchor("plot_height"),
        "transform": [calculate] if calculate else [],
        "mark": {"type": "line", "point": True, "tooltip": {"content": "data"}},
        "encoding": {
            "x": x,
            "y": y,
            "color": colour,
            "strokeDash": {"field": "rev", "type": "nominal", "title": "revision"},
        },
    }


def templates() -> dict[str, dict]:
    models = list(MODEL_COLOURS)
    by_model = {
        "field": "model",
        "type": "nominal",
        "title": "model",
        "scale": {"domain": models, "range": [MODEL_COLOURS[m] for m in models]},
    }
    # DVC names each line by its file; the folder above the file is the model (evaluation/<model>/x.json).
    model_of_file = {"calculate": "slice(split(datum.filename, '/'), -2, -1)[0]", "as": "model"}
    by_series = {"field": "filename", "type": "nominal", "title": "curve"}
    return {MODELS: template(by_model, model_of_file), SERIES: template(by_series, None)}


def write_templates(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in templates().items():
        (folder / f"{name}.json").write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_templates(Path(sys.argv[1]))
