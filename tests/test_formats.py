"""Prompt formats of public checkpoints (solver.formats) on tokenizers and tiny models built here: no download.

Each tokenizer is made from the published description of its checkpoint's vocabulary (the NVARC one exactly as issue
27's table gives it); none of the real checkpoints was run here.
"""
import logging
import time

import numpy as np
import pytest
import torch

from solver.codec import IGNORE, Codec
from solver.formats import (ARCHITECTS_PREPROMPT, MARC_SYSTEM, NVARC_VOCAB, FormatError, detect_format, load_format,
                            make_format, numpy_text)
from solver.generate import allowed
from solver.tasks import Task

G = lambda rows: np.array(rows, dtype=np.uint8)  # noqa: E731
DEMOS = [(G([[1, 2]]), G([[3], [4]]))]
QUERY, ANSWER = G([[5]]), G([[6, 7]])
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")


# tokenizers made here -------------------------------------------------------------------------------------------------
def word_tokenizer(directory, vocab: dict[str, int], specials: list[str], words: list[str], split: str = r"[\s\S]",
                   **named):
    """A fast tokenizer (WordLevel over `split` pieces, `words` and `specials` matched whole), saved and reloaded."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel(vocab, unk_token=named.get("unk_token", specials[0])))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(split), behavior="isolated")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.add_tokens([AddedToken(w, normalized=False) for w in words])
    tok.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tok, **named).save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def nvarc_tokenizer(directory):
    """NVARC's 16 tokens: 0-9 = 0-9, \\n = 10, user, assistant, <|endoftext|> (pad), <|im_start|>, <|im_end|> (eos)."""
    return word_tokenizer(directory, {t: i for i, t in enumerate(NVARC_VOCAB)}, list(NVARC_VOCAB[13:]),
                          ["user", "assistant"], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                          unk_token="<|endoftext|>")


