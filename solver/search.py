"""Program search: breadth-first enumeration of compositions of grid primitives that reproduce every demo output.

Owns the enumeration, the learned final colour map and overlay (the program's grid laid on the input, or the input
on it: OVERLAYS), the finishing steps tried on the nodes it stores (a local rule, a
cell rule or a rule list: solver.local_rules; on the input alone, a whole-grid table; a sizer to the deduced output
shape: solver.shapes), the assembly of the parts it met (solver.assemble), the ranking of fitting programs (plausible
shape and colours, the demos' invariants, then the simplest) and the search's views of a task (as given, transposed,
colours normalised per pair). Programs that give the same grids on every demo input and every test input are one node.
Work whose programs are known is not done: the transposed view skips the programs whose every step has a counterpart
under transposition (solver.transposition) once the view as given has finished (so its assembly meets fewer parts),
and a last step that a node's first demo grid rejected is not run on another node of that grid.
Bounded by a deadline (time.monotonic()) checked inside the loop and by a cap on the bytes of the nodes it holds; it
returns what it found when either stops it. Knows the primitives only by name and function (solver.grids,
solver.pieces); knows nothing of models, submissions or scores.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from solver.augment import DIHEDRAL_INVERSE, DIHEDRAL_NAMES, dihedral
from solver.assemble import BASES, assemble, part_table
from solver.grids import Prim, Primitive, learn_colour_map, library
from solver.invariants import broken, invariants
from solver.local_rules import feature_rule, grid_table, layer_rule, local_rule, rule_list
from solver.pieces import piece_library
from solver.shapes import SIZERS, ShapeDeduction, deduce, deduce_from, to_shape
from solver.tasks import MAX_SIDE, Grid, Task, grid_key
from solver.transposition import counterparts

STOP_ORDER = ("done", "deadline", "memory")  # a result's `stopped` is the worst of its views'


@dataclass(frozen=True)
class Program:
    """A program that reproduces every demo output, and its output per test input (None where it does not apply)."""
    text: str  # e.g. "crop_bbox | rot90 | colour_map{1:2}"; an augmentation is named first: "transposed: ..."
    depth: int  # primitives composed (the colour map not counted)
    size: int  # steps in the text: primitives, the colour map, the augmentation
    outputs: tuple  # one Grid (or None) per test input, in the task's own frame
    learned: bool = False  # it holds a table learned from the demos (a local or cell rule, a rule list, an assembly)


# family -> the text its steps show in a program (for reports: bench search names the tasks each family alone solves)
FAMILIES = {"sizing": "to_shape{", "local rules": "local_rule{", "cell rules": "cell_rule{", "rule lists": "rule_list{",
            "grid tables": "grid_table{", "layers": "layers{", "assembly": "assemble{",
            "pieces in place": "each_", "piece picks": "piece_", "objects": "object_", "colour map": "colour_map{",
            "overlay": "_input", "transposed view": "transposed: ", "colour view": "colours: ",
            "shots": "shoot_", "rays": "rays_", "falls": "fall_", "slides": "slide_to_", "stamps": "stamp"}


def families(text: str) -> list[str]:
    """The families of steps a program's text shows (FAMILIES), or ["grids"] when it shows none of them."""
    return [name for name, mark in FAMILIES.items() if mark in text] or ["grids"]


@dataclass
class SearchResult:
    """Fitting programs, best first, and what the search did."""
    programs: list[Program] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


@dataclass
class SearchView:
    """The task as one search sees it, and how to map its test outputs back to the task's own frame."""
    name: str  # "" for the task as given
    inputs: list[Grid]  # demo inputs, then test inputs
    outputs: list[Grid]  # demo outputs
    back: object  # back(test_index, grid) -> grid in the task's frame


def _digest(values) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for g in values:
        h.update(b"N" if g is None else grid_key(g))
    return h.digest()


def colour_map_text(table: np.ndarray, produced: list[Grid]) -> str:
    """' | colour_map{a:b,...}' for the colours the table changes among those produced; '' when it changes none."""
    seen = np.unique(np.concatenate([p.ravel() for p in produced]))
    pairs = [f"{c}:{table[c]}" for c in seen.tolist() if table[c] != c]
    return f" | colour_map{{{','.join(pairs)}}}" if pairs else ""


