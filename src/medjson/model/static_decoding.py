"""Greedy decoding at the device's pace: a preallocated cache, the batch's bookkeeping on the device, and
one compiled step.

``pruned_decoding.greedy_pruned`` runs each decoding step as transformers runs a model eagerly: hundreds of
small operations dispatched from Python, a few per layer. On a GPU that host work, not the card, sets
the pace (docs/performance.md: 40 ms a step of Qwen3-0.6B whether 1 row or 64). Here, as in vLLM and in
transformers' own compiled ``generate``:

- the KV cache is preallocated (transformers' ``StaticCache``) at a bucketed batch and length and kept
  from batch to batch, so steps keep their shapes and one compiled graph serves them all;
- the step (the model's forward) is compiled with ``torch.compile(fullgraph=True)``: on CUDA in
  ``reduce-overhead`` mode, so a step is one CUDA graph replayed, its host cost independent of the
  number of layers; on CPU with inductor's C++ wrapper (``bench/decode_step.py`` measures both);
- rows do not leave the batch: a finished row keeps its slot and writes padding, so shapes stay put
  (on a GPU a step costs about the same at 1 row and 64, docs/performance.md); which rows are finished,
  each step's token and the letters' logits stay on the device, and the host reads the tokens back
  only every ``CHECK_EVERY`` steps, or every step where it must: to advance the grammar's matchers
  (xgrammar's matcher runs on the host; its mask is applied on the device) or to stream tokens;
- the prompts' shared prefix runs once and its keys and values are copied into every row, as the pruned
  decoder does.

Continuous batching (a finished row's slot taken by the next question) is not done: with one cache
position shared by the batch, a newcomer's prompt would have to end where the others are, and a slot
refilled mid-answer needs paged attention (vLLM's, or transformers' ``generate_batch``) to pay; with
answers of similar length (the budget cuts the long ones) a batch's rows end close together.

Why not ``model.generate(cache_implementation="static", compile_config=...)``: it has no hook for the
grammar's per-row mask between the logits and the argmax, no per-row cancellation, no letter
probabilities, and recompiles for each new prompt length; the step it compiles is the same forward.

On CPU the eager static step is slower than the pruned decoder (each step attends over the whole
preallocated length), and compiling takes minutes: ``auto`` keeps the pruned decoder there, so CPU
answers keep their bytes (a different kernel order can flip a near-tie). Every path of this module
but the graph capture itself runs on CPU in the tests.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Callable

import torch

from medjson.model.pruned_decoding import GreedyBatch, common_prefix_length, last_logits, own_tokens

log = logging.getLogger("medjson.decoding")

CHECK_EVERY = 16  # steps between host reads when nothing needs each token: one sync per 16 steps
LENGTH_BUCKET = 128  # cache lengths are rounded up to this, so nearby prompt lengths share one graph


def bucketed_rows(rows: int) -> int:
    """The batch the cache is built for: the next power of two, so a pool's last, smaller batch and the
    service's varied batches reuse a few graphs instead of compiling one each."""
    return 1 << (rows - 1).bit_length()


