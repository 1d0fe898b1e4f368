"""What a seed sweep says: per setting, phase comparison and measure, each seed's difference and
verdict, their mean with the interval over seeds and questions, how many seeds agree; the choice
between settings; the tables and the chart of every seed's held-out curves."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import yaml

from medjson.commands.seeds.runs import CURVES, SELECTION_POOL, Revision, Run, answered_ids, check_seed_group, flatten
from medjson.commands.seeds.stats import (
    LARGEST_LETTER_SHARE,
    LOWER_IS_BETTER,
    MEASURES,
    across_seeds,
    agreement,
    interval_verdict,
    question_outcomes,
    setting_difference,
)
from medjson.core.choices import MODEL_COLOURS
from medjson.core.prompts import LETTERS
from medjson.core.records import write_json
from medjson.core.scoring import MEASURE_LABELS as PAIRED_LABELS
from medjson.core.scoring import TRAINING_PAIRS
from medjson.training.rewards import weighted_rewards

log = logging.getLogger("medjson.seeds")

MIN_SEEDS_TO_CHOOSE = 3
SELECTION_RULE = (
    f"the setting of the highest mean GRPO reward (grpo.rewards' weights of the first setting) on the "
    f"calibration pool over at least {MIN_SEEDS_TO_CHOOSE} seeds each; it replaces the first setting (the "
    "incumbent) only where the 95% interval of their difference excludes zero, else the incumbent stays"
)


def summarize_setting(runs: list[Run]) -> dict:
    """Per phase comparison and measure: each seed's difference and verdict, their mean with the
    bootstrap interval over seeds and questions, and how many seeds agree."""
    ids = answered_ids(runs, "evaluation", lambda run: run.predictions["grpo"])
    outcomes = [{phase: question_outcomes(rows, ids) for phase, rows in run.predictions.items()} for run in runs]
    out: dict = {}
    for new, old in TRAINING_PAIRS:
        pair = f"{new}_vs_{old}"
        # The older model the same in every run (an SFT model shared by GRPO seeds): its side has no seed spread.
        shared = all(run.predictions[old] == runs[0].predictions[old] for run in runs)
        out[pair] = {"same_older_model_in_every_run": shared}
        for measure in MEASURES:
            key = "letter" if measure == LARGEST_LETTER_SHARE else measure
            stats = across_seeds(
                np.stack([o[new][key] for o in outcomes]), np.stack([o[old][key] for o in outcomes]), measure
            )
            verdicts = [_seed_verdict(run, pair, measure, o[new][key], o[old][key]) for run, o in zip(runs, outcomes)]
            verdict, agreeing = agreement(verdicts)
            out[pair][measure] = {
                "per_seed": {
                    str(run.seed): {"diff": diff, "verdict": v} for run, diff, v in zip(runs, stats.per_seed, verdicts)
                },
                "mean": stats.mean,
                "ci_low": stats.ci_low,
                "ci_high": stats.ci_high,
                "se": stats.se,
                "verdict": interval_verdict(stats.ci_low, stats.ci_high, LOWER_IS_BETTER.get(measure)),
                "seed_verdict": verdict,
                "seeds_agreeing": agreeing,
                "seeds": len(runs),
            }
    return out


def _seed_verdict(run: Run, pair: str, measure: str, new: np.ndarray, old: np.ndarray) -> str:
    """One seed's own verdict: ``compare``'s paired test where it has one; the largest letter share by a
    bootstrap over that seed's questions (lower: the answers spread over more letters)."""
    if measure == LARGEST_LETTER_SHARE:
        alone = across_seeds(new, old, measure)
        return interval_verdict(alone.ci_low, alone.ci_high, None)
    return run.comparison[pair][measure]["verdict"]


def selection_scores(runs: list[Run], weights: dict[str, float]) -> np.ndarray:
    """Each run's GRPO reward per question of the selection pool (rows: runs), by ``weights``."""
    ids = answered_ids(runs, "selection", lambda run: run.selection)
    rows = []
    for run in runs:
        by_id = {r["id"]: r for r in run.selection}
        texts = [by_id[i]["raw_output"] for i in ids]
        totals, _ = weighted_rewards(texts, [by_id[i]["gold"] for i in ids], weights)
        rows.append(totals)
    return np.array(rows)


