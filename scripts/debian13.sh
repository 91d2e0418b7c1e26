#!/usr/bin/env bash
# Runs a command in this checkout inside a Debian 13 (trixie) root with libtorch 2.6, creating the root
# first when it is missing. Needs root, debootstrap and chroot (a Debian host).
#
#   scripts/debian13.sh [--flavor cuda|cpu] [--] [command ...]     (default: npm test)
#
#   cuda  libtorch-cuda-dev 2.6 (CUDA 12.4), nvcc, NCCL, Gloo; cuDNN is a stub (see below), so CUDA is
#         unavailable at run time and the CPU paths run. The whole suite runs here.
#   cpu   libtorch-dev 2.6 (CPU only): the CPU prebuild is made and checked here.
#
# The root is cached under $REPOPT_DEBIAN13_CACHE (default /var/cache/repopt) and reused; it is rebuilt
# when its recipe (RECIPE below) changes. The checkout is bind-mounted at its own path, so node_modules
# (installed on the host: npm reaches the registry only with the host's TLS settings), dist/ and
# prebuilds/ are shared; build/ is this flavor's own (.debian13/<flavor>/build), so the host's build
# against libtorch 1.13 and this one never mix. The host's npm is mounted into the root.
set -euo pipefail
# In a private mount namespace of its own: the mounts below are seen by nothing else and vanish with
# the script, however it ends.
if [ -z "${REPOPT_DEBIAN13_NS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "debian13.sh: needs root (debootstrap, chroot, mount)" >&2; exit 1; }
  exec env REPOPT_DEBIAN13_NS=1 unshare --mount --propagation private bash "$0" "$@"
fi
checkout=$(cd "$(dirname "$0")/.." && pwd -P)
flavor=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --flavor) flavor=$2; shift 2 ;;
    --flavor=*) flavor=${1#--flavor=}; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || set -- npm test
case "$flavor" in
  cuda) torch_packages="libtorch-cuda-dev python3-torch-cuda nvidia-cuda-toolkit nvidia-cuda-dev libnccl-dev libgloo-cuda-dev" ;;
  cpu) torch_packages="libtorch-dev python3-torch libgloo-dev" ;;
  *) echo "debian13.sh: --flavor must be cuda or cpu, got '$flavor'" >&2; exit 2 ;;
esac
common_packages="nodejs libnode-dev g++ make cmake python3 binutils ca-certificates dataset-fashion-mnist fonts-dejavu-core"
# Bump when the recipe changes: a cached root made by another recipe is rebuilt.
RECIPE="3 $flavor $common_packages $torch_packages"

log() { printf '[debian13:%s] %s\n' "$flavor" "$*" >&2; }
die() { printf '[debian13:%s] %s\n' "$flavor" "$*" >&2; exit 1; }

cache=${REPOPT_DEBIAN13_CACHE:-/var/cache/repopt}
root=$cache/debian13-$flavor
stamp=$root/etc/repopt-root-recipe
command -v npm >/dev/null || die "needs npm on the host (it installs the dependencies and is mounted into the root)"
mkdir -p "$cache"
# One run per root at a time: creating it, or two suites in one root, would trip over each other.
exec 9>"$cache/debian13-$flavor.lock"
flock -n 9 || { log "waiting for another run that uses $root"; flock 9; }

