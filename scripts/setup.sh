#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (as root) or an already prepared checkout: system
# packages, npm dependencies, the native addon (source build, and the prebuild when asked) and the
# TypeScript build. Does only what is missing
# or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
# --with-prebuild: also the prebuildify binary (the packaging test installs it).
# --prebuild-only: the prebuild without the cmake-js source build (CI's packaging-only root).
# --with-python-torch: also Debian's python3-torch (tests read our .pth files back with it; the
# benchmarks run PyTorch eager side by side).
with_prebuild=0
with_python_torch=0
source_build=1
for arg in "$@"; do
  case "$arg" in
    --with-prebuild) with_prebuild=1 ;;
    --with-python-torch) with_python_torch=1 ;;
    --prebuild-only) with_prebuild=1; source_build=0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*"; }

apt_missing=()
if ! node scripts/torch-config.js json >/dev/null 2>&1; then apt_missing+=(libtorch-dev); fi
# Gloo's headers: libtorch's c10d headers (native/core/distributed.cc) include them; Debian ships them apart.
if { [ ${#apt_missing[@]} -gt 0 ] || node scripts/torch-config.js json 2>/dev/null | grep -q '"source":"system"'; } && [ ! -f /usr/include/gloo/algorithm.h ]; then
  apt_missing+=(libgloo-dev)
fi
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || apt_missing+=(dataset-fashion-mnist)
# The image loader decodes JPEG and PNG natively (libjpeg-turbo, libpng).
[ -f /usr/include/jpeglib.h ] || apt_missing+=(libjpeg62-turbo-dev)
[ -f /usr/include/png.h ] || apt_missing+=(libpng-dev)
# Text in the report's PNG plots (sharp's SVG renderer uses the system's fonts).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_missing+=(fonts-dejavu-core)
# The tests read back the .pth files we write with real PyTorch (Debian's, for /usr/bin/python3).
if [ $with_python_torch = 1 ] && ! /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then apt_missing+=(python3-torch); fi
# ... and check the ONNX models we write with ONNX's own checker.
if [ $with_python_torch = 1 ] && ! /usr/bin/python3 -c 'import onnx' >/dev/null 2>&1; then apt_missing+=(python3-onnx); fi
# ... and compare the image loader's crops with torchvision's transforms and RandAugment's ops with Pillow's
# (the bench runs torchvision's DataLoader).
if [ $with_python_torch = 1 ] && ! /usr/bin/python3 -c 'import torchvision, PIL' >/dev/null 2>&1; then apt_missing+=(python3-torchvision python3-pil); fi
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

# The packaging test installs the packed tarball with `npm install --offline`, which resolves the
# package's dependency ranges from npm's cache, while `npm ci` caches only the locked versions: the
# newest match of each runtime dependency is cached here (quick when present). Inside the Debian 13
# roots, which share the cache but not the registry, what is missing is left to the test to report.
if [ $with_prebuild = 1 ]; then
  prime=$(mktemp -d /tmp/repopt-npm-prime.XXXXXX)
  node -e 'const p=require("./package.json");require("fs").writeFileSync(process.argv[1]+"/package.json",JSON.stringify({name:"prime",version:"1.0.0",private:true,dependencies:p.dependencies}))' "$prime"
  (cd "$prime" && npm install --prefer-offline --ignore-scripts --no-audit --no-fund >/dev/null 2>&1) || log "npm cache for the packaging test: not complete (no registry here)"
  rm -rf "$prime"
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
  # The build is -Wall -Wextra clean; a compiler warning is shown, and fails CI (REPOPT_STRICT_WARNINGS=1).
  if grep -q 'warning:' "$logfile"; then
    grep -B2 -A6 'warning:' "$logfile" | head -n 80 >&2
    echo "[setup] $name: compiler warnings (full log: $logfile)" >&2
    if [ "${REPOPT_STRICT_WARNINGS:-0}" = 1 ]; then
      # Not left in place, or the next run would skip the build and the warnings with it.
      rm -f build/Release/repopt.node "$prebuild"
      exit 1
    fi
    return 0
  fi
  rm -f "$logfile"
}

# One prebuild per libtorch (lib/binary.ts picks the one for the libtorch installed at run time):
# prebuilds/linux-x64/repopt.<variant>.napi.node plus its manifest. prebuildify runs node-gyp in a scratch
# copy of the build inputs, so its `node-gyp rebuild` never wipes this checkout's build/.
variant=$(node scripts/torch-config.js variant)
prebuild=prebuilds/linux-x64/repopt.$variant.napi.node
if [ $with_prebuild = 1 ] && ! node scripts/torch-config.js json | grep -q '"source":"system"'; then
  # A prebuild is named after the Debian libtorch it links by soname; one built against a pip or zip
  # libtorch (unversioned libraries, an rpath) would pose as one.
  log "no prebuild: the libtorch found is not the system's (a prebuild is made against Debian's libtorch)"
  with_prebuild=0
fi
if [ $with_prebuild = 1 ] && { stale "$prebuild" || [ ! -f "${prebuild%.napi.node}.json" ]; }; then
  log "prebuildify $variant (node-gyp, binding.gyp)"
  scratch=$(mktemp -d /tmp/repopt-prebuild.XXXXXX)
  trap 'rm -rf "$scratch"' EXIT
  mkdir -p "$scratch/scripts"
  cp -r native binding.gyp package.json "$scratch/"
  cp scripts/torch-config.js "$scratch/scripts/"
  ln -s "$PWD/node_modules" "$scratch/node_modules"
  # JOBS: node-gyp's make in parallel (it is serial by default).
  run_logged prebuildify sh -c "cd '$scratch' && JOBS=max npx prebuildify --napi --strip"
  mkdir -p prebuilds/linux-x64
  cp "$(ls "$scratch"/prebuilds/linux-x64/*.node | head -n1)" "$prebuild"
  # Dated when its sources were copied: a source edited during the build leaves it stale.
  touch -r "$scratch/package.json" "$prebuild"
  rm -rf "$scratch"
  builtWith="$( (. /etc/os-release && echo "$PRETTY_NAME") 2>/dev/null || uname -sr), libtorch from $(node -p 'require("./scripts/torch-config.js").describe().libDir')"
  node scripts/prebuild-manifest.js "$prebuild" "$builtWith" >/dev/null
fi

# cmake-js build (not compile): compile's fallback deletes build/, which scripts/debian13.sh mounts.
if [ $source_build = 1 ] && stale build/Release/repopt.node; then
  log "cmake-js build (CMakeLists.txt)"
  if [ -f build/CMakeCache.txt ] && ! grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$(pwd -P)\$" build/CMakeCache.txt; then
    # A cache from another checkout path: configure afresh.
    find build -mindepth 1 -delete
  fi
  run_logged cmake-js npx cmake-js build
fi

if [ ! -f dist/cli.js ] || [ -n "$(find lib tsconfig.json -newer dist/cli.js -print -quit)" ]; then
  log "tsc"
  npx tsc -p .
  touch dist/cli.js
fi