def choose(settings: dict[str, list[Run]]) -> dict:
    """Each setting's selection score (mean and spread over seeds), each one's difference from the best
    with its standard error, and the setting ``SELECTION_RULE`` picks."""
    first = next(iter(settings))
    weights = {k.split(".", 2)[2]: v for k, v in settings[first][0].params.items() if k.startswith("grpo.rewards.")}
    scores = {name: selection_scores(runs, weights) for name, runs in settings.items()}
    means = {name: s.mean(axis=1) for name, s in scores.items()}  # one per seed
    best = max(scores, key=lambda name: means[name].mean())
    out = {
        "pool": SELECTION_POOL,
        "questions": int(scores[first].shape[1]),
        "rule": SELECTION_RULE,
        "weights": weights,
        "settings": {
            name: {
                "seeds": len(settings[name]),
                "per_seed": {str(run.seed): float(m) for run, m in zip(settings[name], means[name])},
                "mean": float(means[name].mean()),
                "sd": float(means[name].std(ddof=1)) if len(means[name]) > 1 else None,
                "heldout_reward_end_mean": float(np.mean([r.summary["heldout_reward_end"] for r in settings[name]])),
            }
            for name in settings
        },
        "best": best,
    }
    for name in settings:
        if name != best:
            diff = setting_difference(scores[best], scores[name])
            out["settings"][name]["best_minus_this"] = vars(diff)
    if min(len(runs) for runs in settings.values()) < MIN_SEEDS_TO_CHOOSE:
        out["chosen"] = None
        out["why"] = f"a setting has fewer than {MIN_SEEDS_TO_CHOOSE} seeds: nothing is chosen"
    elif best == first:
        out["chosen"] = first
        out["why"] = f"{first} (the incumbent) has the highest mean"
    else:
        diff = out["settings"][first]["best_minus_this"]
        separated = diff["ci_low"] > 0
        out["chosen"] = best if separated else first
        out["why"] = (
            f"{best} beats {first} by {diff['mean']:+.3f} (SE {diff['se']:.3f}, 95% CI [{diff['ci_low']:+.3f}, "
            f"{diff['ci_high']:+.3f}]): "
            + ("beyond noise, it replaces the incumbent" if separated else "within noise, the incumbent stays")
        )
    return out


MEASURE_LABELS = {**PAIRED_LABELS, LARGEST_LETTER_SHARE: "largest letter share"}  # compare's, and the letters


def _largest_share(predictions: list[dict]) -> tuple[float, str]:
    """The largest share of answers naming one letter, and the letter."""
    letters = [p["predicted"] for p in predictions]
    top = max(LETTERS, key=letters.count)
    return letters.count(top) / len(letters), top


