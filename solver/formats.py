"""The prompt formats of public ARC checkpoints, behind codec.PromptFormat, and picking one for a checkpoint directory.

Each format is written with the checkpoint's own tokenizer (a transformers tokenizer passed in; nothing is downloaded):

- `nvarc` (NVARC, ARC Prize 2025): per demo
  `<|im_start|>user\\n{input}<|im_end|><|im_start|>assistant\\n{output}<|im_end|>`, the query ending after
  `<|im_start|>assistant\\n`; a grid's rows of digits joined by `\\n` (no trailing newline); no BOS; loss on every
  output (the first demo's too).
- `architects` (the ARChitects, ARC Prize 2024): BOS (when the tokenizer has one), a preprompt of letters, then per
  example `I` + input rows joined by `\\n` + `\\n+/-=O` + output rows each ended by `\\n` + EOS; the query ends at
  `\\n+/-=O`; loss on every output after the first demo's (their collator's `mask_first_n_examples=1`).
- `marc` (the MIT TTT paper): see `MarcFormat`.

A format of fixed pieces (`PieceFormat`) writes: prefix, then per demo `before_input grid between grid after_output`,
then the query `before_input grid between` and, for training, the answer `grid after_output`, whose last token ends the
answer. Every digit and the row separator are single tokens, so constrained decoding, DFS and scoring work on them
unchanged: the decoder's twelve symbols are the ten digits, the row separator and the end. `marc` writes a digit token
per cell too, between pieces of text (`grid_pieces`), which the decoder spells.

`detect_format` reads a directory's tokenizer and config and names the format it was trained in; `load_format` builds a
format by name (or `auto`). Knows nothing of models, decoding or training.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from solver.codec import CODEC_FILE, Codec, CodecError, Encoded, PromptFormat
from solver.tasks import MAX_SIDE, Grid

log = logging.getLogger(__name__)

ARCHITECTS_PREPROMPT = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjklmnpqrstuvwxyz"  # A-Z, a-z without I, O, i, o
ARCHITECTS_REPLY = "\n+/-=O"  # between an input and its output
NVARC_VOCAB = tuple("0123456789") + ("\n", "user", "assistant", "<|endoftext|>", "<|im_start|>", "<|im_end|>")


class FormatError(CodecError):
    """A tokenizer or directory that does not carry the asked format (the message names what was found)."""


# tokens ---------------------------------------------------------------------------------------------------------------
def token_id(tokenizer, text: str, fmt: str) -> int:
    """The one token that spells `text`; FormatError when the tokenizer splits it or lacks it."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if ids == [tokenizer.unk_token_id] and text != tokenizer.unk_token:
        raise FormatError(f"the {fmt} format needs {text!r} as one token, but {type(tokenizer).__name__} does not "
                          f"know it (unknown token): is this the checkpoint's own tokenizer?")
    if len(ids) != 1:
        raise FormatError(f"the {fmt} format needs {text!r} as one token, but {type(tokenizer).__name__} writes it "
                          f"as {len(ids)} tokens {ids}: is this the checkpoint's own tokenizer?")
    return ids[0]


def token_ids(tokenizer, text: str, fmt: str) -> tuple[int, ...]:
    """Each character of `text` as one token."""
    return tuple(token_id(tokenizer, ch, fmt) for ch in text)


def parse_rows(ids, digits: tuple[int, ...], sep: int, end: int, closed: bool) -> Grid | None:
    """The grid in generated ids (rows of digit ids split by `sep`, up to the first `end`); None when malformed."""
    ids = [int(t) for t in np.asarray(ids, dtype=np.int64).reshape(-1)]
    if end in ids:
        ids = ids[:ids.index(end)]
    if closed:
        if not ids or ids[-1] != sep:
            return None
        ids = ids[:-1]
    value = {t: d for d, t in enumerate(digits)}
    rows, row = [], []
    for t in ids + [sep]:
        if t == sep:
            rows.append(row)
            row = []
        elif t in value:
            row.append(value[t])
        else:
            return None
    if not rows[0] or any(len(r) != len(rows[0]) for r in rows) or len(rows) > MAX_SIDE or len(rows[0]) > MAX_SIDE:
        return None
    return np.array(rows, dtype=np.uint8)


def named(fmt, tokenizer):
    """The format with `symbols` set to the tokenizer's names of its token_ids."""
    return replace(fmt, symbols=tuple(tokenizer.convert_ids_to_tokens(list(fmt.token_ids))))