# how a program's grid meets its input at the end: not at all, laid on it, or under it (see _Search._finish)
OVERLAYS = ("", "over", "under")
MAX_PARTS = 4000  # stored nodes kept as parts for the assembly (counted in the stats beyond it)
# parts an assembly may overlay: on the 343 ARC-AGI-1 training tasks not held out, every two-part assembly found was
# right, and of the three- and four-part ones one in three (the others fit the demos by piling up specific parts)
ASSEMBLY_PARTS = 2


@dataclass
class _Hit:
    """A fitting program found by one view's search, before it is mapped back to the task's frame."""
    names: tuple  # the steps, each a primitive (or a local rule, or one whole assembly)
    finish: str  # the text of the overlay and colour map after the steps
    tests: tuple  # the test outputs in the view's frame
    votes: int  # programs found that give the same test outputs
    weak: bool  # a colour map that memorises one demo's colours
    depth: int  # steps counted for the ranking (an assembly counts its parts' steps; sizing a node counts 2)
    learned: bool = False  # a table learned from the demos (a local or cell rule, a rule list, an assembly's tables)

    @property
    def order(self) -> tuple:
        """Of two programs giving the same test outputs, the one kept: as `rank_key` orders them."""
        return self.weak, self.learned, self.depth, self.finish.count("|"), self.names


