"""The whole DVC pipeline on the tiny model: it runs, SFT teaches the format, GRPO changes the
model, every metrics and plots file is written, and a GRPO change re-runs only its side."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import curve_steps, dvc_output, run_dvc, tiny_overrides

from medjson.workspace import create_workspace, deep_update, dvc_env

pytestmark = pytest.mark.slow

METRICS = [
    "metrics/data.json",
    "metrics/base.json",
    "metrics/sft.json",
    "metrics/grpo.json",
    "metrics/comparison.json",
    "metrics/grpo_training.json",
]


# SFT without gradient accumulation (params.yaml has 2): the same 150 steps on half the examples, so the
# suite's longest fixture trains in about half the time, and the tiny model still learns the format
# (valid JSON for all 40 evaluation questions, as with 2). Training with accumulation, two processes and
# resuming is tested in test_parallel and test_training, which keep params.yaml's 2.
PIPELINE_OVERRIDES = {"sft": {"trainer": {"gradient_accumulation_steps": 1}}}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, tiny_model, questions_path):
    overrides = deep_update(tiny_overrides(tiny_model, questions_path), PIPELINE_OVERRIDES)
    folder = create_workspace(tmp_path_factory.mktemp("pipeline"), overrides, git=True, copy_code=True)
    run_dvc(folder, "repro")
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True)
    subprocess.run(["git", "commit", "-qm", "baseline run"], cwd=folder, check=True)
    return folder


def _metrics(folder, name):
    return json.loads((folder / f"metrics/{name}.json").read_text())


def test_every_metrics_and_plots_file_is_written(pipeline):
    for path in METRICS + [
        "plots/headline_metrics.png",
        "plots/change_vs_base.png",
        "plots/training_curves.png",
        "training/sft/plots/metrics/loss.tsv",
        "training/sft/plots/metrics/eval_loss.tsv",
        "training/grpo/plots/metrics/heldout_reward.tsv",
        "training/grpo/plots/metrics/reward.tsv",
    ]:
        assert (pipeline / path).stat().st_size > 0, path
    for model in ("base", "sft", "grpo", "sft_constrained", "grpo_constrained"):
        for name in (
            "predictions.jsonl",
            "confusion.json",
            "reliability.json",
            "reliability_letter.json",
            "risk_coverage_stated.json",
            "risk_coverage_letter.json",
            "subjects.json",
            "loglik.jsonl",
        ):
            assert (pipeline / "evaluation" / model / name).exists()
        assert (pipeline / "calibration" / model / "abstention.json").exists()
    shown = run_dvc(pipeline, "metrics", "show", "--json")
    assert "valid_json_rate" in shown
    run_dvc(pipeline, "plots", "show", "-o", str(pipeline / "plots_html"))
    assert (pipeline / "plots_html" / "index.html").exists()


def test_plots_page_draws_every_chart_offline(pipeline):
    from browser_check import chromium, drawn_marks, rendered_dom

    run_dvc(pipeline, "plots", "show", "-o", str(pipeline / "plots_offline"))
    page = pipeline / "plots_offline" / "index.html"
    assert "cdn.jsdelivr.net" not in page.read_text()  # the workspace's plots.html_template inlines vega
    if not chromium():
        pytest.skip("Chromium not installed (apt-get install chromium): the page was not opened in a browser")
    marks = drawn_marks(rendered_dom(page), page)
    for plot in ("confusion_base", "confusion_grpo", "reliability", "sft_training", "grpo_training"):
        assert marks.get(plot, 0) > 0, f"{plot} is blank: {marks}"
    assert marks and all(marks.values()), f"blank charts: {[p for p, n in marks.items() if not n]}"


def test_comparison_charts_give_each_model_its_colour_and_each_revision_its_dash(pipeline):
    from medjson.core.choices import MODEL_COLOURS

    shown = json.loads(run_dvc(pipeline, "plots", "show", "--json"))["data"]
    for chart in ("reliability", "risk_coverage_letter"):
        spec = shown[chart][0]["content"]
        colour, dash = spec["encoding"]["color"], spec["encoding"]["strokeDash"]
        assert colour["field"] == "model" and colour["scale"]["range"] == list(MODEL_COLOURS.values())
        assert dash["field"] == "rev"
        models = {row["filename"].split("/")[-2] for row in spec["data"]["values"]}
        assert {"sft", "grpo"} <= models <= {"base", "sft", "grpo"}  # the tiny base may have no valid answer
    assert shown["sft_loss"][0]["content"]["encoding"]["color"]["field"] == "filename"


def test_loglik_accuracy_sits_beside_accuracy_and_speed_in_its_own_file(pipeline):
    for model in ("base", "sft", "grpo"):
        metrics, speed = _metrics(pipeline, model), _metrics(pipeline, f"speed/{model}")
        rows = [json.loads(line) for line in (pipeline / "evaluation" / model / "loglik.jsonl").open()]
        assert len(rows) == metrics["n"] == 40
        assert metrics["loglik_accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 40)
        assert metrics["loglik_accuracy_ci_low"] <= metrics["loglik_accuracy"] <= metrics["loglik_accuracy_ci_high"]
        assert all(set(r["logliks"]) == {"A", "B", "C", "D"} and r["predicted"] in "ABCD" for r in rows)
        assert not {"questions_per_s", "new_tokens_per_s", "device"} & set(metrics)
        assert speed["questions_per_s"] > 0 and speed["loglik_questions_per_s"] > 0 and speed["device"] == "cpu"
    assert _metrics(pipeline, "benchmarks/mmlu_medical/data")["harness_task"] == "mmlu"
    assert "loglik_accuracy" in _metrics(pipeline, "benchmarks/mmlu_medical/grpo")


def test_adapters_list_their_modules_in_order(pipeline):
    for adapter in ("sft_adapter", "grpo_adapter"):
        config = json.loads((pipeline / "models" / adapter / "adapter_config.json").read_text())
        assert config["target_modules"] == sorted(config["target_modules"]) and len(config["target_modules"]) > 1
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    sft = json.loads((pipeline / "models/sft_adapter/adapter_config.json").read_text())
    assert sft["base_model_name_or_path"] == params["model"]["base"]


def test_sft_teaches_the_json_format(pipeline):
    base, sft = _metrics(pipeline, "base"), _metrics(pipeline, "sft")
    assert base["valid_json_rate"] <= 0.1
    assert sft["valid_json_rate"] >= 0.9 and sft["schema_pass_rate"] >= 0.9
    assert base["n"] == sft["n"] == 40


def test_every_schema_valid_answer_carries_the_models_letter_probability(pipeline):
    rows = [json.loads(line) for line in (pipeline / "evaluation/sft_constrained/predictions.jsonl").open()]
    assert rows and all(0 < r["letter_probability"] <= 1 for r in rows)
    metrics = _metrics(pipeline, "sft_constrained")
    assert metrics["letter_calibration_n"] == metrics["n"] and 0 <= metrics["aurc_letter"] <= 1


def test_constrained_evaluation_is_always_schema_valid_and_compared_with_free(pipeline):
    for name in ("sft_constrained", "grpo_constrained"):
        metrics = _metrics(pipeline, name)
        assert metrics["schema_pass_rate"] == 1.0 and metrics["constrained"] == 1 and metrics["n"] == 40
    comparison = _metrics(pipeline, "comparison")
    assert {"sft_constrained_vs_sft", "grpo_constrained_vs_grpo"} <= set(comparison)


def _pool_ids(folder, pool: str) -> list[str]:
    return [json.loads(line)["id"] for line in (folder / f"data/pools/{pool}.jsonl").open()]


def test_the_abstention_threshold_is_fitted_on_the_calibration_pool_only(pipeline):
    calibration, evaluation = _pool_ids(pipeline, "calibration"), _pool_ids(pipeline, "eval")
    assert len(calibration) == 20 and not set(calibration) & set(evaluation)
    for name in ("base", "sft", "grpo", "sft_constrained", "grpo_constrained"):
        fitted = json.loads((pipeline / "calibration" / name / "abstention.json").read_text())
        assert fitted["fitted_on"] == calibration and fitted["calibration_n"] == 20
        metrics = _metrics(pipeline, name)
        # The figure on the evaluation pool is the file's threshold applied to questions it never saw.
        answered = [p for p in _predictions(pipeline, name) if not p["abstained"]]
        assert metrics["abstain_threshold"] == fitted["threshold"]
        assert metrics["abstain_coverage"] == len(answered) / metrics["n"]
        if answered:
            assert metrics["abstain_accuracy"] == sum(p["correct"] for p in answered) / len(answered)


def test_evaluate_refuses_an_abstention_file_fitted_on_its_questions(pipeline, tmp_path):
    fitted = json.loads((pipeline / "calibration/sft/abstention.json").read_text())
    fitted["fitted_on"].append(_pool_ids(pipeline, "eval")[3])
    doctored = tmp_path / "abstention.json"
    doctored.write_text(json.dumps(fitted))
    result = subprocess.run(
        [sys.executable, "-m", "medjson.stages.evaluate", "--model", "models/sft_merged", "--name", "sft"]
        + ["--eval", "data/pools/eval.jsonl", "--out-dir", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json")]
        + ["--harness-task", "medmcqa", "--speed", str(tmp_path / "speed.json"), "--abstention", str(doctored)],
        cwd=pipeline,
        env=dvc_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "was fitted on 1 of these questions" in result.stderr
    assert not (tmp_path / "m.json").exists() and "Traceback" not in result.stderr


def test_predict_with_the_fitted_file_answers_as_evaluate_scored(pipeline, tmp_path):
    """The same model, decoding and file give the same confidence and abstention as in evaluate."""
    evaluated = {p["id"]: p for p in _predictions(pipeline, "sft_constrained")}
    questions = tmp_path / "questions.jsonl"
    rows = [json.loads(line) for line in (pipeline / "data/pools/eval.jsonl").open()][:6]
    with questions.open("w") as out:
        for row in rows:  # a pool row keeps the question as asked
            out.write(json.dumps({"id": row["id"], "question": row["question"], "options": row["options"]}) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "medjson.commands.predict", "--model", "models/sft_merged", "--decoding", "constrained"]
        + ["--input", str(questions), "--abstention", "calibration/sft_constrained/abstention.json"],
        cwd=pipeline,
        env=dvc_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for record in map(json.loads, result.stdout.splitlines()):
        expected = evaluated[record["id"]]
        assert record["meta"]["abstained"] == expected["abstained"]
        assert record["confidence"] == pytest.approx(expected["abstention_confidence"], abs=1e-3)


def _predictions(folder, name):
    return [json.loads(line) for line in (folder / "evaluation" / name / "predictions.jsonl").open()]


def test_grpo_saw_reward_variance_and_changed_the_model(pipeline):
    from safetensors.torch import load_file

    summary = _metrics(pipeline, "grpo_training")
    assert summary["steps"] == 3
    assert summary["frac_reward_zero_std_mean"] < 1.0  # at least one step with non-zero reward std
    sft = load_file(pipeline / "models/sft_merged/model.safetensors")
    grpo = load_file(pipeline / "models/grpo_merged/model.safetensors")
    changed = [k for k in sft if not (sft[k] == grpo[k]).all()]
    assert any("q_proj" in k for k in changed)
    lineage = json.loads((pipeline / "models/grpo_merged/medjson_lineage.json").read_text())
    assert lineage["base"]["base"] == "models/sft_merged"


def test_merged_logits_equal_the_adapter_models(pipeline, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.stages.merge import load_adapter_model

    monkeypatch.chdir(pipeline)  # the adapter's base is recorded relative to the workspace
    adapter_model, _ = load_adapter_model(pipeline / "models/grpo_adapter")
    merged = AutoModelForCausalLM.from_pretrained(pipeline / "models/grpo_merged", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(pipeline / "models/grpo_merged")
    batch = tokenizer(["Question: which nerve?", "A) Radial nerve B) Axillary"], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = adapter_model(**batch).logits
        got = merged(**batch).logits
    assert torch.allclose(expected, got, atol=1e-4), (expected - got).abs().max()


@pytest.mark.parametrize("phase", ["sft", "grpo"])
def test_the_model_card_reads_back_with_huggingface_hub_and_its_figures_are_the_metrics(pipeline, phase):
    from huggingface_hub import ModelCard, metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    path = pipeline / f"releases/{phase}/README.md"
    card = ModelCard.load(path)
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "text-generation"
    assert phase in card.data.tags and "## Lineage" in card.text and "## Calibration and abstention" in card.text
    name, results = model_index_to_eval_results(metadata_load(path)["model-index"])
    assert name.endswith(f"-{phase}")
    found = {(r.dataset_name, r.metric_name): (r.metric_value, r.dataset_args["n"]) for r in results}
    expected = {}
    for decoding, suffix in (("", " (free decoding)"), ("_constrained", " (constrained decoding)")):
        metrics = _metrics(pipeline, f"{phase}{decoding}")
        expected[("the evaluation pool", f"Accuracy{suffix}")] = (round(metrics["accuracy"], 4), metrics["n"])
        expected[("the evaluation pool", f"Valid JSON rate{suffix}")] = (
            round(metrics["valid_json_rate"], 4),
            metrics["n"],
        )
    for benchmark in ("medqa", "mmlu_medical"):
        metrics = json.loads((pipeline / f"metrics/benchmarks/{benchmark}/{phase}.json").read_text())
        expected[(benchmark, "Accuracy")] = (round(metrics["accuracy"], 4), metrics["n"])
        key = (benchmark, "Log-likelihood accuracy (lm-evaluation-harness, zero-shot)")
        expected[key] = (round(metrics["loglik_accuracy"], 4), metrics["n"])
    assert expected.items() <= found.items()
    if phase == "grpo":  # the lineage names the SFT model it starts from, by digest
        sft_merged = json.loads((pipeline / "models/grpo_adapter/medjson_base.json").read_text())["weights_sha256"]
        assert sft_merged in card.text


def test_a_release_rebuilds_the_evaluated_weights_bit_for_bit(pipeline):
    import torch

    from medjson.model.lineage import weights_digest
    from medjson.model.modeling import FP32, load_model, resolve_source

    release, merged = (resolve_source(str(pipeline / p)) for p in ("releases/grpo", "models/grpo_merged"))
    assert release.release and weights_digest(release) == weights_digest(merged)
    rebuilt, saved = (load_model(s, FP32, on_accelerator=False).state_dict() for s in (release, merged))
    assert rebuilt.keys() == saved.keys()
    assert all(torch.equal(rebuilt[name], saved[name]) for name in saved)
    size = sum(f.stat().st_size for f in (pipeline / "releases/grpo").rglob("*") if f.is_file())
    assert size < (pipeline / "models/grpo_merged/model.safetensors").stat().st_size


def test_dvc_artifacts_get_from_a_clone_gives_a_release_predict_answers_with(pipeline, tmp_path):
    remote, clone, got = tmp_path / "remote", tmp_path / "clone", tmp_path / "downloaded"
    run_dvc(pipeline, "remote", "add", "-d", "-f", "local", str(remote))
    subprocess.run(["git", "commit", "-qam", "a DVC remote"], cwd=pipeline, check=True)
    run_dvc(pipeline, "push")
    # A version of the artifact, as DVC's registry (GTO) records one: an annotated git tag.
    gto = [str(Path(sys.executable).with_name("gto")), "register", "medjson-grpo", "--version", "v0.1.0"]
    subprocess.run(gto, cwd=pipeline, check=True, capture_output=True)
    subprocess.run(["git", "clone", "-q", str(pipeline), str(clone)], check=True)
    run_dvc(clone, "pull")
    run_dvc(clone, "artifacts", "get", str(clone), "medjson-grpo", "-o", str(got))
    assert (got / "medjson_release.json").is_file() and (got / "README.md").is_file()
    questions = tmp_path / "questions.jsonl"
    row = {
        "id": "q1",
        "question": "Which nerve supplies the deltoid?",
        "options": ["Radial", "Axillary", "Ulnar", "Median"],
    }
    questions.write_text(json.dumps(row) + "\n")
    command = [
        sys.executable,
        "-m",
        "medjson.commands.predict",
        "--params",
        str(clone / "params.yaml"),
        "--input",
        str(questions),
    ]
    answered = subprocess.run(
        [*command, "--model", str(got)], cwd=tmp_path, env=dvc_env(), capture_output=True, text=True
    )
    assert answered.returncode == 0, answered.stderr[-2000:]
    assert "(shipped with the model)" in answered.stderr  # its abstention file came with it, and fits
    record = json.loads(answered.stdout.splitlines()[0])
    reference = subprocess.run(
        [*command, "--model", str(pipeline / "models/grpo_merged")],
        cwd=tmp_path,
        env=dvc_env(),
        capture_output=True,
        text=True,
    )
    same = json.loads(reference.stdout.splitlines()[0])
    keys = ("predicted_category", "confidence", "reason")
    assert [record[k] for k in keys] == [same[k] for k in keys] and record["meta"]["abstained"] is not None
    # The clone has every output but the merged models (a pull brings none: DVC never caches them, see
    # test_merged_models_stay_out_of_the_cache_and_git): every stage that reads one shows its dependency
    # missing, and one `dvc repro` rebuilds both, byte for byte as the workspace has them, and runs
    # nothing else.
    weights = {phase: Path(f"models/{phase}_merged/model.safetensors") for phase in ("sft", "grpo")}
    assert not any((clone / path).exists() for path in weights.values())
    assert {"merge@sft", "merge@grpo"} <= set(json.loads(run_dvc(clone, "status", "--json")))
    stdout, _ = dvc_output(clone, "repro")
    ran = sorted(line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage"))
    assert ran == ["merge@grpo", "merge@sft"]
    assert {phase: _md5(clone / path) for phase, path in weights.items()} == {
        phase: _md5(pipeline / path) for phase, path in weights.items()
    }
    assert json.loads(run_dvc(clone, "status", "--json")) == {}
    ignored = subprocess.run(["git", "status", "--porcelain", "models"], cwd=clone, capture_output=True, text=True)
    assert ignored.stdout == ""  # git ignores the rebuilt models too


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_publish_dry_run_checks_and_lists_the_model_card_and_abstention_file_offline(pipeline):
    command = [
        sys.executable,
        "-m",
        "medjson.commands.publish",
        "--model",
        "models/grpo_merged",
        "--repo",
        "me/medjson-grpo",
    ]
    env = {**dvc_env(), "HF_HUB_OFFLINE": "1", "HF_TOKEN": ""}
    run = subprocess.run(
        [*command, "--card", "releases/grpo/README.md", "--dry-run"],
        cwd=pipeline,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    listed = {line.split()[-1] for line in run.stdout.splitlines()[:-1]}
    assert {"README.md", "abstention.json", "model.safetensors", "medjson_lineage.json", "config.json"} <= listed
    assert "(private)" in run.stdout and "dry run: nothing uploaded" in run.stderr
    (pipeline / "bare.md").write_text("---\nlicense: mit\n---\n# no results\n")
    bare = subprocess.run(
        [*command, "--card", "bare.md", "--dry-run"], cwd=pipeline, env=env, capture_output=True, text=True
    )
    assert bare.returncode == 1 and "no license or no model-index" in bare.stderr and "Traceback" not in bare.stderr
    (pipeline / "bare.md").unlink()


def test_merged_models_stay_out_of_the_cache_and_git(pipeline):
    """A merged model is its adapter merged in seconds: DVC caches the adapter, never the merged weights,
    and git ignores them, so an experiment or a push costs the adapter alone. That a pull (which
    therefore brings no merged model) is followed by a `dvc repro` that rebuilds both byte for byte and
    runs nothing else is tested on a clone above."""
    cache = pipeline / ".dvc/cache/files/md5"
    for phase in ("sft", "grpo"):
        digest = _md5(pipeline / f"models/{phase}_merged/model.safetensors")
        assert not (cache / digest[:2] / digest[2:]).exists(), f"{phase}'s merged weights are in the cache"
    adapter = _md5(pipeline / "models/sft_adapter/adapter_model.safetensors")
    assert (cache / adapter[:2] / adapter[2:]).exists()
    ignored = subprocess.run(["git", "status", "--porcelain", "models"], cwd=pipeline, capture_output=True, text=True)
    assert ignored.stdout == "" and (pipeline / "models/grpo_merged/model.safetensors").is_file()


@pytest.fixture(scope="module")
def seed_experiments(pipeline):
    """Real DVC experiments of the committed run, as a user queues a seed sweep: GRPO's side re-run with
    its own seed (the SFT model stays), one with the baseline's seed again, and two that must be refused:
    one whose GRPO never ran at its seed, one that changes a setting beside the seed. They run in
    temporary folders, so the workspace the other tests read is left as it was."""
    for args in (
        ["-n", "s1", "-S", "grpo.seed=1", "evaluate@grpo"],
        ["-n", "same42", "-S", "grpo.seed=42", "grpo"],
        ["-n", "s2-not-run", "-S", "grpo.seed=2", "prepare"],
        ["-n", "kl", "-S", "grpo.seed=5", "-S", "grpo.trainer.beta=0.1", "prepare"],
    ):
        run_dvc(pipeline, "exp", "run", "--temp", *args)
    return pipeline


def _seeds(folder, *settings, out):
    args = [arg for setting in settings for arg in ("--setting", setting)]
    return subprocess.run(
        [sys.executable, "-m", "medjson.commands.seeds", "--workspace", str(folder), *args, "--out", str(out)],
        cwd=folder,
        env=dvc_env(),
        capture_output=True,
        text=True,
    )


def _at(folder, rev, path):
    """A git-tracked file of the workspace at an experiment (by name) or revision."""
    from medjson.commands.seeds.runs import resolve

    return subprocess.run(
        ["git", "show", f"{resolve(folder, rev)}:{path}"], cwd=folder, capture_output=True, text=True, check=True
    ).stdout


def test_grpo_seed_changes_the_run_and_the_same_seed_repeats_it_byte_for_byte(seed_experiments):
    def outputs(rev, stage):
        lock = yaml.safe_load(_at(seed_experiments, rev, "dvc.lock"))
        return {out["path"]: out["md5"] for out in lock["stages"][stage]["outs"]}

    baseline = outputs("HEAD", "grpo")
    assert outputs("same42", "grpo") == baseline  # grpo.seed 42 is the top-level seed the baseline ran with
    other = outputs("s1", "grpo")
    assert other["models/grpo_adapter"] != baseline["models/grpo_adapter"]
    assert other["training/grpo"] != baseline["training/grpo"]  # its rollouts' rewards and its curves differ too
    assert outputs("s1", "sft") == outputs("HEAD", "sft")  # GRPO's own seed leaves the SFT model as it was


def test_seeds_collects_each_seeds_verdict_and_the_mean_across_seeds(seed_experiments, tmp_path):
    result = _seeds(seed_experiments, "tiny=HEAD,s1", out=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "seeds.json").read_text())["settings"]["tiny"]
    assert [r["seed"] for r in report["runs"]] == [42, 1]
    for seed, rev in (("42", "HEAD"), ("1", "s1")):
        grpo = json.loads(_at(seed_experiments, rev, "metrics/grpo.json"))
        sft = json.loads(_at(seed_experiments, rev, "metrics/sft.json"))
        got = {
            measure: report["grpo_vs_sft"][measure]["per_seed"][seed]["diff"]
            for measure in report["grpo_vs_sft"]
            if measure != "same_older_model_in_every_run"
        }
        for measure, key in (
            ("accuracy", "accuracy"),
            ("valid_json", "valid_json_rate"),
            ("brier_stated", "brier_stated_all"),
        ):
            assert got[measure] == pytest.approx(grpo[key] - sft[key], abs=1e-12)
        largest = [max(m[f"predicted_share_{letter}"] for letter in "ABCD") for m in (grpo, sft)]
        assert got["largest_letter_share"] == pytest.approx(largest[0] - largest[1], abs=1e-12)
    compared = json.loads(_at(seed_experiments, "HEAD", "metrics/comparison.json"))["grpo_vs_sft"]
    for measure in ("accuracy", "valid_json", "schema_pass", "brier_stated"):  # the compare stage's own tests
        assert report["grpo_vs_sft"][measure]["per_seed"]["42"]["verdict"] == compared[measure]["verdict"]
    for measure, m in report["grpo_vs_sft"].items():
        if measure == "same_older_model_in_every_run":
            assert m is True  # one SFT model under both GRPO seeds
            continue
        diffs = [s["diff"] for s in m["per_seed"].values()]
        assert m["mean"] == pytest.approx(sum(diffs) / 2)
        assert m["ci_low"] <= m["mean"] <= m["ci_high"] and m["seeds"] == 2 and 1 <= m["seeds_agreeing"] <= 2
    table = (tmp_path / "seeds.md").read_text()
    assert "| grpo vs sft (sft the same in every run) | accuracy | " in table
    assert "| tiny | 42 | HEAD | " in table and "| tiny | 1 | s1 | " in table  # a row per run
    assert (tmp_path / "heldout_curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "setting, refusal",
    [
        ("tiny=HEAD,kl", r"run kl differs from HEAD in more than its seed: grpo.trainer.beta \(0.04 in HEAD, 0.1\)"),
        (
            "tiny=HEAD,s2-not-run",
            r"run s2-not-run \(\w+\): not up to date at its revision: grpo \(ran with other grpo.seed\)",
        ),
        ("tiny=HEAD,same42", r"seed 42 is run twice \(HEAD, same42\)"),
        ("tiny=HEAD,nothing", r"nothing names no experiment and no git revision"),
    ],
)
def test_seeds_refuses_runs_that_are_no_seed_group(seed_experiments, tmp_path, setting, refusal):
    from medjson.commands.seeds.__main__ import parse_setting
    from medjson.commands.seeds.report import collect
    from medjson.errors import StageError

    with pytest.raises(StageError, match=refusal):
        collect(seed_experiments, dict([parse_setting(setting)]), tmp_path)
    assert not (tmp_path / "seeds.json").exists()


def test_the_seeds_command_ends_a_refusal_with_one_line(seed_experiments, tmp_path):
    result = _seeds(seed_experiments, "tiny=HEAD,kl", out=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("the runs of a setting may differ only in seed or grpo.seed")


def test_reward_code_change_retrains_grpo_from_its_first_step(pipeline):
    """A finished run is never resumed: the new reward is trained on for every configured step."""
    rewards = pipeline / "src/medjson/training/rewards.py"
    old = "rewards.append(1.0 - (parsed.confidence - outcome) ** 2)"
    assert old in rewards.read_text()
    rewards.write_text(rewards.read_text().replace(old, "rewards.append(1.0 - abs(parsed.confidence - outcome))"))
    assert set(json.loads(run_dvc(pipeline, "status", "--json"))) == {"grpo"}
    stdout, stderr = dvc_output(pipeline, "repro", "grpo")  # what follows GRPO is tested re-run above
    assert "resuming" not in stdout + stderr
    assert _metrics(pipeline, "grpo_training")["steps"] == 3
    assert curve_steps(pipeline / "training/grpo", "reward") == [1, 2, 3]
    assert not list((pipeline / "checkpoints/grpo").glob("checkpoint-*"))  # a finished run keeps none


def test_every_model_is_scored_on_every_benchmark_and_reported_in_one_table(pipeline):
    for bench in ("medqa", "mmlu_medical"):
        data = _metrics(pipeline, f"benchmarks/{bench}/data")
        for model in ("base", "sft", "grpo"):
            metrics = _metrics(pipeline, f"benchmarks/{bench}/{model}")
            assert metrics["n"] == data["questions"] > 0
        assert set(_metrics(pipeline, "benchmark_comparison")[bench]) == {"sft_vs_base", "grpo_vs_sft", "grpo_vs_base"}
    assert _metrics(pipeline, "benchmarks/mmlu_medical/data")["questions"] == 12  # its limit
    table = (pipeline / "reports/benchmarks.md").read_text()
    sft = _metrics(pipeline, "benchmarks/medqa/sft")
    row = (
        f"| medqa | sft | {sft['accuracy']:.3f} [{sft['accuracy_ci_low']:.3f}, {sft['accuracy_ci_high']:.3f}] "
        f"| {sft['loglik_accuracy']:.3f} [{sft['loglik_accuracy_ci_low']:.3f}, {sft['loglik_accuracy_ci_high']:.3f}] |"
    )
    assert (
        row in table and "| eval pool | grpo |" in table and "| mmlu_medical | grpo vs sft | Brier (stated) |" in table
    )
    grpo = _metrics(pipeline, "grpo")
    shares = " | ".join(f"{grpo[f'predicted_share_{label}']:.3f}" for label in ("A", "B", "C", "D", "invalid"))
    assert f"| grpo | {shares} |" in table  # each model's letters, under the gold shares
    assert "| gold | " + " | ".join(f"{grpo[f'gold_share_{letter}']:.3f}" for letter in "ABCD") in table
    assert "metrics/benchmarks/medqa/grpo.json" in run_dvc(pipeline, "metrics", "show")


def test_both_phases_are_measured_on_the_heldout_pool_before_and_during_training(pipeline):
    sft, grpo = _metrics(pipeline, "sft_training"), _metrics(pipeline, "grpo_training")
    # The tiny model learns the format from nothing: its loss on questions it never saw falls.
    assert sft["heldout_loss_end"] < sft["heldout_loss_start"]
    evaluated = curve_steps(pipeline / "training/sft", "eval_loss")
    assert evaluated[0] == 0 and evaluated[-1] > 0
    # GRPO: before the first step and at the last (its 3 steps are fewer than heldout.eval_steps).
    assert curve_steps(pipeline / "training/grpo", "heldout_reward") == [0, 3]
    for key in ("heldout_reward", "heldout_valid_json", "heldout_correct_answer", "heldout_top_letter_share"):
        assert 0 <= grpo[f"{key}_start"] <= 2 and 0 <= grpo[f"{key}_end"] <= 2, key
    # The adapter left is the policy of one of those measurements; the metrics say which, and what it scored.
    kept = {0: "start", 3: "end"}[grpo["heldout_kept_step"]]
    assert grpo["heldout_reward_kept"] == grpo[f"heldout_reward_{kept}"]
    assert grpo["heldout_top_letter_share_kept"] == grpo[f"heldout_top_letter_share_{kept}"]
    # The start is the SFT model itself, answering greedily as the evaluation does: it writes JSON.
    assert grpo["heldout_valid_json_start"] > 0.5
    heldout = {json.loads(line)["id"] for line in (pipeline / "data/pools/heldout.jsonl").open()}
    for pool in ("sft", "grpo", "calibration", "eval"):
        assert not heldout & {json.loads(line)["id"] for line in (pipeline / f"data/pools/{pool}.jsonl").open()}
