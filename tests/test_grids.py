"""Every grid primitive on a small hand-made grid, with the result worked out by hand."""
import numpy as np
import pytest

from solver import grids as G


def A(rows):
    return np.array(rows, dtype=np.uint8)


L = A([[1, 2, 0],
       [0, 3, 0]])  # a 2x3 grid with no symmetry
OBJS = A([[1, 1, 0, 0, 2],
          [1, 1, 0, 0, 0],
          [0, 0, 0, 3, 0],
          [4, 0, 0, 3, 0]])  # a 2x2 of 1, a single 2, a 2x1 of 3, a single 4
SEP = A([[1, 0, 5, 1, 1],
         [0, 1, 5, 0, 1]])  # two 2x2 parts split by a column of 5

CASES = [
    (G.rot90, {}, L, [[0, 0], [2, 3], [1, 0]]),
    (G.rot180, {}, L, [[0, 3, 0], [0, 2, 1]]),
    (G.rot270, {}, L, [[0, 1], [3, 2], [0, 0]]),
    (G.flip_h, {}, L, [[0, 2, 1], [0, 3, 0]]),
    (G.flip_v, {}, L, [[0, 3, 0], [1, 2, 0]]),
    (G.transpose, {}, L, [[1, 0], [2, 3], [0, 0]]),
    (G.antitranspose, {}, L, [[0, 0], [3, 2], [0, 1]]),
    (G.crop_bbox, {}, A([[0, 0, 0], [0, 4, 0], [0, 0, 2]]), [[4, 0], [0, 2]]),
    (G.crop_bg, {}, A([[7, 7, 7], [7, 4, 7], [7, 7, 7]]), [[4]]),
    (G.crop_colour, {"c": 2}, A([[2, 0, 0], [0, 1, 2]]), [[2, 0, 0], [0, 1, 2]]),
    (G.crop_inside, {"c": 5}, A([[5, 5, 5, 0], [5, 3, 5, 0], [5, 5, 5, 1]]), [[3]]),
    (G.drop_empty_lines, {}, A([[1, 0, 2], [0, 0, 0], [3, 0, 0]]), [[1, 2], [3, 0]]),
    (G.dedupe_lines, {}, A([[1, 1, 2], [1, 1, 2], [3, 3, 0]]), [[1, 2], [3, 0]]),
    (G.keep, {"c": 2}, L, [[0, 2, 0], [0, 0, 0]]),
    (G.remove, {"c": 2}, L, [[1, 0, 0], [0, 3, 0]]),
    (G.recolour, {"c": 7}, L, [[7, 7, 0], [0, 7, 0]]),
    (G.majority_1x1, {}, A([[1, 2, 2], [0, 0, 0]]), [[2]]),
    (G.minority_1x1, {}, A([[1, 2, 2], [0, 0, 0]]), [[1]]),
    (G.scale_up, {"k": 2}, A([[1, 2]]), [[1, 1, 2, 2], [1, 1, 2, 2]]),
    (G.scale_down, {"k": 2}, A([[1, 1, 2, 2], [1, 1, 2, 2]]), [[1, 2]]),
    (G.tile, {"a": 2, "b": 1}, A([[1, 2]]), [[1, 2], [1, 2]]),
    (G.mirror_right, {}, A([[1, 2]]), [[1, 2, 2, 1]]),
    (G.mirror_down, {}, A([[1], [2]]), [[1], [2], [2], [1]]),
    (G.mirror_4, {}, A([[1, 2]]), [[1, 2, 2, 1], [1, 2, 2, 1]]),
    (G.mirror_4_rot, {}, A([[1, 2], [0, 0]]), [[1, 2, 0, 1], [0, 0, 0, 2], [2, 0, 0, 0], [1, 0, 2, 1]]),
    (G.fractal, {}, A([[1, 0], [0, 0]]), [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
    (G.fractal_inverse, {}, A([[1, 0], [0, 0]]), [[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]),
    (G.combine, {"how": "h", "op": "and"}, SEP, [[1, 0], [0, 1]]),
    (G.combine, {"how": "h", "op": "or"}, SEP, [[1, 1], [0, 1]]),
    (G.combine, {"how": "h", "op": "xor"}, SEP, [[0, 1], [0, 0]]),
    (G.combine, {"how": "h", "op": "nor"}, SEP, [[0, 0], [1, 0]]),
    (G.combine, {"how": "v", "op": "over"}, A([[1, 0], [5, 5], [2, 2]]), [[1, 2]]),
    (G.combine, {"how": "v", "op": "under"}, A([[1, 0], [5, 5], [2, 2]]), [[2, 2]]),
    (G.combine, {"how": "h", "op": "and"}, A([[1, 0, 1, 1], [0, 2, 2, 0]]), [[1, 0], [0, 0]]),  # halves without a separator
    (G.pick_part, {"how": "h", "pick": "first"}, SEP, [[1, 0], [0, 1]]),
    (G.pick_part, {"how": "h", "pick": "last"}, SEP, [[1, 1], [0, 1]]),
    (G.pick_part, {"how": "h", "pick": "most_cells"}, SEP, [[1, 1], [0, 1]]),
    (G.pick_part, {"how": "h", "pick": "fewest_cells"}, SEP, [[1, 0], [0, 1]]),
    (G.pick_part, {"how": "grid", "pick": "unique"}, A([[1, 5, 1, 5, 2], [0, 5, 0, 5, 0]]), [[2], [0]]),
    (G.pick_part, {"how": "grid", "pick": "most_colours"}, A([[1, 1, 5, 1, 2], [0, 0, 5, 0, 0]]), [[1, 2], [0, 0]]),
    (G.symmetrize, {"how": "h"}, A([[1, 2, 0]]), [[1, 2, 1]]),
    (G.symmetrize, {"how": "v"}, A([[1], [0]]), [[1], [1]]),
    (G.symmetrize, {"how": "rot"}, A([[1, 0], [0, 0]]), [[1, 0], [0, 1]]),
    (G.symmetrize, {"how": "diag"}, A([[1, 2], [0, 3]]), [[1, 2], [2, 3]]),
    (G.symmetrize, {"how": "anti"}, A([[1, 0], [0, 3]]), [[1, 0], [0, 3]]),
    (G.symmetrize, {"how": "all"}, A([[1, 0], [0, 0]]), [[1, 1], [1, 1]]),
    (G.unmask, {"c": 9}, A([[1, 2, 3, 3, 2, 1], [4, 5, 6, 6, 9, 4], [7, 8, 0, 0, 8, 7]]), [[5]]),
    (G.gravity, {"d": "down"}, A([[1, 0], [0, 0], [2, 0]]), [[0, 0], [1, 0], [2, 0]]),
    (G.gravity, {"d": "up"}, A([[1, 0], [0, 0], [2, 0]]), [[1, 0], [2, 0], [0, 0]]),
    (G.gravity, {"d": "left"}, A([[0, 1, 0, 2]]), [[1, 2, 0, 0]]),
    (G.gravity, {"d": "right"}, A([[1, 0, 2, 0]]), [[0, 0, 1, 2]]),
    (G.rays, {"d": "right"}, A([[0, 1, 0, 2, 0]]), [[0, 1, 1, 2, 2]]),
    (G.rays, {"d": "left"}, A([[0, 1, 0, 2, 0]]), [[1, 1, 2, 2, 0]]),
    (G.rays, {"d": "down"}, A([[1], [0]]), [[1], [1]]),
    (G.rays, {"d": "up"}, A([[0], [1]]), [[1], [1]]),
    (G.rays, {"d": "down_right"}, A([[1, 0, 0], [0, 0, 0], [0, 0, 2]]), [[1, 0, 0], [0, 1, 0], [0, 0, 2]]),
    (G.rays, {"d": "down_left"}, A([[0, 0, 1], [0, 0, 0], [0, 0, 0]]), [[0, 0, 1], [0, 1, 0], [1, 0, 0]]),
    (G.rays, {"d": "up_right"}, A([[0, 0], [3, 0]]), [[0, 3], [3, 0]]),
    (G.rays, {"d": "up_left"}, A([[0, 0], [0, 4]]), [[4, 0], [0, 4]]),
    (G.rays, {"d": "h"}, A([[0, 3, 0], [0, 0, 0]]), [[3, 3, 3], [0, 0, 0]]),
    (G.rays, {"d": "v"}, A([[0, 3, 0], [0, 0, 0]]), [[0, 3, 0], [0, 3, 0]]),
    (G.rays, {"d": "hv"}, A([[0, 3, 0], [0, 0, 0]]), [[3, 3, 3], [0, 3, 0]]),
    (G.diagonals, {}, A([[0, 0, 0], [0, 4, 0], [0, 0, 0]]), [[4, 0, 4], [0, 4, 0], [4, 0, 4]]),
    (G.hollow, {}, A([[2, 2, 2], [2, 2, 2], [2, 2, 2]]), [[2, 2, 2], [2, 0, 2], [2, 2, 2]]),
    (G.halo, {"c": 8}, A([[0, 0, 0], [0, 1, 0], [0, 0, 0]]), [[8, 8, 8], [8, 1, 8], [8, 8, 8]]),
    (G.halo, {"c": 8, "diag": False}, A([[0, 0, 0], [0, 1, 0], [0, 0, 0]]), [[0, 8, 0], [8, 1, 8], [0, 8, 0]]),
    (G.fill_enclosed, {"c": 4}, A([[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 1, 0]]), [[1, 1, 1, 0], [1, 4, 1, 0],
                                                                              [1, 1, 1, 0]]),
    (G.pick_object, {"conn": "c4", "how": "largest", "mode": "obj"}, OBJS, [[1, 1], [1, 1]]),
    (G.pick_object, {"conn": "c4", "how": "smallest", "mode": "obj"}, OBJS, None),  # two single cells: a tie
    (G.pick_object, {"conn": "c4", "how": "top", "mode": "obj"}, OBJS, None),  # 1 and 2 share the top row
    (G.pick_object, {"conn": "c4", "how": "bottom", "mode": "box"}, A([[1, 0], [0, 0], [0, 2]]), [[2]]),
    (G.pick_object, {"conn": "c4", "how": "left", "mode": "obj"}, A([[0, 1, 0, 2]]), [[1]]),
    (G.pick_object, {"conn": "c4", "how": "right", "mode": "obj"}, OBJS, [[2]]),
    (G.pick_object, {"conn": "c4", "how": "unique_colour", "mode": "obj"},
     A([[1, 0, 1, 0, 2, 0, 1]]), [[2]]),
    (G.pick_object, {"conn": "c4", "how": "unique_shape", "mode": "obj"}, OBJS, None),  # three shapes, no unique
    (G.pick_object, {"conn": "c4", "how": "unique_shape", "mode": "box"},
     A([[1, 0, 2, 0, 3, 3]]), [[3, 3]]),
    (G.pick_object, {"conn": "m8", "how": "most_colours", "mode": "obj"},
     A([[1, 2, 0, 3], [0, 0, 0, 3]]), [[1, 2]]),
    (G.pick_object, {"conn": "c8", "how": "largest", "mode": "box"}, A([[1, 0, 0], [2, 1, 0]]), [[1, 0], [2, 1]]),
    (G.pick_object, {"conn": "m4", "how": "largest", "mode": "erase"}, A([[1, 2, 0, 3]]), [[0, 0, 0, 3]]),
    (G.pick_object, {"conn": "m8", "how": "most_of_2", "mode": "obj"}, A([[1, 1, 1, 0, 2, 2], [1, 1, 2, 0, 0, 0]]),
     [[2, 2]]),  # the smaller object, with more red cells
    (G.pick_object, {"conn": "m8", "how": "most_of_2", "mode": "obj"}, A([[1, 2, 0, 2, 1]]), None),  # a tie
    (G.count_objects, {"conn": "c4", "layout": "row"}, OBJS, [[1, 1, 1, 1]]),
    (G.count_objects, {"conn": "m8", "layout": "col"}, A([[1, 2, 0, 3]]), [[1], [1]]),
    (G.count_objects, {"conn": "c4", "layout": "diag"}, A([[1, 0, 3]]), [[1, 0], [0, 1]]),
    (G.count_cells, {"layout": "row"}, L, [[1, 1, 1]]),
    (G.count_cells, {"layout": "col"}, A([[0, 5], [5, 0]]), [[5], [5]]),
    (G.broadcast_part, {"pick": "most_cells"}, A([[1, 0, 5, 0, 0], [0, 1, 5, 0, 0]]), [[1, 0, 5, 1, 0], [0, 1, 5, 0, 1]]),
    (G.broadcast_part, {"pick": "over"}, A([[1, 0, 5, 0, 2], [0, 0, 5, 0, 0]]), [[1, 2, 5, 1, 2], [0, 0, 5, 0, 0]]),
    (G.flood, {"c": 1}, A([[1, 0, 2], [2, 2, 2], [0, 0, 2]]), [[1, 1, 2], [2, 2, 2], [0, 0, 2]]),
    (G.line_majority, {"axis": 1}, A([[1, 1, 2], [3, 3, 3]]), [[1, 1, 1], [3, 3, 3]]),
    (G.line_majority, {"axis": None}, A([[1, 2], [1, 2], [1, 1]]), [[1, 2], [1, 2], [1, 2]]),  # rows tie: columns
    (G.periodic_fill, {"c": 9}, A([[1, 2, 1, 2], [3, 4, 9, 9], [1, 2, 1, 9]]), [[1, 2, 1, 2], [3, 4, 3, 4], [1, 2, 1, 2]]),
    # diagonal stripes: no row or column period recovers the hidden cells, the lattice of three classes does
    (G.periodic_fill, {"c": 0}, A([[1, 2, 3, 0, 0], [2, 3, 1, 2, 0], [3, 1, 2, 3, 1]]),
     [[1, 2, 3, 1, 2], [2, 3, 1, 2, 3], [3, 1, 2, 3, 1]]),
    # staggered tiles: each two rows' pattern shifted one column from the two above
    (G.periodic_fill, {"c": 9}, A([[1, 2, 3, 1, 2, 3], [4, 5, 6, 4, 5, 6], [3, 1, 2, 3, 1, 2], [9, 4, 5, 9, 4, 5]]),
     [[1, 2, 3, 1, 2, 3], [4, 5, 6, 4, 5, 6], [3, 1, 2, 3, 1, 2], [6, 4, 5, 6, 4, 5]]),
    # a diagonal step holds, but the corner's 7 breaks every lattice that would recover the hidden cells
    (G.periodic_fill, {"c": 9}, A([[1, 2, 3, 4, 5], [2, 3, 4, 5, 1], [3, 4, 5, 9, 9], [9, 9, 9, 9, 7]]), None),
    (G.drop_specks, {"conn": "c8"}, A([[1, 0, 0], [0, 0, 2], [0, 0, 2]]), [[0, 0, 0], [0, 0, 2], [0, 0, 2]]),
    (G.drop_specks, {"conn": "m8"}, A([[1, 0, 0], [0, 3, 0], [0, 0, 0]]), [[1, 0, 0], [0, 3, 0], [0, 0, 0]]),
    (G.frame, {"c": 4}, A([[0, 0, 0], [0, 1, 0], [0, 0, 0]]), [[4, 4, 4], [4, 1, 4], [4, 4, 4]]),
    (G.interior, {"c": 4}, np.ones((3, 3), np.uint8), [[1, 1, 1], [1, 4, 1], [1, 1, 1]]),
    (G.scale_down_majority, {"k": 2}, A([[1, 1, 2, 2], [1, 3, 0, 2]]), [[1, 2]]),
    (G.shift, {"d": "down"}, A([[1, 2], [3, 4]]), [[0, 0], [1, 2]]),
    (G.shift, {"d": "up"}, A([[1, 2], [3, 4]]), [[3, 4], [0, 0]]),
    (G.shift, {"d": "left"}, A([[1, 2], [3, 4]]), [[2, 0], [4, 0]]),
    (G.shift, {"d": "right"}, A([[1, 2], [3, 4]]), [[0, 1], [0, 3]]),
    (G.fill_bbox, {"c": 5}, A([[1, 0, 0], [0, 1, 0], [0, 0, 0]]), [[1, 5, 0], [5, 1, 0], [0, 0, 0]]),
    (G.paint_objects, {"conn": "c4", "prop": "single"}, A([[1, 0, 2, 2]]), [[1, 0, 2, 2]]),
    (G.keep_by_count, {"which": "rarest"}, A([[1, 2, 2], [3, 3, 3]]), [[1, 0, 0], [0, 0, 0]]),
    (G.keep_by_count, {"which": "commonest"}, A([[1, 2, 2], [3, 3, 3]]), [[0, 0, 0], [3, 3, 3]]),
    (G.corner, {}, A([[1, 2, 3], [4, 5, 6], [7, 8, 9]]), [[1, 2], [4, 5]]),
    (G.repeat_band, {"axis": 0}, A([[0, 0], [1, 0], [0, 2], [0, 0], [0, 0]]), [[0, 2], [1, 0], [0, 2], [1, 0], [0, 2]]),
    (G.repeat_band, {"axis": 1}, A([[0, 1, 2, 0]]), [[2, 1, 2, 1]]),
    (G.paint_objects, {"conn": "c4", "prop": "extreme"}, A([[1, 0, 2, 2, 0, 3, 3, 3]]), [[2, 0, 3, 3, 0, 1, 1, 1]]),
    (G.paint_objects, {"conn": "m8", "prop": "shape"}, A([[1, 0, 2, 0, 3, 3]]), [[2, 0, 2, 0, 1, 1]]),
    (G.cells_to_pixels, {}, A([[1, 0, 5, 0, 0], [1, 2, 5, 3, 0]]), [[1, 3]]),
    (G.cells_count, {}, A([[1, 0, 5, 1, 1], [0, 0, 5, 0, 1]]), [[1, 3]]),
    (G.cells_count, {}, A([[1, 1, 1, 5, 1, 1, 1]] * 4), None),  # 12 non-zero cells in each cell: no colour
    (G.fill_majority, {}, A([[1, 2, 2]]), [[2, 2, 2]]),
    (G.fractal_majority, {}, A([[1, 2], [2, 2]]), [[0, 0, 1, 2], [0, 0, 2, 2], [1, 2, 1, 2], [2, 2, 2, 2]]),
    (G.tile_unit, {}, A([[1, 2, 1, 2], [3, 4, 3, 4]]), [[1, 2], [3, 4]]),
    (G.pick_object, {"conn": "m8", "how": "holed", "mode": "obj"},
     A([[1, 1, 1, 0, 2], [1, 0, 1, 0, 2], [1, 1, 1, 0, 0]]), [[1, 1, 1], [1, 0, 1], [1, 1, 1]]),
    (G.mirror_left, {}, A([[1, 2]]), [[2, 1, 1, 2]]),
    (G.extend_periodic, {"axis": 1}, A([[1, 2, 1], [3, 0, 3]]), [[1, 2, 1, 2, 1, 2], [3, 0, 3, 0, 3, 0]]),
    (G.extend_periodic, {"axis": 0}, A([[1], [2]]), [[1], [2], [1], [2]]),
    (G.mirror_up, {}, A([[1], [2]]), [[2], [1], [1], [2]]),
    (G.invert, {}, A([[1, 0], [0, 0]]), [[0, 1], [1, 1]]),
    (G.pick_object, {"conn": "c4", "how": "largest", "mode": "only"}, A([[1, 0, 2, 2]]), [[0, 0, 2, 2]]),
    (G.paint_objects, {"conn": "c4", "prop": "size"}, A([[1, 0, 2, 2]]), [[1, 0, 2, 2]]),
    (G.paint_objects, {"conn": "c4", "prop": "rank"}, A([[1, 0, 2, 2, 0, 3]]), [[2, 0, 1, 1, 0, 2]]),
    (G.paint_objects, {"conn": "m8", "prop": "holes"}, A([[1, 1, 1, 0, 0], [1, 0, 1, 0, 4], [1, 1, 1, 0, 4]]),
     [[1, 1, 1, 0, 0], [1, 0, 1, 0, 2], [1, 1, 1, 0, 2]]),
    (G.connect, {"c": 0}, A([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [2, 0, 0, 0, 0]]),
     [[1, 1, 1, 1, 0], [0, 0, 0, 0, 0], [2, 0, 0, 0, 0]]),
    (G.connect, {"c": 3}, A([[1, 0], [0, 0], [1, 0]]), [[1, 0], [3, 0], [1, 0]]),
    (G.scale_by_colours, {}, A([[1, 2]]), [[1, 1, 2, 2], [1, 1, 2, 2]]),
    (G.symmetry_flag, {"how": "h"}, A([[1, 2, 1]]), [[1]]),
    (G.symmetry_flag, {"how": "v"}, A([[1, 2, 1]]), [[1]]),
    (G.symmetry_flag, {"how": "rot"}, A([[1, 2, 2]]), [[2]]),
    (G.symmetrize_box, {"how": "h"}, A([[0, 0, 0, 0], [0, 1, 2, 0], [0, 0, 0, 3]]),
     [[0, 0, 0, 0], [0, 1, 2, 1], [0, 3, 0, 3]]),
    (G.symfill, {"c": 9}, A([[1, 2, 3, 3, 2, 1], [4, 5, 6, 6, 9, 4], [7, 8, 0, 0, 8, 7]]),
     [[1, 2, 3, 3, 2, 1], [4, 5, 6, 6, 5, 4], [7, 8, 0, 0, 8, 7]]),
    (G.colours_by_count, {"layout": "row"}, A([[1, 2, 2, 0, 0, 0]]), [[2, 1]]),
    (G.colours_by_count, {"layout": "col"}, A([[1, 2, 2, 0, 0, 0]]), [[2], [1]]),
    # a lone 1 shoots right to the 2x2 block; its ray down reaches the edge and is not painted
    (G.shoot, {"mode": "hit"}, A([[1, 0, 0, 3, 3], [0, 0, 0, 3, 3], [0, 0, 0, 0, 0]]),
     [[1, 1, 1, 3, 3], [0, 0, 0, 3, 3], [0, 0, 0, 0, 0]]),
    (G.shoot, {"mode": "hit8"}, A([[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]]),
     [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]]),
    (G.shoot, {"mode": "edge8"}, A([[0, 0, 0], [0, 1, 0], [0, 0, 0]]), [[1, 1, 1], [1, 1, 1], [1, 1, 1]]),
    (G.shoot, {"mode": "edge8"}, A([[1, 1]]), None),  # no lone cell
    # the lone 4 below the block marks the block's cell it reaches; the lone 1 reaches only the edge
    (G.shoot, {"mode": "mark"}, A([[3, 3, 0], [3, 3, 0], [0, 4, 0], [0, 0, 1]]), [[3, 3, 0], [3, 4, 0], [0, 4, 0], [0, 0, 1]]),
    # the middle column lies in both colours' boxes: it stays 0
    (G.fractal_colour, {"c": 2}, A([[1, 2], [0, 2]]), [[0, 0, 1, 2], [0, 0, 0, 2], [0, 0, 1, 2], [0, 0, 0, 2]]),
    (G.fractal_colour, {"c": 3}, A([[1, 2], [0, 2]]), None),  # no cell of the colour
    (G.colour_boxes, {}, A([[1, 2, 0], [0, 0, 0], [0, 2, 1]]), [[1, 2, 1], [1, 0, 1], [1, 2, 1]]),
    # the full row of 5 is taken for a separator, which cuts parts of two shapes: the halves are combined
    (G.combine, {"how": "v", "op": "nor"}, A([[1, 1], [0, 1], [5, 5], [0, 0]]), [[0, 0], [1, 0]]),
    (G.combine, {"how": "squares", "op": "or"}, A([[1, 0, 0, 0], [0, 0, 0, 1]]), [[1, 0], [0, 1]]),
    # the four quarters of a 3x5 grid (the middle row and column dropped): only the bottom-right one holds a 2
    (G.pick_part, {"how": "quarters", "pick": "unique"}, A([[1, 0, 5, 1, 0], [5, 5, 5, 5, 5], [1, 0, 5, 0, 2]]),
     [[0, 2]]),
    (G.combine, {"how": "quarters", "op": "and"}, A([[1, 1, 5, 0, 1], [5, 5, 5, 5, 5], [1, 1, 5, 1, 1]]), [[0, 1]]),
    (G.pick_part, {"how": "squares", "pick": "symmetric"}, A([[1, 2], [3, 4], [1, 2], [2, 1], [1, 3], [2, 4]]),
     [[1, 2], [2, 1]]),
    # the one-colour half is the mask, the other the pattern: each pattern cell becomes the mask in its colour
    (G.combine, {"how": "h", "op": "kron"}, A([[1, 0, 2, 3], [1, 1, 0, 2]]),
     [[2, 0, 3, 0], [2, 2, 3, 3], [0, 0, 2, 0], [0, 0, 2, 2]]),
    (G.combine, {"how": "h", "op": "kron"}, A([[1, 0, 2, 0], [1, 1, 0, 2]]), None),  # both halves of one colour
    (G.crop_unscale, {}, A([[0, 0, 0, 0, 0], [0, 1, 1, 2, 2], [0, 1, 1, 2, 2]]), [[1, 2]]),
    (G.crop_unscale, {}, A([[0, 1, 2]]), None),  # already at its smallest scale
    # windows around the two 5s laid on one another: where both show a colour, the first window's (1) is on top
    (G.stack_windows, {"c": 5}, A([[1, 0, 0, 0, 0, 0, 0], [0, 5, 0, 0, 0, 0, 0], [0, 0, 0, 0, 3, 0, 0],
                                   [0, 0, 0, 0, 0, 5, 0], [0, 0, 0, 0, 0, 0, 2]]), [[1, 0, 0], [0, 5, 0], [0, 0, 2]]),
    (G.stack_windows, {"c": 5}, A([[5, 0, 0], [0, 5, 0], [0, 0, 0]]), None),  # a marker on the edge
    (G.largest_bars, {}, A([[1, 0, 2, 0, 3], [1, 0, 2, 0, 0]]), [[1, 2], [1, 2]]),
    (G.colour_bars, {}, A([[3, 1, 0], [3, 3, 1], [2, 0, 0]]), [[3, 1, 2], [3, 1, 0], [3, 0, 0]]),
    # the mirror about the middle of the 1s (they agree there) fills the empty cell with the 2's image
    (G.complete_symmetry, {"group": "h"}, A([[1, 2, 0, 1]]), [[1, 2, 2, 1]]),
    (G.complete_symmetry, {"group": "v"}, A([[1, 2], [0, 0], [1, 0]]), [[1, 2], [0, 0], [1, 2]]),
    (G.complete_symmetry, {"group": "hv"}, A([[1, 0, 1], [0, 0, 0], [2, 0, 0]]), [[1, 0, 1], [0, 0, 0], [2, 0, 2]]),
    (G.complete_symmetry, {"group": "rot2"}, A([[1, 2, 0], [0, 0, 0], [0, 0, 1]]), [[1, 2, 0], [0, 0, 0], [0, 2, 1]]),
    # a quarter turn about the 2: of two centres the 1s agree with, only this one fills a cell
    (G.complete_symmetry, {"group": "rot4"}, A([[0, 1, 0], [0, 2, 1], [0, 0, 0]]), [[0, 1, 0], [1, 2, 1], [0, 1, 0]]),
    (G.complete_symmetry, {"group": "h"}, A([[1, 0, 3], [0, 0, 0], [2, 0, 0]]), None),  # no two cells agree
    (G.pick_part, {"how": "squares", "pick": "asymmetric"}, A([[1, 2], [2, 1], [1, 2], [3, 4], [5, 5], [5, 5]]),
     [[1, 2], [3, 4]]),
]


@pytest.mark.parametrize("fn, kwargs, grid, expected", CASES,
                         ids=[f"{c[0].__name__}-{'-'.join(map(str, c[1].values()))}" for c in CASES])
def test_primitive(fn, kwargs, grid, expected):
    before = grid.copy()
    got = fn(grid, **kwargs)
    np.testing.assert_array_equal(grid, before)  # pure: the input is untouched
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.dtype == np.uint8 and got is not grid
        np.testing.assert_array_equal(got, A(expected))


def test_every_primitive_has_a_case():
    primitives = {name for name, f in vars(G).items()
                  if callable(f) and hasattr(f, "__wrapped__") and not hasattr(f, "cache_info")}  # not lru caches
    assert primitives == {fn.__name__ for fn, *_ in CASES}


def test_every_family_parameter_has_a_case():
    tested = {(fn.__name__, tuple(sorted(kw.items()))) for fn, kw, *_ in CASES}
    for how in ("h", "v"):
        assert any(n == "combine" and ("how", how) in kw for n, kw in tested)
    for op in G.COMBINERS:
        assert any(n == "combine" and ("op", op) in kw for n, kw in tested)
    for pick in G.PART_PICKS:
        assert any(n == "pick_part" and ("pick", pick) in kw for n, kw in tested)
    for how in G.OBJECT_PICKS:
        assert any(n == "pick_object" and ("how", how) in kw for n, kw in tested)
    for conn in G.CONNECTIVITY:
        assert any(n == "pick_object" and ("conn", conn) in kw for n, kw in tested)
    for prop in G.PAINT_PROPS:
        assert any(n == "paint_objects" and ("prop", prop) in kw for n, kw in tested)
    for how in (*G.SYMMETRIES, "all"):
        assert any(n == "symmetrize" and ("how", how) in kw for n, kw in tested)
    for d in (*G.RAYS, *G.DIAGONAL_RAYS, "h", "v", "hv"):
        assert any(n == "rays" and ("d", d) in kw for n, kw in tested)
    for mode in G.SHOOT_MODES:
        assert any(n == "shoot" and ("mode", mode) in kw for n, kw in tested)
    for how in G.CUTS:
        assert any(n in ("combine", "pick_part") and ("how", how) in kw for n, kw in tested)


@pytest.mark.parametrize("bad", [np.zeros((0, 3), np.uint8), np.zeros(4, np.uint8), None, [[1, 2]]])
def test_odd_input_gives_none_for_every_library_primitive(bad):
    for name, fn, _ in G.library([0, 1, 2], [0, 3]):
        assert fn(bad) is None, name


def test_results_larger_than_30_are_none():
    assert G.scale_up(np.ones((11, 11), np.uint8), k=3) is None
    assert G.tile(np.ones((16, 2), np.uint8), a=2, b=1) is None


def test_library_names_are_unique_and_take_colours_from_the_task():
    names = [p.name for p in G.library([0, 3], [0, 3, 6])]
    assert len(names) == len(set(names))
    assert "keep{3}" in names and "keep{6}" not in names and "recolour{6}" in names and "keep{0}" not in names


def test_label_joins_by_key_and_connectivity():
    g = A([[1, 0, 2], [0, 1, 2]])
    assert len({int(v) for v in G.label(g != 0, g, False).ravel() if v >= 0}) == 3
    assert len({int(v) for v in G.label(g != 0, g, True).ravel() if v >= 0}) == 2
    assert len({int(v) for v in G.label(g != 0, None, True).ravel() if v >= 0}) == 1


def test_label_follows_a_long_snake():
    g = np.zeros((9, 9), np.uint8)
    g[::2, :] = 1
    g[1::4, -1] = 1
    g[3::4, 0] = 1
    assert len(G.objects(g, "c4")) == 1


def test_predicted_shapes_match_what_the_primitives_give():
    rng = np.random.default_rng(0)
    grids = [OBJS, SEP, L, rng.integers(0, 4, size=(5, 7)).astype(np.uint8)]
    for name, fn, rule in G.library([0, 1, 2, 3, 4, 5], [0, 1, 6]):
        for g in grids:
            got = fn(g)
            want = g.shape if rule == "same" else g.shape[::-1] if rule == "swap" else None
            if want is not None and got is not None:
                assert got.shape == want, name
    rules = {p.name: p.shape for p in G.library([1], [1])}
    assert rules["rot90"] == "swap" and rules["gravity_down"] == "same" and rules["tile2x2"] is None
