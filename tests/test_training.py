"""SFT loss masking, identical prompts across stages, resuming, and the GRPO guards."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import curve_steps
from transformers import TrainerCallback, TrainerControl

from medjson.core.prompts import build_messages, render_prompt, target_json
from medjson.core.records import write_jsonl
from medjson.errors import StageError
from medjson.model.lineage import check_starts_from_sft
from medjson.training.configs import TrainingPaths
from medjson.training.guards import GrpoMonitor


def _outputs_in(folder) -> dict:
    """Where a training run in a test writes: its adapter, curves, summary and checkpoints, in ``folder``."""
    return dict(
        adapter=folder / "adapter",
        curves=folder / "curves",
        summary=folder / "summary.json",
        scratch=folder / "scratch",
    )


@pytest.fixture
def train_file(tmp_path):
    records = []
    for i in range(16):
        messages = build_messages(f"Which nerve supplies muscle {i}?", ["Radial", "Axillary", "Ulnar", "Median"])
        records.append(
            {
                "id": str(i),
                "subject": "Anatomy",
                "messages": messages,
                "answer": "B",
                "target": target_json("B", 0.6, "Option B is the best-supported answer."),
            }
        )
    return write_jsonl(tmp_path / "sft.jsonl", records) and tmp_path / "sft.jsonl"


@pytest.fixture
def heldout_file(train_file, tmp_path):
    """Four questions of the training file's kind, as prepare writes the held-out pool."""
    from medjson.core.records import read_jsonl

    rows = [{**r, "id": f"heldout-{r['id']}"} for r in read_jsonl(train_file)[:4]]
    return write_jsonl(tmp_path / "heldout.jsonl", rows) and tmp_path / "heldout.jsonl"


def test_sft_labels_cover_the_answer_and_end_of_turn_only(tiny_params, train_file, heldout_file, tmp_path):
    from medjson.core.records import SFT_KEYS, read_pool
    from medjson.stages.sft import build_trainer, sft_setup

    setup = sft_setup(tiny_params, tmp_path / "scratch")
    trainer = build_trainer(setup, read_pool(train_file, SFT_KEYS), read_pool(heldout_file, SFT_KEYS), train_file, [])
    batch = next(iter(trainer.get_train_dataloader()))
    tokenizer = trainer.processing_class
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    row_ids, row_labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    real = [i for i, m in enumerate(batch["attention_mask"][0].tolist()) if m]
    labelled = [i for i in real if row_labels[i] != -100]
    prompt_end = labelled[0]
    prompt_text = tokenizer.decode(row_ids[:prompt_end])
    assert prompt_text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert all(row_labels[i] == -100 for i in real[:prompt_end])  # the prompt is never learned
    assert labelled == list(range(prompt_end, real[-1] + 1))  # every answer token is learned
    answer = tokenizer.decode([row_ids[i] for i in labelled])
    assert answer.startswith('{"predicted_category": "B"') and im_end in [row_ids[i] for i in labelled]


def test_training_rollout_and_evaluation_prompts_are_identical(tiny_params, train_file, heldout_file, tmp_path):
    from medjson.core.records import SFT_KEYS, read_pool
    from medjson.stages.sft import build_trainer, sft_setup

    setup = sft_setup(tiny_params, tmp_path / "scratch")
    trainer = build_trainer(setup, read_pool(train_file, SFT_KEYS), read_pool(heldout_file, SFT_KEYS), train_file, [])
    tokenizer = trainer.processing_class
    row = trainer.train_dataset[0]
    sft_prompt = [t for t, label in zip(row["input_ids"], row["labels"]) if label == -100]
    messages = build_messages("Which nerve supplies muscle 0?", ["Radial", "Axillary", "Ulnar", "Median"])
    evaluation = tokenizer(render_prompt(tokenizer, messages, False), add_special_tokens=False)["input_ids"]
    # What GRPOTrainer does with GRPOConfig.chat_template_kwargs (trl 1.16, _tokenize_prompts).
    from medjson.training.configs import stage_trainer_config

    kwargs = stage_trainer_config(tiny_params, "grpo", tmp_path / "g", "fp32").chat_template_kwargs
    rollout = tokenizer.apply_chat_template(
        conversation=[messages], add_generation_prompt=True, tokenize=True, return_dict=True, **kwargs
    )["input_ids"][0]
    assert sft_prompt == evaluation == list(rollout)
    assert "<think>\n\n</think>" in tokenizer.decode(evaluation)


