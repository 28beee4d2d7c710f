#!/usr/bin/env bash
# deploy/docker/build.sh: build the fedpegd container image (fedpegd + fedpeg).
#
#   deploy/docker/build.sh [--bin-dir DIR] [--tag TAG] [--with-test-images]
#
# Without --bin-dir it compiles fedpegd and fedpeg (release, `-p fedpegd -p
# fedpeg-cli`, so no test-only code is in them) and copies them, stripped,
# into a build context of their own: nothing else from the tree (no keys, no
# data) can reach the image. --bin-dir DIR takes already-built binaries from
# DIR instead (they must have been built with `-p`, not `--workspace`).
# The image is tagged fedpeg.invalid/fedpegd:<version> and :latest (or TAG).
# The .invalid name cannot be pulled from any registry: a missing image is an
# error, never someone else's image.
#
# --with-test-images also builds fedpeg.invalid/bitcoind:knots (Bitcoin Knots
# from Debian's archive, via deploy/bitcoind.sh) and
# fedpeg.invalid/prometheus:debian (Debian's prometheus), the member stacks'
# defaults.
#
# The binaries run on the image's Debian (bookworm: glibc 2.36); build them
# on bookworm or older (build.sh refuses binaries that need a newer glibc).
#
# The Dockerfiles start FROM debian:bookworm-slim. Docker pulls it from the
# registry; with no registry, set FEDPEG_DEBOOTSTRAP_BASE=1 to build that tag
# locally first (deploy/docker/base-image.sh; root).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin_dir=""
tag=""
test_images=0
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir="${2:?--bin-dir needs a directory}"; shift 2 ;;
        --tag) tag="${2:?--tag needs a tag}"; shift 2 ;;
        --with-test-images) test_images=1; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
log() { printf 'build.sh: %s\n' "$*" >&2; }
# docker build, quiet; its output only when it fails.
build() {
    local out
    out=$(docker build -q "$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
}
command -v docker >/dev/null || { log "docker is not installed"; exit 1; }
docker info >/dev/null 2>&1 || { log "cannot reach the Docker daemon (is dockerd running, and may this user use it?)"; exit 1; }

if [ "${FEDPEG_DEBOOTSTRAP_BASE:-0}" = 1 ]; then
    "$here/base-image.sh" debian:bookworm-slim
fi
if [ -z "$bin_dir" ]; then
    log "compiling fedpegd and fedpeg (release; the first build takes a while: rocksdb is C++)"
    (cd "$root" && cargo build --release -q -p fedpegd -p fedpeg-cli --bins)
    bin_dir="${CARGO_TARGET_DIR:-$root/target}/release"
fi
for b in fedpegd fedpeg; do
    [ -x "$bin_dir/$b" ] || { log "$bin_dir/$b is missing or not executable"; exit 1; }
done
# The newest glibc symbol version the binaries need must exist in bookworm.
for b in fedpegd fedpeg; do
    need=$(objdump -T "$bin_dir/$b" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)
    if [ -n "$need" ] && [ "$(printf '%s\nGLIBC_2.36\n' "$need" | sort -V | tail -1)" != GLIBC_2.36 ]; then
        log "$bin_dir/$b needs $need, newer than the image's glibc 2.36: build on Debian bookworm (or older)"
        exit 1
    fi
done
version=$("$bin_dir/fedpegd" --version | awk '{print $2}')
version="${version//+/-}"   # 0.1.0+<commit>: docker tags have no '+'
[ -n "$tag" ] || tag="fedpeg.invalid/fedpegd:$version"
ctx=$(mktemp -d /tmp/fedpeg-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
for b in fedpegd fedpeg; do
    cp "$bin_dir/$b" "$ctx/$b"
    strip --strip-debug "$ctx/$b" 2>/dev/null || true
done
cp "$here/Dockerfile" "$ctx/Dockerfile"
log "building $tag"
build -t "$tag" -t "${tag%:*}:latest" "$ctx"
log "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1/1e6}')); set FEDPEG_IMAGE=$tag"
if [ "$test_images" = 1 ]; then
    log "building fedpeg.invalid/bitcoind:knots (downloads Bitcoin Knots from Debian's archive)"
    build -f "$here/bitcoind.Dockerfile" -t fedpeg.invalid/bitcoind:knots "$root/deploy"
    log "building fedpeg.invalid/prometheus:debian"
    build -f "$here/prometheus.Dockerfile" -t fedpeg.invalid/prometheus:debian "$here"
fi
