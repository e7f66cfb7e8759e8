#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh needs on a GPU machine that has no network and receives
# at most 64 MiB of files beside the repository per command (docs/gpu.md).
#
#   bash scripts/gpu/pack.sh            # .gpu-carry/: Node, dist/, production node_modules,
#                                       #   the LAPACK addon, Debian .debs (Vulkan loader, OpenBLAS)
#   bash scripts/gpu/pack.sh --cuda     # also .gpu-cuda/part-NN-of-MM: onnxruntime's CUDA 13
#                                       #   provider, xz-compressed and split to fit the limit
#
# Run on a developer machine (x86-64 Debian/Ubuntu) with the npm registry and Debian mirrors
# reachable. Both folders are excluded from git through .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CARRY=.gpu-carry
CUDA_DIR=.gpu-cuda
CACHE=.cache/gpu
# The npm package that ships onnxruntime 1.29.0's CUDA 13 provider build (matches
# onnxruntime-node 1.29.0's libonnxruntime.so.1); see docs/gpu.md.
CUDA_PKG=com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
# Largest part; the repository itself (~5 MiB) travels with every command too.
PART_BYTES=$((54 * 1024 * 1024))
LIMIT_BYTES=$((64 * 1024 * 1024))

want_cuda=0
for arg in "$@"; do
  case "$arg" in
    --cuda) want_cuda=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "pack.sh: unknown option $arg (use --cuda or --help)" >&2; exit 2 ;;
  esac
done

[ "$(uname -m)" = x86_64 ] || { echo "pack.sh: run on x86-64 (the GPU machine is x86-64)" >&2; exit 1; }
for p in "/$CARRY/" "/$CUDA_DIR/"; do
  grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude
done

echo "== build (tsc)"
npx --no-install tsc -p tsconfig.json || echo "pack.sh: tsc reported errors (files emitted anyway); check them" >&2
[ -f dist/cli/main.js ] || { echo "pack.sh: dist/cli/main.js missing after tsc" >&2; exit 1; }

rm -rf "$CARRY"
mkdir -p "$CARRY/debs" "$CACHE"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

echo "== Node $(node --version) binary"
mkdir -p "$stage/.gpu-node/bin"
cp "$(command -v node)" "$stage/.gpu-node/bin/node"

echo "== production node_modules (linux-x64 onnxruntime binaries only)"
npm ls --omit=dev --all --parseable 2>/dev/null | sed "s|^$ROOT/||" \
  | grep -E '^node_modules/(@[^/]+/)?[^/]+$' | sort -u > "$stage/modules.txt"
tar -cf "$stage/app.tar" \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/darwin' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/win32' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/linux/arm64' \
  --exclude='libonnxruntime_providers_*' \
  --exclude='*.map' \
  -T "$stage/modules.txt" dist
addon=native/lapack/build/Release/sliceserve_lapack.node
if [ ! -f "$addon" ] && [ -f native/build-lapack.js ]; then node native/build-lapack.js --optional || true; fi
if [ -f "$addon" ]; then
  tar -rf "$stage/app.tar" "$addon"
  echo "   + $addon"
else
  echo "   (no LAPACK addon: slicing the ~1B model on the GPU machine will use the slow JS eigensolver)"
fi
tar -C "$stage" -rf "$stage/app.tar" .gpu-node
echo "== compress (xz)"
xz -T0 -6 -c "$stage/app.tar" > "$CARRY/runtime.tar.xz"

echo "== Debian packages: Vulkan loader (WebGPU), OpenBLAS LAPACK (the addon's libraries)"
lists=/tmp/sliceserve-apt-amd64
mkdir -p "$lists/partial"
apt_o=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
if apt-get "${apt_o[@]}" update >/dev/null 2>&1 \
  && (cd "$CARRY/debs" && apt-get "${apt_o[@]}" download libvulkan1 libopenblas0-pthread libgfortran5 libquadmath0 >/dev/null 2>&1); then
  ls "$CARRY/debs"
else
  echo "   apt-get download failed: no .debs carried (webgpu and the LAPACK addon will be reported missing)" >&2
fi

{
  echo "packed_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git_head=$(git rev-parse --short HEAD)"
  echo "node=$(node --version)"
  echo "onnxruntime_node=$(node -p "require('onnxruntime-node/package.json').version")"
} > "$CARRY/MANIFEST"

if [ "$want_cuda" = 1 ]; then
  echo "== CUDA provider: $CUDA_PKG"
  rm -rf "$CUDA_DIR"
  mkdir -p "$CUDA_DIR"
  tgz=$(find "$CACHE" -maxdepth 1 -name 'com.github.asus4.onnxruntime.linux-x64-gpu-*.tgz' | head -1)
  if [ -z "$tgz" ]; then
    (cd "$CACHE" && npm pack --silent "$CUDA_PKG" >/dev/null)
    tgz=$(find "$CACHE" -maxdepth 1 -name 'com.github.asus4.onnxruntime.linux-x64-gpu-*.tgz' | head -1)
  fi
  x="$stage/cuda"
  mkdir -p "$x"
  tar -xzf "$tgz" -C "$x" package/Plugins/Linux/x64/libonnxruntime_providers_cuda.so package/Plugins/Linux/x64/libonnxruntime_providers_shared.so
  (cd "$x/package/Plugins/Linux/x64" && sha256sum libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so) > "$CARRY/cuda-provider.sha256"
  echo "   compressing 230 MB (a minute or two)"
  tar -C "$x/package/Plugins/Linux/x64" -cf - libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so \
    | xz -T0 -6 > "$stage/cuda.tar.xz"
  split -b "$PART_BYTES" -d -a 2 "$stage/cuda.tar.xz" "$stage/part-"
  parts=("$stage"/part-*)
  n=${#parts[@]}
  i=0
  for p in "${parts[@]}"; do
    i=$((i + 1))
    d=$(printf '%s/part-%02d-of-%02d' "$CUDA_DIR" "$i" "$n")
    mkdir -p "$d"
    mv "$p" "$d/data"
  done
  (cd "$stage" && sha256sum cuda.tar.xz) > "$CARRY/cuda-parts.sha256"
  echo "   $n parts in $CUDA_DIR"
fi

echo "== sizes (each device command carries the repository plus what it names, 64 MiB at most)"
repo_bytes=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "repository (tracked + untracked, not ignored): $((repo_bytes / 1048576)) MiB"
status=0
for c in "$CARRY" "$CUDA_DIR"/part-*; do
  [ -e "$c" ] || continue
  bytes=$(du -sb "$c" | cut -f1)
  total=$((bytes + repo_bytes))
  if [ "$total" -le "$LIMIT_BYTES" ]; then verdict=fits; else verdict="TOO LARGE"; status=1; fi
  echo "carry $c: $((bytes / 1048576)) MiB + repository = $((total / 1048576)) MiB: $verdict"
done
exit "$status"
