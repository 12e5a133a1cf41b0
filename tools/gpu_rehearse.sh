#!/usr/bin/env bash
# The GPU window rehearsed on the CPU: the one call of tools/gpu_pack.sh, run as the device would run it.
#   1. packs (tools/gpu_pack.sh, one call) and copies what the call would carry, and nothing else, into a fresh folder:
#      the tree (tracked and untracked-not-ignored files) and .gpu/; their size is printed and checked (<= 64 MiB)
#   2. a venv of Python 3.12 with the GPU image's versions (torch 2.11.0, transformers 5.17.0, tokenizers 0.23.2,
#      accelerate 1.15.0, numpy 2.5.2, safetensors 0.8.0, huggingface-hub 1.33.0; none of requirements.txt's pins;
#      peft comes from the pack's wheel as on the device); PyPI serves torch 2.11.0 only as its CUDA 13 build (the
#      image's own build), which runs here on the CPU. Built once in $GPU_REHEARSE_VENV (default
#      /tmp/gpu-rehearse-venv), again with --fresh-venv
#   3. the pack's printed command line, unchanged, in that folder: $OUT, $GPU_STAGE and $ARC_SESSION_SCALE (the factor
#      on every time limit, default 0.6) set, the venv first on PATH, no network (`unshare -n`; where it is refused,
#      HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 alone, said so), under `timeout` of the call's timeout_s x factor
#   4. what came back under $OUT, checked against what a call brings back (at most 8 files, 16 MiB each, 2 folders
#      down), each step's result, and whether the export loads with --model DIR in the venv; the wall time
#   tools/gpu_rehearse.sh [--fresh-venv] [BUDGET_LEFT_S]         (default 900: a fresh 15-minute lease)
# $GPU_REHEARSE_PYTHON: run with this interpreter instead of the venv (the test's small form); $GPU_REHEARSE_DIR: the
# folder (default: a new one under /tmp); GPU_PACK_* pass through to the pack. Exit status 1 when a check fails.
set -uo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
fresh=""
if [ "${1:-}" = "--fresh-venv" ]; then fresh=1; shift; fi
budget_left=${1:-900}
scale=${ARC_SESSION_SCALE:-0.6}
work=${GPU_REHEARSE_DIR:-$(mktemp -d /tmp/gpu-rehearse-XXXXXX)}
venv=${GPU_REHEARSE_VENV:-/tmp/gpu-rehearse-venv}
t0=$(date +%s)
fail=0
say() { echo "rehearse: $*"; }