class _Search:
    """One breadth-first search over one view: the frontier of distinct nodes, the candidates found, the counters."""

    def __init__(self, view: SearchView, prims: list[Prim], deadline: float,
                 max_bytes: int, mirrored: frozenset[str] = frozenset()):
        self.view, self.prims, self.deadline, self.max_bytes = view, prims, deadline, max_bytes
        # steps whose programs the view as given has tried (the transposed view's, solver.transposition): a last
        # step is not run after steps all of them
        self.mirrored = mirrored
        self.failed_first: dict[bytes, set[int]] = {}  # first demo grid -> indices of last steps it rejects
        self.skipped_transposed = 0  # last steps not run: the view as given tried them
        self.known_failures = 0  # last steps not run: their first demo grid rejects them
        self.num_demos = len(view.outputs)
        self.found: dict[bytes, _Hit] = {}  # test-outputs digest -> the best program giving them
        self.parts: list[tuple[tuple, list[Grid], list[Grid | None]]] = []  # stored nodes of the outputs' shapes
        self.parts_dropped = 0
        self.same_shape = all(i.shape == o.shape for i, o in zip(view.inputs, view.outputs))
        self.overlays = OVERLAYS if all(_keeps_colours(i, o) for i, o in zip(view.inputs, view.outputs)) else \
            tuple(o for o in OVERLAYS if o != "under")
        self.test_shapes = deduce_from(view.inputs[:self.num_demos], view.outputs,
                                       view.inputs[self.num_demos:]).shapes
        self.seen: set[bytes] = set()
        self.bytes = 0
        self.evaluated = 0
        self.stopped = "done"
        self.depth_reached = 0

    def run(self, depth: int) -> None:
        """Enumerate compositions up to `depth` primitives; stops early at the deadline or the memory cap."""
        root = tuple(self.view.inputs)
        self.seen.add(_digest(root))
        self._consider((), root)
        table = grid_table(list(root[:self.num_demos]), self.view.outputs, list(root[self.num_demos:]))
        if table is not None:
            self._record((f"grid_table{{{table[0]}}}",), "", tuple(table[1]), 1, False, True)
        layers = layer_rule(list(root[:self.num_demos]), self.view.outputs, list(root[self.num_demos:]))
        if layers is not None:
            self._record((f"layers{{{layers[0]}}}",), "", tuple(layers[1]), 1, False, True)
        frontier = [((), root)]
        for d in range(1, depth + 1):
            last = d == depth
            frontier = self._level(frontier, last)
            if self.stopped != "done":
                return
            if d == 1 and not last:
                frontier += self._sized_roots()
            self.depth_reached = d

    def _sized_roots(self) -> list:
        """The inputs brought to the outputs' shapes by each sizer (the test inputs to the deduced shapes), as nodes
        one step deep that the next level transforms further; none where the outputs have the inputs' shapes or a
        test shape is unknown."""
        n = self.num_demos
        if self.same_shape or any(s is None for s in self.test_shapes):
            return []
        out = []
        for how in SIZERS:
            values = tuple(to_shape(g, w.shape, how) for g, w in zip(self.view.inputs[:n], self.view.outputs))
            values += tuple(to_shape(g, s, how) for g, s in zip(self.view.inputs[n:], self.test_shapes))
            key = _digest(values)
            if any(v is None for v in values[:n]) or key in self.seen:
                continue
            self.seen.add(key)
            self.bytes += sum(g.nbytes for g in values if g is not None) + 64 + 16 * len(values)
            out.append(((f"to_shape{{{how}}}",), values))
            self._consider(out[-1][0], values)
        return out

    def _level(self, frontier: list, last: bool) -> list:
        nxt = []
        for names, values in frontier:
            # last steps that nodes of the same first demo grid showed to fail on that grid alone (see _try_final)
            failed = self.failed_first.setdefault(grid_key(values[0]), set()) if last else set()
            mirrored = self.mirrored if last and self.mirrored.issuperset(names) else frozenset()
            for k, (pname, fn, rule) in enumerate(self.prims):
                if time.monotonic() > self.deadline:
                    self.stopped = "deadline"
                    return nxt
                if k in failed:
                    self.known_failures += 1
                    continue
                if pname in mirrored:
                    self.skipped_transposed += 1
                    continue
                self.evaluated += 1
                if last:
                    if self._try_final(names + (pname,), fn, rule, values):
                        failed.add(k)
                    continue
                new = self._apply(fn, values)
                if new is None:
                    continue
                key = _digest(new)
                if key in self.seen:
                    continue
                self.seen.add(key)
                self.bytes += sum(g.nbytes for g in new if g is not None) + 64 + 16 * len(new)
                if self.bytes > self.max_bytes:
                    self.stopped = "memory"
                    return nxt
                nxt.append((names + (pname,), new))
                self._consider(names + (pname,), new)
        return nxt

    def _apply(self, fn: Primitive, values: tuple) -> tuple | None:
        """fn on every grid of a node; None when a demo grid gives None (a test grid may give None)."""
        out = []
        for i, g in enumerate(values):
            r = None if g is None else fn(g)
            if r is None and i < self.num_demos:
                return None
            out.append(r)
        return tuple(out)

    def _try_final(self, names: tuple, fn: Primitive, rule: str | None, values: tuple) -> bool:
        """fn as the last step: rejected at the first demo whose output shape or colours cannot fit (before running
        fn when its declared shape rule already says the first demo's shape is wrong). True when the first demo's
        grid alone rejected it (as a program and as a part for the assembly): so would any node of that grid."""
        shape = values[0].shape if rule == "same" else values[0].shape[::-1] if rule == "swap" else None
        if shape is not None and shape != self.view.outputs[0].shape:
            return True
        produced, overlays = [], self.overlays
        for i, (g, want) in enumerate(zip(values, self.view.outputs)):
            r = fn(g)
            if r is None or r.shape != want.shape:
                return i == 0
            if r.shape != self.view.inputs[i].shape:
                overlays = tuple(o for o in overlays if not o)
            overlays = tuple(o for o in overlays if self._fits(self._finish(r, i, o), want))
            produced.append(r)
            if not overlays:
                if rule == "same" and self.same_shape:
                    return self._try_part(names, fn, values, produced) and i == 0
                return i == 0
        tests = tuple(None if g is None else fn(g) for g in values[self.num_demos:])
        for over in overlays:
            self._accept(names, produced, tests, over)
        return False

    def _try_part(self, names: tuple, fn: Primitive, values: tuple, produced: list[Grid]) -> bool:
        """Keep a last step that fits no demo whole as a part for the assembly when a colour table makes it right on
        every cell it changes (checked on the demos already run first, then on the rest). True when the demos
        already run rejected it."""
        if len(self.parts) >= MAX_PARTS:
            self.parts_dropped += 1
            return False
        inputs, outputs = self.view.inputs[:self.num_demos], self.view.outputs
        k = len(produced)
        if part_table(produced, inputs[:k], outputs[:k]) is None:
            return True
        for g, want in zip(values[k:self.num_demos], outputs[k:]):
            r = fn(g)
            if r is None or r.shape != want.shape:
                return False
            produced.append(r)
        if part_table(produced, inputs, outputs) is None:
            return False
        self.parts.append((names, produced, [None if g is None else fn(g) for g in values[self.num_demos:]]))
        return False

    @staticmethod
    def _fits(r: Grid | None, want: Grid) -> bool:
        return r is not None and learn_colour_map([r], [want]) is not None

    def _finish(self, r: Grid | None, i: int, over: str) -> Grid | None:
        """r, or ('over') r laid on the view's input i (its zero cells show the input), or ('under') the input laid
        on r (the input's zero cells show r); None when shapes differ."""
        if not over or r is None:
            return r
        base = self.view.inputs[i]
        if r.shape != base.shape:
            return None
        return np.where(r != 0, r, base) if over == "over" else np.where(base != 0, base, r)

    def _consider(self, names: tuple, values: tuple) -> None:
        """Record a stored node as a candidate when its demo grids fit the demo outputs, else sized to them; keep it as
        a part for the assembly, and try a local rule, a cell rule and a rule list on it (the input and the nodes of
        one primitive)."""
        produced = list(values[:self.num_demos])
        if not all(p.shape == w.shape for p, w in zip(produced, self.view.outputs)):
            self._try_sized(names, values)
            return
        for over in self.overlays:
            self._accept(names, produced, values[self.num_demos:], over)
        if len(self.parts) < MAX_PARTS:
            self.parts.append((names, produced, list(values[self.num_demos:])))
        else:
            self.parts_dropped += 1
        tests = list(values[self.num_demos:])
        if len(names) > 1 or any(t is None for t in tests):
            return
        rules = (("local_rule", local_rule(produced, self.view.outputs, tests)),  # after one primitive, one feature
                 ("cell_rule", feature_rule(produced, self.view.outputs, tests, max_features=2 - len(names))),
                 ("rule_list", rule_list(produced, self.view.outputs, tests)))
        for kind, rule in rules:
            if rule is not None:
                self._record(names + (f"{kind}{{{rule[0]}}}",), "", tuple(rule[1]), len(names) + 1, False, True)

    def _try_sized(self, names: tuple, values: tuple) -> None:
        """A stored node brought to the outputs' shapes by each sizer (solver.shapes.SIZERS), its test grids to the
        deduced test shapes; kept when the demos then fit under a colour map."""
        if any(t is None for t in values[self.num_demos:]) or any(s is None for s in self.test_shapes):
            return
        for how in SIZERS:
            produced = [to_shape(g, w.shape, how) for g, w in zip(values, self.view.outputs)]
            if any(p is None for p in produced):
                continue
            tests = tuple(to_shape(g, s, how) for g, s in zip(values[self.num_demos:], self.test_shapes))
            if any(t is None for t in tests):
                continue
            table = learn_colour_map(produced, self.view.outputs)
            if table is not None:
                self._record(names + (f"to_shape{{{how}}}",), colour_map_text(table, produced),
                             tuple(table[t] for t in tests), len(names) + 1 + bool(names), _weak(table, produced))

    def assemble(self) -> None:
        """Answers overlaid from several stored parts (solver.assemble), over the input and over a blank grid."""
        tests = self.view.inputs[self.num_demos:]
        pairs = [(demo, test) for _, demo, test in self.parts]
        inputs = self.view.inputs[:self.num_demos]
        for base in BASES:
            if time.monotonic() > self.deadline:
                self.stopped = "deadline"
                return
            got = assemble(pairs, inputs, self.view.outputs, tests, base, max_parts=ASSEMBLY_PARTS)
            if got is None:
                continue
            chosen, outs = got
            texts = [" | ".join(self.parts[k][0]) or "identity" for k in chosen]
            depth = sum(max(1, len(self.parts[k][0])) for k in chosen)
            text = f"assemble{{{base}: {' ; '.join(texts)}}}"
            self._record((text,), "", tuple(outs), depth, False, True)

    def _accept(self, names: tuple, produced: list[Grid], tests: tuple, over: str) -> None:
        """Record a program whose demo grids (laid on or under the inputs, see `_finish`) fit the outputs under a
        colour map."""
        produced = [self._finish(r, i, over) for i, r in enumerate(produced)]
        if any(r is None for r in produced):
            return
        table = learn_colour_map(produced, self.view.outputs)
        if table is None:
            return
        tests = tuple(None if g is None else table[g]
                      for g in (self._finish(t, self.num_demos + j, over) for j, t in enumerate(tests)))
        finish = (f" | {over}_input" if over else "") + colour_map_text(table, produced)
        self._record(names, finish, tests, len(names), _weak(table, produced))

    def _record(self, names: tuple, finish: str, tests: tuple, depth: int, weak: bool, learned: bool = False) -> None:
        """Keep a fitting program under its test outputs: the best one giving them (`_Hit.order`), with a vote per
        program."""
        key = _digest(tests)
        old = self.found.get(key)
        new = _Hit(names, finish, tests, 1 if old is None else old.votes + 1, weak, depth, learned)
        if old is None or new.order < old.order:
            self.found[key] = new
        else:
            old.votes = new.votes


