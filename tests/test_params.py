"""params.yaml loads, builds every config the stages use, and rejects unknown or mistyped keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medjson.errors import ParamsError
from medjson.params import load_params, trainer_config

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _write(tmp_path: Path, change) -> Path:
    raw = yaml.safe_load(PARAMS.read_text())
    change(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_project_params_build_every_config(tmp_path):
    from peft import LoraConfig
    from trl import GRPOConfig, SFTConfig

    from medjson.model.grammar import min_new_tokens
    from medjson.model.modeling import lora_config
    from medjson.training.configs import stage_trainer_config

    params = load_params(PARAMS)
    sft = stage_trainer_config(params, "sft", tmp_path / "sft", "fp32")
    assert isinstance(sft, SFTConfig)
    # Every trainer key passes straight through (report_to: "none" is kept as transformers writes it, []).
    assert all(getattr(sft, key) == value for key, value in params.sft.trainer.items() if key != "report_to")
    grpo = stage_trainer_config(params, "grpo", tmp_path / "grpo", "fp32")
    assert isinstance(grpo, GRPOConfig)
    assert all(getattr(grpo, key) == value for key, value in params.grpo.trainer.items() if key != "report_to")
    # Whole groups of completions per step, at least two distinct prompts in each.
    completions = grpo.per_device_train_batch_size * grpo.gradient_accumulation_steps
    assert completions % grpo.num_generations == 0 and completions // grpo.num_generations >= 2
    assert grpo.chat_template_kwargs == {"enable_thinking": params.model.enable_thinking}
    assert isinstance(lora_config(params.sft.lora), LoraConfig)
    # The evaluation's budget leaves room for a constrained answer (the answer grammar refuses less).
    assert params.evaluate.max_new_tokens >= min_new_tokens() and params.serve.max_new_tokens >= min_new_tokens()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p["prepare"].update(sft_sise=3), "prepare.sft_sise"),
        (lambda p: p.update(extra=1), "params.extra"),
        (lambda p: p["prepare"].update(sft_size="many"), "prepare.sft_size"),
        (lambda p: p["model"].pop("precision"), "model.precision"),
        (lambda p: p["model"].update(precision="fp8"), "model.precision"),
        (lambda p: p["model"].update(decoder="vllm"), "model.decoder"),
        (lambda p: p["prepare"].update(sft_size=True), "`prepare.sft_size` = True is not of type int"),
        (
            lambda p: p["prepare"].update(max_dropped_share=1.5),
            "max_dropped_share` = 1.5 is out of range: it must be between",
        ),
        (lambda p: p["prepare"].update(max_dropped_share=float("inf")), "max_dropped_share` = inf must be a finite"),
        (
            lambda p: p["sft"]["lora"].update(target_modules=["q_proj", 3]),
            "`sft.lora.target_modules.1` = 3 is not of type str",
        ),
        (
            lambda p: p["grpo"]["rewards"].update(valid_json="1.0"),
            "`grpo.rewards.valid_json` = '1.0' is not of type float",
        ),
        (lambda p: p["prepare"].update({3: 1}), "`prepare` has the key 3"),
        (lambda p: p.update(model=[1]), "`model` must be a mapping, got list"),
        (lambda p: p.update(path="elsewhere.yaml"), "unknown key `params.path`"),
    ],
)
def test_bad_params_fail_naming_the_key(tmp_path, change, message):
    path = _write(tmp_path, change)
    with pytest.raises(ParamsError, match=message.replace(".", r"\.")):
        load_params(path)


def test_a_number_yaml_read_as_a_string_fails_naming_the_trainer_key(tmp_path):
    """Trainer sections are checked when their config is built, before TRL sees them."""
    from trl import SFTConfig

    path = _write(tmp_path, lambda p: p["sft"]["trainer"].update(learning_rate="2e-4"))
    params = load_params(path)
    with pytest.raises(ParamsError, match=r"`sft\.trainer\.learning_rate` = '2e-4' .*write floats as 2\.0e-4"):
        trainer_config(SFTConfig, params.sft.trainer, "sft.trainer", path, output_dir=str(tmp_path))


def test_a_key_given_twice_is_an_error_naming_it(tmp_path):
    path = tmp_path / "params.yaml"
    text = PARAMS.read_text()
    path.write_text(text.replace("seed:", "seed: 7\nseed:", 1))
    with pytest.raises(ParamsError, match="key `seed` appears twice"):
        load_params(path)


def test_a_benchmark_entry_needs_only_its_source(tmp_path):
    def only_source(raw):
        raw["benchmarks"] = {"medqa": {"source": "data/benchmarks/medqa_demo.jsonl"}}

    bench = load_params(_write(tmp_path, only_source)).benchmarks["medqa"]
    assert (bench.layout, bench.bad_rows, bench.split, bench.limit, bench.columns, bench.harness_task) == (
        "auto",
        "error",
        None,
        None,
        None,
        None,  # the layout's own harness task
    )


def test_a_benchmark_harness_task_is_one_the_project_knows(tmp_path):
    def arc(raw):
        raw["benchmarks"] = {"medqa": {"source": "data/benchmarks/medqa_demo.jsonl", "harness_task": "arc_easy"}}

    with pytest.raises(ParamsError, match=r"`benchmarks\.medqa\.harness_task` = 'arc_easy'; choose one of"):
        load_params(_write(tmp_path, arc))


def test_unknown_trainer_key_names_the_key(tmp_path):
    from trl import SFTConfig

    path = _write(tmp_path, lambda p: p["sft"]["trainer"].update(learnig_rate=0.1))
    params = load_params(path)
    with pytest.raises(ParamsError, match=r"sft\.trainer\.learnig_rate"):
        trainer_config(SFTConfig, params.sft.trainer, "sft.trainer", path, output_dir=str(tmp_path))


@pytest.mark.parametrize("hub", [{"push_to_hub": True}, {"hub_model_id": "me/medjson"}])
def test_the_trainers_own_hub_upload_is_refused_for_medjson_publish(tmp_path, hub):
    from trl import GRPOConfig

    path = _write(tmp_path, lambda p: p["grpo"]["trainer"].update(hub))
    params = load_params(path)
    with pytest.raises(ParamsError, match=rf"grpo\.trainer\.{next(iter(hub))}`.*medjson publish"):
        trainer_config(GRPOConfig, params.grpo.trainer, "grpo.trainer", path, output_dir=str(tmp_path))


def test_missing_file_says_where(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"niceness": 1.0}, r"grpo\.rewards\.niceness` is not a reward"),
        ({}, "no reward a positive weight"),
        ({"valid_json": 0.0}, "no reward a positive weight"),
        ({"valid_json": -1.0}, r"grpo\.rewards\.valid_json` = -1\.0"),
    ],
)
def test_bad_reward_weights_fail_naming_the_key(weights, message):
    from medjson.training.rewards import check_reward_weights

    with pytest.raises(ParamsError, match=message):
        check_reward_weights(weights, "params.yaml")
