"""The search's newer families on hand-worked grids: local rules, assembled answers, pieces mapped in place and
chosen by a property, and the output-shape deduction; each family also solves a named ARC-AGI-1 training task."""
import numpy as np
import pytest

from solver import local_rules as LR
from solver import pieces as P
from solver.assemble import assemble
from solver.search import answers, search_task
from solver.shapes import deduce, side_rules, features
from solver.tasks import Task, load_tasks

FAR = float("inf")


def A(rows):
    return np.array(rows, dtype=np.uint8)


# local rules -----------------------------------------------------------------------------------------------------
def _mark_left_of_1(g):
    """Every zero cell whose right neighbour is 1 becomes 2: a rule of the cell's 4 neighbours."""
    out = g.copy()
    out[:, :-1][(g[:, :-1] == 0) & (g[:, 1:] == 1)] = 2
    return out


def test_local_rule_learns_a_neighbourhood_table_and_applies_it():
    rng = np.random.default_rng(0)
    ins = [(rng.random((8, 8)) < 0.3).astype(np.uint8) for _ in range(4)]
    outs = [_mark_left_of_1(g) for g in ins]
    test = ins[2]  # every neighbourhood of it was seen
    got = LR.local_rule(ins, outs, [test])
    assert got is not None and got[0] == "cross_mask"
    np.testing.assert_array_equal(got[1][0], _mark_left_of_1(test))


def test_local_rule_refuses_inconsistent_demos_and_uncovered_tests():
    ins = [A([[0, 1]]), A([[0, 1]])]
    assert LR.local_rule(ins, [A([[2, 1]]), A([[3, 1]])], [A([[0, 1]])]) is None  # one neighbourhood, two colours
    # every neighbourhood the test shows must have been seen: a 3 was never in a demo
    assert LR.local_rule([A([[0, 1]])], [A([[2, 1]])], [A([[0, 3]])]) is None
    assert LR.local_rule([A([[0, 1]])], [A([[0, 1]])], [A([[0, 1]])]) is None  # the demos change nothing


def test_lines_neighbourhood_sees_the_row_and_column_colours():
    key = LR.NEIGHBOURHOODS["lines"](A([[0, 3], [0, 0]]))
    assert key[0, 0] == (0 << 20) | (1 << 3) << 10 | 0  # row 0 holds colour 3, column 0 nothing
    assert key[1, 1] == (0 << 20) | 0 | (1 << 3)  # column 1 holds colour 3


def test_open_and_line_neighbourhoods():
    # a mark beside a 1 becomes 2; the test's 1 stands at the edge, a place no demo showed: only an open
    # neighbourhood (the edge as background) has seen its every cell
    ins, outs = [A([[0, 0, 0], [0, 1, 0], [0, 0, 0]])], [A([[0, 2, 0], [2, 1, 2], [0, 2, 0]])]
    test = A([[0, 0, 0], [1, 0, 0], [0, 0, 0]])
    for name, answer in (("cross", None), ("cross_open", A([[2, 0, 0], [1, 2, 0], [2, 0, 0]]))):
        keyer = LR.NEIGHBOURHOODS[name]
        got = LR.apply_table(LR.learn_table([keyer(g) for g in ins], outs), keyer(test))
        assert got is None if answer is None else np.array_equal(got, answer), name
    # each row's content names its output row, when two demos show it; a test row never seen (5 5) has no answer
    ins = [A([[5, 0], [0, 5]]), A([[0, 5], [0, 5]]), A([[5, 0], [5, 0]])]
    outs = [A([[2, 2], [3, 3]]), A([[3, 3], [3, 3]]), A([[2, 2], [2, 2]])]
    got = LR.local_rule(ins, outs, [A([[0, 5], [5, 0]])])
    assert got is not None and got[0] == "row"
    np.testing.assert_array_equal(got[1][0], A([[3, 3], [2, 2]]))
    assert LR.local_rule(ins[:2], outs[:2], [A([[0, 5], [5, 0]])]) is None  # the row 5 0 is in one demo only
    rows = LR.NEIGHBOURHOODS["row"]
    assert LR.apply_table(LR.learn_table([rows(g) for g in ins], outs), rows(A([[5, 5], [0, 5]]))) is None