# 1. the pack, and the folder the call would carry
packed=$(GPU_PACK_DIR=$work/pack bash tools/gpu_pack.sh "" "$budget_left")
rc=$?
echo "$packed"
[ "$rc" = 0 ] || { say "error: the pack failed (exit $rc)"; exit 1; }
line=$(grep '^the call (timeout_s ' <<<"$packed")
timeout_s=$(sed -E 's/^the call \(timeout_s ([0-9]+).*/\1/' <<<"$line")
cmd=${line#*: }
repo=$work/repo
rm -rf "$repo" && mkdir -p "$repo"
{ git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -I{} cp --parents -P "{}" "$repo/" 2>/dev/null
cp -r "$work/pack/.gpu" "$repo/.gpu"
carried=$(du -sb "$repo" | cut -f1)
say "the carried folder $repo: $(echo "scale=2; $carried / 1048576" | bc) MiB of 64 (tree and .gpu/)"
[ "$carried" -le $((64 * 1024 * 1024)) ] || { say "error: more than 64 MiB would travel"; fail=1; }

# 2. the interpreter: the venv of the image's versions
if [ -n "${GPU_REHEARSE_PYTHON:-}" ]; then
  bin=$(dirname "$(command -v "$GPU_REHEARSE_PYTHON")")
  say "interpreter: $GPU_REHEARSE_PYTHON (not the image's versions: the small form)"
else
  [ -z "$fresh" ] || rm -rf "$venv"
  if [ ! -f "$venv/.ready" ]; then
    py312=$(command -v python3.12 || ls ~/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)
    [ -n "$py312" ] || { say "error: no Python 3.12 here (apt-get install python3.12, or pyenv install 3.12)"; exit 1; }
    rm -rf "$venv" && "$py312" -m venv "$venv" || exit 1
    "$venv/bin/python" -m pip install -q torch==2.11.0 transformers==5.17.0 tokenizers==0.23.2 accelerate==1.15.0 \
      numpy==2.5.2 safetensors==0.8.0 huggingface-hub==1.33.0 pandas matplotlib tqdm \
      || { say "error: the venv's packages did not install"; exit 1; }
    touch "$venv/.ready"
  fi
  bin=$venv/bin
fi
say "versions: $("$bin/python3" -c "import sys, torch, transformers, tokenizers, accelerate, numpy, safetensors; \
print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, \
'tokenizers', tokenizers.__version__, 'accelerate', accelerate.__version__, 'numpy', numpy.__version__, \
'safetensors', safetensors.__version__)")"

# 3. the call's command line, as printed, with no network
out=$work/OUT
rm -rf "$out" "$work/g" && mkdir -p "$out"
limit=$(python3 -c "print(int($timeout_s * $scale))")
isolate="unshare -n"
$isolate true 2>/dev/null || { isolate=""; say "unshare -n refused here: no network namespace, hubs off by env only"; }
say "the call: timeout_s $timeout_s x $scale = $limit s, network ${isolate:-on (hubs off by env)}: $cmd"
c0=$(date +%s)
(cd "$repo" && env -u PYTHONPATH PATH="$bin:$PATH" OUT="$out" GPU_STAGE="$work/g" ARC_SESSION_SCALE="$scale" \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 timeout -k 5 "$limit" $isolate bash -c "$cmd") > "$work/call.log" 2>&1
rc=$?
say "the call ended: exit $rc in $(( $(date +%s) - c0 )) s$([ "$rc" = 124 ] && echo ' (cut at its timeout)'); log $work/call.log"

# 4. what came back
find "$out" -type f -printf '%P %s\n' | sort | sed 's/^/rehearse: came back: /'
n=$(find "$out" -type f | wc -l)
[ "$n" -le 8 ] || { say "error: $n files under \$OUT: a call brings back 8"; fail=1; }
[ -z "$(find "$out" -type f -size +16M)" ] || { say "error: a file over 16 MiB would not come back"; fail=1; }
[ -z "$(find "$out" -mindepth 3 -type f)" ] || { say "error: a file more than 2 folders down would not come back"; fail=1; }
"$bin/python3" - "$out" <<'EOF' || fail=1
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
d = json.loads((out / "session.json").read_text())
print(f"rehearse: session.json: figures from the {d['figures_from'].upper()}, scale {d['time_scale']}, "
      f"model {d['model']}, preset {d['preset']}, versions {d['versions']}")
for name, step in d["steps"].items():
    print(f"rehearse: step {name}: {'ok' if step.get('ok') else 'FAILED'} (rc {step.get('rc')}, "
          f"{step.get('seconds', '-')} s) {json.dumps(step.get('figures'))[:300]}")
state = (d["steps"].get("pretrain") or {}).get("state")
print(f"rehearse: pretraining state: {state}")
EOF
if [ -f "$out/model/arc_adapter.json" ] || [ -f "$out/model/config.json" ]; then
  (cd "$repo" && env -u PYTHONPATH PATH="$bin:$PATH" PYTHONPATH="$work/g/py:$repo" ARC_SOLVER_CACHE="$work/g/cache" \
    ARC_SOLVER_SMOLLM2_TRIMMED="$repo/.gpu/smollm2" $isolate python3 -c "import sys; from solver.model import \
load_model, num_params; m = load_model(sys.argv[1]); print('rehearse: --model', sys.argv[1], 'loads:', \
num_params(m.model), 'parameters')" "$out/model") || { say "error: the export does not load"; fail=1; }
else
  say "no export came back under \$OUT/model"
  fail=1
fi
say "wall time $(( $(date +%s) - t0 )) s (CPU figures: none of them is a GPU's)"
exit $fail
