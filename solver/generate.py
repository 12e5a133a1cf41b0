"""Inference: augmented views of a test input, constrained decoding (greedy, DFS, sampling) and scoring.

Owns the views of a test input, the grid-shape constraint on generated tokens (a cap, or the exact shape where the
demos make it certain: solver.shapes), the decode loops over a KV cache and the teacher-forced log-likelihood of a
candidate under a view. Knows nothing of training, adapters, selection (solver.pipeline strings decoding, scoring and
selection together) or the run's budget beyond the deadline it is handed: every decoding and scoring call takes a
deadline (a `time.monotonic()` value) and returns what it has then.

Probabilities are the model's own (softmax over its whole vocabulary); the constraint only removes tokens, it does not
renormalise, so a DFS completion's log-probability equals its teacher-forced score under the same view.

One prefill per view (`SharedViews`): each view's prompt is computed once, batched across views, and kept as its KV
rows; greedy/sampled decoding, DFS and teacher-forced scoring of every candidate all extend those rows (copied into a
buffer cache sized to the prompt plus what will be added). A candidate's log-likelihood under a view is computed
once: a decoded candidate's own log-prob is its score under its view; DFS first verifies, batched, the candidates
other views found (their scores under it), then searches only nodes nothing computed yet. `decode_batch`,
`dfs_view` and `score_candidates` without a SharedViews prefill their prompts themselves (the earlier path, kept for
the benchmark and for callers with a single batch).

The model is any causal LM called as `model(input_ids=, attention_mask=, position_ids=, past_key_values=,
use_cache=True, logits_to_keep=)` returning `.logits` and `.past_key_values`: a transformers Cache (a DynamicCache
when none is passed) that the model fills through `Cache.update(keys, values, layer_idx)`, whose `layers` hold
`.keys`/`.values` [rows, heads, positions, head dim]. The loops read those rows and also use `crop`,
`batch_repeat_interleave` and `copy.deepcopy`.
"""
from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from solver.augment import DIHEDRAL_NAMES, Transform, sample_transforms
from solver.codec import Codec, PromptFormat
from solver.config import InferConfig
from solver.plan import plausible_shape
from solver.shapes import deduce
from solver.tasks import Grid, Task, grid_key

EOS_SYM, NL_SYM = 11, 10  # symbol indices in a step's log-probs: digits 0..9, newline, EOS


# views ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """A test input seen through one transform: the prompt to decode from and the largest output worth generating
    (with `forced`, the exact shape of the answer)."""
    transform: Transform
    prompt: np.ndarray            # int64 token ids, demos + query under the transform, ending where the answer starts
    max_shape: tuple[int, int]    # (rows, cols) cap on the generated grid, in this view's frame
    codec: PromptFormat = Codec.compact()  # the format the prompt is in (it says how long an answer is)
    forced: bool = False          # max_shape is the answer's shape, not only a cap: row breaks and the end are forced

    @property
    def group(self) -> str:
        return DIHEDRAL_NAMES[self.transform.dihedral]

    @property
    def max_new_tokens(self) -> int:
        """Tokens of an answer of max_shape: the cap on generated tokens, and a forced answer's exact length."""
        return self.codec.answer_length(*self.max_shape)


def make_view(task: Task, test_index: int, codec: PromptFormat, transform: Transform,
              shape: tuple[int, int] | None = None) -> View:
    """A test input under a transform; `shape` (the answer's, in the task's frame) is decoded exactly, mapped through
    the transform; without it the answer is capped at the shape plan.plausible_shape gives in the view's frame."""
    t = transform.apply_task(task)
    query = t.test_inputs[test_index]
    ids = codec.encode(t.train, query).ids
    if shape is not None:
        return View(transform, ids, transform.apply_shape(shape), codec, forced=True)
    return View(transform, ids, plausible_shape(t.train, query), codec)


def make_views(task: Task, test_index: int, codec: PromptFormat, n: int, seed: int, icfg: InferConfig) -> list[View]:
    """n seeded views of one test input (the identity first); the same set for every candidate of it. With
    infer.force_shape, a shape the demos make certain (solver.shapes) is forced in every view."""
    transforms = sample_transforms(task, n, seed=seed + 7919 * test_index, dihedral=icfg.view_dihedral,
                                   colors=icfg.view_colors, order=icfg.view_order)
    shape = deduce(task).certain_shape(test_index) if icfg.force_shape else None
    return [make_view(task, test_index, codec, t, shape) for t in transforms]


# the grid constraint ----------------------------------------------------------------------------------------------
# State of one sequence: (width: 0 until the first row ends, col: cells in the current row, rows: rows ended,
# done). The rules below are plain arithmetic, so the same functions serve ints (DFS) and tensors (batches).
# `closed` is the format's closed_rows: the row separator ("newline") ends every row, EOS follows the last one; else
# the separator stands between rows and EOS follows the last row's cells. `exact` (a bool, or one per row): the caps
# are the grid's shape, so a row ends only at max_cols cells and the grid only after max_rows rows.
def _not(flag):
    return ~flag if torch.is_tensor(flag) else not flag


def allowed(width, col, rows, done, max_rows, max_cols, closed: bool = True, exact=False):
    """(digit, newline, eos) allowed: digits while the row is shorter than its width (or the cap) and rows remain;
    newline to end a non-empty row of the right width (between rows: only when another row fits); EOS right after a
    newline (between rows: where a newline could end the row). Where `exact`, rows end at max_cols cells and EOS
    comes after max_rows rows."""
    limit = width + (width == 0) * max_cols
    live, free = _not(done), _not(exact)
    digit = live & (col < limit) & (rows < max_rows)
    row_done = live & (col > 0) & ((width == 0) | (col == width)) & (free | (col == max_cols))
    if closed:  # a finished sequence keeps emitting EOS (ignored)
        return digit, row_done, (col == 0) & (rows > 0) & (free | (rows == max_rows)) | done
    return digit, row_done & (rows + 1 < max_rows), row_done & (free | (rows + 1 == max_rows)) | done