def _keeps_colours(i: Grid, o: Grid) -> bool:
    """Whether a demo leaves room for the input laid on a program's grid: the output has the input's shape and each
    input colour's cells one colour there (else no colour map of a grid under the input fits)."""
    if i.shape != o.shape:
        return False
    return all(np.unique(o[i == c]).size == 1 for c in np.unique(i) if c)


def _weak(table: np.ndarray, produced: list[Grid]) -> bool:
    """Whether a colour map changes a colour that only one demo shows (where there are several demos)."""
    changed = np.flatnonzero(table != np.arange(10))
    return len(produced) >= 2 and any(sum(bool((r == c).any()) for r in produced) < 2 for c in changed)


TRANSPOSE = DIHEDRAL_NAMES.index("transpose")


def _transposed(task: Task) -> SearchView:
    """The task transposed (solver.augment's dihedral transform); answers are transposed back."""
    t = lambda g: dihedral(g, TRANSPOSE)
    back = DIHEDRAL_INVERSE[TRANSPOSE]
    return SearchView("transposed", [t(g) for g, _ in task.train] + [t(g) for g in task.test_inputs],
                [t(o) for _, o in task.train], lambda i, g: dihedral(g, back))


def _permutation(g: Grid, fixed: set[int]) -> np.ndarray:
    """A colour permutation for one pair: the fixed colours stay, the others take the free slots in order (the
    lowest first), the input's colours by falling frequency (ties by colour), then the rest; so the input's most
    frequent colour becomes the background 0 unless 0 is fixed."""
    counts = np.bincount(g.ravel(), minlength=10)
    free = [c for c in range(10) if c not in fixed]
    movable = sorted(free, key=lambda c: (-counts[c], c))
    perm = np.arange(10, dtype=np.uint8)
    perm[movable] = free
    return perm


