"""The prompt-format interface, and the package's own token layout: grids to token ids and back.

Layout of an encoded task (one token per cell, every row ends in a newline):

    BOS  I <input rows>  O <output rows>  I <input rows>  O <output rows> ...  I <query rows>  O [<query output rows> EOS]

where a grid's rows are `d d d ... \\n` with one digit token per cell. The prompt ends with the query's `O` marker; the
model continues with the output rows and closes them with EOS.

The layout is written in SYMBOLS. A `Codec` maps each symbol to a token id: its own compact vocabulary (ids 0..15 in
SYMBOLS order, for `scratch` models and for pretrained models whose vocabulary was reduced to these rows), or the ids
of any tokenizer in which every symbol is a single token. Knows nothing of models, augmentations or decoding strategy.

`PromptFormat` is the seam every other module goes through: render a task to ids (with the loss mask), count its
tokens, the length of an answer of a shape, the ids the decoder may emit (ten digits, row separator, end), an answer
as ids, and generated ids back to a grid. `Codec` is the package's own format; solver.formats holds the formats of
public checkpoints. No module outside these two knows a layout (tests/test_layout.py checks it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from solver.tasks import MAX_SIDE, Grid

DIGITS = tuple(str(d) for d in range(10))
NL, INP, OUT, BOS, EOS, PAD = "\n", "I", "O", "<bos>", "<eos>", "<pad>"
SYMBOLS = DIGITS + (NL, INP, OUT, BOS, EOS, PAD)  # compact id = index here
IGNORE = -100  # label of positions without loss (the transformers convention)
CODEC_FILE = "arc_codec.json"  # beside a saved model's weights: the codec it speaks, and whether it was reduced


class CodecError(ValueError):
    """A tokenizer that cannot carry the layout (a symbol that is not exactly one token)."""


@dataclass
class Encoded:
    """Token ids of one sequence, and the positions whose tokens are trained on (output cells, row ends, EOS)."""
    ids: np.ndarray   # int64 [n]
    mask: np.ndarray  # bool [n]

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self) -> np.ndarray:
        """ids where mask is set, IGNORE elsewhere (HF models shift labels themselves)."""
        return np.where(self.mask, self.ids, IGNORE)


class PromptFormat(Protocol):
    """How a checkpoint writes a task in tokens: the only door through which the package meets a token layout."""
    name: str                   # the format's name (model.format)
    token_ids: tuple[int, ...]  # every id the format writes (vocabulary reduction keeps these rows)
    vocab_size: int             # size of the model vocabulary these ids live in
    closed_rows: bool           # the row separator ends every row (else it only stands between rows)
    symbols: tuple[str, ...]    # what each of token_ids stands for (for files people read)
    # None: every cell and the row separator are one token each (emit_ids: ten digits, separator, end). Else a grid is
    # spelled (open, cell, row, close): `open`, then its cells as one digit token each with `cell` between two cells
    # of a row and `row` between rows, then `close`, whose last token ends the answer; emit_ids: the ten digits, then
    # the pieces' other tokens, the end last (a format whose cells are written in text, such as numpy's)
    pieces: tuple[tuple[int, ...], ...] | None

    @property
    def pad(self) -> int: """Token id that pads a batch (never trained on, never generated)."""
    @property
    def emit_ids(self) -> tuple[int, ...]:
        """Ids the decoder may emit for a grid: digits 0-9 first, the end last, between them the row separator (or
        the other tokens of `pieces`)."""
    @property
    def is_compact(self) -> bool: """The ids are the format's own vocabulary, not a tokenizer's."""

    def answer_ids(self, grid: Grid) -> np.ndarray:
        """The grid's rows then EOS."""
        return np.append(self.grid_ids(grid), self.eos)

    def answer_length(self, rows: int, cols: int) -> int:
        """Tokens of a rows x cols answer: a newline after each row, then EOS."""
        return rows * (cols + 1) + 1

    def encode(self, demos: list[tuple[Grid, Grid]], query: Grid, answer: Grid | None = None,
               train_demo_outputs: bool = False) -> Encoded: """Render demos + query (+ answer) with the loss mask."""
    def num_tokens(self, demos: list[tuple[Grid, Grid]], query: Grid, answer: Grid | None = None) -> int:
        """len(encode(...)) without building the sequence."""
    def answer_length(self, rows: int, cols: int) -> int: """Tokens of an answer of that shape, its end included."""
    def answer_ids(self, grid: Grid) -> np.ndarray: """The tokens of a grid as an answer, its end included."""
    def decode_grid(self, ids) -> Grid | None: """The grid in generated ids; None when malformed (never raises)."""
    def special_ids(self) -> dict[str, int]: """bos/eos/pad token ids for a model's config (`bos_token_id`, ...)."""
    def dead_ids(self) -> list[int]: """Token ids the model must never predict."""