def advance(width, col, rows, done, sym):
    """The state after emitting symbol index sym (0..9 digit, 10 newline, 11 EOS)."""
    is_digit, is_nl, is_eos = sym < 10, sym == NL_SYM, sym == EOS_SYM
    new_width = width + (is_nl & (width == 0)) * col
    new_col = is_digit * (col + 1) + is_eos * col
    return new_width, new_col, rows + is_nl, done | is_eos


class CellGrammar:
    """The grid constraint of formats whose cells and row separator are one token each: twelve symbols (ten digits,
    the separator, the end). State: (width, col, rows, done) tensors, one entry per row of a batch. The caps bound the
    grid, or, where `exact`, are its shape: only cells are chosen then."""

    def __init__(self, closed: bool):
        self.closed, self.size, self.end = closed, 12, EOS_SYM

    @staticmethod
    def start(n: int, device) -> tuple:
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        return zeros, zeros, zeros, torch.zeros(n, dtype=torch.bool, device=device)

    def mask(self, state: tuple, max_rows, max_cols, exact=False) -> torch.Tensor:
        """[B, 12] bool of the symbols allowed next (within the caps; where `exact`, to exactly that shape)."""
        digit, newline, eos = allowed(*state, max_rows, max_cols, self.closed, exact)
        return torch.cat([digit[:, None].expand(-1, 10), newline[:, None], eos[:, None]], dim=1)

    @staticmethod
    def advance(state: tuple, sym: torch.Tensor) -> tuple:
        return advance(*state, sym)

    @staticmethod
    def finished(state: tuple) -> torch.Tensor:
        return state[3]

    # one sequence (DFS), in plain ints: a DFS node costs 2 us here, 110 us as 1-row tensors
    @staticmethod
    def one() -> tuple:
        return 0, 0, 0, False

    def options(self, state: tuple, max_rows: int, max_cols: int, exact: bool = False) -> list[bool]:
        digit, newline, eos = allowed(*state, max_rows, max_cols, self.closed, exact)
        return [digit] * 10 + [newline, eos]

    @staticmethod
    def step(state: tuple, sym: int) -> tuple:
        return advance(*state, sym)


DIGIT, AFTER, FORCED, DONE = range(4)  # PieceGrammar's phases
OPEN, CELL, ROW, CLOSE = range(4)      # and a format's pieces, in PromptFormat.pieces order


class PieceGrammar:
    """The grid constraint of a format that spells grids in pieces (PromptFormat.pieces: open, cell, row, close) around
    one digit token per cell: symbols are emit_ids' entries. `open` comes first; after a digit, the first token of
    `cell` (another cell of the row), `row` (a new row) or `close` (the end) is chosen; the pieces' other tokens are
    forced. Rows stand between separators. State: (width, col, rows, phase, piece, k: the piece's next token). Where
    `exact`, a row ends only at max_cols cells and `close` comes only in row max_rows."""

    def __init__(self, codec: PromptFormat):
        index = {t: i for i, t in enumerate(codec.emit_ids)}
        pieces = [[index[t] for t in p] for p in codec.pieces]
        self.size, self.end, longest = len(index), pieces[CLOSE][-1], max(len(p) for p in pieces)
        table = torch.tensor([p + [self.end] * (longest - len(p)) for p in pieces])  # symbol k of each piece
        # (symbol k of each piece, each piece's length, the first symbols of cell, row and close), on the CPU; a copy
        # per device, made once (not in every decoding step)
        self._on = {torch.device("cpu"): (table, torch.tensor([len(p) for p in pieces]), table[[CELL, ROW, CLOSE], 0])}
        self.opens = len(pieces[OPEN]) > 0

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if device not in self._on:
            self._on[device] = tuple(t.to(device) for t in self._on[torch.device("cpu")])
        return self._on[device]

    def start(self, n: int, device) -> tuple:
        zeros = torch.zeros(n, dtype=torch.long, device=device)
        phase = torch.full((n,), FORCED if self.opens else DIGIT, dtype=torch.long, device=device)
        return zeros, zeros, zeros, phase, torch.full_like(zeros, OPEN), zeros

    def mask(self, state: tuple, max_rows, max_cols, exact=False) -> torch.Tensor:
        """[B, size] bool of the symbols allowed next (within the caps; where `exact`, to exactly that shape)."""
        width, col, rows, phase, piece, k = state
        table, _, first = self._tables(col.device)
        out = torch.zeros((len(col), self.size), dtype=torch.bool, device=col.device)
        out[:, :10] = (phase == DIGIT)[:, None]
        after, free = phase == AFTER, _not(exact)
        row_done = (col > 0) & ((width == 0) | (col == width)) & (free | (col == max_cols))
        out[:, first[0]] |= after & (col < width + (width == 0) * max_cols)
        out[:, first[1]] |= after & row_done & (rows + 1 < max_rows)
        out[:, first[2]] |= after & row_done & (free | (rows + 1 == max_rows))
        forced = (phase == FORCED).nonzero()[:, 0]
        out[forced, table[piece[forced], k[forced]]] = True
        out[:, self.end] |= phase == DONE  # a finished sequence keeps emitting the end (ignored)
        return out

    def advance(self, state: tuple, sym: torch.Tensor) -> tuple:
        width, col, rows, phase, piece, k = state
        _, length, first = self._tables(col.device)
        digit, chosen, forced = (phase == DIGIT) & (sym < 10), phase == AFTER, phase == FORCED
        piece = torch.where(chosen, torch.where(sym == first[0], CELL, torch.where(sym == first[1], ROW, CLOSE)),
                            piece)
        k = torch.where(chosen, 1, k + forced.long())
        complete = (chosen | forced) & (k >= length[piece])
        new_row = complete & (piece == ROW)
        col = col + digit.long()
        width = torch.where(new_row & (width == 0), col, width)
        col = torch.where(new_row, 0, col)
        phase = torch.where(digit, AFTER, torch.where(chosen | forced, FORCED, phase))
        phase = torch.where(complete, torch.where(piece == CLOSE, DONE, DIGIT), phase)
        return width, col, rows + new_row.long(), phase, piece, torch.where(complete, 0, k)

    @staticmethod
    def finished(state: tuple) -> torch.Tensor:
        return state[3] == DONE

    # one sequence (DFS): a batch of one
    def one(self) -> tuple:
        return self.start(1, "cpu")

    def options(self, state: tuple, max_rows: int, max_cols: int, exact: bool = False) -> list[bool]:
        return self.mask(state, torch.tensor([max_rows]), torch.tensor([max_cols]), torch.tensor([exact]))[0].tolist()

    def step(self, state: tuple, sym: int) -> tuple:
        return self.advance(state, torch.tensor([sym]))