def architects_tokenizer(directory):
    """Single characters (letters, digits, ! ? . : , ; * + / - =, newline) plus <unk>, <s> (bos), </s> (eos)."""
    chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!?.:,;*+/-=\n"
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + list(chars))}
    return word_tokenizer(directory, vocab, specials, [], bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def llama3_tokenizer(directory):
    """Llama-3's pre-tokenizer and chat specials; each piece the marc format writes is one token."""
    from tokenizers import Regex, pre_tokenizers
    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    fmt_texts = [MARC_SYSTEM, "system", "user", "assistant", "\n\n", " -> ", "#\n", "#"]
    grids = [np.arange(h * w).reshape(h, w) % 10 for h in (1, 2, 3) for w in (1, 2, 3)]
    corpus = fmt_texts + [f"{numpy_text(a)} -> {numpy_text(b)}#\n{numpy_text(b)}#" for a in grids for b in grids]
    split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated")
    pieces = sorted({p for text in corpus for p, _ in split.pre_tokenize_str(text)} | set("0123456789"))
    vocab = {t: i for i, t in enumerate(["<unk>"] + specials + pieces)}
    return word_tokenizer(directory, vocab, ["<unk>"] + specials, [], split=LLAMA3_SPLIT, unk_token="<unk>",
                          bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


TOKENIZERS = {"nvarc": nvarc_tokenizer, "architects": architects_tokenizer, "marc": llama3_tokenizer}


@pytest.fixture(params=sorted(TOKENIZERS))
def fmt(request, tmp_path):
    return make_format(request.param, TOKENIZERS[request.param](tmp_path))


def trained_text(tokenizer, enc) -> str:
    return tokenizer.decode(enc.ids[enc.mask].tolist())


# rendering ------------------------------------------------------------------------------------------------------------
def test_nvarc_renders_chat_turns_on_its_16_tokens(tmp_path):
    tok = nvarc_tokenizer(tmp_path)
    fmt = make_format("nvarc", tok)
    enc = fmt.encode(DEMOS, QUERY, ANSWER, train_demo_outputs=True)
    text = ("<|im_start|>user\n12<|im_end|><|im_start|>assistant\n3\n4<|im_end|>"
            "<|im_start|>user\n5<|im_end|><|im_start|>assistant\n67<|im_end|>")
    assert tok.decode(enc.ids.tolist()) == text
    assert enc.ids.tolist() == [14, 11, 10, 1, 2, 15, 14, 12, 10, 3, 10, 4, 15, 14, 11, 10, 5, 15, 14, 12, 10, 6, 7, 15]
    assert trained_text(tok, enc) == "3\n4<|im_end|>67<|im_end|>"  # every output, the first demo's too
    assert trained_text(tok, fmt.encode(DEMOS, QUERY, ANSWER)) == "67<|im_end|>"
    prompt = fmt.encode(DEMOS, QUERY)
    assert tok.decode(prompt.ids.tolist()).endswith("<|im_start|>assistant\n") and not prompt.mask.any()
    assert fmt.emit_ids == tuple(range(10)) + (10, 15) and fmt.pad == 13 and not fmt.closed_rows


def test_architects_renders_letters_markers_and_eos(tmp_path):
    tok = architects_tokenizer(tmp_path)
    fmt = make_format("architects", tok)
    demos = DEMOS + [(G([[8]]), G([[9, 9]]))]
    enc = fmt.encode(demos, QUERY, ANSWER, train_demo_outputs=True)
    text = "<s>" + ARCHITECTS_PREPROMPT + "I12\n+/-=O3\n4\n</s>I8\n+/-=O99\n</s>I5\n+/-=O67\n</s>"
    assert tok.decode(enc.ids.tolist()) == text
    assert enc.ids.tolist() == tok.encode(text, add_special_tokens=False)
    assert trained_text(tok, enc) == "99\n</s>67\n</s>"  # outputs after the first demo's (mask_first_n_examples=1)
    assert tok.decode(fmt.encode(demos, QUERY).ids.tolist()).endswith("I5\n+/-=O")
    assert ARCHITECTS_PREPROMPT == "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                           if c not in "IOio")


def test_marc_renders_llama3_chat_with_numpy_grids(tmp_path):
    tok = llama3_tokenizer(tmp_path)
    fmt = make_format("marc", tok)
    demos = DEMOS + [(G([[8]]), G([[9, 9]]))]
    enc = fmt.encode(demos, QUERY, ANSWER, train_demo_outputs=True)
    text = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + MARC_SYSTEM +
            "[[1 2]] -> [[3]\n [4]]#\n[[8]] -> [[9 9]]#\n<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\n[[5]] -> <|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n[[6 7]]#<|eot_id|>")
    assert tok.decode(enc.ids.tolist()) == text
    assert tok.unk_token_id not in enc.ids
    assert trained_text(tok, enc) == " [[9 9]]#\n[[6 7]]#<|eot_id|>"  # a token straddling an output's edge counts
    assert numpy_text(G([[0, 1, 2], [3, 4, 5]])) == str(np.array([[0, 1, 2], [3, 4, 5]]))
    names = lambda piece: tok.convert_ids_to_tokens(list(piece))
    assert [names(p) for p in fmt.pieces] == [["[["], [" "], ["]\n", " ["], ["]]#", "<|eot_id|>"]]  # open, cell,
    # row, close around one digit token per cell; the decoder's symbols: the digits, the pieces' tokens, the end
    assert names(fmt.emit_ids) == list("0123456789") + ["[[", " ", "]\n", " [", "]]#", "<|eot_id|>"]


def test_marc_refuses_a_tokenizer_that_merges_cells(tmp_path):
    """A tokenizer in which `1 2` is one token (no single-token cells) cannot be spelled in pieces."""
    from solver.formats import grid_pieces
    digits = tuple(range(10))
    merged = lambda grid: [100] + [11 if g == 1 else g for g in grid.reshape(-1)] + [101]  # cell 1 never a digit
    with pytest.raises(FormatError, match="is not one token"):
        grid_pieces(merged, digits)
    glued = lambda grid: [100] + [d for row in grid for d in row] + [101]  # no token between cells or rows
    with pytest.raises(FormatError, match="three distinct tokens"):
        grid_pieces(glued, digits)


# every shape, malformed answers ---------------------------------------------------------------------------------------
def test_every_grid_shape_round_trips_with_its_length(fmt):
    rng = np.random.default_rng(0)
    for h in range(1, 31):
        for w in range(1, 31):
            grid = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
            ids = fmt.answer_ids(grid)
            assert len(ids) == fmt.answer_length(h, w), (h, w)
            assert np.array_equal(fmt.decode_grid(ids), grid), (h, w)
    demos = [(rng.integers(0, 10, size=(3, 4)).astype(np.uint8), rng.integers(0, 10, size=(2, 5)).astype(np.uint8))]
    for answer in (None, G([[1, 2], [3, 4]])):
        assert fmt.num_tokens(demos * 2, G([[1]]), answer) == len(fmt.encode(demos * 2, G([[1]]), answer))


def test_a_malformed_generation_is_no_candidate(fmt):
    good = fmt.answer_ids(G([[1, 2], [3, 4]]))
    end = int(good[-1])
    last_cell = int(np.flatnonzero(good != fmt.answer_ids(G([[1, 2], [3, 5]])))[0])
    bad = [[], [end], good[:-3], np.delete(good, last_cell),  # cut short, ragged rows
           fmt.answer_ids(np.zeros((31, 1), np.uint8)), fmt.answer_ids(np.zeros((1, 31), np.uint8)),
           np.concatenate([[fmt.pad], good]), np.array([10 ** 6, end]), np.array([-5, 3])]
    for ids in bad:
        assert fmt.decode_grid(np.asarray(ids, dtype=np.int64)) is None
    assert np.array_equal(fmt.decode_grid(np.append(good, [0, 1, 2])), G([[1, 2], [3, 4]]))  # after the end: ignored


def test_rows_joined_by_the_separator_end_without_a_trailing_one():
    """NVARC's grammar (closed=False): EOS where a newline could end the row; no newline once the rows are all used."""
    digit, newline, eos = allowed(0, 2, 0, False, 3, 5, closed=False)  # first row, two cells
    assert digit and newline and eos
    assert allowed(2, 1, 1, False, 3, 5, closed=False)[2] is False  # second row shorter than the first
    assert allowed(2, 2, 2, False, 3, 5, closed=False)[1] is False  # third row of three: no fourth
    assert allowed(0, 2, 0, False, 3, 5)[2] is False  # the package's own: EOS only after a newline


# tiny checkpoints -----------------------------------------------------------------------------------------------------
def tiny_model(kind: str, vocab: int):
    """A random causal LM of the checkpoint's architecture: Qwen3 (NVARC), Mistral (ARChitects), Llama (MARC)."""
    import transformers as tf
    shape = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, max_position_embeddings=4096)
    config = {"nvarc": lambda: tf.Qwen3Config(**shape, tie_word_embeddings=True),
              "architects": lambda: tf.MistralConfig(**shape), "marc": lambda: tf.LlamaConfig(**shape)}[kind]()
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config)


