#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (as root) or an already prepared checkout: system
# packages, npm dependencies, the native addon (source build, and the prebuild when asked) and the
# TypeScript build. Does only what is missing
# or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
# --with-prebuild: also the prebuildify binary (the packaging test installs it).
# --with-python-torch: also Debian's python3-torch (tests read our .pth files back with it; the
# benchmarks run PyTorch eager side by side).
with_prebuild=0
with_python_torch=0
for arg in "$@"; do
  case "$arg" in
    --with-prebuild) with_prebuild=1 ;;
    --with-python-torch) with_python_torch=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*"; }

apt_missing=()
if ! node scripts/torch-config.js json >/dev/null 2>&1; then apt_missing+=(libtorch-dev); fi
# Gloo's headers: libtorch's c10d headers (native/distributed.cc) include them; Debian ships them apart.
if { [ ${#apt_missing[@]} -gt 0 ] || node scripts/torch-config.js json 2>/dev/null | grep -q '"source":"system"'; } && [ ! -f /usr/include/gloo/algorithm.h ]; then
  apt_missing+=(libgloo-dev)
fi
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || apt_missing+=(dataset-fashion-mnist)
# Text in the report's PNG plots (sharp's SVG renderer uses the system's fonts).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_missing+=(fonts-dejavu-core)
# The tests read back the .pth files we write with real PyTorch (Debian's, for /usr/bin/python3).
if [ $with_python_torch = 1 ] && ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then apt_missing+=(python3-torch); fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "[setup] missing: ${apt_missing[*]}. Install them (Debian/Ubuntu: apt-get install ${apt_missing[*]}) or see README." >&2
    exit 1
  fi
  log "apt-get install ${apt_missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm ci"
  # Scripts off: the native build below is ordered so that prebuildify (node-gyp rebuild wipes build/)
  # runs before the cmake-js build.
  npm ci --ignore-scripts --no-audit --no-fund
fi

# True when $1 is missing or older than any native input.
stale() {
  [ ! -e "$1" ] || [ -n "$(find native scripts/torch-config.js CMakeLists.txt binding.gyp package.json -newer "$1" -print -quit)" ]
}

run_logged() {
  local name=$1; shift
  local logfile
  logfile=$(mktemp "/tmp/repopt-$name.XXXXXX.log")
  if ! "$@" >"$logfile" 2>&1; then
    tail -n 60 "$logfile" >&2
    echo "[setup] $name failed; full log: $logfile" >&2
    exit 1
  fi
  rm -f "$logfile"
}

prebuild=prebuilds/linux-x64/repopt.node
if [ $with_prebuild = 1 ] && stale "$prebuild"; then
  log "prebuildify (node-gyp, binding.gyp)"
  run_logged prebuildify npx prebuildify --napi --strip
  # prebuildify names the file after node-gyp's target; keep one stable name.
  for f in prebuilds/linux-x64/*.node; do [ "$f" = "$prebuild" ] || mv -f "$f" "$prebuild"; done
fi

if stale build/Release/repopt.node; then
  log "cmake-js compile (CMakeLists.txt)"
  run_logged cmake-js npx cmake-js compile
fi

if [ ! -f dist/cli.js ] || [ -n "$(find lib tsconfig.json -newer dist/cli.js -print -quit)" ]; then
  log "tsc"
  npx tsc -p .
  touch dist/cli.js
fi
