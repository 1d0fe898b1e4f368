"""dvc.yaml's code dependencies are each stage's import closure, and its params the sections the stage reads."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import write_abstention_file

from medjson.core.choices import EVALUATED
from medjson.training.closure import PACKAGE_DIR, closure_deps, closure_files, direct_imports, package_files
from medjson.workspace import PROJECT_ROOT

DVC_YAML = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
PARAMS = PROJECT_ROOT / "params.yaml"
STAGE_MODULES = sorted({m for s in STAGES.values() for m in re.findall(r"python -m (medjson\.stages\.\w+)", str(s))})


def _definition(stage: dict) -> dict:
    return stage["do"] if "foreach" in stage else stage


def _module(stage: dict) -> str:
    return re.search(r"python -m (medjson\.stages\.\w+)", _definition(stage)["cmd"]).group(1)


def _code_deps(stage: dict) -> set[str]:
    return {dep for dep in _definition(stage)["deps"] if dep.startswith("src/")}


def covered(deps: set[str]) -> set[str]:
    """The module files a list of deps stands for: each file, and every module under each folder."""
    return {file for dep in deps for file in (package_files(dep) if (PROJECT_ROOT / dep).is_dir() else [dep])}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_stage_import_closure(name):
    stage = STAGES[name]
    listed, expected = _code_deps(stage), set(closure_files(_module(stage)))
    assert covered(listed) == expected, (
        f"dvc.yaml stage `{name}`: add {sorted(expected - covered(listed))}, "
        f"remove {sorted(covered(listed) - expected)} "
        f"(python -m medjson.training.closure {_module(stage)} prints the list)"
    )
    assert listed == set(closure_deps(_module(stage))), f"stage `{name}`: list {closure_deps(_module(stage))}"


def test_a_folder_stands_for_its_modules_and_a_missing_one_is_caught():
    deps = set(closure_deps("medjson.stages.evaluate"))
    assert "src/medjson/core" in deps
    assert "src/medjson/core/scoring.py" in covered(deps)
    assert covered(deps - {"src/medjson/core"}) != set(closure_files("medjson.stages.evaluate"))
    assert "src/medjson/training" in closure_deps("medjson.stages.grpo")
    # A folder the stage runs only part of is never listed whole: SFT runs no reward, evaluation
    # writes no model card.
    assert "src/medjson/training" not in closure_deps("medjson.stages.sft")
    assert "src/medjson/model" not in deps and "src/medjson/model/answering.py" in deps


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_listed_are_the_sections_the_stage_reads(name):
    stage = STAGES[name]
    module = importlib.import_module(_module(stage))
    reads = getattr(module, "PARAMS_READ", ())
    assert set(_definition(stage).get("params", [])) == set(reads), f"stage `{name}` reads {reads}"


def test_closure_follows_imports_inside_functions():
    # grpo imports the guards inside train_grpo, and generation inside preflight: both run, both count.
    assert {"medjson.training.guards", "medjson.model.generation"} <= direct_imports("medjson.stages.grpo")
    assert "src/medjson/training/rewards.py" in closure_files("medjson.stages.grpo")


@pytest.mark.parametrize("name", ["sft", "evaluate", "calibrate", "benchmark", "benchmark_base", "merge"])
def test_a_reward_edit_reaches_no_stage_before_grpo(name):
    assert "src/medjson/training/rewards.py" not in covered(_code_deps(STAGES[name]))


def test_no_stage_module_imports_another():
    for module in STAGE_MODULES:
        others = set(STAGE_MODULES) - {module}
        assert not direct_imports(module) & others, f"{module} imports {sorted(direct_imports(module) & others)}"


# What each library folder may import, beside itself: the layers only ever import downwards.
LAYERS = {
    "core": {"medjson.errors"},
    "data": {"medjson.errors", "core"},
    "model": {"medjson.errors", "core"},
    "training": {"medjson.errors", "medjson.params", "core", "model"},
    "serving": {"medjson.errors", "medjson.params", "core", "model"},
}


def test_library_folders_import_only_the_layers_below():
    for folder, allowed in LAYERS.items():
        for path in (PACKAGE_DIR / folder).glob("*.py"):
            module = f"medjson.{folder}.{path.stem}"
            for imported in direct_imports(module):
                parts = imported.split(".")
                layer = parts[1] if len(parts) > 2 or (PACKAGE_DIR / parts[1]).is_dir() else imported
                assert layer in allowed | {folder}, f"{module} imports {imported}: a layer above it"


def test_the_evaluated_models_are_the_ones_the_code_knows():
    assert list(DVC_YAML["vars"][0]["evaluated"]) == list(EVALUATED)


def test_stages_take_their_paths_from_dvc_yaml_only():
    """No path argument has a default that could drift from the path dvc.yaml passes."""
    for module in STAGE_MODULES:
        source = Path(importlib.import_module(module).__file__).read_text()
        defaults = re.findall(r"add_argument\([^)]*default=Path\(", source)
        assert not defaults, f"{module} has path defaults: {defaults}"


def test_every_dependency_the_models_bring_exists():
    """The per-model dependency in dvc.yaml's vars is a real path (or a stage's output)."""
    for name, model in DVC_YAML["vars"][0]["evaluated"].items():
        dep = model["model_dep"]
        assert (PROJECT_ROOT / dep).exists() or dep.startswith("models/"), f"{name}: {dep} does not exist"


def test_the_projects_plot_templates_are_the_generated_ones():
    import json

    from medjson.workspace.plot_templates import templates

    for name, content in templates().items():
        committed = json.loads((PROJECT_ROOT / ".dvc" / "plots" / f"{name}.json").read_text())
        assert committed == content, f"run `python -m medjson.workspace.plot_templates .dvc/plots` ({name} differs)"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycle(graph: dict[str, frozenset[str]]) -> list[str]:
    """One cycle of the graph (a list of modules, the first repeated at the end), or [] when there is none."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_import_cycle_finds_one_and_only_one():
    assert import_cycle({"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"})}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": frozenset({"b", "c"}), "b": frozenset({"c"}), "c": frozenset()}) == []