class _Interrupt(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control: TrainerControl, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt("simulated preemption")


class _FirstStep(TrainerCallback):
    first = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first is None:
            self.first = state.global_step


@pytest.mark.slow
def test_interrupted_sft_resumes_from_its_last_checkpoint(tiny_params, train_file, heldout_file, tmp_path):
    from medjson.stages.sft import train_sft

    trainer_params = {**tiny_params.sft.trainer, "max_steps": 12, "save_steps": 5, "logging_steps": 1}
    params = dataclasses.replace(tiny_params, sft=dataclasses.replace(tiny_params.sft, trainer=trainer_params))
    paths = TrainingPaths(
        train=train_file,
        heldout=heldout_file,
        adapter=tmp_path / "adapter",
        curves=tmp_path / "curves",
        scratch=tmp_path / "scratch",
    )
    with pytest.raises(KeyboardInterrupt):
        train_sft(params, paths, extra_callbacks=[_Interrupt(7)])
    assert (tmp_path / "scratch/checkpoint-5").exists() and not (tmp_path / "adapter").exists()
    first = _FirstStep()
    result = train_sft(params, paths, extra_callbacks=[first])
    assert result["resumed_from"].endswith("checkpoint-5")
    assert first.first == 5 and result["steps"] == 12
    assert (tmp_path / "adapter/adapter_model.safetensors").exists()
    # The held-out loss before the first step came back from the checkpoint; it was not measured twice.
    assert curve_steps(tmp_path / "curves", "eval_loss") == [0, 10, 12]  # eval_steps 10, and the last step
    assert result["heldout_loss_start"] is not None and result["heldout_loss_end"] is not None
    # Another setting makes the old checkpoints stale: they are cleared, not resumed.
    other = dataclasses.replace(params, seed=params.seed + 1)
    assert train_sft(other, paths)["resumed_from"] is None
    # A finished run is never resumed when the chat template's thinking mode flips: it trains from its first
    # step, and its curve is one unbroken run.
    model = dataclasses.replace(params.model, enable_thinking=not params.model.enable_thinking)
    first = _FirstStep()
    assert train_sft(dataclasses.replace(params, model=model), paths, extra_callbacks=[first])["resumed_from"] is None
    assert first.first == 0 and curve_steps(tmp_path / "curves", "loss") == list(range(1, 13))


def test_grpo_refuses_to_start_from_the_base(tiny_params, tiny_model):
    with pytest.raises(StageError, match="never from the base"):
        check_starts_from_sft(tiny_model, tiny_params.model.base)


def test_collapse_guard_stops_after_n_flat_logs():
    monitor = GrpoMonitor(max_zero_std_logs=3)
    control = TrainerControl()

    class State:
        global_step = 0

    for step, frac in enumerate([1.0, 1.0, 0.5, 1.0, 1.0], start=1):
        State.global_step = step
        monitor.on_log(None, State, control, logs={"frac_reward_zero_std": frac, "reward": 0.0})
    assert not control.should_training_stop  # the 0.5 broke the run of flat logs
    State.global_step = 6
    monitor.on_log(None, State, control, logs={"frac_reward_zero_std": 1.0, "reward": 0.0})
    assert control.should_training_stop and monitor.collapsed_at == 6
    assert len(monitor.history) == 6


def test_overlong_sft_examples_are_dropped_not_truncated(tiny_params, tiny_model):
    from transformers import AutoTokenizer

    from medjson.stages.sft import drop_overlong

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    short = {"messages": build_messages("Short?", ["a", "b", "c", "d"]), "target": target_json("A", 0.6, "x")}
    long = {"messages": build_messages("Long " * 400, ["a", "b", "c", "d"]), "target": target_json("A", 0.6, "x")}
    assert drop_overlong([short, long, short], tokenizer, 256, False) == [short, short]


@pytest.mark.slow
def test_grpo_stops_with_a_clear_error_when_rewards_never_vary(tiny_params, tiny_model, tmp_path):
    """An untrained model never writes JSON: every reward is 0, so the guard must stop GRPO."""
    import json
    import shutil

    from medjson.stages.grpo import train_grpo

    model_dir = tmp_path / "untrained_merged"
    shutil.copytree(tiny_model, model_dir)
    lineage = {"adapter": "none", "base": {"base": tiny_params.model.base}}
    (model_dir / "medjson_lineage.json").write_text(json.dumps(lineage))  # poses as a merged SFT model
    records = [
        {"id": str(i), "messages": build_messages(f"Q{i}?", ["a", "b", "c", "d"]), "answer": "A"} for i in range(16)
    ]
    write_jsonl(tmp_path / "grpo.jsonl", records)
    write_jsonl(tmp_path / "heldout.jsonl", records[:2])
    trainer = {**tiny_params.grpo.trainer, "max_steps": 6, "max_completion_length": 8}
    guard = dataclasses.replace(tiny_params.grpo.guard, max_zero_std_logs=2, preflight_prompts=2)
    params = dataclasses.replace(tiny_params, grpo=dataclasses.replace(tiny_params.grpo, trainer=trainer, guard=guard))
    with pytest.raises(StageError, match="zero reward variance.*likely causes") as err:
        train_grpo(
            params,
            TrainingPaths(
                tmp_path / "grpo.jsonl", tmp_path / "heldout.jsonl", **_outputs_in(tmp_path), model=model_dir
            ),
        )
    assert "step 2" in str(err.value)
    assert not (tmp_path / "adapter").exists()  # nothing saved as if it had worked


@pytest.mark.parametrize(
    "precision, logs, fails_at",
    [
        ("fp32", [{"loss": 1.0, "grad_norm": 2.0}, {"loss": float("nan"), "grad_norm": 2.0}], 2),
        ("fp16", [{"loss": float("inf")}], 1),
        ("bf16", [{"loss": 1.0, "grad_norm": float("inf")}], 1),
        # fp16's gradient scaler skips its first overflowing steps: three such logs pass, a fourth does not.
        ("fp16", [{"loss": 1.0, "grad_norm": float("inf")}] * 4, 4),
        ("fp16", [{"loss": 1.0, "grad_norm": float("inf")}] * 3 + [{"loss": 1.0, "grad_norm": 1.0}] * 3, None),
    ],
)
def test_finite_guard_stops_on_a_non_finite_loss_or_gradient(precision, logs, fails_at):
    from medjson.training.guards import FiniteGuard

    guard = FiniteGuard(precision, "sft")

    class State:
        global_step = 0

    for step, entry in enumerate(logs, start=1):
        State.global_step = step
        if step == fails_at:
            with pytest.raises(StageError, match=f"at step {step} in {precision}.*learning rate"):
                guard.on_log(None, State, TrainerControl(), logs=entry)
            return
        guard.on_log(None, State, TrainerControl(), logs=entry)
    assert fails_at is None


@pytest.mark.slow
def test_sft_stops_on_an_injected_nan_loss_and_saves_nothing(
    tiny_params, train_file, heldout_file, tmp_path, monkeypatch
):
    from trl import SFTTrainer

    from medjson.stages.sft import train_sft

    compute_loss = SFTTrainer.compute_loss

    def nan_loss(self, *args, **kwargs):
        result = compute_loss(self, *args, **kwargs)
        if isinstance(result, tuple):
            return (result[0] * float("nan"), *result[1:])
        return result * float("nan")

    monkeypatch.setattr(SFTTrainer, "compute_loss", nan_loss)
    trainer_params = {**tiny_params.sft.trainer, "max_steps": 4, "logging_steps": 1, "save_steps": 2}
    params = dataclasses.replace(tiny_params, sft=dataclasses.replace(tiny_params.sft, trainer=trainer_params))
    with pytest.raises(StageError, match="loss became nan at step 1 in fp32"):
        train_sft(params, TrainingPaths(train_file, heldout_file, **_outputs_in(tmp_path)))
    assert not (tmp_path / "adapter").exists()
    assert not list((tmp_path / "scratch").glob("checkpoint-*"))  # stopped before the first save
