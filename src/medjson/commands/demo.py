"""`make demo`: the whole pipeline offline on CPU, in its own DVC workspace, then a results table.

The workspace (``demo-run/``) gets ``dvc.yaml``, and ``params.yaml`` with the overrides
of ``configs/demo.yaml``, so the project's own files are never modified. It is a git
repository whose first complete run is committed, so the review loop works in it as in a
real project: ``dvc exp run -S ...``, ``dvc exp show``, ``dvc params diff``, ``dvc metrics
diff``, ``dvc plots diff``. A second run finds everything up to date in DVC and only
prints the table again.

    medjson demo [--source ../shared/data/medmcqa/dev.json] [--folder demo-run]
    medjson demo --config configs/medmcqa-cpu.yaml --folder medmcqa-run   # make medmcqa-cpu

``--config`` names another overrides file of the same kind: ``configs/medmcqa-cpu.yaml`` is the
real-data run (MedMCQA's validation questions, ``docs/results.md``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from medjson.core.choices import EVALUATED, PHASES
from medjson.core.scoring import TRAINING_PAIRS, comparison_rows
from medjson.workspace import PROJECT_ROOT, commit_all, create_workspace, dvc_env

DEMO_CONFIG = PROJECT_ROOT / "configs" / "demo.yaml"


def demo_overrides(source: str | None, config: Path = DEMO_CONFIG) -> dict:
    """The overrides of ``config`` with every path in it made absolute from the project root (the
    workspace lives elsewhere); ``source`` replaces ``data.source``."""
    if not config.is_file():
        raise SystemExit(f"{config}: no such overrides file (see configs/)")
    overrides = yaml.safe_load(config.read_text())
    data_source = Path(source) if source else PROJECT_ROOT / overrides["data"]["source"]
    if not data_source.exists():
        raise SystemExit(f"{config}: data.source {data_source} does not exist; pass --source with the file to use")
    overrides["data"]["source"] = str(data_source.resolve())
    for benchmark in overrides["benchmarks"].values():  # the demo's own files, wherever the demo runs
        benchmark["source"] = str((PROJECT_ROOT / benchmark["source"]).resolve())
    return overrides


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def confidence_table(folder: Path) -> str:
    """Does the confidence mean anything? Stated confidence against the model's own letter probability."""
    columns = ("ece", "letter_ece", "auroc_stated", "auroc_letter", "aurc_stated", "aurc_letter")
    lines = [f"{'model':<17} " + " ".join(f"{c:>13}" for c in columns)]
    for name in PHASES:
        m = json.loads((folder / "metrics" / f"{name}.json").read_text())
        # ECE over no schema-valid answer is no measurement: shown as "-", not as a perfect 0.
        m["ece"] = m["ece"] if m["calibration_n"] else None
        m["letter_ece"] = m["letter_ece"] if m["letter_calibration_n"] else None
        lines.append(f"{name:<17} " + " ".join(f"{_number(m.get(c)):>13}" for c in columns))
    lines.append("ece: lower is better; auroc: 0.5 is chance; aurc (risk over coverage): lower is better")
    return "\n".join(lines)


def abstention_table(folder: Path) -> str:
    """The threshold fitted on the calibration pool, and what it does on the evaluation pool."""
    lines = [
        f"{'model':<17} {'confidence':>10} {'temp':>6} {'threshold':>9} {'calib cover/acc':>16} "
        f"{'eval cover':>10} {'eval acc [95% CI]':>24}"
    ]
    for name in PHASES:
        m = json.loads((folder / "metrics" / f"{name}.json").read_text())
        source = "letter" if m["abstain_letter_confidence"] else "stated"
        calibration = f"{m['abstain_calibration_coverage']:.2f}/{_number(m['abstain_calibration_accuracy'])}"
        accuracy = _number(m["abstain_accuracy"])
        if m["abstain_accuracy"] is not None:
            accuracy += f" [{m['abstain_accuracy_ci_low']:.3f}, {m['abstain_accuracy_ci_high']:.3f}]"
        lines.append(
            f"{name:<17} {source:>10} {m['abstain_temperature']:>6.2f} {_number(m['abstain_threshold']):>9} "
            f"{calibration:>16} {m['abstain_coverage']:>10.2f} {accuracy:>24}"
        )
    target = json.loads((folder / "metrics" / "base.json").read_text())["abstain_target_accuracy"]
    lines.append(
        f"threshold: the lowest whose answers reach accuracy {target:.2f} on the calibration pool ('-': none does, "
        "all abstain); eval: the same threshold on the evaluation pool, out of sample"
    )
    return "\n".join(lines)