@dataclass(frozen=True)
class Codec:
    token_ids: tuple[int, ...]  # token id of each symbol, in SYMBOLS order
    vocab_size: int             # size of the model vocabulary these ids live in
    name: ClassVar[str] = "codec"
    closed_rows: ClassVar[bool] = True  # every row ends with a newline, EOS follows the last one
    symbols: ClassVar[tuple[str, ...]] = SYMBOLS  # what token_ids' entries stand for (for files people read)
    pieces: ClassVar[None] = None  # one token per cell and per row end

    def __post_init__(self):
        if len(self.token_ids) != len(SYMBOLS):
            raise CodecError(f"codec needs {len(SYMBOLS)} token ids, got {len(self.token_ids)}")
        grid_ids = self.token_ids[:13]  # digits, newline and the two markers must be distinct
        if len(set(grid_ids)) != len(grid_ids) or self.eos in grid_ids:
            raise CodecError(f"codec token ids collide: {self.token_ids}")
        lookup = np.full(max(self.token_ids) + 1, -1, dtype=np.int64)  # token id -> digit value, -1 elsewhere
        lookup[list(self.token_ids[:10])] = np.arange(10)
        object.__setattr__(self, "_lookup", lookup)
        object.__setattr__(self, "_digits", np.asarray(self.token_ids[:10], dtype=np.int64))

    # construction -----------------------------------------------------------------------------------------------
    @classmethod
    def compact(cls) -> Codec:
        """The codec's own vocabulary: ids 0..15 in SYMBOLS order."""
        return cls(tuple(range(len(SYMBOLS))), len(SYMBOLS))

    @classmethod
    def for_tokenizer(cls, tokenizer) -> Codec:
        """Map the layout onto a Hugging Face tokenizer; every digit, newline and marker must be a single token."""
        ids = []
        for sym in DIGITS + (NL, INP, OUT):
            toks = tokenizer.encode(sym, add_special_tokens=False)
            if len(toks) != 1:
                raise CodecError(f"tokenizer {type(tokenizer).__name__} splits {sym!r} into {len(toks)} tokens "
                                 f"{toks}; the codec needs every digit, newline and marker as a single token")
            ids.append(toks[0])
        eos = tokenizer.eos_token_id
        if eos is None:
            raise CodecError(f"tokenizer {type(tokenizer).__name__} has no eos token")
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        return cls(tuple(ids) + (bos, eos, pad), len(tokenizer))

    # symbol ids -------------------------------------------------------------------------------------------------
    @property
    def nl(self) -> int: return self.token_ids[10]
    @property
    def inp(self) -> int: return self.token_ids[11]
    @property
    def out(self) -> int: return self.token_ids[12]
    @property
    def bos(self) -> int: return self.token_ids[13]
    @property
    def eos(self) -> int: return self.token_ids[14]
    @property
    def pad(self) -> int: return self.token_ids[15]
    @property
    def digit_ids(self) -> np.ndarray: return self._digits

    @property
    def is_compact(self) -> bool:
        return self.token_ids == tuple(range(len(SYMBOLS))) and self.vocab_size == len(SYMBOLS)

    @property
    def emit_ids(self) -> tuple[int, ...]:
        """Digits 0-9, newline, EOS: the ids a decoded answer is made of."""
        return self.token_ids[:11] + (self.eos,)

    def special_ids(self) -> dict[str, int]:
        return {"bos_token_id": self.bos, "eos_token_id": self.eos, "pad_token_id": self.pad}

    def dead_ids(self) -> list[int]:
        """PAD, unless PAD is another symbol's token (EOS, in a full vocabulary)."""
        return [] if self.pad in self.token_ids[:-1] else [self.pad]

    # encoding ---------------------------------------------------------------------------------------------------
    def grid_ids(self, grid: Grid) -> np.ndarray:
        """Rows of digit tokens, each row closed by a newline token."""
        h, w = grid.shape
        out = np.empty((h, w + 1), dtype=np.int64)
        out[:, :w] = self._digits[grid]
        out[:, w] = self.nl
        return out.reshape(-1)

    def answer_ids(self, grid: Grid) -> np.ndarray:
        """The grid's rows then EOS."""
        return np.append(self.grid_ids(grid), self.eos)

    def answer_length(self, rows: int, cols: int) -> int:
        """Tokens of a rows x cols answer: a newline after each row, then EOS."""
        return rows * (cols + 1) + 1

    def encode(self, demos: list[tuple[Grid, Grid]], query: Grid, answer: Grid | None = None,
               train_demo_outputs: bool = False) -> Encoded:
        """Encode demos + a query input, and the query's output when given (then closed by EOS).

        mask marks the tokens to train on: the answer's cells, row ends and EOS; with train_demo_outputs also every
        demo output after the first (the MIT paper's choice: the first has no context to learn from).
        """
        ids, mask = [np.array([self.bos])], [np.zeros(1, bool)]
        for k, (a, b) in enumerate(demos):
            ids += [np.array([self.inp]), self.grid_ids(a), np.array([self.out])]
            mask += [np.zeros(len(ids[-2]) + 2, bool)]
            ids.append(self.grid_ids(b))
            mask.append(np.full(len(ids[-1]), train_demo_outputs and k > 0))
        ids += [np.array([self.inp]), self.grid_ids(query), np.array([self.out])]
        mask += [np.zeros(len(ids[-2]) + 2, bool)]
        if answer is not None:
            ids += [self.grid_ids(answer), np.array([self.eos])]
            mask += [np.ones(len(ids[-2]) + 1, bool)]
        return Encoded(np.concatenate(ids), np.concatenate(mask))

    def num_tokens(self, demos: list[tuple[Grid, Grid]], query: Grid, answer: Grid | None = None) -> int:
        """len(encode(...)) without building the sequence."""
        def size(g: Grid) -> int:
            return self.answer_length(*g.shape) - 1
        n = 1 + sum(2 + size(a) + size(b) for a, b in demos) + 2 + size(query)
        return n + (self.answer_length(*answer.shape) if answer is not None else 0)

    # decoding ---------------------------------------------------------------------------------------------------
    def decode_grid(self, ids) -> Grid | None:
        """The grid in generated tokens (rows of digits each closed by a newline, optionally followed by EOS).

        Returns None ("invalid") for anything that is not a non-empty rectangle of at most 30x30 cells.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        eos = np.flatnonzero(ids == self.eos)
        if len(eos):
            ids = ids[:eos[0]]
        if len(ids) == 0 or ids[-1] != self.nl:
            return None
        ends = np.flatnonzero(ids == self.nl)
        starts = np.concatenate([[0], ends[:-1] + 1])
        widths = ends - starts
        if widths[0] == 0 or np.any(widths != widths[0]) or len(ends) > MAX_SIDE or widths[0] > MAX_SIDE:
            return None
        cells = np.delete(ids, ends)
        if cells.max(initial=0) >= len(self._lookup) or cells.min(initial=0) < 0:
            return None
        values = self._lookup[cells]
        if np.any(values < 0):
            return None
        return values.reshape(len(ends), widths[0]).astype(np.uint8)