def _normalised(task: Task) -> SearchView | None:
    """Each pair's colours relabelled by their frequency in its input (colours that only outputs bring stay); None
    when that changes nothing."""
    fixed = {int(c) for _, o in task.train for c in np.unique(o)} - {int(c) for i, _ in task.train for c in np.unique(i)}
    demo_perms = [_permutation(i, fixed) for i, _ in task.train]
    test_perms = [_permutation(g, fixed) for g in task.test_inputs]
    if all((p == np.arange(10)).all() for p in demo_perms + test_perms):
        return None
    inverse = [np.argsort(p).astype(np.uint8) for p in test_perms]
    return SearchView("colours", [p[i] for p, (i, _) in zip(demo_perms, task.train)] +
                [p[g] for p, g in zip(test_perms, task.test_inputs)],
                [p[o] for p, (_, o) in zip(demo_perms, task.train)], lambda i, g: inverse[i][g])


def views(task: Task) -> list[SearchView]:
    """The task as given, transposed, and with colours normalised (where that differs)."""
    plain = SearchView("", [i for i, _ in task.train] + list(task.test_inputs), [o for _, o in task.train],
                 lambda i, g: g)
    return [v for v in (plain, _transposed(task), _normalised(task)) if v is not None]


def plausible(task: Task, outputs: tuple, shapes: ShapeDeduction | None = None) -> bool:
    """Whether a program's test outputs could be answers: present, at most 30x30, of colours that the demo outputs or
    the test input show, and of the shape the demos imply (solver.shapes: the simplest rules', where one applies).
    `shapes` is the task's deduction when the caller has it."""
    shapes = deduce(task) if shapes is None else shapes
    known = np.zeros(10, dtype=bool)
    for _, o in task.train:
        known[o.ravel()] = True
    for g, test_in, shape in zip(outputs, task.test_inputs, shapes.shapes):
        if g is None or g.size == 0 or g.shape[0] > MAX_SIDE or g.shape[1] > MAX_SIDE:
            return False
        seen = known.copy()
        seen[test_in.ravel()] = True
        if not seen[g.ravel()].all():
            return False
        if shape is not None and g.shape != shape:
            return False
    return True


