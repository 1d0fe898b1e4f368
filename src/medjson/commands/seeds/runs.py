"""The runs of a seed sweep: DVC experiments (or git revisions) of one workspace, each read at its
own revision as DVC reads it, checked to be up to date and to differ from the others of its setting
only by seed."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from medjson.core.scoring import TRAINING_PAIRS, compare
from medjson.errors import StageError
from medjson.training.rewards import HELDOUT_REWARD, HELDOUT_TOP_LETTER

SEED_KEYS = ("seed", "grpo.seed")  # the params a seed group may differ in
EVAL_PREDICTIONS = "evaluation/{model}/predictions.jsonl"
# GRPO's answers to the calibration pool: questions no stage trains on, apart from the evaluation pool
SELECTION_POOL = "calibration/grpo/predictions.jsonl"
TRAINING_SUMMARY = "metrics/grpo_training.json"
CURVE = "training/grpo/plots/metrics/{metric}.tsv"
CURVES = (HELDOUT_REWARD, HELDOUT_TOP_LETTER)
# The stages whose outputs are read; each must be up to date with what it stands on at the run's revision.
STAGES_READ = ("evaluate@base", "evaluate@sft", "evaluate@grpo", "calibrate@grpo")
TARGET_HINT = "run the experiment with `evaluate@grpo` (or a stage after it) as its target"


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested params as ``{"grpo.trainer.beta": 0.04, ...}``; lists stay whole."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def effective_seed(params: dict) -> int:
    """The seed GRPO ran with: ``grpo.seed``, else the top-level ``seed``."""
    own = params.get("grpo.seed")
    return params["seed"] if own is None else own


class Revision:
    """One git revision of a DVC workspace, its files read as DVC reads them (tracked outputs from
    the cache), through one ``DVCFileSystem``: DVC builds the revision's index once, not per file."""

    def __init__(self, workspace: Path, name: str):
        self.workspace = workspace
        self.name = name
        self.sha = resolve(workspace, name)
        self._fs = None

    def text(self, path: str) -> str:
        from dvc.api import DVCFileSystem

        try:
            if self._fs is None:
                self._fs = DVCFileSystem(str(self.workspace), rev=self.sha)
            return self._fs.read_text(path)
        except Exception as err:  # DVC raises several kinds for a path absent at a revision
            raise StageError(
                f"run {self.name} ({self.sha[:7]}): {path} cannot be read at its revision "
                f"({type(err).__name__}): {TARGET_HINT}"
            ) from None

    def json(self, path: str) -> dict:
        return json.loads(self.text(path))

    def jsonl(self, path: str) -> list[dict]:
        return [json.loads(line) for line in self.text(path).splitlines() if line.strip()]


def resolve(workspace: Path, name: str) -> str:
    """An experiment's name or a git revision, as the commit it names."""
    refs = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(refname) %(objectname)"],
        cwd=workspace,
        capture_output=True,
        text=True,
    )
    if refs.returncode != 0:
        raise StageError(f"{workspace}: not a git repository ({refs.stderr.strip()}); pass the DVC workspace")
    named = [sha for line in refs.stdout.splitlines() for ref, sha in [line.split()] if ref.rsplit("/", 1)[1] == name]
    if len(named) > 1:
        raise StageError(f"{workspace}: {len(named)} experiments are named {name}: pass a commit instead")
    if named:
        return named[0]
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], cwd=workspace, capture_output=True, text=True
    )
    if commit.returncode != 0:
        raise StageError(f"{workspace}: {name} names no experiment and no git revision (see `dvc exp show`)")
    return commit.stdout.strip()


