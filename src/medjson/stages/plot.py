"""Stage `plot`: the two headline charts, drawn from the metrics files, and each phase's training
and held-out curves side by side, drawn from the training curves, as PNG.

PNG charts render in ``dvc plots show`` even offline, and in a README; the interactive plots
(confusion, reliability, per-subject accuracy, training curves) are declared in ``dvc.yaml`` over
the evaluation and training data.

    python -m medjson.stages.plot --metrics metrics --training training --out plots
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from medjson.cli import run_stage, stage_parser
from medjson.core.choices import MODEL_COLOURS, PHASES
from medjson.core.records import read_json

log = logging.getLogger("medjson.plot")

HEADLINE = ("accuracy", "valid_json_rate", "schema_pass_rate", "accuracy_on_schema")


def _pyplot():
    """pyplot on the file-only backend: stages run on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def headline_chart(metrics: dict[str, dict], path: Path) -> None:
    """Four headline metrics for three models, accuracy with its 95% interval."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(metrics)
    for offset, (name, values) in enumerate(metrics.items()):
        xs = [i + offset * width for i in range(len(HEADLINE))]
        bars = ax.bar(xs, [values[m] for m in HEADLINE], width, label=name, color=MODEL_COLOURS.get(name))
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        interval = [[values["accuracy"] - values["accuracy_ci_low"]], [values["accuracy_ci_high"] - values["accuracy"]]]
        ax.errorbar(xs[0], values["accuracy"], yerr=interval, color="black", capsize=3, linewidth=1)
    first = next(iter(metrics.values()))
    ax.axhline(
        first["majority_baseline"], color="grey", linestyle="--", linewidth=1, label="always the majority letter"
    )
    ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(HEADLINE))], HEADLINE)
    ax.set_ylim(0, 1.08)
    ax.set_title(f"Headline metrics on {first['n']} evaluation questions (accuracy with 95% interval)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def change_chart(metrics: dict[str, dict], path: Path) -> None:
    """Each trained model's change against the base, in points, per headline metric."""
    plt = _pyplot()
    base = metrics["base"]
    trained = {k: v for k, v in metrics.items() if k != "base"}
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(trained))
    for offset, (name, values) in enumerate(trained.items()):
        xs = [i + offset * width for i in range(len(HEADLINE))]
        change = [100 * (values[m] - base[m]) for m in HEADLINE]
        bars = ax.bar(xs, change, width, label=f"{name} - base", color=MODEL_COLOURS.get(name))
        ax.bar_label(bars, fmt="%+.1f", fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks([i + width * (len(trained) - 1) / 2 for i in range(len(HEADLINE))], HEADLINE)
    ax.set_ylabel("change against base (points)")
    ax.set_title("Change against the base model")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# Each phase's panel: (curve folder, [(metric, label)]): what it trains on beside what it is watched on.
TRAINING_PANELS = {
    "SFT loss (lower is better)": ("sft", [("loss", "training batches"), ("eval_loss", "held-out pool")]),
    "GRPO reward (higher is better)": (
        "grpo",
        [("reward", "on-policy rollouts (sampled)"), ("heldout_reward", "held-out pool (greedy)")],
    ),
}


def read_curve(folder: Path, metric: str) -> tuple[list[int], list[float]]:
    """The steps and values of one DVCLive curve (``plots/metrics/<metric>.tsv``); empty if never logged."""
    path = folder / "plots" / "metrics" / f"{metric}.tsv"
    if not path.is_file():
        return [], []
    rows = list(csv.DictReader(path.open(encoding="utf-8"), delimiter="\t"))
    return [int(r["step"]) for r in rows], [float(r[metric]) for r in rows]


def training_chart(training: Path, path: Path) -> None:
    """Each phase's training curve and held-out curve in one panel: a phase helps only if the held-out one moves."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(TRAINING_PANELS), figsize=(11, 4))
    for ax, (title, (phase, curves)) in zip(axes, TRAINING_PANELS.items()):
        for metric, label in curves:
            steps, values = read_curve(training / phase, metric)
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = stage_parser(__doc__, "metrics", "training", "out", reads_params=False)
    args = parser.parse_args()
    metrics = {name: read_json(args.metrics / f"{name}.json") for name in PHASES}
    args.out.mkdir(parents=True, exist_ok=True)
    headline_chart(metrics, args.out / "headline_metrics.png")
    change_chart(metrics, args.out / "change_vs_base.png")
    training_chart(args.training, args.out / "training_curves.png")
    log.info(
        "wrote %s",
        ", ".join(str(args.out / n) for n in ("headline_metrics.png", "change_vs_base.png", "training_curves.png")),
    )


if __name__ == "__main__":
    run_stage(main)
