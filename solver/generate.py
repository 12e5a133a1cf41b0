"""Inference: augmented views of a test input, constrained decoding (greedy, DFS, sampling) and scoring.

Owns the views of a test input, the grid-shape constraint on generated tokens, the decode loops over a KV cache and
the teacher-forced log-likelihood of a candidate under a view. Knows nothing of training, adapters, selection
(solver.pipeline strings decoding, scoring and selection together) or the run's budget beyond the deadline it is
handed: every decoding and scoring call takes a deadline (a `time.monotonic()` value) and returns what it has then.

Probabilities are the model's own (softmax over its whole vocabulary); the constraint only removes tokens, it does not
renormalise, so a DFS completion's log-probability equals its teacher-forced score under the same view.

The model is any causal LM called as `model(input_ids=, attention_mask=, position_ids=, past_key_values=,
use_cache=True, logits_to_keep=)` returning `.logits` and `.past_key_values` (a transformers Cache: the loops use
`crop`, `batch_repeat_interleave` and `copy.deepcopy` of it).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from solver.augment import DIHEDRAL_NAMES, Transform, sample_transforms
from solver.codec import Codec
from solver.config import InferConfig
from solver.tasks import MAX_SIDE, Grid, Task

EOS_SYM, NL_SYM = 11, 10  # symbol indices in a step's log-probs: digits 0..9, newline, EOS


# views ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class View:
    """A test input seen through one transform: the prompt to decode from and the largest output worth generating."""
    transform: Transform
    prompt: np.ndarray            # int64 token ids, demos + query under the transform, ending with the O marker
    max_shape: tuple[int, int]    # (rows, cols) cap on the generated grid, in this view's frame

    @property
    def group(self) -> str:
        return DIHEDRAL_NAMES[self.transform.dihedral]

    @property
    def max_new_tokens(self) -> int:
        rows, cols = self.max_shape
        return rows * (cols + 1) + 1


def plausible_shape(train: list[tuple[Grid, Grid]], query: Grid) -> tuple[int, int]:
    """The largest output shape worth generating, (rows, cols), at most 30x30.

    The query's own shape when every demo keeps its shape (the common case). Else per side: the largest size predicted
    for the query by the simple rules every demo obeys (a fixed size, a fixed ratio to either input side when it gives
    whole cells, a fixed difference from either input side). When a side has no such rule, the shape depends on
    content: a square as large as the query, as the demo outputs extrapolated one step (largest + (largest -
    smallest)) and as the query scaled by the largest demo ratio. Chosen on the training splits less their protected
    tasks, whose every test output it admits (tests/test_reachable.py).
    """
    def predicted(axis: int) -> list[int]:
        outs = [b.shape[axis] for _, b in train]
        sizes = [outs[0]] if len(set(outs)) == 1 else []
        for src in (axis, 1 - axis):
            pairs = [(b.shape[axis], a.shape[src]) for a, b in train]
            o0, i0 = pairs[0]
            if all(o * i0 == o0 * i for o, i in pairs) and query.shape[src] * o0 % i0 == 0:
                sizes.append(query.shape[src] * o0 // i0)
            if len({o - i for o, i in pairs}) == 1:
                sizes.append(query.shape[src] + o0 - i0)
        return [s for s in sizes if s >= 1]

    if all(a.shape == b.shape for a, b in train):
        return query.shape[0], query.shape[1]
    rows, cols = predicted(0), predicted(1)
    if rows and cols:
        return min(max(rows), MAX_SIDE), min(max(cols), MAX_SIDE)
    side = 0
    for axis in (0, 1):
        outs = [b.shape[axis] for _, b in train]
        scaled = max(-(-query.shape[axis] * b.shape[axis] // a.shape[axis]) for a, b in train)  # ceil
        side = max(side, 2 * max(outs) - min(outs), query.shape[axis], scaled)
    return min(side, MAX_SIDE), min(side, MAX_SIDE)


def make_view(task: Task, test_index: int, codec: Codec, transform: Transform) -> View:
    t = transform.apply_task(task)
    query = t.test_inputs[test_index]
    return View(transform, codec.encode(t.train, query).ids, plausible_shape(t.train, query))


def make_views(task: Task, test_index: int, codec: Codec, n: int, seed: int, icfg: InferConfig) -> list[View]:
    """n seeded views of one test input (the identity first); the same set for every candidate of it."""
    transforms = sample_transforms(task, n, seed=seed + 7919 * test_index, dihedral=icfg.view_dihedral,
                                   colors=icfg.view_colors, order=icfg.view_order)
    return [make_view(task, test_index, codec, t) for t in transforms]


# the grid constraint ----------------------------------------------------------------------------------------------
# State of one sequence: (width: 0 until the first row ends, col: cells in the current row, rows: rows ended,
# done). The rules below are plain arithmetic, so the same functions serve ints (DFS) and tensors (batches).
def allowed(width, col, rows, done, max_rows, max_cols):
    """(digit, newline, eos) allowed: digits while the row is shorter than its width (or the cap) and rows remain;
    newline to close a non-empty row of the right width; EOS only right after a newline."""
    limit = width + (width == 0) * max_cols
    digit = (~done if torch.is_tensor(done) else not done) & (col < limit) & (rows < max_rows)
    newline = (~done if torch.is_tensor(done) else not done) & (col > 0) & ((width == 0) | (col == width))
    eos = (col == 0) & (rows > 0) | done  # a finished sequence keeps emitting EOS (ignored)
    return digit, newline, eos


def advance(width, col, rows, done, sym):
    """The state after emitting symbol index sym (0..9 digit, 10 newline, 11 EOS)."""
    is_digit, is_nl, is_eos = sym < 10, sym == NL_SYM, sym == EOS_SYM
    new_width = width + (is_nl & (width == 0)) * col
    new_col = is_digit * (col + 1) + is_eos * col
    return new_width, new_col, rows + is_nl, done | is_eos


def symbol_mask(state, max_rows, max_cols) -> torch.Tensor:
    """[B, 12] bool of allowed symbols for batched state tensors."""
    digit, newline, eos = allowed(*state, max_rows, max_cols)
    return torch.cat([digit[:, None].expand(-1, 10), newline[:, None], eos[:, None]], dim=1)


def symbol_tokens(codec: Codec) -> list[int]:
    """Token id of each symbol index: the ten digits, newline, EOS."""
    return list(codec.digit_ids) + [codec.nl, codec.eos]


def symbol_ids(codec: Codec) -> torch.Tensor:
    return torch.tensor(symbol_tokens(codec), dtype=torch.long)


def symbols_to_grid(codec: Codec, syms: list[int]) -> Grid | None:
    """The grid spelled by symbol indices (digits, newlines, a final EOS), or None if malformed (codec.decode_grid)."""
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


def _step_logprobs(logits: torch.Tensor, sym_ids: torch.Tensor) -> torch.Tensor:
    """[B, 12] log-probabilities of the symbols at the last position (softmax over the whole vocabulary)."""
    return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, sym_ids]


def _static_cache(model, max_len: int):
    """A preallocated KV cache for a transformers model (None for other models: they bring their own).

    The default DynamicCache concatenates every layer's keys and values at each step, copying the whole cache:
    at 8 views x 2,000 prompt tokens that copy costs more than the step's matmuls on a CPU.
    """
    from transformers import PretrainedConfig, StaticCache
    config = getattr(model, "config", None)
    return StaticCache(config=config, max_cache_len=max_len) if isinstance(config, PretrainedConfig) else None


def _prefill(model, prompts: list[np.ndarray], pad: int, device, cache=None):
    """Left-padded prefill of prompts; returns (last-position logits, cache, attention mask, next positions)."""
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
    return out.logits, out.past_key_values, mask, pos[:, -1] + 1


# decoding -------------------------------------------------------------------------------------------------------
@dataclass
class Decoded:
    """One completed generation, mapped back to the task's frame."""
    view: int
    grid: Grid
    logp: float
    tokens: int