@functools.lru_cache(maxsize=32)
def grammar_for(codec: PromptFormat) -> CellGrammar | PieceGrammar:
    """The decoder's grid constraint in a format's symbols (emit_ids); built once per format."""
    return PieceGrammar(codec) if codec.pieces else CellGrammar(codec.closed_rows)


def symbol_tokens(codec: PromptFormat) -> list[int]:
    """Token id of each symbol index: the format's emit_ids (digits first, the end last)."""
    return list(codec.emit_ids)


def symbol_ids(codec: PromptFormat) -> torch.Tensor:
    return torch.tensor(symbol_tokens(codec), dtype=torch.long)


def symbols_to_grid(codec: PromptFormat, syms: list[int]) -> Grid | None:
    """The grid spelled by symbol indices (a grammar's, ending with its end), or None if malformed
    (codec.decode_grid)."""
    return codec.decode_grid(np.asarray(symbol_tokens(codec))[syms])


# model calls ------------------------------------------------------------------------------------------------------
def _device(model) -> torch.device:
    return next(model.parameters()).device


def _synced(device: torch.device) -> float:
    """time.perf_counter() once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _add(stats: dict | None, key: str, value) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + value


def _mark(stats: dict | None, stage: str) -> None:
    """Benchmarks: with stats['peak_mib'] (a dict), the peak memory since the last mark is kept under `stage` (the
    largest reading of that stage) and the peak is reset."""
    if stats is None or "peak_mib" not in stats:
        return
    from solver.measure import peak_memory_mib, reset_peak_memory
    peaks = stats["peak_mib"]
    peaks[stage] = max(peaks.get(stage, 0.0), peak_memory_mib())
    reset_peak_memory()


def _step_logprobs(logits: torch.Tensor, sym_ids: torch.Tensor) -> torch.Tensor:
    """[B, symbols] log-probabilities of the symbols at the last position (softmax over the whole vocabulary)."""
    return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, sym_ids]


def _static_cache(model, max_len: int):
    """A preallocated KV cache for a transformers model (None for other models: they bring their own).

    The default DynamicCache concatenates every layer's keys and values at each step, copying the whole cache:
    at 8 views x 2,000 prompt tokens that copy costs more than the step's matmuls on a CPU.
    """
    from transformers import PretrainedConfig, StaticCache
    config = getattr(model, "config", None)
    return StaticCache(config=config, max_cache_len=max_len) if isinstance(config, PretrainedConfig) else None


PASS_TOKENS_CPU, PASS_TOKENS = 1024, 32768  # tokens of one forward pass of SharedViews on a CPU / an accelerator


def rows_per_pass(widths: list[int], pass_tokens: int) -> int:
    """How many of the next rows (their token widths, in order) one padded forward pass of at most pass_tokens tokens
    takes: one at least."""
    n, width = 1, widths[0]
    while n < len(widths) and (n + 1) * max(width, widths[n]) <= pass_tokens:
        n, width = n + 1, max(width, widths[n])
    return n


def _prefill_in_pieces(model, prompts: list[np.ndarray], pass_tokens: int, deadline: float,
                       stats: dict | None = None):
    """Prompts of one length (no padding, no mask) computed in pieces of at most pass_tokens tokens a forward pass:
    (last-position logits, cache), or None when the deadline comes between two pieces."""
    ids = torch.as_tensor(np.stack(prompts), device=_device(model))
    step, cache, out = max(1, pass_tokens // len(prompts)), None, None
    for start in range(0, ids.shape[1], step):
        if start and time.monotonic() >= deadline:
            return None
        stop = min(ids.shape[1], start + step)
        position = torch.arange(start, stop, device=ids.device).expand(len(prompts), -1)
        out = model(input_ids=ids[:, start:stop], position_ids=position, past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        cache = out.past_key_values
    _add(stats, "prefills", len(prompts))
    return out.logits, cache


def _prefill(model, prompts: list[np.ndarray], pad: int, device, cache=None, stats: dict | None = None):
    """Left-padded prefill of prompts; returns (last-position logits, cache, attention mask, next positions).
    `stats` counts the prompts under 'prefills'."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.as_tensor(p)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    _add(stats, "prefills", len(prompts))
    return out.logits, out.past_key_values, mask, pos[:, -1] + 1