# a format of fixed pieces ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PieceFormat:
    """Grids of single-token cells between fixed pieces of tokens (module docstring)."""
    digits: tuple[int, ...]        # ids of "0".."9"
    sep: int                       # the row separator's id
    prefix: tuple[int, ...]        # before the first demo
    before_input: tuple[int, ...]  # before each input grid
    between: tuple[int, ...]       # after an input grid, before its output
    after_output: tuple[int, ...]  # after each output grid (its last token ends an answer)
    pad: int                       # pads a batch
    vocab_size: int
    symbols: tuple[str, ...]       # what each of token_ids stands for
    first_demo_loss: bool          # with train_demo_outputs, the first demo's output is trained on too
    closed_rows: bool              # the separator ends every row (else it stands between rows)
    bos: int | None = None
    name: ClassVar[str] = "pieces"
    pieces: ClassVar[None] = None  # one token per cell and per row separator (the decoder's twelve symbols)

    def __post_init__(self):
        if len(set(self.emit_ids)) != len(self.emit_ids):
            raise FormatError(f"the {self.name} format's digits, row separator and end must be distinct tokens, got "
                              f"{self.emit_ids}: is this the checkpoint's own tokenizer?")

    @property
    def token_ids(self) -> tuple[int, ...]:
        """Every id the format writes, in first-use order."""
        seen = self.digits + (self.sep,) + self.prefix + self.before_input + self.between + self.after_output
        return tuple(dict.fromkeys(seen))

    @property
    def end(self) -> int:
        return self.after_output[-1]

    @property
    def emit_ids(self) -> tuple[int, ...]:
        return self.digits + (self.sep, self.end)

    @property
    def is_compact(self) -> bool:
        return False

    def special_ids(self) -> dict[str, int]:
        ids = {"eos_token_id": self.end, "pad_token_id": self.pad}
        return ids if self.bos is None else {"bos_token_id": self.bos, **ids}

    def dead_ids(self) -> list[int]:
        return []

    def grid_tokens(self, grid: Grid) -> np.ndarray:
        """A grid's rows of digit ids with the row separator (after each row, or between rows)."""
        h, w = grid.shape
        out = np.empty((h, w + 1), dtype=np.int64)
        out[:, :w] = np.asarray(self.digits, dtype=np.int64)[grid]
        out[:, w] = self.sep
        flat = out.reshape(-1)
        return flat if self.closed_rows else flat[:-1]

    def grid_length(self, rows: int, cols: int) -> int:
        return rows * (cols + 1) - (0 if self.closed_rows else 1)

    def answer_length(self, rows: int, cols: int) -> int:
        return self.grid_length(rows, cols) + len(self.after_output)

    def answer_ids(self, grid: Grid) -> np.ndarray:
        return np.append(self.grid_tokens(grid), self.after_output).astype(np.int64)

    def encode(self, demos: list[tuple[Grid, Grid]], query: Grid, answer: Grid | None = None,
               train_demo_outputs: bool = False) -> Encoded:
        """Demos + query (+ answer); the mask covers the answer and, with train_demo_outputs, demo outputs (the first
        one's only when first_demo_loss)."""
        ids, mask = [np.array(self.prefix, dtype=np.int64)], [np.zeros(len(self.prefix), bool)]

        def add(part, train: bool) -> None:
            ids.append(np.asarray(part, dtype=np.int64))
            mask.append(np.full(len(part), train))

        for k, (a, b) in enumerate(demos):
            add(self.before_input + tuple(self.grid_tokens(a)) + self.between, False)
            add(self.answer_ids(b), train_demo_outputs and (k > 0 or self.first_demo_loss))
        add(self.before_input + tuple(self.grid_tokens(query)) + self.between, False)
        if answer is not None:
            add(self.answer_ids(answer), True)
        return Encoded(np.concatenate(ids), np.concatenate(mask))

    def num_tokens(self, demos: list[tuple[Grid, Grid]], query: Grid, answer: Grid | None = None) -> int:
        """len(encode(...)) without building the sequence."""
        pair = len(self.before_input) + len(self.between)
        n = len(self.prefix) + sum(pair + self.grid_length(*a.shape) + self.answer_length(*b.shape) for a, b in demos)
        n += pair + self.grid_length(*query.shape)
        return n + (self.answer_length(*answer.shape) if answer is not None else 0)

    def decode_grid(self, ids) -> Grid | None:
        return parse_rows(ids, self.digits, self.sep, self.end, self.closed_rows)