def bucketed_length(tokens: int) -> int:
    return -(-tokens // LENGTH_BUCKET) * LENGTH_BUCKET


class StaticDecoder:
    """One model's preallocated caches and its decoding step (compiled or not), kept across batches.

    ``compiled``: the step runs under ``torch.compile`` (a CUDA graph on CUDA); False runs the same step
    eagerly (the tests' path on CPU, and the reference the compiled one is checked against).
    ``backend``: torch.compile's; the tests trace the step whole with ``eager`` (no code generated),
    which a graph break would fail, in seconds rather than inductor's minutes.
    """

    def __init__(self, model, compiled: bool, backend: str | Callable = "inductor"):
        layers = model.config.get_text_config(decoder=True)
        kinds = set(getattr(layers, "layer_types", None) or ["full_attention"])
        if kinds != {"full_attention"}:
            raise ValueError(f"the static decoder needs full attention in every layer; this model has {sorted(kinds)}")
        self.model = model
        self.compiled = compiled
        self.compile_seconds = 0.0  # spent in the first step of each new shape (compiling, or capturing)
        self._caches: dict[int, object] = {}  # by row count
        self._seen_shapes: set[tuple[int, int]] = set()
        self._step = self._forward
        if compiled:
            # One graph per (rows, length) bucket: a service meets up to 5 row counts and a dozen lengths,
            # more than dynamo's default 8 graphs per function, beyond which it runs the step eagerly.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            self._step = torch.compile(
                self._forward, fullgraph=True, dynamic=False, **_compile_settings(model, backend)
            )

    def _forward(self, cache, tokens, positions, attention_mask):
        # `past_key_values` rather than 5.24's new `cache` name: also works on older transformers.
        return self.model(
            input_ids=tokens,
            position_ids=positions,
            attention_mask=attention_mask,
            past_key_values=cache,
            use_cache=True,
        ).logits[:, -1]

    def step(self, cache, tokens, positions, attention_mask) -> torch.Tensor:
        """The logits of each row's next token; a shape's first step compiles (timed in compile_seconds)."""
        shape = (tokens.shape[0], attention_mask.shape[1])
        first = self.compiled and shape not in self._seen_shapes
        started = time.perf_counter()
        if self.compiled and tokens.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are consumed
        try:
            logits = self._step(cache, tokens, positions, attention_mask)
        except torch._dynamo.exc.TorchDynamoException as err:  # a card or setup torch cannot compile for
            if not first:
                raise
            # Compiling fails before the graph runs: the cache is untouched, and the eager step takes over.
            cause = getattr(err, "inner_exception", None) or err  # the backend's own error, which dynamo wraps
            log.warning(
                "the decoding step did not compile (%s: %s); decoding on with the same step run eagerly "
                "(model.decoder: static chooses that up front)",
                type(cause).__name__,
                str(cause).strip().splitlines()[0][:200] if str(cause).strip() else "",
            )
            self.compiled, self._step = False, self._forward
            return self._forward(cache, tokens, positions, attention_mask)
        if first:
            self._seen_shapes.add(shape)
            self.compile_seconds += time.perf_counter() - started
            log.info("decoding step compiled for %d rows x %d tokens in %.1f s", *shape, time.perf_counter() - started)
        # A CUDA graph's output is overwritten by its next replay; the grammar masks it in place.
        return logits.clone() if self.compiled else logits

    def cache(self, rows: int, tokens: int):
        """An empty cache of ``rows`` rows holding at least ``tokens`` each: the one kept for that many rows
        where it is long enough and at most twice what is needed, else a new one in its place. So a pool
        answered longest prompts first compiles once or twice, not once per length, and memory holds one
        cache per row count; the price is attention over up to twice the slots a batch needs."""
        from transformers import StaticCache

        cache = self._caches.get(rows)
        if cache is None or not tokens <= cache.layers[0].max_cache_len <= 2 * bucketed_length(tokens):
            self._caches.pop(rows, None)  # freed before its successor is allocated
            cache = self._caches[rows] = StaticCache(config=self.model.config, max_cache_len=bucketed_length(tokens))
        cache.reset()
        return cache

    def load_prefix(self, cache, prefix_cache, rows: int, length: int) -> None:
        """Every row's first ``length`` cache slots set to the shared prefix's keys and values."""
        for layer, source in zip(cache.layers, prefix_cache.layers):
            if not layer.is_initialized:  # allocated at the full batch, as the first update would
                layer.lazy_initialization(source.keys.expand(rows, -1, -1, -1), source.values.expand(rows, -1, -1, -1))
            layer.keys[:, :, :length].copy_(source.keys)
            layer.values[:, :, :length].copy_(source.values)
            layer.cumulative_length.fill_(length)


def _compile_settings(model, backend: str | Callable) -> dict:
    if backend != "inductor":
        return {"backend": backend}
    if model.device.type == "cuda":  # each step one CUDA graph, replayed
        return {"mode": "reduce-overhead"}
    return {"options": {"cpp_wrapper": True}}  # C++ calls the kernels: no Python between them


_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def static_decoder(model, compiled: bool) -> StaticDecoder:
    """The model's decoder, made once per model and mode: its caches and compiled graphs are reused by
    every later batch."""
    per_model = _DECODERS.setdefault(model, {})
    if compiled not in per_model:
        per_model[compiled] = StaticDecoder(model, compiled)
    return per_model[compiled]