# The Debian archive this host's apt uses (never written into the repository).
archive() {
  local uri
  uri=$(grep -hE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  [ -n "$uri" ] || uri=$(grep -hE '^\s*deb\s' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  [ -n "$uri" ] || die "no Debian archive in this host's apt sources"
  printf '%s\n' "$uri"
}

mounts=()
unmount_all() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
  mounts=()
}
trap unmount_all EXIT
bind() { mkdir -p "$2"; mount --bind "$1" "$2"; mounts+=("$2"); }
mount_system() {
  local r=$1
  # The root a mount point of its own: inside, `unshare -m` (private mount namespaces) then works.
  bind "$r" "$r"
  mkdir -p "$r/proc" "$r/dev"
  mount -t proc proc "$r/proc"; mounts+=("$r/proc")
  mkdir -p "$r/dev"
  mount --rbind /dev "$r/dev"; mounts+=("$r/dev")
}
in_root() {
  local r=$1; shift
  chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# cuDNN: Debian's nvidia-cudnn downloads it from NVIDIA in its postinst, which this network refuses.
# libtorch_cuda imports cuDNN symbols (versioned, bound at load): a stub libcudnn.so.9 with one function per
# imported symbol lets libtorch load; CUDA is unavailable here anyway. The root is for building and CPU
# tests; on a GPU machine, bench/cuda/run.sh builds and checks with that machine's own CUDA libtorch.
make_cudnn_stub() {
  local r=$1
  cat >"$r/tmp/cudnn-stub.sh" <<'EOF'
set -eu
syms=$(for f in /usr/lib/x86_64-linux-gnu/libtorch*.so.* /usr/lib/x86_64-linux-gnu/libc10*.so.* /usr/lib/x86_64-linux-gnu/libcaffe2*.so.*; do
  [ -f "$f" ] && nm -D --undefined-only "$f" 2>/dev/null | awk '{print $2}' | grep '^cudnn' | sed 's/@.*//'
done | sort -u)
[ -n "$syms" ] || { echo "no cudnn imports found" >&2; exit 1; }
cd /tmp
: >cudnn-stub.c
for s in $syms; do echo "int $s(void) { return 1; /* CUDNN_STATUS_NOT_INITIALIZED */ }" >>cudnn-stub.c; done
echo 'libcudnn.so.9 { global: *; };' >cudnn-stub.map
gcc -shared -fPIC -o /usr/lib/x86_64-linux-gnu/libcudnn.so.9 -Wl,-soname,libcudnn.so.9 -Wl,--version-script=cudnn-stub.map cudnn-stub.c
ln -sf libcudnn.so.9 /usr/lib/x86_64-linux-gnu/libcudnn.so
ldconfig
echo "cudnn stub: $(echo "$syms" | wc -l) symbols"
EOF
  in_root "$r" sh /tmp/cudnn-stub.sh
}

create_root() {
  command -v debootstrap >/dev/null || { log "apt-get install debootstrap"; apt-get install -y -qq debootstrap >/dev/null; }
  local uri tmp
  uri=$(archive)
  tmp=$root.partial
  # Never delete through a mount (a bind of /dev or of the checkout would take host files with it).
  if grep -qE " ($tmp|$root)(/| )" /proc/self/mountinfo; then die "something is mounted under $tmp or $root; unmount it first"; fi
  rm -rf "$tmp" "$root"
  mkdir -p "$cache"
  log "debootstrap trixie into $tmp"
  debootstrap --variant=minbase --components=main,contrib,non-free trixie "$tmp" "$uri" >"$cache/debootstrap-$flavor.log" 2>&1 ||
    { tail -n 30 "$cache/debootstrap-$flavor.log" >&2; die "debootstrap failed (log: $cache/debootstrap-$flavor.log)"; }
  printf 'deb %s trixie main contrib non-free\n' "$uri" >"$tmp/etc/apt/sources.list"
  printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"; chmod +x "$tmp/usr/sbin/policy-rc.d"
  mount_system "$tmp"
  log "apt-get install ($torch_packages)"
  in_root "$tmp" apt-get update -qq
  if [ "$flavor" = cuda ]; then
    # Unpack nvidia-cudnn without its downloading postinst, then let the rest configure.
    in_root "$tmp" apt-get install -y -qq --no-install-recommends $common_packages $torch_packages >"$cache/apt-$flavor.log" 2>&1 || true
    if [ -f "$tmp/var/lib/dpkg/info/nvidia-cudnn.postinst" ]; then printf '#!/bin/sh\nexit 0\n' >"$tmp/var/lib/dpkg/info/nvidia-cudnn.postinst"; fi
    in_root "$tmp" dpkg --configure -a >>"$cache/apt-$flavor.log" 2>&1 || true
  fi
  in_root "$tmp" apt-get install -y -qq --no-install-recommends $common_packages $torch_packages >>"$cache/apt-$flavor.log" 2>&1 ||
    { tail -n 40 "$cache/apt-$flavor.log" >&2; die "apt-get install failed (log: $cache/apt-$flavor.log)"; }
  [ "$flavor" = cuda ] && make_cudnn_stub "$tmp"
  in_root "$tmp" apt-get clean
  in_root "$tmp" python3 -c 'import torch; print("python3-torch", torch.__version__, "cuda built:", torch.version.cuda, "available:", torch.cuda.is_available())' >&2
  unmount_all
  printf '%s\n' "$RECIPE" >"$tmp/etc/repopt-root-recipe"
  mv "$tmp" "$root"
  log "root ready: $root ($(du -sh "$root" | cut -f1))"
}

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$RECIPE" ]; then create_root; fi

# The host's npm (JavaScript, runs on the root's Node 20.19); the registry is reached from the host only.
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
mount_system "$root"
bind "$npm_dir" "$root/opt/repopt-host-npm"
printf '#!/bin/sh\nexec node /opt/repopt-host-npm/bin/npm-cli.js "$@"\n' >"$root/usr/local/bin/npm"
printf '#!/bin/sh\nexec node /opt/repopt-host-npm/bin/npx-cli.js "$@"\n' >"$root/usr/local/bin/npx"
chmod +x "$root/usr/local/bin/npm" "$root/usr/local/bin/npx"
# node-gyp (prebuildify) finds Node's headers through nodedir, as on the host.
printf 'nodedir=/usr\nfund=false\naudit=false\nupdate-notifier=false\n' >"$root/root/.npmrc"
# The host's npm cache (what `npm ci` fetched), so installs in the root (the packaging test) work offline.
npm_cache=$(npm config get cache)
mkdir -p "$npm_cache"
bind "$npm_cache" "$root/root/.npm"

# npm dependencies on the host, where the registry is reachable.
if [ ! -f "$checkout/node_modules/.package-lock.json" ] || [ "$checkout/package-lock.json" -nt "$checkout/node_modules/.package-lock.json" ]; then
  log "npm ci (host)"
  (cd "$checkout" && npm ci --ignore-scripts --no-audit --no-fund)
fi
bind "$checkout" "$root$checkout"
mkdir -p "$checkout/.debian13/$flavor/build" "$checkout/build"
bind "$checkout/.debian13/$flavor/build" "$root$checkout/build"

pass=()
for v in REPOPT_TEST_THREADS OMP_NUM_THREADS CI REPOPT_EXPECT_PREBUILDS REPOPT_STRICT_WARNINGS REPOPT_BENCH_QUICK; do
  [ -n "${!v:-}" ] && pass+=("$v=${!v}")
done
log "run: $*"
set +e
in_root "$root" "${pass[@]}" REPOPT_DEBIAN13_FLAVOR="$flavor" sh -c 'cd "$0" && exec "$@"' "$checkout" "$@"
rc=$?
set -e
exit $rc