def results_table(folder: Path) -> str:
    """Headline metrics with the accuracy interval, one row per model."""
    lines = [
        f"{'model':<17} {'accuracy [95% CI]':<24} {'valid_json':>10} {'schema':>8} {'acc_on_schema':>14}  "
        "loglik_accuracy [95% CI]"
    ]
    for name in EVALUATED:
        m = json.loads((folder / "metrics" / f"{name}.json").read_text())
        interval = f"{m['accuracy']:.3f} [{m['accuracy_ci_low']:.3f}, {m['accuracy_ci_high']:.3f}]"
        loglik = f"{m['loglik_accuracy']:.3f} [{m['loglik_accuracy_ci_low']:.3f}, {m['loglik_accuracy_ci_high']:.3f}]"
        lines.append(
            f"{name:<17} {interval:<24} {m['valid_json_rate']:>10.3f} {m['schema_pass_rate']:>8.3f} "
            f"{m['accuracy_on_schema']:>14.3f}  {loglik}"
        )
    lines.append("")
    lines.append(confidence_table(folder))
    lines.append("")
    lines.append(abstention_table(folder))
    first = json.loads((folder / "metrics" / "base.json").read_text())
    lines.append(
        f"n = {first['n']} questions; always answering the majority letter scores {first['majority_baseline']:.3f}"
    )
    lines.append("")
    lines.append(comparison_table(folder))
    return "\n".join(lines)


def comparison_table(folder: Path) -> str:
    """Each training phase against the one before (and GRPO against the base), on every paired measure."""
    comparison = json.loads((folder / "metrics" / "comparison.json").read_text())
    pairs = {f"{new}_vs_{old}": comparison[f"{new}_vs_{old}"] for new, old in TRAINING_PAIRS}
    lines = [f"{'comparison':<13} {'measure':<15} {'difference [95% CI]':<26} {'test':<9} {'p':>8}  verdict"]
    for r in comparison_rows(pairs):
        interval = f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        lines.append(f"{r['pair']:<13} {r['measure']:<15} {interval:<26} {r['test']:<9} {r['p']:>8.3g}  {r['verdict']}")
    lines.append(
        "Brier (stated): the stated confidence's squared error over every question (1 without a valid answer); "
        "lower is better"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="data source instead of the project's questions (e.g. MedMCQA dev.json)")
    parser.add_argument("--folder", type=Path, default=PROJECT_ROOT / "demo-run")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="the overrides of params.yaml (%(default)s)")
    parser.add_argument(
        "--copy-code",
        action="store_true",
        help="give the workspace a copy of src/ instead of a link to it, so experiments queued there (a seed or "
        "settings sweep) keep running the code they started with while the project's code changes",
    )
    args = parser.parse_args(argv)

    overrides = demo_overrides(args.source, args.config)
    folder = create_workspace(args.folder, overrides, git=True, copy_code=args.copy_code)
    print(f"demo workspace: {folder}", flush=True)
    started = time.perf_counter()
    # The demo is offline by design: any attempt to reach the hub fails at once instead of hanging.
    env = {**dvc_env(), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(["dvc", "repro"], cwd=folder, env=env)
    if result.returncode != 0:
        sys.exit(f"dvc repro failed in {folder}; the stage's log above says why")
    if commit_all(folder, "demo: complete pipeline run"):
        print(f"committed the run in {folder}: the baseline that `dvc metrics diff` and `dvc exp show` compare against")
    print(f"\npipeline finished in {time.perf_counter() - started:.0f} s\n")
    print(results_table(folder))
    print(f"\nEvery model on every benchmark ({folder / 'reports' / 'benchmarks.md'}):\n")
    print((folder / "reports" / "benchmarks.md").read_text())
    print(f"charts: {folder / 'plots' / 'headline_metrics.png'} and {folder / 'plots' / 'change_vs_base.png'}")
    print(f"more:   cd {folder}")
    print("        dvc metrics show                                  # every metrics file")
    print("        dvc plots show                                    # then open dvc_plots/index.html (works offline)")
    print("        dvc exp run -S grpo.trainer.learning_rate=3.0e-4  # try a change: only the GRPO side re-runs")
    print("        dvc exp show; dvc params diff; dvc metrics diff; dvc plots diff")


if __name__ == "__main__":
    main()