# prompt caches ----------------------------------------------------------------------------------------------------
# A view's prompt is kept as its KV rows: per layer (keys, values), each [1, heads, prompt length, head dim], no
# padding. Decoding, DFS and scoring copy the rows they need into a buffer cache sized to what they will add.
@functools.cache
def _buffer_layer():
    """The class of a cache layer over a preallocated buffer (transformers is imported on first use)."""
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """Keys and values [rows, heads, capacity, dim] filled up to `length`. An append writes in place (DynamicLayer
        copies the whole cache at each step), crop moves the end back, and attention sees only the filled part
        (StaticLayer attends over its whole capacity at every step)."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
            super().__init__()
            self.buffers, self.length = (keys, values), length
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self._expose()

        def _expose(self) -> None:
            self.keys, self.values = (b[:, :, :self.length] for b in self.buffers)

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.length + key_states.shape[-2]
            if end > self.get_max_length():
                raise ValueError(f"KV buffer of {self.get_max_length()} positions cannot take {end}: size it to the "
                                 "prompt plus the tokens to be added")
            self.buffers[0][:, :, self.length:end] = key_states
            self.buffers[1][:, :, self.length:end] = value_states
            self.length = end
            self._expose()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def get_max_length(self) -> int:
            return self.buffers[0].shape[2]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.buffers = tuple(b[indices] for b in self.buffers)
            self._expose()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError("crop takes minus the number of tokens to remove, as DynamicLayer.crop")
            self.length += tokens_to_remove
            self._expose()

    return BufferLayer


def _split_rows(cache, lengths: list[int]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The KV rows of each prompt of a left-padded prefill (its last lengths[i] positions): views of the prefill's
    tensors for unpadded rows (all rows are kept, nothing is held in vain), copies of padded ones."""
    def row(t: torch.Tensor, i: int, n: int) -> torch.Tensor:
        return t[i:i + 1] if n == t.shape[2] else t[i:i + 1, :, t.shape[2] - n:].clone()
    return [[(row(layer.keys, i, n), row(layer.values, i, n)) for layer in cache.layers] for i, n in enumerate(lengths)]


def _buffer_cache(rows: list[list[tuple[torch.Tensor, torch.Tensor]]], extra: int):
    """A cache holding rows[i] (a prompt's KV rows) in row i, right-aligned (left padding), with room for `extra` more
    positions; with its attention mask [n, width] and each row's next position [n]."""
    from transformers.cache_utils import Cache
    lengths = [row[0][0].shape[2] for row in rows]
    width = max(lengths)
    layers = []
    for layer in range(len(rows[0])):
        buffers = []
        for part in (0, 1):
            first = rows[0][layer][part]
            buf = first.new_zeros((len(rows), first.shape[1], width + extra, first.shape[3]))
            for i, row in enumerate(rows):
                buf[i, :, width - lengths[i]:width] = row[layer][part][0]
            buffers.append(buf)
        layers.append(_buffer_layer()(*buffers, width))
    device = rows[0][0][0].device
    pos = torch.tensor(lengths, device=device)
    mask = (torch.arange(width, device=device)[None, :] >= (width - pos)[:, None]).long()
    return Cache(layers=layers), mask, pos


# decoding -------------------------------------------------------------------------------------------------------
@dataclass
class Decoded:
    """One completed generation, mapped back to the task's frame."""
    view: int
    grid: Grid
    logp: float
    tokens: int