def checkpoint(kind: str, directory):
    """A directory as a checkpoint ships: config, weights and its tokenizer."""
    tok = TOKENIZERS[kind](directory)
    tiny_model(kind, len(tok)).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_detection_picks_each_checkpoints_format_and_says_why(kind, tmp_path, caplog):
    from transformers import AutoTokenizer
    directory = checkpoint(kind, tmp_path)
    name, why = detect_format(directory, AutoTokenizer.from_pretrained(directory))
    assert name == kind and why
    with caplog.at_level(logging.INFO, logger="solver.formats"):
        assert load_format("auto", AutoTokenizer.from_pretrained(directory), directory).name == kind
    assert [r.message for r in caplog.records if "prompt format" in r.message] == [
        f"prompt format {kind} for {directory}: {why}"]


def test_detection_refuses_a_tokenizer_no_format_fits(tmp_path):
    tok = word_tokenizer(tmp_path, {t: i for i, t in enumerate(["<unk>"] + list("abcdef"))}, ["<unk>"], [],
                         unk_token="<unk>", eos_token="<unk>")
    with pytest.raises(FormatError, match=r"7-token vocabulary.*special tokens: <unk>.*model.format"):
        detect_format(tmp_path, tok)
    with pytest.raises(FormatError, match="unknown prompt format 'qwen'"):
        make_format("qwen", tok)


def test_a_plain_model_directory_keeps_the_packages_own_format(tmp_path):
    """A tokenizer with every digit, newline, I and O as one token (SmolLM2's kind) and no chat specials: codec."""
    chars = list("0123456789\nIOab")
    tok = word_tokenizer(tmp_path, {t: i for i, t in enumerate(["<unk>", "<eos>"] + chars)}, ["<unk>", "<eos>"], [],
                         unk_token="<unk>", eos_token="<eos>")
    assert detect_format(tmp_path, tok)[0] == "codec"
    assert isinstance(load_format("auto", tok, tmp_path), Codec)