def test_cell_rule_uses_the_fewest_features_that_explain_the_demos():
    # objects of size 1 become 2, larger ones keep their colour: the colour and the object's size explain it
    ins = [A([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]]), A([[1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]])]
    outs = [A([[2, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 2]]), A([[1, 1, 0, 0], [0, 0, 0, 2], [2, 0, 0, 0]])]
    got = LR.feature_rule(ins, outs, [A([[0, 1, 0], [0, 0, 0], [1, 1, 0]])])
    assert got is not None and got[0] == "colour+neighbours4"  # a lone cell has no neighbour: found first
    np.testing.assert_array_equal(got[1][0], A([[0, 2, 0], [0, 0, 0], [1, 1, 0]]))
    assert LR.feature_rule(ins, ins, [ins[0]]) is None  # nothing changes


def test_cell_features_by_hand():
    f = LR.cell_features(A([[0, 3, 0], [0, 0, 0], [2, 2, 0]]))
    assert f["ray_up"][2, 1] == 3 and f["ray_up"][0, 1] == LR.OUTSIDE and f["ray_right"][0, 0] == 3
    assert f["object_size"][2, 0] == 2 and f["object_width"][2, 1] == 2 and f["object_size"][1, 1] == 0
    assert f["enclosed"].sum() == 0 and f["neighbours8"][1, 1] == 3
    assert f["ray_up_right"][1, 0] == 3 and f["ray_down_left"][0, 1] == LR.OUTSIDE  # (1,0) is 0, then the edge
    assert f["ray_down_left"][0, 2] == 2 and f["diagonals4"][1, 1] == 1 and f["diagonals4"][1, 2] == 2
    assert f["cross_colours"][1, 1] == (1 << 3 | 1 << 2) and f["diagonal_colours"][1, 1] == 1 << 2
    assert f["col_parity_end"][0, 2] == 0 and f["row_parity_end"][1, 0] == 1


def _mark_corners_and_sides(g):
    """Zero cells diagonal to a 2 become 4; zero cells beside a 1 become 7 (no cell is both in these grids)."""
    out = g.copy()
    for y, x in zip(*np.nonzero(g)):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = y + dy, x + dx
                if (dy or dx) and 0 <= yy < g.shape[0] and 0 <= xx < g.shape[1] and g[yy, xx] == 0:
                    if g[y, x] == 2 and dy and dx:
                        out[yy, xx] = 4
                    elif g[y, x] == 1 and not (dy and dx):
                        out[yy, xx] = 7
    return out


def test_rule_list_generalises_to_neighbourhoods_no_demo_showed():
    ins = [np.zeros((7, 7), np.uint8) for _ in range(3)]
    ins[0][1, 1], ins[0][4, 4] = 2, 1
    ins[1][2, 4], ins[1][5, 1] = 2, 1
    ins[2][1, 5], ins[2][5, 5], ins[2][3, 1] = 2, 6, 1  # a 6 that changes nothing: unseen by the others
    outs = [_mark_corners_and_sides(g) for g in ins]
    test = np.zeros((7, 7), np.uint8)
    test[1, 1], test[5, 4], test[3, 5] = 2, 2, 8  # two 2s and an 8: keys no table of whole neighbourhoods saw
    assert LR.local_rule(ins, outs, [test]) is None
    got = LR.rule_list(ins, outs, [test])
    assert got is not None and "at_up_left:0/2->4" in got[0]
    np.testing.assert_array_equal(got[1][0], _mark_corners_and_sides(test))


def test_rule_list_refuses_what_a_left_out_demo_contradicts():
    # demo 1 turns a zero beside a 1 into 7, demo 2 leaves it: learned without demo 2, the list breaks demo 2
    ins = [A([[0, 1, 0]]), A([[1, 0, 0]]), A([[0, 0, 1]])]
    outs = [A([[7, 1, 0]]), A([[1, 0, 0]]), A([[0, 7, 1]])]
    assert LR.rule_list(ins, outs, [A([[0, 1, 0]])]) is None
    assert LR.rule_list(ins[:1], outs[:1], [A([[0, 1, 0]])]) is None  # one demo: nothing to leave out
    assert LR.apply_rules([("at_right", 0, 1, 7), ("at_left", 0, 1, 5)], LR.rule_features(A([[0, 1, 0]])),
                          A([[0, 1, 0]])) is not None
    clash = A([[1, 0, 1]])  # the middle cell: at_right says 7, at_left says 5
    assert LR.apply_rules([("at_right", 0, 1, 7), ("at_left", 0, 1, 5)], LR.rule_features(clash), clash) is None