@torch.no_grad()
def decode_batch(model, codec: PromptFormat, views: list[View], deadline: float, *, temperature: float = 0.0,
                 samples: int = 1, generator: torch.Generator | None = None, stats: dict | None = None,
                 view_offset: int = 0, shared: SharedViews | None = None, record: dict | None = None,
                 floor: float | None = None) -> list[Decoded]:
    """Decode views together (greedy at temperature 0, else sampling; `samples` rows per view share its prefill).

    Sequences still unfinished at the deadline are dropped. `stats`, when given, accumulates 'steps', 'tokens'
    (generated, EOS included), 'prefill_s', 'decode_s' and 'prefills'. With `shared` (whose views
    view_offset.. are these), decoding starts from its cached prompts instead of prefilling them. `record`, when
    given, receives 'lp' and 'syms': each step's [rows, symbols] log-probs and the [rows] symbols chosen, and
    'cut': the step at which each row left below `floor` (-1: it did not). With `floor` (and `shared`), a row whose
    log-prob falls below it leaves the batch unfinished: DFS wants only paths above its threshold, and a path's
    log-prob only falls.
    """
    if not views or time.monotonic() >= deadline:
        return []
    device = _device(model)
    if shared is not None:
        logits, cache, mask, pos = shared.rows(range(view_offset, view_offset + len(views)), samples)
    else:
        start = time.perf_counter()
        # one row per view: a preallocated cache; samples > 1 copy each view's prefilled rows: a DynamicCache
        max_len = max(len(v.prompt) for v in views) + max(v.max_new_tokens for v in views)
        cache = _static_cache(model, max_len) if samples == 1 else None
        logits, cache, mask, pos = _prefill(model, [v.prompt for v in views], codec.pad, device, cache, stats)
        _add(stats, "prefill_s", _synced(device) - start)
        _mark(stats, "prefill")
        if samples > 1:
            cache.batch_repeat_interleave(samples)
            logits, mask, pos = (x.repeat_interleave(samples, dim=0) for x in (logits, mask, pos))
    start = time.perf_counter()
    state = (model, logits, cache, mask, pos)
    seqs, done, total = _decode_loop(state, codec, views, deadline, temperature, samples, generator, stats, record,
                                     compact=shared is not None, floor=floor if shared is not None else None)
    _add(stats, "decode_s", _synced(device) - start)
    _mark(stats, "decode")
    results, end = [], grammar_for(codec).end
    for row, seq in enumerate(seqs):
        grid = symbols_to_grid(codec, seq) if done[row] else None
        if grid is not None:
            view = views[row // samples]
            results.append(Decoded(view_offset + row // samples, view.transform.invert(grid), total[row],
                                   seq.index(end) + 1))
    return results


def _decode_loop(state, codec: PromptFormat, views: list[View], deadline: float, temperature: float, samples: int,
                 generator, stats: dict | None, record: dict | None, compact: bool = False,
                 floor: float | None = None) -> tuple[list[list[int]], list[bool], list[float]]:
    """The constrained decoding steps from prefilled rows: (symbols per row, finished per row, log-prob per row).

    With `compact`, a row leaves the batch and the cache (Cache.batch_select_indices) once it has finished, so a batch
    of uneven answers costs what its unfinished rows do, not its longest answer times its rows.
    """
    model, logits, cache, mask, pos = state
    device = logits.device
    sym_ids, grammar = symbol_ids(codec).to(device), grammar_for(codec)
    n = len(views) * samples
    rows = torch.arange(n, device=device)  # the batch row of each row still decoding
    caps = torch.tensor([v.max_shape for v in views], device=device).repeat_interleave(samples, dim=0)
    exact = torch.tensor([v.forced for v in views], device=device).repeat_interleave(samples, dim=0)
    con = grammar.start(n, device)
    total = torch.zeros(n, dtype=torch.float64, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    cut = torch.full((n,), -1, dtype=torch.long, device=device)  # the step at which a row left below `floor`
    generated = torch.zeros((), dtype=torch.long, device=device)
    syms = []
    for _ in range(max(v.max_new_tokens for v in views)):
        raw = _step_logprobs(logits, sym_ids)
        lp = raw.masked_fill(~grammar.mask(con, caps[:, 0], caps[:, 1], exact), -math.inf)
        if temperature > 0:
            sym = torch.multinomial(torch.softmax(lp / temperature, dim=-1), 1, generator=generator)[:, 0]
        else:
            sym = lp.argmax(dim=-1)
        finished = grammar.finished(con)
        total[rows] += torch.where(finished, 0.0, lp.gather(1, sym[:, None])[:, 0].double())
        generated += (~finished).sum()
        con = grammar.advance(con, sym)
        finished = grammar.finished(con)
        done[rows] = finished
        syms.append(torch.full((n,), grammar.end, device=device).index_put_((rows,), sym))
        if record is not None:
            record.setdefault("lp", []).append(raw.new_zeros((n, raw.shape[1])).index_put_((rows,), raw))
            record.setdefault("syms", []).append(syms[-1])
        leaving = finished
        if floor is not None:
            leaving = leaving | (total[rows] < floor)
            cut[rows[leaving & ~finished]] = len(syms) - 1
        left = int(leaving.sum())
        if left == len(rows) or time.monotonic() >= deadline:
            break
        if compact and left:
            keep = (~leaving).nonzero()[:, 0]
            cache.batch_select_indices(keep)
            rows, caps, exact, mask, pos, sym = rows[keep], caps[keep], exact[keep], mask[keep], pos[keep], sym[keep]
            con = tuple(x[keep] for x in con)
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=sym_ids[sym][:, None], attention_mask=mask, position_ids=pos[:, None],
                    past_key_values=cache, use_cache=True)
        logits, cache, pos = out.logits, out.past_key_values, pos + 1
    _add(stats, "tokens", int(generated))
    _add(stats, "steps", len(syms))
    if record is not None:
        record["cut"] = cut
    return torch.stack(syms, dim=1).tolist(), done.tolist(), total.tolist()


@torch.no_grad()
def dfs_view(model, codec: PromptFormat, view: View, deadline: float, *, threshold: float, max_candidates: int,
             view_index: int = 0, stats: dict | None = None, shared: SharedViews | None = None,
             known: dict | None = None) -> list[Decoded]:
    """Every completion of one view whose probability exceeds `threshold` (the ARChitects' DFS), best first.

    The prompt is computed once (or taken from `shared`, whose view view_index this is); branches share its KV
    cache, which is cropped back to a branch point on each return. `known` is a trie (`learn`) of symbol log-probs
    already computed under this view (by decoding or verification): its nodes cost no model call. Stops after
    `max_candidates` completions or at the deadline, returning those found.
    """
    if time.monotonic() >= deadline:
        return []
    sym_ids = symbol_ids(codec).to(_device(model))
    if shared is None:
        logits, cache, _, _ = _prefill(model, [view.prompt], codec.pad, sym_ids.device, stats=stats)
    else:
        logits, cache, _, _ = shared.rows([view_index], extra=view.max_new_tokens)
    root = {} if known is None else known
    root.setdefault(LP, _step_logprobs(logits, sym_ids)[0].tolist())
    feed = _Feeder(model, cache, len(view.prompt), sym_ids, stats)
    min_logp, grammar = math.log(threshold), grammar_for(codec)
    max_rows, max_cols = view.max_shape
    found: list[tuple[list[int], float]] = []
    stack = [([], 0.0, grammar.one(), root)]  # (symbols so far, their log-prob, constraint state, known node)
    while stack and len(found) < max_candidates and time.monotonic() < deadline:
        path, logp, state, node = stack.pop()
        if path and path[-1] == grammar.end:
            found.append((path, logp))
            continue
        lp = node[LP] if node is not None and LP in node else feed(path)
        ok = grammar.options(state, max_rows, max_cols, view.forced)
        children = [(logp + lp[s], s) for s in range(grammar.size) if ok[s] and logp + lp[s] > min_logp]
        for child_logp, s in sorted(children):  # the most likely child is pushed last, so explored first
            stack.append((path + [s], child_logp, grammar.step(state, s), None if node is None else node.get(s)))
    found.sort(key=lambda f: -f[1])
    return [Decoded(view_index, view.transform.invert(symbols_to_grid(codec, p)), lp, len(p)) for p, lp in found]


LP = -1  # a known-node trie's key of the node's own symbol log-probs; symbol indices key its children


def learn(trie: dict, path: list[int], lps: list[list[float]]) -> None:
    """Record in a trie the symbol log-probs lps[t] after each prefix path[:t], t < len(path)."""
    node = trie
    for sym, lp in zip(path, lps):
        node.setdefault(LP, lp)
        node = node.setdefault(sym, {})


class _Feeder:
    """The DFS's model calls: the cache holds the prompt and the symbols `cached`; the log-probs after a path feed
    only what the cache lacks (a path whose parent was a known node feeds several symbols)."""

    def __init__(self, model, cache, prompt_len: int, sym_ids: torch.Tensor, stats: dict | None):
        self.model, self.cache, self.prompt_len, self.sym_ids, self.stats = model, cache, prompt_len, sym_ids, stats
        self.cached: list[int] = []

    def __call__(self, path: list[int]) -> list[float]:
        keep = 0
        while keep < min(len(self.cached), len(path) - 1) and self.cached[keep] == path[keep]:
            keep += 1
        self.cache.crop(-(self.cache.get_seq_length() - (self.prompt_len + keep)))
        new = path[keep:]
        position = torch.arange(self.prompt_len + keep, self.prompt_len + len(path), device=self.sym_ids.device)
        out = self.model(input_ids=self.sym_ids[new][None], position_ids=position[None], past_key_values=self.cache,
                         use_cache=True, logits_to_keep=1)
        self.cache, self.cached = out.past_key_values, list(path)
        _add(self.stats, "tokens", len(new))
        _add(self.stats, "dfs_calls", 1)
        return _step_logprobs(out.logits, self.sym_ids)[0].tolist()


def decode_views(model, codec: PromptFormat, views: list[View], icfg: InferConfig, deadline: float, *, seed: int = 0,
                 stats: dict | None = None, shared: SharedViews | None = None, offset: int = 0) -> list[Decoded]:
    """Decode every view with the configured strategy, in batches of icfg.batch_size views (from the cached prompts
    of `shared`, whose views from index `offset` on these are, when given)."""
    if icfg.strategy == "dfs":
        out = []
        for i, view in enumerate(views):
            out += dfs_view(model, codec, view, deadline, threshold=icfg.dfs_threshold,
                            max_candidates=icfg.dfs_max_candidates, view_index=offset + i, stats=stats, shared=shared)
        return out
    if icfg.strategy not in ("greedy", "sample"):
        raise ValueError(f"unknown decoding strategy '{icfg.strategy}' (greedy | dfs | sample)")
    sample = icfg.strategy == "sample"
    generator = torch.Generator(device=_device(model)).manual_seed(seed) if sample else None
    out = []
    for start in range(0, len(views), icfg.batch_size):
        out += decode_batch(model, codec, views[start:start + icfg.batch_size], deadline,
                            temperature=icfg.temperature if sample else 0.0,
                            samples=icfg.samples_per_view if sample else 1, generator=generator, stats=stats,
                            view_offset=offset + start, shared=shared)
    return out


# one prefill per view ---------------------------------------------------------------------------------------------
class SharedViews:
    """The views of one test input, each prompt computed once (one prefill per view, batched across views on an
    accelerator).

    Decoding (greedy, sampling, DFS) and teacher-forced scoring all extend these cached prompts, batched. Every
    (view, grid) log-likelihood met on the way (a decoded candidate's own log-prob, a DFS verification, a score) is
    kept, so no candidate is computed twice under a view.
    """

    def __init__(self, model, codec: PromptFormat, views: list[View], *, batch_size: int = 8, stats: dict | None = None,
                 prefill_batch: int | None = None):
        self.model, self.codec, self.views, self.stats = model, codec, views, stats
        # views per prefill forward pass: batch_size on an accelerator; one on a CPU, where a 1,948-token SmolLM2
        # prompt took 5.2 s alone and 6.0 s per view four at a time (quiet 2-core dev machine)
        cpu = _device(model).type == "cpu"
        self.prefill_batch = prefill_batch or (1 if cpu else batch_size)
        # tokens of one forward pass (a prompt is computed in pieces, forced answers in batches of at most this):
        # a deadline is checked between passes, so a machine that slows mid-task overruns it by one pass at most
        # (a 3,759-token prompt took 36 s in one pass on the CPU with two busy processes beside it)
        self.pass_tokens = PASS_TOKENS_CPU if cpu else PASS_TOKENS
        self.rate = 0.0  # prompt tokens per second of the last prefill: a prefill that would end late is not begun
        self.kv: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = [None] * len(views)  # prompt KV rows
        self.first: list[torch.Tensor | None] = [None] * len(views)  # [vocab] logits of the first answer token
        self.logp: dict[tuple[int, bytes], float] = {}  # (view, grid_key) -> log-likelihood under that view
        self.sym_ids = symbol_ids(codec).to(_device(model))
        self.sym_of = {t: s for s, t in enumerate(symbol_tokens(codec))}

    @torch.no_grad()
    def prefill(self, n: int, deadline: float) -> int:
        """Compute the prompts of the first n views (those not yet computed) until the deadline: views of one prompt
        length together, up to prefill_batch per forward pass, so that no row is padded and attention needs no mask
        (a dihedral view's prompt length is one of two). Once a view is ready, a prefill that the last one's speed says
        would end past the deadline is not begun (counted in stats' `prefills_too_late`). Returns how many of the first
        views are ready."""
        n = min(n, len(self.views))
        todo = [i for i in range(n) if self.kv[i] is None]
        while todo and time.monotonic() < deadline:
            start = time.perf_counter()
            length = len(self.views[todo[0]].prompt)
            chunk = [i for i in todo if len(self.views[i].prompt) == length][:self.prefill_batch]
            if self.rate and any(kv is not None for kv in self.kv) and \
                    time.monotonic() + length * len(chunk) / self.rate > deadline:
                _add(self.stats, "prefills_too_late", len(todo))  # would end past the deadline: not started
                break
            done = _prefill_in_pieces(self.model, [self.views[i].prompt for i in chunk], self.pass_tokens, deadline,
                                      self.stats)
            if done is None:  # the deadline came mid-prompt: the view is left out
                _add(self.stats, "prefills_cut", 1)
                break
            logits, cache = done
            for i, kv, first in zip(chunk, _split_rows(cache, [length] * len(chunk)), logits[:, -1]):
                self.kv[i], self.first[i] = kv, first
            todo = [i for i in todo if i not in chunk]
            del cache
            seconds = _synced(self.sym_ids.device) - start
            self.rate = length * len(chunk) / max(seconds, 1e-9)  # prompt tokens/s, the last prefill's
            _add(self.stats, "prefill_s", seconds)
            _mark(self.stats, "prefill")
        return next((i for i, kv in enumerate(self.kv) if kv is None), len(self.kv))

    def rows(self, views, samples: int = 1, extra: int | None = None):
        """(first-token logits [n, 1, vocab], a cache of these views' prompts (each repeated `samples` times,
        left-padded) with room for `extra` tokens (default: their max_new_tokens), its attention mask, next
        positions)."""
        idx = [v for v in views for _ in range(samples)]
        extra = max(self.views[v].max_new_tokens for v in idx) if extra is None else extra
        cache, mask, pos = _buffer_cache([self.kv[v] for v in idx], extra)
        return torch.stack([self.first[v] for v in idx])[:, None], cache, mask, pos

    def symbols(self, view: int, grid: Grid) -> list[int]:
        """The symbol sequence (ending with EOS) that spells a task-frame grid under a view."""
        return [self.sym_of[int(t)] for t in self.codec.answer_ids(self.views[view].transform.apply(grid))]

    def remember(self, decoded: list[Decoded]) -> None:
        """A decoded candidate's log-prob is its teacher-forced score under its own view."""
        for d in decoded:
            self.logp[(d.view, grid_key(d.grid))] = d.logp

    @torch.no_grad()
    def force(self, rows: list[tuple[int, list[int]]]) -> tuple[list[float], torch.Tensor]:
        """Teacher-forced log-likelihoods of symbol sequences (each ending with EOS), each under a view, in one
        forward pass extending the views' cached prompts: (totals, [rows, steps, symbols] log-probs per step)."""
        lengths = torch.tensor([len(s) for _, s in rows], device=self.sym_ids.device)
        width = int(lengths.max())
        logits, cache, mask, pos = self.rows([v for v, _ in rows], extra=width - 1)
        steps = _step_logprobs(logits, self.sym_ids)[:, None]
        syms = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (_, s) in enumerate(rows):
            syms[i, :len(s)] = torch.as_tensor(s)
        syms = syms.to(self.sym_ids.device)
        if width > 1:  # right padding (symbol 0): later positions cannot touch earlier ones
            mask = torch.cat([mask, torch.ones((len(rows), width - 1), dtype=mask.dtype, device=mask.device)], 1)
            positions = pos[:, None] + torch.arange(width - 1, device=pos.device)
            out = self.model(input_ids=self.sym_ids[syms[:, :-1]], attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=True)
            steps = torch.cat([steps, torch.log_softmax(out.logits.float(), dim=-1)[..., self.sym_ids]], dim=1)
        chosen = steps.gather(2, syms[..., None])[..., 0].double()
        real = torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]
        totals = torch.where(real, chosen, 0.0).sum(dim=1)  # never a 0/1 product: a dead logit is -inf
        _add(self.stats, "forced", len(rows))
        return totals.tolist(), steps

    def verify(self, pairs: list[tuple[int, Grid]], deadline: float, batch_size: int,
               known: dict[int, dict] | None = None) -> None:
        """Teacher-force (view, grid) pairs not yet known, up to batch_size rows (and pass_tokens tokens, one row at
        least) per forward pass, by view then length, until the deadline (a pass that the last prefill's speed says
        would end past it is not begun); scores go to self.logp and, with `known`, each step's log-probs to the trie
        known[view]."""
        todo = {(v, grid_key(g)): (v, g) for v, g in pairs if (v, grid_key(g)) not in self.logp}
        rows = sorted(((v, self.symbols(v, g), key) for (v, key), (_, g) in todo.items()),
                      key=lambda r: (r[0], len(r[1])))
        while rows:
            n = rows_per_pass([len(s) for _, s, _ in rows[:batch_size]], self.pass_tokens)
            width = max(len(s) for _, s, _ in rows[:n])
            chunk, rows = rows[:n], rows[n:]
            if time.monotonic() >= deadline or \
                    (self.rate and time.monotonic() + n * width / self.rate > deadline):  # it would end late
                return
            totals, steps = self.force([(v, s) for v, s, _ in chunk])
            for (v, s, key), total, lp in zip(chunk, totals, steps.tolist()):
                self.logp[(v, key)] = total
                if known is not None:
                    learn(known.setdefault(v, {}), s, lp)

    def score(self, grids: list[Grid], n_views: int, deadline: float, batch_size: int = 16) -> np.ndarray:
        """[views scored, grids] log-likelihoods under the first n_views views, reusing those already known; views
        the deadline cut short are left out whole."""
        start = time.perf_counter()
        n = min(n_views, self.prefill(n_views, deadline))
        self.verify([(v, g) for v in range(n) for g in grids], deadline, batch_size)
        keys = [grid_key(g) for g in grids]
        scores = []
        for v in range(n):
            if not all((v, k) in self.logp for k in keys):
                break
            scores.append([self.logp[(v, k)] for k in keys])
        _add(self.stats, "scored", len(scores) * len(grids))
        _add(self.stats, "score_s", _synced(self.sym_ids.device) - start)
        _mark(self.stats, "score")
        return np.array(scores).reshape(len(scores), len(grids))

    def decode(self, icfg: InferConfig, deadline: float, *, seed: int = 0,
               first_deadline: float | None = None) -> list[Decoded]:
        """Decode the first icfg.num_views views with the configured strategy from their cached prompts: the first
        view alone first (prefilled, then decoded: a candidate as early as it can be, which a deadline keeps; until
        `first_deadline` when given, a later one than the others': a task's first answer matters more than the
        time its scoring would have had), then the others prefilled and decoded in batches until `deadline`."""
        if icfg.strategy == "dfs":
            return self.dfs(min(icfg.num_views, self.prefill(icfg.num_views, deadline)), icfg, deadline)
        out = []
        first = max(deadline, first_deadline or deadline)
        if self.prefill(1, first):
            out += decode_views(self.model, self.codec, self.views[:1], icfg, first, seed=seed, stats=self.stats,
                                shared=self)
        n = min(icfg.num_views, self.prefill(icfg.num_views, deadline))
        out += decode_views(self.model, self.codec, self.views[1:n], icfg, deadline, seed=seed + 1,
                            stats=self.stats, shared=self, offset=1)
        self.remember(out)
        return out

    def dfs(self, n: int, icfg: InferConfig, deadline: float) -> list[Decoded]:
        """DFS of the first n views that checks before it searches.

        The first branch of every view's DFS (its greedy path, until it ends or falls below the threshold) is decoded
        batched across views, its steps' log-probs kept as known nodes. Before each view's DFS, the candidates other views have found are teacher-forced from
        its cache in batched passes (their scores under it, and more known nodes); its DFS then calls the model only
        for nodes none of this covers. The same completions as dfs_view alone, with fewer model calls.
        """
        known: dict[int, dict] = {}
        greedy: list[Decoded] = []
        for start in range(0, n, icfg.batch_size):
            record: dict = {}
            batch = self.views[start:min(n, start + icfg.batch_size)]
            greedy += decode_batch(self.model, self.codec, batch, deadline, stats=self.stats, view_offset=start,
                                   shared=self, record=record, floor=math.log(icfg.dfs_threshold))
            _known_paths(record, start, known, grammar_for(self.codec).end)
        self.remember(greedy)
        likely = [d for d in greedy if d.logp > math.log(icfg.dfs_threshold)]  # each its view's DFS finds
        self.verify([(v, d.grid) for v in range(n) for d in likely if d.view != v], deadline, icfg.score_batch_size,
                    known)
        out: list[Decoded] = []
        start = time.perf_counter()
        for v in range(n):
            self.verify([(v, d.grid) for d in out], deadline, icfg.score_batch_size, known)
            found = dfs_view(self.model, self.codec, self.views[v], deadline, threshold=icfg.dfs_threshold,
                             max_candidates=icfg.dfs_max_candidates, view_index=v, stats=self.stats, shared=self,
                             known=known.get(v))
            self.remember(found)
            out += found
        elapsed = _synced(self.sym_ids.device) - start
        _add(self.stats, "dfs_s", elapsed)
        _add(self.stats, "decode_s", elapsed)  # the planner's decoding speed: tokens (DFS's included) per decode_s
        _mark(self.stats, "decode")
        return out