class NvarcFormat(PieceFormat):
    """NVARC's chat turns on its 16-token vocabulary (module docstring)."""
    name: ClassVar[str] = "nvarc"

    @classmethod
    def for_tokenizer(cls, tokenizer) -> NvarcFormat:
        one = lambda text: token_id(tokenizer, text, "nvarc")
        nl, start, end = one("\n"), one("<|im_start|>"), one("<|im_end|>")
        digits = token_ids(tokenizer, "0123456789", "nvarc")
        return named(cls(digits, nl, (), (start, one("user"), nl), (end, start, one("assistant"), nl), (end,),
                         pad=one("<|endoftext|>"), vocab_size=len(tokenizer), symbols=(), first_demo_loss=True,
                         closed_rows=False), tokenizer)


class ArchitectsFormat(PieceFormat):
    """The ARChitects' letters-and-markers text on a single-character vocabulary (module docstring)."""
    name: ClassVar[str] = "architects"

    @classmethod
    def for_tokenizer(cls, tokenizer) -> ArchitectsFormat:
        eos = tokenizer.eos_token_id
        if eos is None:
            raise FormatError(f"the architects format ends every output with EOS, but {type(tokenizer).__name__} "
                              "has no eos token")
        bos = tokenizer.bos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        prefix = ((bos,) if bos is not None else ()) + token_ids(tokenizer, ARCHITECTS_PREPROMPT, "architects")
        # input rows each end with "\n" (closed rows), so "\n+/-=O" is the last row's newline, then "+/-=O"
        fmt = cls(token_ids(tokenizer, "0123456789", "architects"), token_id(tokenizer, "\n", "architects"), prefix,
                  token_ids(tokenizer, "I", "architects"), token_ids(tokenizer, ARCHITECTS_REPLY[1:], "architects"),
                  (eos,), pad=pad, vocab_size=len(tokenizer), symbols=(), first_demo_loss=False, closed_rows=True,
                  bos=bos)
        return named(fmt, tokenizer)


# the MIT TTT paper's chat text ----------------------------------------------------------------------------------------
MARC_SYSTEM = ("Figure out the underlying transformation in the following examples and apply it to the test case. "
               "Here are some examples from this transformation, your answer must follow the format.\n")
LLAMA3_TURN = "<|start_header_id|>{role}<|end_header_id|>\n\n"


def numpy_text(grid: Grid) -> str:
    """A grid as numpy prints it: `[[0 1 2]\\n [3 4 5]]` (spaces between cells, no commas)."""
    return "[" + "\n ".join("[" + " ".join(str(int(v)) for v in row) + "]" for row in grid) + "]"


def parse_numpy_text(text: str) -> Grid | None:
    """The grid in numpy's text form (up to a `#`); None when malformed."""
    text = text.split("#", 1)[0].strip()
    if not (text.startswith("[[") and text.endswith("]]")):
        return None
    rows = []
    for line in text[1:-1].split("\n"):
        line = line.strip()
        cells = line[1:-1].split(" ") if line.startswith("[") and line.endswith("]") else None
        if not cells or not all(len(c) == 1 and c.isdigit() for c in cells):
            return None
        rows.append([int(c) for c in cells])
    if any(len(r) != len(rows[0]) for r in rows) or len(rows) > MAX_SIDE or len(rows[0]) > MAX_SIDE:
        return None
    return np.array(rows, dtype=np.uint8)


