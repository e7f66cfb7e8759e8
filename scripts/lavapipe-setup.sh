#!/usr/bin/env bash
# Makes onnxruntime-node's WebGPU provider usable WITHOUT a GPU, for tests: Mesa's lavapipe
# (a Vulkan driver on the CPU) from Debian 12's bookworm-backports (Mesa >= 25; Debian 12's own
# Mesa 22.3 lacks Vulkan features Dawn requires), unpacked into a cache folder. Nothing is
# installed on the system: packages are fetched with `apt-get download` through a temporary
# package list, unpacked with `dpkg-deb -x`, and selected with VK_DRIVER_FILES (plus
# LD_LIBRARY_PATH for the libraries this host lacks).
#
# Usage: bash scripts/lavapipe-setup.sh [cache-dir]     (default .cache/lavapipe)
#   then: eval "$(bash scripts/lavapipe-setup.sh)"; SLICESERVE_TEST_WEBGPU=1 npm test
# The last stdout line is an `export ...` line (also saved as <cache-dir>/env.sh); progress
# goes to stderr. Exit 0 only when the driver is unpacked, its libraries resolve, and (when
# dist/ is built) a WebGPU session computes the right values. Debian 12 (bookworm) amd64 only.
# Settings: LAVAPIPE_MESA_VERSION (default 25.0.7-2~bpo12+1), LAVAPIPE_MIRROR
# (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=$(mkdir -p "${1:-.cache/lavapipe}" && cd "${1:-.cache/lavapipe}" && pwd)
VERSION=${LAVAPIPE_MESA_VERSION:-25.0.7-2~bpo12+1}
MIRROR=${LAVAPIPE_MIRROR:-http://deb.debian.org/debian}
ROOT=$CACHE/root
LIBDIR=$ROOT/usr/lib/x86_64-linux-gnu
MANIFEST=$CACHE/lvp_icd.json
say() { echo "lavapipe-setup: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported (got $(uname -m))"
grep -q 'VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null || die "needs Debian 12 (bookworm): the packages are bookworm's"
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs apt-get and dpkg-deb"

# A private apt configuration: its own source list and package lists, no lock on the system's.
APT_DIR=$CACHE/apt
mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/archives/partial" "$CACHE/debs"
cat >"$APT_DIR/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
: >"$APT_DIR/sources.list"
APT=(apt-get -q -o "Dir::Etc::SourceList=$APT_DIR/sources.list" -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
  -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache::Archives=$APT_DIR/archives" -o Debug::NoLocking=1)
[ "$(id -u)" = 0 ] && APT+=(-o APT::Sandbox::User=root)

fetch() { # package[=version] ...: downloads into $CACHE/debs, unpacks into $ROOT
  local p name f
  for p in "$@"; do
    name=${p%%=*}
    f=$(find "$CACHE/debs" -maxdepth 1 -name "${name}_*.deb" -print -quit)
    if [ -z "$f" ]; then
      (cd "$CACHE/debs" && "${APT[@]}" download "$p" >&2) || return 1
      f=$(find "$CACHE/debs" -maxdepth 1 -name "${name}_*.deb" -print -quit)
    fi
    dpkg-deb -x "$f" "$ROOT" && say "unpacked $(basename "$f")"
  done
}

if [ ! -f "$LIBDIR/libvulkan_lvp.so" ]; then
  say "fetching package lists (bookworm, -updates, -backports) into $APT_DIR"
  "${APT[@]}" update >&2 || die "apt-get update failed (no network or no Debian mirror?)"
  fetch "mesa-vulkan-drivers=$VERSION" || die "could not download mesa-vulkan-drivers=$VERSION from bookworm-backports (set LAVAPIPE_MESA_VERSION to one that apt-cache policy lists)"
fi

# Libraries: the Vulkan loader and lavapipe's dependencies (LLVM 15, libdrm, xcb, ...) come from
# the system when installed, else from bookworm, unpacked next to the driver.
has_system_lib() { ldconfig -p 2>/dev/null | grep -q "^[[:space:]]$1 ("; }
missing_libs() {
  local out=""
  has_system_lib libvulkan.so.1 || [ -e "$LIBDIR/libvulkan.so.1" ] || out="libvulkan.so.1"
  out="$out $(LD_LIBRARY_PATH=$LIBDIR ldd "$LIBDIR/libvulkan_lvp.so" | awk '/not found/ {print $1}' | tr '\n' ' ')"
  echo "$out" | xargs
}
# soname -> Debian package (lavapipe 25.0.7's dependencies and LLVM 15's)
declare -A PKG=(
  [libvulkan.so.1]=libvulkan1 [libLLVM-15.so.1]=libllvm15 [libdrm.so.2]=libdrm2 [libdrm_amdgpu.so.1]=libdrm-amdgpu1
  [libelf.so.1]=libelf1 [libexpat.so.1]=libexpat1 [libwayland-client.so.0]=libwayland-client0 [libX11-xcb.so.1]=libx11-xcb1
  [libX11.so.6]=libx11-6 [libxcb.so.1]=libxcb1 [libxcb-dri3.so.0]=libxcb-dri3-0 [libxcb-present.so.0]=libxcb-present0
  [libxcb-randr.so.0]=libxcb-randr0 [libxcb-shm.so.0]=libxcb-shm0 [libxcb-sync.so.1]=libxcb-sync1
  [libxcb-xfixes.so.0]=libxcb-xfixes0 [libxshmfence.so.1]=libxshmfence1 [libXau.so.6]=libxau6 [libXdmcp.so.6]=libxdmcp6
  [libbsd.so.0]=libbsd0 [libmd.so.0]=libmd0 [libzstd.so.1]=libzstd1 [libz.so.1]=zlib1g [libffi.so.8]=libffi8
  [libedit.so.2]=libedit2 [libz3.so.4]=libz3-4 [libtinfo.so.6]=libtinfo6 [libxml2.so.2]=libxml2
  [libicuuc.so.72]=libicu72 [libicudata.so.72]=libicu72 [liblzma.so.5]=liblzma5 [libstdc++.so.6]=libstdc++6
)
for round in 1 2 3; do
  miss=$(missing_libs)
  [ -z "$miss" ] && break
  say "round $round: libraries not on this host: $miss"
  [ -d "$APT_DIR/lists" ] && ls "$APT_DIR"/lists/*Packages* >/dev/null 2>&1 || "${APT[@]}" update >&2 || die "apt-get update failed"
  for lib in $miss; do
    [ -n "${PKG[$lib]:-}" ] || die "$lib is needed by lavapipe and not known to this script: install the Debian package that has it"
    fetch "${PKG[$lib]}" || die "could not download ${PKG[$lib]} (for $lib)"
  done
done
miss=$(missing_libs)
[ -z "$miss" ] || die "still missing after unpacking: $miss"

# The ICD manifest, with the driver by absolute path.
sed -E "s|\"library_path\": *\"[^\"]*\"|\"library_path\": \"$LIBDIR/libvulkan_lvp.so\"|" \
  "$ROOT/usr/share/vulkan/icd.d/lvp_icd.json" >"$MANIFEST"
grep -q "$LIBDIR/libvulkan_lvp.so" "$MANIFEST" || die "could not write the ICD manifest $MANIFEST"

EXPORTS="export VK_DRIVER_FILES=$MANIFEST XDG_RUNTIME_DIR=\${XDG_RUNTIME_DIR:-/tmp}"
if [ -n "$(find "$LIBDIR" -maxdepth 1 -name '*.so.*' ! -name 'libvulkan_*' -print -quit)" ]; then
  EXPORTS="$EXPORTS LD_LIBRARY_PATH=$LIBDIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
fi
echo "$EXPORTS" >"$CACHE/env.sh"

# A real WebGPU session (when the app is built): the adapter must appear and compute.
if [ -f dist/models/onnx/builder.js ] && [ -d node_modules/onnxruntime-node ]; then
  (eval "$EXPORTS" && timeout 120 node scripts/gpu/webgpu-smoke.js >&2) || die "lavapipe is unpacked but a WebGPU session does not work (see above)"
else
  say "dist/ not built: WebGPU session not tried (run \`npx tsc -p .\`, then this script again)"
fi
say "ready; environment saved in $CACHE/env.sh"
echo "$EXPORTS"