# assembly --------------------------------------------------------------------------------------------------------
def test_assemble_overlays_parts_each_right_where_it_changes():
    inp = A([[1, 0], [0, 2]])
    out = A([[1, 5], [6, 2]])
    part_a = ([A([[1, 5], [0, 2]])], [A([[3, 5], [0, 0]])])  # right on the cell it changes (top right)
    part_b = ([A([[1, 0], [6, 2]])], [A([[3, 0], [6, 0]])])  # right on bottom left
    # paints 5 where the output has 1 and where it has 5: no colour table makes it right, so never usable
    wrong = ([A([[5, 5], [6, 2]])], [A([[9, 9], [9, 9]])])
    got = assemble([wrong, part_a, part_b], [inp], [out], [A([[3, 0], [0, 0]])])
    assert got is not None and got[0] == [1, 2]
    np.testing.assert_array_equal(got[1][0], A([[3, 5], [6, 0]]))
    recoloured = ([A([[1, 7], [0, 2]])], [A([[3, 7], [0, 0]])])  # paints 7 where 5 is wanted: a table mends it
    got = assemble([recoloured, part_b], [inp], [out], [A([[3, 0], [0, 0]])])
    assert got is not None
    np.testing.assert_array_equal(got[1][0], A([[3, 5], [6, 0]]))


def test_assemble_refuses_when_the_parts_leave_a_cell_wrong_or_one_part_suffices():
    inp, out = A([[0, 0]]), A([[1, 2]])
    only_first = ([A([[1, 0]])], [A([[1, 0]])])
    assert assemble([only_first], [inp], [out], [inp]) is None  # the second cell stays wrong
    whole = ([A([[1, 2]])], [A([[1, 2]])])
    assert assemble([whole, only_first], [inp], [out], [inp]) is None  # one part is a plain program


def test_assemble_over_a_blank_grid_uses_non_zero_cells():
    out = A([[1, 2], [0, 0]])
    parts = [([A([[1, 0], [0, 0]])], [A([[4, 0], [0, 0]])]), ([A([[0, 2], [0, 0]])], [A([[0, 5], [0, 0]])])]
    got = assemble(parts, [A([[7]])], [out], [A([[7]])], base="blank")
    assert got is not None
    np.testing.assert_array_equal(got[1][0], A([[4, 5], [0, 0]]))


# pieces ----------------------------------------------------------------------------------------------------------
def test_map_pieces_transforms_each_object_in_place():
    g = A([[1, 2, 0, 0],
           [0, 0, 0, 0],
           [0, 0, 3, 0],
           [0, 0, 3, 4]])
    got = P.map_pieces(g, "m8", "obj", P.PIECE_OPS["flip_h"])
    np.testing.assert_array_equal(got, A([[2, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 3], [0, 0, 4, 3]]))
    rot = P.map_pieces(A([[0, 0, 0], [5, 5, 5], [0, 0, 0]]), "c8", "obj", P.PIECE_OPS["rot90"])
    np.testing.assert_array_equal(rot, A([[0, 5, 0], [0, 5, 0], [0, 5, 0]]))  # turned about its box's centre
    assert P.map_pieces(A([[0, 1, 0]]), "c8", "obj", P.PIECE_OPS["flip_h"]) is None  # nothing changes
    assert P.map_pieces(A([[0, 0], [0, 0]]), "c8", "obj", P.PIECE_OPS["flip_h"]) is None  # no pieces


