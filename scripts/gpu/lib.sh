# shellcheck shell=bash
# Shared by scripts/gpu-check.sh and scripts/gpu/stage-cuda-part.sh (sourced, not run).
# Runs on the GPU machine, in the repository root.

# Files that must outlive one device command on a machine kept warm between commands.
STAGE=${SLICESERVE_GPU_STAGE:-/var/tmp/sliceserve-gpu}
# shellcheck disable=SC2034 # used by the scripts that source this file
ORT_BIN=node_modules/onnxruntime-node/bin/napi-v6/linux/x64

# Moves every carried CUDA provider part (.gpu-cuda/part-NN-of-MM/data) into $STAGE/cuda-parts.
stage_cuda_parts() {
  mkdir -p "$STAGE/cuda-parts"
  local d
  for d in .gpu-cuda/part-*-of-*; do
    [ -f "$d/data" ] || continue
    mv -f "$d/data" "$STAGE/cuda-parts/$(basename "$d")"
    echo "staged $(basename "$d") ($(du -h "$STAGE/cuda-parts/$(basename "$d")" | cut -f1))"
  done
}

# Prints "have N of M" for the staged parts, and the missing part names, one line.
cuda_parts_status() {
  local first total have=0 missing="" i name
  first=$(find "$STAGE/cuda-parts" -maxdepth 1 -name 'part-*-of-*' -printf '%f\n' 2>/dev/null | sort | head -1)
  if [ -z "$first" ]; then echo "no CUDA provider parts staged"; return 1; fi
  total=${first##*-of-}
  for i in $(seq 1 "$((10#$total))"); do
    name=$(printf 'part-%02d-of-%s' "$i" "$total")
    if [ -f "$STAGE/cuda-parts/$name" ]; then have=$((have + 1)); else missing="$missing $name"; fi
  done
  if [ -n "$missing" ]; then echo "CUDA provider parts: have $have of $((10#$total)); missing:$missing"; return 1; fi
  echo "CUDA provider parts: all $((10#$total)) staged"
}

# Reassembles the staged parts into $STAGE/ort-cuda and checks the checksums from pack.sh.
assemble_cuda_parts() {
  cuda_parts_status >/dev/null || return 1
  mkdir -p "$STAGE/ort-cuda"
  if [ -f .gpu-carry/cuda-parts.sha256 ]; then
    local want got
    want=$(cut -d' ' -f1 .gpu-carry/cuda-parts.sha256)
    got=$(cat "$STAGE"/cuda-parts/part-* | sha256sum | cut -d' ' -f1)
    if [ "$want" != "$got" ]; then echo "CUDA provider parts: checksum mismatch (parts from different pack.sh runs?)"; return 1; fi
  fi
  cat "$STAGE"/cuda-parts/part-* | xz -T0 -dc | tar -x --no-same-owner -C "$STAGE/ort-cuda" || return 1
  if [ -f .gpu-carry/cuda-provider.sha256 ]; then
    (cd "$STAGE/ort-cuda" && sha256sum -c --quiet "$OLDPWD/.gpu-carry/cuda-provider.sha256") || return 1
  fi
  echo "CUDA provider assembled in $STAGE/ort-cuda"
}