@torch.inference_mode()
def greedy_static(decoder: StaticDecoder, batch: GreedyBatch) -> tuple[list[list[int]], list[list[list[float]]]]:
    """``pruned_decoding.greedy_pruned``'s contract (the same batch, returns and greedy tokens) on a
    preallocated cache. A row for which ``stopped(row)`` turns true is finished at the next host read
    (every step with a grammar or ``on_token``, as the pruned decoder asks, else every ``CHECK_EVERY``
    steps), its tokens ending at that read."""
    model, device = decoder.model, decoder.model.device
    count = len(batch.prompts)
    rows = bucketed_rows(count)
    padded = batch.prompts + [batch.prompts[-1]] * (rows - count)  # filler rows, finished from the start
    shared = common_prefix_length(padded)
    own = [p[shared:] for p in padded]
    width = max(len(o) for o in own)
    cache = decoder.cache(rows, shared + width + batch.max_new_tokens)
    length = cache.layers[0].max_cache_len
    if shared:
        from transformers import DynamicCache

        prefix = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([padded[0][:shared]], device=device), past_key_values=prefix, use_cache=True)
        decoder.load_prefix(cache, prefix, rows, shared)
    input_ids, own_mask, positions = own_tokens(own, batch.pad_id, shared, device)
    attention_mask = torch.zeros((rows, length), dtype=torch.long, device=device)
    attention_mask[:, :shared] = 1
    attention_mask[:, shared : shared + width] = own_mask
    logits = last_logits(model, cache, input_ids, attention_mask, positions)
    positions = positions[:, -1:].clone()
    slot = shared + width  # the cache slot the next token's keys go to, the same for every row

    chosen = torch.full((rows, batch.max_new_tokens), batch.pad_id, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    finished[count:] = True
    stops = torch.tensor(sorted(batch.stop_ids), device=device)
    letter_index = torch.tensor(batch.letter_ids, device=device) if batch.letter_ids else None
    letters = torch.zeros((rows, batch.max_new_tokens, len(batch.letter_ids or [])), device=device)
    matchers = batch.grammar.matchers(count) if batch.grammar else None
    every_step = batch.grammar is not None or batch.on_token is not None
    ends = [batch.max_new_tokens] * count  # each row's token count, once known
    open_rows = set(range(count))
    read_from = 0  # the first step the host has not read yet
    for step in range(batch.max_new_tokens):
        if letter_index is not None:
            letters[:, step] = logits[:, letter_index].float()
        if batch.grammar:
            live = [matchers[row] if row in open_rows else None for row in range(count)]
            batch.grammar.mask(logits[:count], live, steps_left=batch.max_new_tokens - step)
        next_tokens = torch.where(finished, batch.pad_id, logits.argmax(-1))
        chosen[:, step] = next_tokens
        finished |= torch.isin(next_tokens, stops)
        last = step == batch.max_new_tokens - 1
        if every_step or last or (step + 1) % CHECK_EVERY == 0:
            _read_back(batch, chosen, letters, read_from, step + 1, open_rows, ends, matchers, letter_index is not None)
            read_from = step + 1
            if not open_rows:
                break
            finished[[row for row in range(count) if row not in open_rows]] = True
        if last:
            break
        attention_mask[:, slot] = 1
        positions += 1
        slot += 1
        logits = decoder.step(cache, next_tokens[:, None], positions, attention_mask)
    tokens = chosen[:count].tolist()
    per_step = letters[:count].tolist() if letter_index is not None else [[] for _ in range(count)]
    return [t[:end] for t, end in zip(tokens, ends)], [s[:end] for s, end in zip(per_step, ends)]


def _read_back(batch: GreedyBatch, chosen, letters, start, end, open_rows, ends, matchers, lettered):
    """The host's view of steps ``start``..``end`` of every open row, in the pruned decoder's order: the
    grammar hears each token, then ``on_token``; a stop token closes the row there, and ``stopped``, asked
    once a row per read (each step where every step is read), closes it at the window's end."""
    window = chosen[:, start:end].tolist()
    seen = letters[:, start:end].tolist() if lettered and batch.on_token else None
    for row in sorted(open_rows):
        for offset, token in enumerate(window[row]):
            if batch.grammar:
                batch.grammar.accept(matchers[row], token)
            if batch.on_token:
                batch.on_token(row, token, seen[row][offset] if seen is not None else None)
            if token in batch.stop_ids:
                ends[row] = start + offset + 1
                open_rows.discard(row)
                break
        else:
            if batch.stopped and batch.stopped(row):
                ends[row] = end
                open_rows.discard(row)