def swap_task() -> Task:
    """Swap colours 1 and 2 on small grids; one test input."""
    rng = np.random.default_rng(1)
    pairs = []
    for shape in [(2, 3), (3, 2), (2, 2), (3, 3), (2, 3)]:
        a = rng.integers(0, 3, size=shape).astype(np.uint8)
        b = a.copy()
        b[a == 1], b[a == 2] = 2, 1
        pairs.append((a, b))
    return Task("swap", pairs[:4], [pairs[4][0]], [pairs[4][1]])


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_tiny_checkpoint_trains_where_its_loss_goes_then_decodes_and_scores(kind, tmp_path):
    """Loaded by format detection; TTT labels only the format's trained tokens and lowers the loss; greedy and DFS
    decoding give well-formed grids mapped back to the task; every candidate is scored under the views."""
    from solver.adapter import attach
    from solver.config import Config, TTTConfig
    from solver.data import build_examples, collate
    from solver.model import Loaded, load_model
    from solver.pipeline import predict
    from solver.ttt import train_task
    loaded = load_model(str(checkpoint(kind, tmp_path)), device="cpu", dtype="float32")
    fmt, task = loaded.codec, swap_task()
    assert fmt.name == kind
    tcfg = TTTConfig(augmentations=["dihedral"], num_transforms=2, rank=4, alpha=8, lr=1e-2, epochs=3, batch_size=2,
                     schedule="constant", warmup=0.0)
    batch = collate(build_examples(task, fmt, tcfg), fmt.pad)
    trained = batch["labels"] != IGNORE
    assert torch.equal(batch["labels"][trained], batch["input_ids"][trained])
    end = fmt.eot if kind == "marc" else fmt.emit_ids[-1]
    trained_ends = (trained & (batch["input_ids"] == end)).sum(1).tolist()
    assert trained_ends == [1 if kind == "marc" else 4 if kind == "nvarc" else 3] * len(trained_ends)  # 3 demos +
    # the query's output: NVARC trains every output (each ends with <|im_end|>), the ARChitects every one after the
    # first demo's (each ends with EOS); marc's demo outputs end with `#`, only its answer with <|eot_id|>
    assert bool((trained.sum(1) < batch["attention_mask"].sum(1)).all())  # prompts are not
    adapter = attach(loaded.model, tcfg, fmt.token_ids)
    res = train_task(adapter, task, fmt, tcfg)
    assert res.steps > 0 and res.loss < res.first_loss
    adapter.eval_mode()
    for strategy in ("greedy", "dfs"):
        cfg = Config().override(infer={"strategy": strategy, "num_views": 2, "score_views": 2, "view_colors": False,
                                       "dfs_threshold": 1e-30, "dfs_max_candidates": 3})  # an untrained model
        stats: dict = {}
        [choice] = predict(Loaded(adapter.model, fmt, "tiny"), task, cfg, time.monotonic() + 300, stats)
        assert choice.candidates, strategy
        assert all(c.grid.ndim == 2 and c.grid.max(initial=0) <= 9 for c in choice.candidates)
        assert stats["scored"] == 2 * len(choice.candidates)