@torch.no_grad()
def decode_batch(model, codec: Codec, views: list[View], deadline: float, *, temperature: float = 0.0,
                 samples: int = 1, generator: torch.Generator | None = None, stats: dict | None = None,
                 view_offset: int = 0) -> list[Decoded]:
    """Decode views together (greedy at temperature 0, else sampling; `samples` rows per view share its prefill).

    Sequences still unfinished at the deadline are dropped. `stats`, when given, accumulates 'steps', 'tokens'
    (generated, EOS included), 'prefill_s' and 'decode_s'.
    """
    if not views or time.monotonic() >= deadline:
        return []
    device = _device(model)
    sym_ids = symbol_ids(codec).to(device)
    start = time.perf_counter()
    max_new = max(v.max_new_tokens for v in views)
    # one row per view: a preallocated cache; samples > 1 copy each view's prefilled rows, which needs a DynamicCache
    cache = _static_cache(model, max(len(v.prompt) for v in views) + max_new) if samples == 1 else None
    logits, cache, mask, pos = _prefill(model, [v.prompt for v in views], codec.pad, device, cache)
    _add(stats, "prefill_s", _synced(device) - start)
    start = time.perf_counter()
    if samples > 1:
        cache.batch_repeat_interleave(samples)
        logits, mask, pos = (x.repeat_interleave(samples, dim=0) for x in (logits, mask, pos))
    n = len(views) * samples
    max_rows = torch.tensor([v.max_shape[0] for v in views], device=device).repeat_interleave(samples)
    max_cols = torch.tensor([v.max_shape[1] for v in views], device=device).repeat_interleave(samples)
    zeros = torch.zeros(n, dtype=torch.long, device=device)
    state = (zeros, zeros, zeros, torch.zeros(n, dtype=torch.bool, device=device))
    total = torch.zeros(n, dtype=torch.float64, device=device)
    generated = torch.zeros((), dtype=torch.long, device=device)
    syms = []
    for _ in range(max_new):
        lp = _step_logprobs(logits, sym_ids).masked_fill(~symbol_mask(state, max_rows, max_cols), -math.inf)
        if temperature > 0:
            sym = torch.multinomial(torch.softmax(lp / temperature, dim=-1), 1, generator=generator)[:, 0]
        else:
            sym = lp.argmax(dim=-1)
        total += torch.where(state[3], 0.0, lp.gather(1, sym[:, None])[:, 0].double())
        generated += (~state[3]).sum()
        state = advance(*state, sym)
        syms.append(sym)
        if bool(state[3].all()) or time.monotonic() >= deadline:
            break
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=sym_ids[sym][:, None], attention_mask=mask, position_ids=pos[:, None],
                    past_key_values=cache, use_cache=True)
        logits, cache, pos = out.logits, out.past_key_values, pos + 1
    seqs = torch.stack(syms, dim=1).tolist()
    _add(stats, "tokens", int(generated))
    _add(stats, "steps", len(syms))
    _add(stats, "decode_s", _synced(device) - start)
    results = []
    for row in range(n):
        grid = symbols_to_grid(codec, seqs[row]) if bool(state[3][row]) else None
        if grid is not None:
            view = views[row // samples]
            results.append(Decoded(view_offset + row // samples, view.transform.invert(grid),
                                   float(total[row]), seqs[row].index(EOS_SYM) + 1))
    return results


@torch.no_grad()
def dfs_view(model, codec: Codec, view: View, deadline: float, *, threshold: float, max_candidates: int,
             view_index: int = 0, stats: dict | None = None) -> list[Decoded]:
    """Every completion of one view whose probability exceeds `threshold` (the ARChitects' DFS), best first.

    The prompt is computed once; branches share its KV cache, which is cropped back on each return to a branch
    point. Stops after `max_candidates` completions or at the deadline, returning those found.
    """
    if time.monotonic() >= deadline:
        return []
    device = _device(model)
    sym_ids = symbol_ids(codec).to(device)
    logits, cache, _, _ = _prefill(model, [view.prompt], codec.pad, device)
    prompt_len = len(view.prompt)
    min_logp = math.log(threshold)
    max_rows, max_cols = view.max_shape
    found: list[tuple[list[int], float]] = []
    stack = [([], 0.0, (0, 0, 0, False))]  # (symbols so far, their log-prob, constraint state)
    while stack and len(found) < max_candidates and time.monotonic() < deadline:
        path, logp, state = stack.pop()
        if path and path[-1] == EOS_SYM:
            found.append((path, logp))
            continue
        if path:  # feed the last symbol on top of its parent's cache
            cache.crop(-(cache.get_seq_length() - (prompt_len + len(path) - 1)))
            position = torch.tensor([[prompt_len + len(path) - 1]], device=device)
            out = model(input_ids=sym_ids[path[-1]].view(1, 1), position_ids=position, past_key_values=cache,
                        use_cache=True)
            logits, cache = out.logits, out.past_key_values
            _add(stats, "tokens", 1)
        lp = _step_logprobs(logits, sym_ids)[0].tolist()
        digit, newline, eos = allowed(*state, max_rows, max_cols)
        ok = [digit] * 10 + [newline, eos]
        children = [(logp + lp[s], s) for s in range(12) if ok[s] and logp + lp[s] > min_logp]
        for child_logp, s in sorted(children):  # the most likely child is pushed last, so explored first
            stack.append((path + [s], child_logp, advance(*state, s)))
    found.sort(key=lambda f: -f[1])
    return [Decoded(view_index, view.transform.invert(symbols_to_grid(codec, p)), lp, len(p)) for p, lp in found]


def decode_views(model, codec: Codec, views: list[View], icfg: InferConfig, deadline: float, *, seed: int = 0,
                 stats: dict | None = None) -> list[Decoded]:
    """Decode every view with the configured strategy, in batches of icfg.batch_size views."""
    if icfg.strategy == "dfs":
        out = []
        for i, view in enumerate(views):
            out += dfs_view(model, codec, view, deadline, threshold=icfg.dfs_threshold,
                            max_candidates=icfg.dfs_max_candidates, view_index=i, stats=stats)
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
                            view_offset=start)
    return out