def test_no_import_cycle_between_modules_counting_imports_inside_functions():
    modules = {_module_name(path) for path in PACKAGE_DIR.rglob("*.py")}
    graph = {module: direct_imports(module) - {module} for module in modules}
    assert not import_cycle(graph), f"import cycle: {' -> '.join(import_cycle(graph))}"


def _refused(tmp_path, tiny_model, command: str) -> list[str]:
    """A command line each command (or stage) refuses before it needs a model: (module, arguments)."""
    if command == "predict, a missing input":
        return ["medjson.commands.predict", "--params", str(PARAMS), "--input", str(tmp_path / "absent.jsonl")]
    if command == "predict, an abstention file of another model":
        fitted = write_abstention_file(tmp_path / "other.json", tiny_model, "constrained", threshold=0.5)
        record = json.loads(fitted.read_text())
        fitted.write_text(json.dumps({**record, "model_sha256": "0" * 64}))  # fitted for other weights
        model = ["--model", str(tiny_model), "--abstention", str(fitted)]
        return ["medjson.commands.predict", "--params", str(PARAMS), *model, "--input", "-"]
    if command == "grpo, a reward that does not exist":
        params = yaml.safe_load(PARAMS.read_text())
        params["grpo"]["rewards"] = {"valid_json": 1.0, "niceness": 1.0}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        stage = STAGES["grpo"]["cmd"].split()  # python -m medjson.stages.grpo --model ... --processes N
        return stage[2 : stage.index("--processes")]
    if command == "serve, a port out of range":
        return ["medjson.commands.serve", "--params", str(PARAMS), "--port", "-1"]
    if command == "merge, an adapter folder without weights":
        record = {"base": "x", "revision": None, "weights_sha256": None, "storage_dtype": "float32"}
        (tmp_path / "adapter").mkdir()
        (tmp_path / "adapter" / "medjson_base.json").write_text(json.dumps(record))
        return ["medjson.stages.merge", "--adapter", str(tmp_path / "adapter"), "--out", str(tmp_path / "merged")]
    return ["medjson.commands.seeds", "--workspace", str(tmp_path), "--setting", "a=HEAD", "--out", str(tmp_path)]


@pytest.mark.parametrize(
    "command, message",
    [
        ("predict, a missing input", "no such file"),
        ("predict, an abstention file of another model", "was fitted for"),
        ("serve, a port out of range", "`serve.port` = -1 is out of range"),
        ("seeds, a folder that is no git repository", "not a git repository"),
        ("grpo, a reward that does not exist", "`grpo.rewards.niceness` is not a reward"),
        ("merge, an adapter folder without weights", "has no adapter weights"),
    ],
)
def test_a_refused_command_answers_before_torch_is_imported(tmp_path, tiny_model, command, message):
    """torch's import alone takes about two seconds, the trainers' about six: a bad command line or
    setting is answered without them."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", *_refused(tmp_path, tiny_model, command)],
        cwd=tmp_path,
        input="",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert "medjson.cli" in imported and "torch" not in imported, f"{command} imported torch before refusing"