def grid_pieces(spell, digits: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """(open, cell, row, close): the tokens around the cells of grids spelled by `spell` (grid -> ids), read from a
    2x2 grid and checked on other shapes; a FormatError when the cells are not one digit token each or the pieces
    differ between grids (a tokenizer that merges across cells), or when after a cell the next piece is not told by
    its first token."""
    def split(grid: Grid) -> tuple[tuple[int, ...], ...]:
        ids, pos = spell(grid), []
        for cell in grid.reshape(-1):
            try:
                pos.append(ids.index(digits[int(cell)], pos[-1] + 1 if pos else 0))
            except ValueError:
                raise FormatError(f"the cell {int(cell)} of a {grid.shape} grid is not one token: {ids}") from None
        rows, cols = grid.shape
        gaps = [tuple(ids[a + 1:b]) for a, b in zip(pos, pos[1:])]
        cell = {g for i, g in enumerate(gaps) if (i + 1) % cols}
        row = {g for i, g in enumerate(gaps) if not (i + 1) % cols}
        return tuple(ids[:pos[0]]), cell, row, tuple(ids[pos[-1] + 1:])

    sample = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    opening, (cell,), (row,), close = split(sample)
    for shape in ((1, 1), (1, 3), (3, 1), (3, 3), (MAX_SIDE, MAX_SIDE)):
        grid = (np.arange(shape[0] * shape[1]) % 10).reshape(shape).astype(np.uint8)
        o, c, r, e = split(grid)
        if o != opening or e != close or not c <= {cell} or not r <= {row}:
            raise FormatError(f"a {shape} grid is not spelled by the 2x2 grid's pieces {(opening, cell, row, close)}")
    firsts = [p[0] for p in (cell, row, close) if p]
    if len(firsts) != 3 or len(set(firsts)) != 3 or set(firsts) & set(digits):
        raise FormatError(f"after a cell, the pieces (cell, row, close) = {(cell, row, close)} must start with "
                          f"three distinct tokens that are not digits")
    return opening, cell, row, close


@dataclass(frozen=True)
class MarcFormat:
    """Llama-3 chat: a system message (MARC_SYSTEM, then the demos as `<input> -> <output>#` lines), the user message
    `<test input> -> `, the assistant's answer `<output>#` then `<|eot_id|>`; grids in numpy's text form, written with
    the full Llama-3 tokenizer. MARC_SYSTEM stands in for the paper's wording, which was not at hand here. Loss on the
    answer and, with train_demo_outputs, on the demo outputs after the first.

    An answer's tokens are `pieces` around one digit token per cell (`[[`, `0`, ` `, `1`, `]\n`, ` [`, ..., `]]#`,
    `<|eot_id|>` with Llama-3's pre-tokenizer), read from the tokenizer and checked on several shapes
    (`grid_pieces`): the decoder, DFS and scoring spell grids through them.
    """
    tokenizer: object = field(compare=False, hash=False, repr=False)
    eot: int
    bos: int
    pad: int
    vocab_size: int
    token_ids: tuple[int, ...]
    symbols: tuple[str, ...]
    digits: tuple[int, ...]
    pieces: tuple[tuple[int, ...], ...]  # (open, cell, row, close): see codec.PromptFormat
    name: ClassVar[str] = "marc"
    closed_rows: ClassVar[bool] = False
    is_compact: ClassVar[bool] = False

    @classmethod
    def for_tokenizer(cls, tokenizer) -> MarcFormat:
        one = lambda text: token_id(tokenizer, text, "marc")
        eot, bos = one("<|eot_id|>"), one("<|begin_of_text|>")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
        digits = tuple(one(str(d)) for d in range(10))
        spell = lambda grid: tokenizer.encode(numpy_text(grid) + "#", add_special_tokens=False) + [eot]
        pieces = grid_pieces(spell, digits)
        ids = tuple(dict.fromkeys(digits + tuple(t for p in pieces for t in p) + (bos,)))
        return cls(tokenizer, eot, bos, pad, len(tokenizer), ids, tuple(tokenizer.convert_ids_to_tokens(list(ids))),
                   digits, pieces)

    @property
    def emit_ids(self) -> tuple[int, ...]:
        """The ten digits, the pieces' other tokens, then <|eot_id|>."""
        others = [t for p in self.pieces for t in p if t != self.eot and t not in self.digits]
        return self.digits + tuple(dict.fromkeys(others)) + (self.eot,)

    def special_ids(self) -> dict[str, int]:
        return {"bos_token_id": self.bos, "eos_token_id": self.eot, "pad_token_id": self.pad}

    def dead_ids(self) -> list[int]:
        return []

    def texts(self, demos: list[tuple[Grid, Grid]], query: Grid, answer: Grid | None, train_demo_outputs: bool):
        """(the sequence's text, the character spans trained on)."""
        text, spans = "<|begin_of_text|>" + LLAMA3_TURN.format(role="system") + MARC_SYSTEM, []
        for k, (a, b) in enumerate(demos):
            text += numpy_text(a) + " -> "
            if train_demo_outputs and k > 0:
                spans.append((len(text), len(text) + len(numpy_text(b)) + 1))
            text += numpy_text(b) + "#\n"
        text += "<|eot_id|>" + LLAMA3_TURN.format(role="user") + numpy_text(query) + " -> <|eot_id|>"
        text += LLAMA3_TURN.format(role="assistant")
        if answer is not None:
            spans.append((len(text), len(text) + len(numpy_text(answer)) + len("#<|eot_id|>")))
            text += numpy_text(answer) + "#<|eot_id|>"
        return text, spans

    def encode(self, demos: list[tuple[Grid, Grid]], query: Grid, answer: Grid | None = None,
               train_demo_outputs: bool = False) -> Encoded:
        """The chat text tokenized whole; the mask covers every token that overlaps a trained span (a BPE token may
        straddle its edge: ` [[` takes the space before an output, `]]#\\n` the newline after it)."""
        text, spans = self.texts(demos, query, answer, train_demo_outputs)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        mask = [any(a < e and s < b for s, e in spans) for a, b in enc["offset_mapping"]]
        return Encoded(np.asarray(enc["input_ids"], dtype=np.int64), np.asarray(mask, dtype=bool))

    def num_tokens(self, demos: list[tuple[Grid, Grid]], query: Grid, answer: Grid | None = None) -> int:
        return len(self.encode(demos, query, answer))

    def answer_ids(self, grid: Grid) -> np.ndarray:
        ids = self.tokenizer.encode(numpy_text(grid) + "#", add_special_tokens=False) + [self.eot]
        return np.asarray(ids, dtype=np.int64)

    def answer_length(self, rows: int, cols: int) -> int:
        """Tokens of an answer of that shape (digits are single tokens, so the count does not depend on them)."""
        return len(self.answer_ids(np.zeros((rows, cols), dtype=np.uint8)))

    def decode_grid(self, ids) -> Grid | None:
        ids = [int(t) for t in np.asarray(ids, dtype=np.int64).reshape(-1)]
        if self.eot in ids:
            ids = ids[:ids.index(self.eot)]
        if any(t < 0 or t >= self.vocab_size for t in ids):
            return None
        return parse_numpy_text(self.tokenizer.decode(ids))


# picking a format -----------------------------------------------------------------------------------------------------
def _config(directory: Path) -> dict:
    path = directory / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# model.format's names (besides auto), each with the class that builds it on a tokenizer (`for_tokenizer`)
FORMATS = {"codec": Codec, "nvarc": NvarcFormat, "architects": ArchitectsFormat, "marc": MarcFormat}


def _token_texts(tokenizer) -> set[str]:
    """The text of every token of a small vocabulary (each id decoded alone)."""
    return {tokenizer.decode([i]) for i in range(len(tokenizer))}


def _single_chars(tokenizer) -> bool:
    """Every token that is not special is one character (the ARChitects' cut vocabulary)."""
    specials = set(tokenizer.all_special_ids)
    return all(len(tokenizer.decode([i])) == 1 for i in range(len(tokenizer)) if i not in specials)


def detect_format(directory: str | Path, tokenizer) -> tuple[str, str]:
    """(format name, why) for a checkpoint directory and its tokenizer; FormatError naming what was found."""
    directory = Path(directory)
    if (directory / CODEC_FILE).is_file():
        return "codec", f"{CODEC_FILE} says the package saved it in its own format"
    n = len(tokenizer)
    if n <= 1024:
        texts = _token_texts(tokenizer)
        if n <= 64 and set(NVARC_VOCAB) <= texts:  # NVARC's 16 tokens (a few more added ones allowed)
            return "nvarc", f"a {n}-token vocabulary of digits, newline, user, assistant and <|im_*|> tokens (NVARC's)"
        if _single_chars(tokenizer) and set("0123456789\nIO+/-=") <= texts:
            return "architects", f"a vocabulary cut to {n} single characters with I, O and +/-= (the ARChitects')"
    vocab = tokenizer.get_vocab()
    if "<|start_header_id|>" in vocab and "<|eot_id|>" in vocab:
        return "marc", "a Llama-3 chat tokenizer (<|start_header_id|>, <|eot_id|>): the MIT TTT checkpoint's"
    try:
        Codec.for_tokenizer(tokenizer)
    except CodecError as e:
        specials = ", ".join(sorted(tokenizer.all_special_tokens)[:8]) or "none"
        model_type = _config(directory).get("model_type", "unknown")
        raise FormatError(f"{directory}: no known prompt format for a {model_type} model with a {n}-token vocabulary "
                          f"(special tokens: {specials}); the package's own format fails: {e}. Set model.format to "
                          f"one of {', '.join(FORMATS)} if it is one of them") from e
    return "codec", "every digit, newline, I and O is one token (the package's own format)"


def make_format(name: str, tokenizer) -> PromptFormat:
    """The named format (FORMATS) on a checkpoint's tokenizer."""
    if name not in FORMATS:
        raise FormatError(f"unknown prompt format '{name}': choose auto or one of {', '.join(FORMATS)}")
    return FORMATS[name].for_tokenizer(tokenizer)


def load_format(name: str, tokenizer, directory: str | Path) -> PromptFormat:
    """model.format `name` (or `auto`: detect_format, logged with its reason) on a directory's tokenizer."""
    if name == "auto":
        name, why = detect_format(directory, tokenizer)
        log.info("prompt format %s for %s: %s", name, directory, why)
    return make_format(name, tokenizer)
