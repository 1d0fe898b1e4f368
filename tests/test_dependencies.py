"""dvc.yaml's code dependencies are each stage's import closure, and its params the sections the stage reads."""

from __future__ import annotations

import importlib
import re

import pytest
import yaml

from medjson.closure import closure_files, direct_imports
from medjson.workspace import PROJECT_ROOT

STAGES = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def _definition(stage: dict) -> dict:
    return stage["do"] if "foreach" in stage else stage


def _module(stage: dict) -> str:
    return re.search(r"python -m (medjson\.\w+)", _definition(stage)["cmd"]).group(1)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_stage_import_closure(name):
    stage = STAGES[name]
    listed = {dep for dep in _definition(stage)["deps"] if dep.startswith("src/")}
    expected = set(closure_files(_module(stage)))
    assert listed == expected, (
        f"dvc.yaml stage `{name}`: add {sorted(expected - listed)}, remove {sorted(listed - expected)} "
        f"(python -m medjson.closure {_module(stage)} prints the list)"
    )


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_listed_are_the_sections_the_stage_reads(name):
    stage = STAGES[name]
    module = importlib.import_module(_module(stage))
    reads = getattr(module, "PARAMS_READ", ())
    assert set(_definition(stage).get("params", [])) == set(reads), f"stage `{name}` reads {reads}"


def test_closure_follows_imports_inside_functions():
    # grpo imports the guards inside train_grpo, and generation inside preflight: both run, both count.
    assert {"medjson.guards", "medjson.generation"} <= direct_imports("medjson.grpo")
    assert "src/medjson/rewards.py" in closure_files("medjson.grpo")
    # A reward change must never re-run SFT or the evaluation.
    assert "src/medjson/rewards.py" not in closure_files("medjson.sft")
    assert "src/medjson/rewards.py" not in closure_files("medjson.evaluate")