def stale_stages(lock: dict, params: dict, stages: tuple[str, ...]) -> list[str]:
    """Which of ``stages`` (and the stages they stand on) ``lock`` (a dvc.lock) records as run with other
    params than ``params`` (flattened params.yaml) or on another version of an input another stage wrote."""
    recorded = lock.get("stages", {})
    writer = {out["path"]: name for name, stage in recorded.items() for out in stage.get("outs", [])}
    written = {out["path"]: out.get("md5") for stage in recorded.values() for out in stage.get("outs", [])}
    stale, todo, seen = [], list(stages), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        stage = recorded.get(name)
        if stage is None:
            stale.append(f"{name} (never ran)")
            continue
        ran_with = flatten(stage.get("params", {}).get("params.yaml", {}))
        changed = sorted(key for key, value in ran_with.items() if params.get(key) != value)
        if changed:
            stale.append(f"{name} (ran with other {', '.join(changed)})")
        for dep in stage.get("deps", []):
            path = dep["path"]
            inside = next((out for out in writer if path.startswith(out + "/")), None)  # a file of a folder output
            if path in writer and dep.get("md5") != written[path]:
                stale.append(f"{name} (its input {path} has changed since)")
            if path in writer or inside:
                todo.append(writer[path if path in writer else inside])
    return stale


@dataclass
class Run:
    """What one training run left at its revision."""

    name: str
    sha: str
    seed: int
    params: dict  # flattened params.yaml
    comparison: dict  # compare's paired tests of the phases on the evaluation pool
    summary: dict  # metrics/grpo_training.json
    predictions: dict[str, list[dict]]  # the evaluation pool's, per phase
    selection: list[dict]  # GRPO's answers to the selection pool
    curves: dict[str, list[tuple[int, float]]]  # the held-out curves

    @classmethod
    def load(cls, revision: Revision, params: dict) -> Run:
        """The run at ``revision`` (``params``: its params.yaml, flattened), refused unless the stages
        read here are up to date with its params and with each other."""
        stale = stale_stages(yaml.safe_load(revision.text("dvc.lock")), params, STAGES_READ)
        if stale:
            raise StageError(
                f"run {revision.name} ({revision.sha[:7]}): not up to date at its revision: {'; '.join(stale)}; "
                + TARGET_HINT
            )
        phases = sorted({phase for pair in TRAINING_PAIRS for phase in pair})
        predictions = {phase: revision.jsonl(EVAL_PREDICTIONS.format(model=phase)) for phase in phases}
        return cls(
            name=revision.name,
            sha=revision.sha,
            seed=effective_seed(params),
            params=params,
            comparison=compare(predictions, TRAINING_PAIRS),
            summary=revision.json(TRAINING_SUMMARY),
            predictions=predictions,
            selection=revision.jsonl(SELECTION_POOL),
            curves={metric: _curve(revision.text(CURVE.format(metric=metric)), metric) for metric in CURVES},
        )


def _curve(tsv: str, metric: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row[metric])) for row in csv.DictReader(io.StringIO(tsv), delimiter="\t")]


def check_seed_group(setting: str, names: list[str], params: list[dict]) -> None:
    """The runs of one setting (``names``, with their flattened ``params``) differ in their seed and
    nothing else."""
    for name, other in zip(names[1:], params[1:]):
        keys = set(params[0]) | set(other)
        differ = sorted(k for k in keys if k not in SEED_KEYS and params[0].get(k) != other.get(k))
        if differ:
            shown = ", ".join(f"{k} ({params[0].get(k)!r} in {names[0]}, {other.get(k)!r})" for k in differ)
            raise StageError(
                f"setting {setting}: run {name} differs from {names[0]} in more than its seed: {shown}; "
                f"the runs of a setting may differ only in {' or '.join(SEED_KEYS)}"
            )
    seeds = [effective_seed(p) for p in params]
    twice = next((seed for seed in seeds if seeds.count(seed) > 1), None)
    if twice is not None:
        runs = ", ".join(name for name, seed in zip(names, seeds) if seed == twice)
        raise StageError(f"setting {setting}: seed {twice} is run twice ({runs}); each run needs a seed of its own")


def answered_ids(runs: list[Run], what: str, rows_of) -> list[str]:
    """The question ids every run answered (``rows_of(run)``: its answers), the same for all or refused."""
    ids = sorted(r["id"] for r in rows_of(runs[0]))
    for run in runs[1:]:
        if sorted(r["id"] for r in rows_of(run)) != ids:
            raise StageError(
                f"run {run.name} answered other {what} questions than {runs[0].name}: compare like with like"
            )
    return ids
