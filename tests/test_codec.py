import numpy as np
import pytest

from solver.codec import IGNORE, SYMBOLS, Codec, CodecError
from solver.tasks import to_grid

C = Codec.compact()


def all_grids(tasks):
    for t in tasks.values():
        for a, b in t.train:
            yield a
            yield b
        yield from t.test_inputs
        yield from t.test_outputs


def test_round_trip_every_arc1_grid(arc1_train, arc1_eval):
    n = 0
    for tasks in (arc1_train, arc1_eval):
        for g in all_grids(tasks):
            ids = C.grid_ids(g)
            assert len(ids) == g.shape[0] * (g.shape[1] + 1)
            back = C.decode_grid(np.append(ids, C.eos))
            assert back.dtype == np.uint8 and back.shape == g.shape and np.array_equal(back, g)
            n += 1
    assert n > 5000


def test_task_layout_and_loss_mask(arc1_train):
    task = arc1_train["007bbfb7"]
    demos, (q, ans) = task.train[:2], (task.test_inputs[0], task.test_outputs[0])
    enc = C.encode(demos, q, ans)
    assert len(enc) == C.num_tokens(demos, q, ans)
    assert enc.ids[0] == C.bos and enc.ids[-1] == C.eos
    assert list(enc.ids).count(C.inp) == 3 and list(enc.ids).count(C.out) == 3
    # the mask covers exactly the answer: its cells, row ends and EOS, right after the last O marker
    start = len(enc) - (ans.size + ans.shape[0] + 1)
    assert enc.ids[start - 1] == C.out and not enc.mask[:start].any() and enc.mask[start:].all()
    assert np.array_equal(C.decode_grid(enc.ids[start:]), ans)
    labels = enc.labels()
    assert (labels[:start] == IGNORE).all() and np.array_equal(labels[start:], enc.ids[start:])
    prompt = C.encode(demos, q)
    assert np.array_equal(prompt.ids, enc.ids[:start]) and not prompt.mask.any()


def test_demo_outputs_after_the_first_are_trained_on_when_asked(arc1_train):
    task = arc1_train["007bbfb7"]
    demos = task.train[:3]
    enc = C.encode(demos, task.test_inputs[0], task.test_outputs[0], train_demo_outputs=True)
    out_cells = sum(b.size + b.shape[0] for _, b in demos[1:])
    answer = task.test_outputs[0].size + task.test_outputs[0].shape[0] + 1
    assert enc.mask.sum() == out_cells + answer
    first_out = C.grid_ids(demos[0][1])
    assert not enc.mask[: 1 + 2 + len(C.grid_ids(demos[0][0])) + len(first_out)].any()


@pytest.mark.parametrize("tokens", [
    [], [14], [10], [1, 2], [1, 2, 10, 3, 10], [1, 10, 11, 10], [10, 1, 10], [1, 10, 1, 15, 10], [99, 10],
    [0] * 31 + [10], [0, 10] * 31, [-1, 10],
])
def test_malformed_streams_are_invalid(tokens):
    assert C.decode_grid(tokens) is None


def test_decoding_stops_at_eos():
    assert C.decode_grid([1, 2, 10, 3, 4, 10, 14, 5, 10]).tolist() == [[1, 2], [3, 4]]
    assert C.decode_grid([1, 2, 10, 3, 4, 10]).tolist() == [[1, 2], [3, 4]]


class FakeTokenizer:
    """Every character is one token (id = code point) unless listed in `split`."""
    def __init__(self, split=(), eos=2, bos=1, pad=None):
        self.split, self.eos_token_id, self.bos_token_id, self.pad_token_id = split, eos, bos, pad

    def encode(self, text, add_special_tokens=False):
        return [ord(text), ord(text)] if text in self.split else [ord(c) + 100 for c in text]

    def __len__(self):
        return 300


def test_codec_for_a_tokenizer():
    c = Codec.for_tokenizer(FakeTokenizer())
    assert c.token_ids[:10] == tuple(ord(d) + 100 for d in "0123456789")
    assert (c.nl, c.inp, c.out, c.bos, c.eos, c.pad) == (110, 173, 179, 1, 2, 2)
    grid = to_grid([[3, 4], [5, 6]])
    assert np.array_equal(c.decode_grid(np.append(c.grid_ids(grid), c.eos)), grid)
    assert not c.is_compact and C.is_compact and C.vocab_size == len(SYMBOLS) == 16


def test_tokenizer_that_splits_a_symbol_fails_loudly():
    with pytest.raises(CodecError, match="splits '7'"):
        Codec.for_tokenizer(FakeTokenizer(split=("7",)))
    with pytest.raises(CodecError, match="no eos"):
        Codec.for_tokenizer(FakeTokenizer(eos=None))
    with pytest.raises(CodecError, match="collide"):
        Codec((0,) * 16, 16)


@pytest.mark.parametrize("codec", [C, Codec(tuple(range(100, 116)), 200)], ids=["compact", "tokenizer ids"])
def test_the_format_interface_agrees_with_the_layout(codec):
    """answer_ids/answer_length/emit_ids/num_tokens: the PromptFormat face of the same layout (rows, newline, EOS)."""
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (2, 3), (30, 30), (7, 1)]:
        grid = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
        ids = codec.answer_ids(grid)
        assert ids.tolist() == codec.grid_ids(grid).tolist() + [codec.eos]
        assert len(ids) == codec.answer_length(h, w) == h * (w + 1) + 1
        assert np.array_equal(codec.decode_grid(ids), grid)
        demos = [(grid, grid.T.copy())]
        assert codec.num_tokens(demos, grid, grid) == len(codec.encode(demos, grid, grid))
    assert codec.emit_ids == tuple(codec.digit_ids.tolist()) + (codec.nl, codec.eos)
    assert codec.special_ids() == {"bos_token_id": codec.bos, "eos_token_id": codec.eos, "pad_token_id": codec.pad}
    assert codec.name == "codec" and codec.closed_rows and codec.symbols == SYMBOLS


def test_only_a_pad_of_its_own_is_dead():
    assert C.dead_ids() == [C.pad]
    assert Codec(tuple(range(15)) + (14,), 100).dead_ids() == []  # pad = eos: a live token