def _known_paths(record: dict, view_offset: int, known: dict[int, dict], end: int) -> None:
    """Known DFS nodes from a recorded batched decode: the log-probs along each row's path, into known[view]."""
    if not record:
        return
    lps = torch.stack(record["lp"], dim=1).tolist()
    seqs = torch.stack(record["syms"], dim=1).tolist()
    cuts = record["cut"].tolist() if "cut" in record else [-1] * len(seqs)
    for row, (lp, seq, cut) in enumerate(zip(lps, seqs, cuts)):
        stop = cut + 1 if cut >= 0 else seq.index(end) + 1 if end in seq else len(seq)
        learn(known.setdefault(view_offset + row, {}), seq[:stop], lp)


# scoring with a prefill of its own --------------------------------------------------------------------------------
@torch.no_grad()
def score_view(model, codec: PromptFormat, view: View, grids: list[Grid], deadline: float,
               batch_size: int = 16, stats: dict | None = None) -> np.ndarray | None:
    """Log-likelihood of each grid (task frame) as the answer under one view, teacher-forced; None if the deadline
    comes first. The prompt is computed once and its cache copied for each batch of candidates."""
    if time.monotonic() >= deadline:
        return None
    device = _device(model)
    logits, cache, _, _ = _prefill(model, [view.prompt], codec.pad, device, stats=stats)
    first = torch.log_softmax(logits[0, -1].float(), dim=-1)
    prompt_len = len(view.prompt)
    scores = np.zeros(len(grids))
    for start in range(0, len(grids), batch_size):
        if time.monotonic() >= deadline:
            return None
        answers = [codec.answer_ids(view.transform.apply(g)) for g in grids[start:start + batch_size]]
        width = max(len(a) for a in answers)
        ids = torch.full((len(answers), width), codec.pad, dtype=torch.long)
        for i, a in enumerate(answers):
            ids[i, :len(a)] = torch.as_tensor(a)  # right padding: later pads cannot touch earlier tokens
        ids = ids.to(device)
        total = first[ids[:, 0]].double()
        if width > 1:
            branch = copy.deepcopy(cache)
            branch.batch_repeat_interleave(len(answers))
            pos = torch.arange(prompt_len, prompt_len + width - 1, device=device).expand(len(answers), -1)
            out = model(input_ids=ids[:, :-1], position_ids=pos, past_key_values=branch, use_cache=True)
            lp = torch.log_softmax(out.logits.float(), dim=-1).gather(2, ids[:, 1:, None])[..., 0].double()
            real = torch.arange(1, width, device=device)[None, :] < torch.tensor([len(a) for a in answers],
                                                                                  device=device)[:, None]
            total += torch.where(real, lp, 0.0).sum(dim=1)  # padding may be a dead token (log-prob -inf)
        scores[start:start + len(answers)] = total.cpu().numpy()
    return scores


def score_candidates(model, codec: PromptFormat, views: list[View], grids: list[Grid], deadline: float,
                     batch_size: int = 16, stats: dict | None = None) -> np.ndarray:
    """[views scored, grids] log-likelihoods, each view prefilled again; views the deadline cut short are left out
    whole. (SharedViews.score scores from the prompts decoding computed.)"""
    start = time.perf_counter()
    rows = []
    for view in views:
        s = score_view(model, codec, view, grids, deadline, batch_size, stats)
        if s is None:
            break
        rows.append(s)
        _add(stats, "scored", len(grids))
    _add(stats, "score_s", _synced(_device(model)) - start)
    _mark(stats, "score")
    return np.array(rows).reshape(len(rows), len(grids))
