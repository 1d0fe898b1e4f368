"""``medjson tiny-model FOLDER``: a tiny random Qwen3 and its tokenizer, built locally in seconds, offline.

Tests, benchmarks and quick pipeline runs use it in place of ``Qwen/Qwen3-0.6B``: same
architecture class, same chat template (taken from TRL's copy of Qwen3's, so
``enable_thinking`` behaves as on the real model), a byte-level BPE tokenizer trained
on the project's own questions. Weights are random but deterministic for a seed.

    medjson tiny-model models/tiny-qwen3
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
from pathlib import Path

from medjson.data.pools import pool_record
from medjson.data.sources import LoadReport, read_local, validate_rows
from medjson.workspace import PROJECT_QUESTIONS

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]


def qwen3_chat_template() -> str:
    """Qwen3's own chat template, as TRL ships it byte for byte."""
    return (importlib.resources.files("trl") / "chat_templates" / "qwen3.jinja").read_text()


def _training_corpus(questions_path: Path) -> list[str]:
    """Prompts and answers from the project's questions: every character the tests will show."""
    rows = read_local(questions_path)
    questions = validate_rows(rows, "original", "error", True, LoadReport())
    texts = []
    for question in questions:
        record = pool_record(question, 300, 0.85, 0.6)
        texts += [m["content"] for m in record["messages"]] + [record["target"]]
    return texts


def build_tokenizer(vocab_size: int = 1024, questions_path: Path = PROJECT_QUESTIONS):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_training_corpus(questions_path), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
    )
    # As in Qwen3, the think markers are single added tokens but not special ones.
    tokenizer.add_tokens(THINK_TOKENS)
    tokenizer.chat_template = qwen3_chat_template()
    return tokenizer


# The tiny model's size: about 490k parameters, a few seconds per SFT run on CPU.
TINY_SHAPE = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=2048,
)


def random_qwen3(tokenizer, shape: dict, seed: int = 0, **config):
    """A Qwen3 of the given shape with random weights, wired to ``tokenizer``'s end and pad tokens."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    im_end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    settings = {
        "vocab_size": len(tokenizer),
        "tie_word_embeddings": True,
        "eos_token_id": im_end,
        "pad_token_id": pad,
        "bos_token_id": None,
        **shape,
        **config,
    }
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(Qwen3Config(**settings))


def build_tiny_qwen3(out_dir: Path | str, seed: int = 0, vocab_size: int = 1024) -> Path:
    """Write a tiny random Qwen3 (about 490k parameters) and tokenizer to ``out_dir``."""
    from transformers import GenerationConfig

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(vocab_size)
    # At the default initializer_range 0.02 a LoRA barely moves so small a model; 0.1 lets SFT teach the format.
    model = random_qwen3(tokenizer, TINY_SHAPE, seed, initializer_range=0.1)
    im_end, pad = model.config.eos_token_id, model.config.pad_token_id
    model.generation_config = GenerationConfig(eos_token_id=[im_end, pad], pad_token_id=pad, do_sample=False)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "medjson_tiny.json").write_text(json.dumps({"seed": seed, "vocab_size": vocab_size}) + "\n")
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_qwen3(args.out_dir, args.seed))


if __name__ == "__main__":
    main()