def test_objects_fall_and_slide_as_rigid_bodies():
    g = A([[1, 1, 0],
           [0, 0, 0],
           [0, 2, 0],
           [0, 0, 0]])
    # the 2 falls to the floor first (nearest the bottom), then the pair of 1s lands on it
    np.testing.assert_array_equal(P.fall(g, "down"), A([[0, 0, 0], [0, 0, 0], [1, 1, 0], [0, 2, 0]]))
    np.testing.assert_array_equal(P.fall(g, "left"), A([[1, 1, 0], [0, 0, 0], [2, 0, 0], [0, 0, 0]]))
    assert P.fall(np.zeros((2, 2), np.uint8), "up") is None  # no objects
    row = A([[1, 0, 0, 0, 2, 2],
             [0, 0, 0, 0, 2, 2],
             [0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(P.slide_to(row, "largest"), A([[0, 0, 0, 1, 2, 2], [0, 0, 0, 0, 2, 2], [0] * 6]))
    np.testing.assert_array_equal(P.slide_to(row, "smallest"), A([[1, 2, 2, 0, 0, 0], [0, 2, 2, 0, 0, 0], [0] * 6]))
    assert P.slide_to(A([[1, 0, 0], [0, 0, 2]]), "largest") is None  # two of one size: no anchor
    assert P.slide_to(A([[1, 0, 0, 0], [0, 0, 2, 2]]), "largest") is None  # nothing in line with the anchor


def test_stamp_copies_the_multicolour_template_onto_objects_of_its_mask():
    g = A([[1, 2, 0, 5, 5, 0, 5],
           [2, 1, 0, 5, 5, 0, 5]])
    # the 2x2 of 5 has the template's mask and takes its cells; the 2x1 of 5 has another mask and stays
    np.testing.assert_array_equal(P.stamp(g), A([[1, 2, 0, 1, 2, 0, 5], [2, 1, 0, 2, 1, 0, 5]]))
    assert P.stamp(A([[1, 2, 0, 3, 4]])) is None  # two multicolour objects: no template
    assert P.stamp(A([[1, 2, 0, 5]])) is None  # no object of its mask


def test_nearest_other_colour_by_hand():
    g = A([[1, 0, 0, 3, 0, 2]])
    # the 3's nearest other colour is the 2 (two steps; the 1 is three); the cell between 3 and 2 is a tie
    np.testing.assert_array_equal(LR.nearest_other(g), [[3, 1, 3, 2, 0, 3]])
    np.testing.assert_array_equal(LR.nearest_other(A([[4, 4]])), [[0, 0]])  # one colour: none other


def test_choose_piece_by_the_new_properties():
    g = A([[1, 1, 1, 0, 2],
           [0, 0, 0, 0, 2],
           [3, 0, 0, 0, 0],
           [0, 0, 4, 4, 0],
           [0, 0, 4, 4, 0],
           [0, 0, 0, 0, 0]])
    objs = P.objects(g, "c8")
    assert P.choose_piece(objs, g.shape, "widest").colour == 1
    assert P.choose_piece(objs, g.shape, "inner").colour == 4  # the only one away from the border
    assert P.choose_piece(objs, g.shape, "tallest") is None  # 2 and 4 are both two rows tall
    assert P.choose_piece(objs, g.shape, "unique_size") is None  # sizes 3, 2, 1, 4: all unique, so none is the one
    np.testing.assert_array_equal(P.pick_piece(g, "c8", "widest", "obj"), A([[1, 1, 1]]))
    erased = P.pick_piece(g, "c8", "inner", "erase")
    assert not (erased == 4).any() and (erased == 1).sum() == 3


# shapes ----------------------------------------------------------------------------------------------------------
def _task(pairs, tests):
    return Task("s", [(A(i), A(o)) for i, o in pairs], [A(t) for t in tests])


def test_shape_rules_found_when_they_hold_and_refused_when_one_demo_breaks_them():
    double = _task([([[1, 2]], [[1, 2, 1, 2], [1, 2, 1, 2]]), ([[1], [2]], [[1, 1], [2, 2], [1, 1], [2, 2]])],
                   [[[3, 3, 3]]])
    d = deduce(double)
    assert d.shapes == ((2, 6),) and d.certain == (True,) and d.text() == "2*rows x 2*cols"
    const = _task([([[1, 2]], [[1]]), ([[1, 2, 3]], [[2]])], [[[1] * 5]])
    assert deduce(const).shapes == ((1, 1),)
    broken = _task([([[1, 2]], [[1, 2]]), ([[1, 2, 3]], [[1, 2]])], [[[1]]])  # cols: 2 then 2 from 2 then 3
    texts = [r.text for r in deduce(broken).col_rules]
    assert "2" in texts and "cols" not in texts  # the own side fails, the constant holds


def test_shape_follows_a_feature_other_than_the_sides():
    # the output is as wide as the input's non-zero box and one row
    pairs = [([[0, 1, 1, 0]], [[1, 1]]), ([[1, 1, 1, 0], [0, 0, 0, 0]], [[1, 1, 1]])]
    rules = side_rules([features(A(i)) for i, _ in pairs], [len(o[0]) for _, o in pairs])
    assert rules and rules[0].feature == "box_cols"


def test_sizers_bring_a_grid_to_a_shape():
    from solver.shapes import to_shape
    g = A([[1, 2], [3, 0]])
    np.testing.assert_array_equal(to_shape(g, (3, 3), "tile"), A([[1, 2, 1], [3, 0, 3], [1, 2, 1]]))
    np.testing.assert_array_equal(to_shape(g, (2, 4), "mirror_tile"), A([[1, 2, 2, 1], [3, 0, 0, 3]]))
    np.testing.assert_array_equal(to_shape(g, (4, 2), "scale"), A([[1, 2], [1, 2], [3, 0], [3, 0]]))
    assert to_shape(g, (3, 2), "scale") is None
    np.testing.assert_array_equal(to_shape(g, (3, 3), "corner"), A([[1, 2, 0], [3, 0, 0], [0, 0, 0]]))
    np.testing.assert_array_equal(to_shape(A([[1, 2, 3]]), (1, 1), "centre"), A([[2]]))
    assert to_shape(g, (31, 2), "tile") is None
    np.testing.assert_array_equal(to_shape(g, (1, 1), "corner_tr"), A([[2]]))
    np.testing.assert_array_equal(to_shape(g, (1, 1), "corner_bl"), A([[3]]))
    np.testing.assert_array_equal(to_shape(g, (3, 3), "corner_br"), A([[0, 0, 0], [0, 1, 2], [0, 3, 0]]))
    # the four 2x2 corners of a 3x3 grid laid on one another, the top-left on top
    np.testing.assert_array_equal(to_shape(A([[1, 0, 2], [0, 0, 0], [0, 3, 4]]), (2, 2), "fold"), A([[1, 2], [3, 3]]))
    assert to_shape(g, (2, 2), "fold") is None and to_shape(g, (3, 2), "fold") is None  # nothing to fold
    assert to_shape(A([[1, 0, 0, 2]] * 2), (1, 2), "fold") is None  # halves that do not overlap: a combiner's work


def test_join_pieces_in_an_order():
    g = A([[0, 0, 2, 0], [1, 0, 2, 0], [1, 0, 0, 0], [0, 0, 0, 3]])
    np.testing.assert_array_equal(P.join_pieces(A([[1, 0, 2], [1, 0, 2]]), "c8", "left", "row"), A([[1, 2], [1, 2]]))
    np.testing.assert_array_equal(P.join_pieces(A([[1, 0, 2], [1, 0, 2]]), "c8", "left", "column"),
                                  A([[1], [1], [2], [2]]))
    assert P.join_pieces(g, "c8", "top", "row") is None  # heights 2, 2 and 1: no row
    np.testing.assert_array_equal(P.join_pieces(g[:, :3], "c8", "top", "over"), A([[2], [2]]))  # 2 starts higher
    np.testing.assert_array_equal(P.join_pieces(A([[4, 4, 0, 5]]), "c8", "smallest", "row"), A([[5, 4, 4]]))
    assert P.join_pieces(A([[4, 4, 0, 0]]), "c8", "left", "row") is None  # one piece


def test_grid_table_answers_by_a_property_of_the_whole_input():
    one, two = A([[1, 1]]), A([[2, 2], [2, 2]])
    ins = [A([[1, 0], [0, 1]]), A([[0, 1], [1, 1]]), A([[2, 0], [0, 0]]), A([[0, 2], [2, 0]])]
    outs = [one, one, two, two]
    got = LR.grid_table(ins, outs, [A([[1, 1], [1, 0]])])
    assert got is not None and got[0] == "top_colour"
    np.testing.assert_array_equal(got[1][0], one)
    assert LR.grid_table(ins, outs, [A([[3, 0], [0, 0]])]) is None  # a colour no demo showed
    assert LR.grid_table(ins[1:], outs[1:], [A([[1, 0], [0, 0]])]) is None  # colour 1 seen once: not borne out
    assert LR.grid_table(ins, [one] * 4, [ins[0]]) is None  # one output for all: nothing to choose
    f = LR.cell_features(A([[0, 3, 3, 3]]))
    assert f["object_col_parity"].tolist() == [[0, 0, 1, 0]]  # counted from the object's left edge


def test_lattice_flood_and_majority_refuse_what_they_cannot_do():
    from solver import grids as G
    assert G.broadcast_part(A([[1, 0], [0, 2]]), "most_cells") is None  # no separator lines
    assert G.broadcast_part(A([[1, 0, 5, 0, 1], [0, 0, 5, 0, 0]]), "most_cells") is None  # a tie of cell counts
    assert G.flood(A([[1, 2, 0]]), 1) is None  # the 1 touches no zero cell
    assert G.line_majority(A([[1, 2], [3, 3]]), 1) is None  # row 0 ties


# named training tasks --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arc1_train():
    return load_tasks("arc1:train")


@pytest.mark.parametrize("tid, family", [
    ("bdad9b1f", "local_rule{"),  # two lines extended across the grid, a mark where they cross
    ("a2fd1cf0", "assemble{"),  # two marks joined by an L of two lines: two partial programs overlaid
    ("72ca375d", "piece_c8_symmetric"),  # the one symmetric object, cropped
    ("a65b410d", "rule_list{"),  # a staircase above and below a bar: rays then a rule list by direction
    ("c9f8e694", "rule_list{row_first:5->copy"),  # grey cells take the colour that starts their row
    ("e26a3af2", "majority_lines"),  # noisy stripes: each line its most frequent colour, rows or columns
    ("5bd6f4ac", "to_shape{corner_tr}"),  # the top-right 3x3 corner
    ("d4469b4b", "grid_table{top_colour}"),  # the input's colour names one of three fixed pictures
    ("39a8645d", "piece_c8_commonest_obj"),  # the shape drawn most often, cropped
    ("d43fd935", "shoot_hit"),  # lone cells in line with the block shoot towards it
    ("fafffa47", "v_nor"),  # the cells empty in both halves (a full line inside the top half is no separator)
    ("662c240a", "part_squares_asymmetric"),  # of three stacked squares, the one not symmetric
    ("56ff96f3", "colour_boxes"),  # each colour's two corners filled out to their box
    ("05f2a901", "slide_to_smallest"),  # the shape slides until it touches the square
    ("1f642eb9", "shoot_mark"),  # each lone cell marks the block's cell it faces
    ("e76a88a6", "stamp"),  # the grey blocks take the pattern of the one coloured block
    ("2204b7a8", "rule_list{nearest:3->copy}"),  # each green cell takes the colour of the nearer side
    ("d13f3404", "to_shape{corner} | rays_down_right"),  # embedded in the larger output, then each cell's diagonal
    ("cce03e0d", "fractal{2}"),  # a copy of the input where it is red
    ("75b8110e", "layers{quarters:"),  # the four quarters laid on one another, one colour over another
    ("05269061", "periodic_fill{0}"),  # diagonal stripes continued: a lattice that is no row or column period
    ("6773b310", "cells_count | colour_map{1:0,2:1}"),  # each cell's count of pink cells, named by a colour map
    ("e50d258f", "object_m8_most{2}_obj"),  # the piece with the most red cells
    ("bc1d5164", "to_shape{fold}"),  # the four corners of the output's size laid on one another
    ("b190f7f5", "squares_kron"),  # one square's mask drawn in each colour of the other's cells
    ("137eaa0f", "stack_windows{5}"),  # the pieces around each grey marker laid on one another
    ("80af3007", "crop_unscale | fractal"),  # the big pattern at its unit scale, then a copy where it is set
    ("a3325580", "largest_bars"),  # the colours of the largest objects, as tall as they are large
    ("a85d4709", "local_rule{row}"),  # the place of the grey cell in a row names the row's colour
    ("794b24be", "grid_table{cells}"),  # the count of blue cells names one of four fixed pictures
    ("9af7a82c", "colour_bars"),  # a bar per colour, most frequent first, as long as its count
    ("e40b9e2f", "complete_rot4"),  # a drawing completed under quarter turns about its own centre
])
def test_each_family_solves_a_named_training_task(arc1_train, tid, family):
    task = arc1_train[tid]
    result = search_task(task, FAR, depth=2)
    best = [p for p in result.programs if family in p.text]
    assert best, f"{tid}: no program of the family {family}"
    for i, truth in enumerate(task.test_outputs):
        np.testing.assert_array_equal(best[0].outputs[i], truth)
        assert any(np.array_equal(g, truth) for g, _ in answers(result, i)[:2])


def test_layer_rule_lays_parts_by_the_colour_order_the_demos_show():
    # two halves side by side; wherever both show a colour, 2 lies over 1 and 1 over 3
    ins = [A([[1, 0, 2, 2], [1, 1, 0, 2]]), A([[3, 0, 1, 1], [3, 3, 0, 0]])]
    outs = [A([[2, 2], [1, 2]]), A([[1, 1], [3, 3]])]
    got = LR.layer_rule(ins, outs, [A([[3, 0, 2, 0], [0, 1, 0, 0]])])
    assert got is not None and got[0] == "h:2>1>3"  # 2 over 3 follows from the two orders seen
    np.testing.assert_array_equal(got[1][0], A([[2, 0], [0, 1]]))
    # a test cell of colours the demos never ordered (4 and 1) is not decided: no answer is guessed
    assert LR.layer_rule(ins, outs, [A([[4, 0, 1, 0], [0, 0, 0, 0]])]) is None
    # an output colour no part shows at that cell, or two demos laying the colours both ways: no rule
    assert LR.layer_rule(ins[:1], [A([[5, 2], [1, 2]])], ins[:1]) is None
    assert LR.layer_rule([ins[0], A([[1, 2], [0, 0]])], [outs[0], A([[1], [0]])], ins[:1]) is None


def test_a_program_fitting_all_but_one_demo_is_never_proposed(arc1_train):
    """A third demo repeats the first demo's input with another output: no program can fit every demo, so every
    program the search would propose fits all but one, and none may be proposed."""
    task = arc1_train["f5b8619d"]
    (i0, o0), rest = task.train[0], list(task.train[1:])
    other = o0.copy()
    other[o0 == 0] = 9
    spoiled = Task("spoiled", [(i0, o0)] + rest + [(i0, other)], task.test_inputs, task.test_outputs)
    assert search_task(spoiled, FAR, depth=2).programs == []


def test_piece_primitives_keep_their_declared_shape_rule():
    grids = [A([[1, 1, 0, 2], [0, 1, 0, 2], [3, 0, 0, 0]]), A([[0, 4, 4], [0, 4, 0], [5, 0, 0], [5, 5, 0]])]
    ran = 0
    for name, fn, rule in P.piece_library():
        for g in grids:
            out = fn(g)
            if out is not None and rule == "same":
                ran += 1
                assert out.shape == g.shape, name
    assert ran > 20


# invariants (the verifier) ---------------------------------------------------------------------------------------
def test_invariants_on_hand_built_pairs():
    from solver.invariants import FIXED_PALETTE, broken, invariants
    # the output is the input mirrored: shape, palette, histogram and the count of non-zero cells kept
    pairs = [(A([[1, 0, 2]]), A([[2, 0, 1]])), (A([[3, 3, 0], [0, 1, 0]]), A([[0, 3, 3], [0, 1, 0]]))]
    found = invariants(Task("m", pairs, [A([[4, 0, 0]])]))
    for name in ("same_shape", "palette_equal", "palette_subset", "histogram_kept", "non_zero_count_kept"):
        assert found.get(name) is True, name
    assert "non_zero_cells_kept" not in found and "output_symmetric_lr" not in found and FIXED_PALETTE not in found
    test = A([[4, 0, 0]])
    assert broken(found, test, A([[0, 0, 4]])) == []  # the right answer keeps every invariant
    assert "histogram_kept" in broken(found, test, A([[4, 0, 4]]))  # one cell too many
    assert "same_shape" in broken(found, test, A([[4]]))
    # the output is always the same two colours: a fixed palette
    fixed = invariants(Task("f", [(A([[1, 2]]), A([[5, 0]])), (A([[3]]), A([[0, 5]]))], [A([[1]])]))
    assert fixed[FIXED_PALETTE] == frozenset({0, 5})
    assert broken(fixed, A([[1]]), A([[5, 5]])) == [FIXED_PALETTE]
    assert invariants(Task("one", pairs[:1], [test])) == {}  # a single demo proves nothing
    # a crop shows a block of the input; a solid block proves nothing (it is inside many grids by chance)
    crop = [(A([[1, 2, 0], [3, 4, 0]]), A([[1, 2], [3, 4]])), (A([[0, 5, 6], [0, 7, 5]]), A([[5, 6], [7, 5]]))]
    assert invariants(Task("c", crop, [test])).get("output_inside_input") is True
    solid = [(A([[1, 1, 0], [1, 1, 0]]), A([[1, 1]])), (A([[2, 2, 2], [0, 0, 0]]), A([[2, 2]]))]
    assert "output_inside_input" not in invariants(Task("s", solid, [test]))
    # symmetric outputs: a rule when they are wide, chance when they are 3 cells across or fewer
    wide = [(A([[1, 2, 0, 0]]), A([[1, 2, 2, 1]])), (A([[3, 0, 0, 0]]), A([[3, 0, 0, 3]]))]
    assert invariants(Task("w", wide, [test])).get("output_symmetric_lr") is True
    small = [(A([[1, 2, 0]]), A([[1, 2, 1]])), (A([[3, 0, 0]]), A([[3, 0, 3]]))]
    assert "output_symmetric_lr" not in invariants(Task("n", small, [test]))


def test_the_verifier_demotes_but_never_deletes():
    from solver.select import Candidate, choose_attempts
    from solver.invariants import invariants
    pairs = [(A([[1, 0]]), A([[0, 1]])), (A([[2, 2, 0]]), A([[0, 2, 2]]))]
    task = Task("v", pairs, [A([[3, 0, 0]])])
    wrong = Candidate(A([[3, 3, 3]]), sources=["search"], evidence={"search": {"rank": 0}})  # breaks the histogram
    right = Candidate(A([[0, 0, 3]]), sources=["search"], evidence={"search": {"rank": 1}})
    plain = choose_attempts([wrong, right], "vote", task.test_inputs[0], mix="first")
    np.testing.assert_array_equal(plain.attempt_1, wrong.grid)
    checked = choose_attempts([wrong, right], "vote", task.test_inputs[0], mix="first", verify=invariants(task))
    np.testing.assert_array_equal(checked.attempt_1, right.grid)
    np.testing.assert_array_equal(checked.attempt_2, wrong.grid)  # demoted, still an attempt
    assert "histogram_kept" in checked.demoted[0] and "demoted" in checked.report()


def test_the_report_names_the_invariants_and_the_demoted():
    from solver.config import resolve
    from solver.pipeline import choose_without_model
    from solver.select import proposed
    pairs = [(A([[1, 0]]), A([[0, 1]])), (A([[2, 2, 0]]), A([[0, 2, 2]]))]
    task = Task("v", pairs, [A([[3, 0, 0]])])
    table = proposed("search", [(A([[3, 3, 3]]), 0.0, "wrong"), (A([[0, 0, 3]]), -1.0, "right")])
    [choice] = choose_without_model(task, [table], resolve("test"))
    np.testing.assert_array_equal(choice.attempt_1, A([[0, 0, 3]]))
    from solver.pipeline import _verifier_text
    text = _verifier_text([choice])
    assert "histogram_kept" in text.split(":")[0] and "1 demoted" in text
    off = choose_without_model(task, [table], resolve("test", infer={"verify": False}))[0]
    assert _verifier_text([off]) == "" and np.array_equal(off.attempt_1, A([[3, 3, 3]]))