def runs_table(settings: dict[str, list[Run]], summaries: dict[str, dict]) -> list[str]:
    """A row per run: its held-out curve's ends, where its answers fell, and GRPO against SFT."""
    measures = ("accuracy", "valid_json", "brier_stated")
    lines = [
        "| setting | seed | run | held-out reward start -> end | largest letter share: SFT -> GRPO | "
        + " | ".join(f"GRPO vs SFT: {MEASURE_LABELS[m]}" for m in measures)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(measures),
    ]
    for name, runs in settings.items():
        for run in runs:
            (sft, sft_letter), (grpo, grpo_letter) = (_largest_share(run.predictions[p]) for p in ("sft", "grpo"))
            per_seed = {m: summaries[name]["grpo_vs_sft"][m]["per_seed"][str(run.seed)] for m in measures}
            cells = [f"{per_seed[m]['diff']:+.3f} {per_seed[m]['verdict']}" for m in measures]
            heldout = f"{run.summary['heldout_reward_start']:.3f} -> {run.summary['heldout_reward_end']:.3f}"
            shares = f"{sft_letter} {sft:.3f} -> {grpo_letter} {grpo:.3f}"
            lines.append(f"| {name} | {run.seed} | {run.name} | {heldout} | {shares} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(settings: dict[str, list[Run]], summaries: dict[str, dict], selection: dict | None) -> str:
    lines = ["### Every run", "", *runs_table(settings, summaries)]
    for name, runs in settings.items():
        seeds = [run.seed for run in runs]
        lines += [
            f"### {name}: {len(runs)} seed{'' if len(runs) == 1 else 's'} "
            f"({', '.join(f'{r.seed} = {r.name}' for r in runs)})",
            "",
            "| comparison | measure | "
            + " | ".join(f"seed {s}" for s in seeds)
            + " | mean [95% CI] | seeds agreeing |",
            "|---|---|" + "---|" * len(seeds) + "---|---|",
        ]
        for pair, measures in summaries[name].items():
            label = pair.replace("_vs_", " vs ")
            if measures["same_older_model_in_every_run"]:
                label += f" ({pair.split('_vs_')[1]} the same in every run)"
            for measure in MEASURES:
                m = measures[measure]
                cells = [f"{m['per_seed'][str(s)]['diff']:+.3f} {m['per_seed'][str(s)]['verdict']}" for s in seeds]
                lines.append(
                    f"| {label} | {MEASURE_LABELS[measure]} | "
                    + " | ".join(cells)
                    + f" | {m['mean']:+.3f} [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}] {m['verdict']} "
                    f"| {m['seeds_agreeing']} of {m['seeds']}: {m['seed_verdict']} |"
                )
        lines.append("")
    if selection:
        lines += [
            f"### Choosing a setting: GRPO's reward on the {selection['questions']} questions of {selection['pool']}",
            "",
            "| setting | seeds | per seed | mean (sd) | best minus this [95% CI], SE | held-out reward at the end |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in selection["settings"].items():
            per_seed = ", ".join(f"{seed}: {v:.3f}" for seed, v in s["per_seed"].items())
            sd = "-" if s["sd"] is None else f"{s['sd']:.3f}"
            diff = s.get("best_minus_this")
            versus = (
                "(best)"
                if diff is None
                else f"{diff['mean']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}], SE {diff['se']:.3f}"
            )
            heldout = f"{s['heldout_reward_end_mean']:.3f} (mean)"
            lines.append(f"| {name} | {s['seeds']} | {per_seed} | {s['mean']:.3f} ({sd}) | {versus} | {heldout} |")
        lines += ["", f"Rule: {selection['rule']}.", f"Chosen: {selection['chosen']}: {selection['why']}.", ""]
    return "\n".join(lines)


def curves_chart(settings: dict[str, list[Run]], path: Path) -> None:
    """Every seed's held-out reward and largest letter share over GRPO's steps, a colour per setting."""
    import matplotlib

    matplotlib.use("Agg")  # file-only: no display needed
    import matplotlib.pyplot as plt

    colours = [MODEL_COLOURS.get("grpo"), MODEL_COLOURS.get("sft"), "tab:green", "tab:purple", "tab:brown"]
    fig, axes = plt.subplots(1, len(CURVES), figsize=(11, 4))
    for ax, metric in zip(axes, CURVES):
        for colour, (name, runs) in zip(colours * 4, settings.items()):
            for i, run in enumerate(runs):
                steps, values = zip(*run.curves[metric]) if run.curves[metric] else ((), ())
                ax.plot(steps, values, color=colour, alpha=0.8, marker=".", label=name if i == 0 else None)
        ax.set_xlabel("GRPO step")
        ax.set_title(metric.replace("_", " "))
    axes[0].legend(fontsize=8)
    fig.suptitle("Held-out pool, every seed (greedy answers, as the evaluation reads them)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collect(workspace: Path, settings: dict[str, list[str]], out: Path) -> dict:
    """Read every run, check each setting is a seed group, and write the report files into ``out``."""
    loaded = {}
    for name, runs in settings.items():
        revisions = [Revision(workspace, run) for run in runs]
        params = [flatten(yaml.safe_load(revision.text("params.yaml"))) for revision in revisions]
        check_seed_group(name, runs, params)  # before reading any result: a wrong group is refused at once
        loaded[name] = [Run.load(revision, p) for revision, p in zip(revisions, params)]
        log.info("setting %s: seeds %s", name, ", ".join(f"{r.seed} ({r.name})" for r in loaded[name]))
    summaries = {name: summarize_setting(runs) for name, runs in loaded.items()}
    selection = choose(loaded) if len(loaded) > 1 else None
    result = {
        "settings": {
            name: {"runs": [{"name": r.name, "rev": r.sha, "seed": r.seed} for r in runs], **summaries[name]}
            for name, runs in loaded.items()
        },
        **({"selection": selection} if selection else {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "seeds.json", result)
    (out / "seeds.md").write_text(markdown(loaded, summaries, selection))
    curves_chart(loaded, out / "heldout_curves.png")
    return result