# scoring --------------------------------------------------------------------------------------------------------
@torch.no_grad()
def score_view(model, codec: Codec, view: View, grids: list[Grid], deadline: float,
               batch_size: int = 16) -> np.ndarray | None:
    """Log-likelihood of each grid (task frame) as the answer under one view, teacher-forced; None if the deadline
    comes first. The prompt is computed once and its cache copied for each batch of candidates."""
    if time.monotonic() >= deadline:
        return None
    device = _device(model)
    logits, cache, _, _ = _prefill(model, [view.prompt], codec.pad, device)
    first = torch.log_softmax(logits[0, -1].float(), dim=-1)
    prompt_len = len(view.prompt)
    scores = np.zeros(len(grids))
    for start in range(0, len(grids), batch_size):
        if time.monotonic() >= deadline:
            return None
        answers = [np.append(codec.grid_ids(view.transform.apply(g)), codec.eos) for g in grids[start:start + batch_size]]
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


def score_candidates(model, codec: Codec, views: list[View], grids: list[Grid], deadline: float,
                     batch_size: int = 16, stats: dict | None = None) -> np.ndarray:
    """[views scored, grids] log-likelihoods; views the deadline cut short are left out whole."""
    rows = []
    for view in views:
        s = score_view(model, codec, view, grids, deadline, batch_size)
        if s is None:
            break
        rows.append(s)
        _add(stats, "scored", len(grids))
    return np.array(rows).reshape(len(rows), len(grids))