@pytest.mark.parametrize("kind", ["nvarc", "marc"])
def test_rows_between_separators_decode_within_their_caps_and_dfs_matches_teacher_forcing(kind, tmp_path):
    """NVARC's grammar on a random Qwen3, marc's pieces on a random Llama: sampled grids stay inside each view's cap
    and token budget; a DFS completion's log-prob equals its teacher-forced score under the same view."""
    from dataclasses import replace

    from solver.augment import IDENTITY, Transform
    from solver.generate import decode_batch, dfs_view, make_view, score_view
    tok = TOKENIZERS[kind](tmp_path)
    fmt, model = make_format(kind, tok), tiny_model(kind, len(tok)).eval()
    base = make_view(swap_task(), 0, fmt, IDENTITY)
    views = [replace(base, transform=Transform(d), max_shape=s) for d, s in enumerate([(1, 1), (2, 3), (3, 1), (4, 4)])]
    decoded = decode_batch(model, fmt, views, time.monotonic() + 120, temperature=3.0, samples=3,
                           generator=torch.Generator().manual_seed(0))
    assert len(decoded) == 12
    for d in decoded:
        rows, cols = views[d.view].transform.apply(d.grid).shape
        assert rows <= views[d.view].max_shape[0] and cols <= views[d.view].max_shape[1]
        assert d.tokens <= views[d.view].max_new_tokens == fmt.answer_length(*views[d.view].max_shape)
    view = replace(base, max_shape=(2, 2))
    found = dfs_view(model, fmt, view, time.monotonic() + 120, threshold=1e-9, max_candidates=6)
    assert len(found) == 6
    scores = score_view(model, fmt, view, [d.grid for d in found], time.monotonic() + 120, batch_size=4)
    assert np.allclose(scores, [d.logp for d in found], atol=1e-3)


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_a_forced_shape_is_decoded_exactly_in_every_format(kind, tmp_path):
    """Rows between separators (NVARC), closed rows (the ARChitects), marc's pieces, each on a random model that
    rambles: greedy, sampled and DFS answers all have the forced shape, in exactly the answer's length of tokens."""
    from solver.augment import Transform
    from solver.generate import decode_batch, dfs_view, make_view
    tok = TOKENIZERS[kind](tmp_path)
    fmt, model = make_format(kind, tok), tiny_model(kind, len(tok)).eval()
    shapes = [(2, 3), (1, 4), (4, 1), (3, 3)]
    views = [make_view(swap_task(), 0, fmt, Transform(d), shape) for d, shape in enumerate(shapes)]
    assert [v.max_shape for v in views] == [(2, 3), (4, 1), (4, 1), (3, 3)]  # a quarter turn swaps the sides
    found = decode_batch(model, fmt, views, time.monotonic() + 120)
    found += decode_batch(model, fmt, views, time.monotonic() + 120, temperature=3.0, samples=2,
                          generator=torch.Generator().manual_seed(0))
    for i, view in enumerate(views):
        found += dfs_view(model, fmt, view, time.monotonic() + 120, threshold=1e-300, max_candidates=2, view_index=i)
    assert len(found) == 4 + 8 + 8
    for d in found:
        assert d.grid.shape == shapes[d.view]
        assert d.tokens == views[d.view].max_new_tokens == fmt.answer_length(*views[d.view].max_shape)


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_solver_run_with_a_tiny_checkpoint_directory_writes_a_submission(kind, tmp_path):
    """`python -m solver run --model DIR`: the format detected (one log line), TTT and decoding in it, attempts out."""
    import json
    import subprocess
    import sys
    task = swap_task()
    entry = {"train": [{"input": a.tolist(), "output": b.tolist()} for a, b in task.train],
             "test": [{"input": task.test_inputs[0].tolist()}]}
    (tmp_path / "tasks.json").write_text(json.dumps({"t1": entry, "t2": entry}))
    out = tmp_path / "submission.json"
    cmd = [sys.executable, "-m", "solver", "run", "--tasks", str(tmp_path / "tasks.json"), "--out", str(out),
           "--preset", "test", "--model", str(checkpoint(kind, tmp_path / kind)), "--budget", "90s", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"prompt format {kind} for" in proc.stderr
    submission = json.loads(out.read_text())
    assert sorted(submission) == ["t1", "t2"] and all(len(v) == 1 for v in submission.values())
    assert "failures: none" in proc.stderr


def test_model_format_setting_reaches_loading_and_a_wrong_one_names_the_missing_token(tmp_path):
    from solver.config import resolve
    from solver.model import ModelSpecError, load_configured, load_model, save_model
    directory = checkpoint("nvarc", tmp_path / "nvarc")
    cfg = resolve("test", sets=[f"model.spec={directory}", "model.format=nvarc", "model.device=cpu"])
    assert load_configured(cfg.model).codec.name == "nvarc"
    with pytest.raises(FormatError, match="architects format needs 'A' as one token.*unknown token"):
        load_configured(cfg.override(model={"format": "architects"}).model)
    saved = save_model(load_model("scratch:tiny"), tmp_path / "own")  # arc_codec.json: the package's own format
    with pytest.raises(ModelSpecError, match="saved by this package in its own format"):
        load_model(str(saved), fmt="nvarc")


def test_a_format_whose_grid_tokens_collide_is_refused():
    from solver.formats import PieceFormat
    with pytest.raises(FormatError, match="must be distinct tokens"):
        PieceFormat(tuple(range(10)), 9, (), (11,), (12,), (13,), pad=14, vocab_size=16, symbols=(),
                    first_demo_loss=True, closed_rows=True)