def rank_key(task: Task, p: Program, votes: int = 1, weak: bool = False, shapes: ShapeDeduction | None = None,
             found: dict | None = None) -> tuple:
    """Plausible first, then answers that keep every invariant of the demos (solver.invariants; `found` is the
    task's, computed here when not given), then a colour map seen in several demos before a `weak` one (one that
    memorises each demo's colours), then programs of primitives alone before those with a table learned from the
    demos (a local or cell rule, a rule list, an assembly's parts), then fewer primitives, then a shorter program,
    then more programs giving the same test outputs (`votes`), then by text (all demos fit by definition)."""
    found = invariants(task) if found is None else found
    breaks = any(g is not None and broken(found, x, g) for g, x in zip(p.outputs, task.test_inputs))
    return (not plausible(task, p.outputs, shapes), breaks, weak, p.learned, p.depth, p.size, -votes, p.text)


def _programs(search: _Search, view: SearchView) -> list[tuple[Program, int, bool]]:
    """The view's fitting programs in the task's frame, each with its votes and whether its colour map is weak."""
    out = []
    prefix = f"{view.name}: " if view.name else ""
    for hit in search.found.values():
        text = prefix + (" | ".join(hit.names) or "identity") + hit.finish
        outputs = tuple(None if g is None else view.back(i, g) for i, g in enumerate(hit.tests))
        size = hit.depth + hit.finish.count("|") + bool(prefix)
        out.append((Program(text, hit.depth, size, outputs, hit.learned), hit.votes, hit.weak))
    return out


def search_library(view: SearchView) -> list[Prim]:
    """The named primitives for one view, each with its declared shape rule: solver.grids' library, then the
    pieces'."""
    return library(_colours(view.inputs), _colours(view.outputs)) + piece_library()


def _colours(grids: list[Grid]) -> list[int]:
    return sorted({int(c) for g in grids for c in np.unique(g)})


def search_task(task: Task, deadline: float, depth: int = 2, max_memory_mb: int = 2048,
                prims: list[Prim] | None = None) -> SearchResult:
    """Fitting programs for a task, best first (see `rank_key`), from every view; stops at `deadline`
    (time.monotonic()) or when the nodes of one view would pass `max_memory_mb`. `prims` replaces the library."""
    start = time.monotonic()
    stats = {"evaluated": 0, "nodes": 0, "seconds": 0.0, "stopped": "done", "depth_reached": 0, "views": 0}
    if not task.valid:
        return SearchResult([], stats)
    found: list[tuple[Program, int, bool]] = []
    all_views = views(task)
    reached, plain_done = [], False
    for k, view in enumerate(all_views):
        now = time.monotonic()
        lib = prims if prims is not None else search_library(view)
        mirrored = counterparts(p.name for p in lib) if view.name == "transposed" and plain_done else frozenset()
        s = _Search(view, lib, now + max(0.0, deadline - now) / (len(all_views) - k), max_memory_mb * 2 ** 20,
                    mirrored)
        s.run(depth)
        s.assemble()
        plain_done = plain_done or (view.name == "" and s.stopped == "done")
        stats["parts_dropped"] = stats.get("parts_dropped", 0) + s.parts_dropped
        stats["skipped_transposed"] = stats.get("skipped_transposed", 0) + s.skipped_transposed
        stats["known_failures"] = stats.get("known_failures", 0) + s.known_failures
        found += _programs(s, view)
        stats["evaluated"] += s.evaluated
        stats["nodes"] += len(s.seen)
        stats["views"] += 1
        reached.append(s.depth_reached)
        if STOP_ORDER.index(s.stopped) > STOP_ORDER.index(stats["stopped"]):
            stats["stopped"] = s.stopped
    stats["depth_reached"] = min(reached)
    stats["seconds"] = time.monotonic() - start
    shapes, kept = deduce(task), invariants(task)
    found.sort(key=lambda pvw: rank_key(task, *pvw, shapes=shapes, found=kept))
    return SearchResult([p for p, _, _ in found], stats)


def answers(result: SearchResult, test_index: int) -> list[tuple[Grid, Program]]:
    """Distinct grids for one test input, best first, each with the best program that gives it."""
    out, seen = [], set()
    for p in result.programs:
        g = p.outputs[test_index] if test_index < len(p.outputs) else None
        if g is None:
            continue
        key = grid_key(g)
        if key not in seen:
            seen.add(key)
            out.append((g, p))
    return out
