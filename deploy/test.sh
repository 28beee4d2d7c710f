#!/usr/bin/env bash
# Runs the whole fedpeg test suite: unit + property tests, and end-to-end
# tests that start real fedpegd processes.
#
# Installs what a fresh Debian machine lacks when run as root (libclang-dev
# for rocksdb's bindgen, a C++ compiler; grpcio + grpcio-tools from PyPI for
# the Python client and Debian's chromium + playwright-core from npm for the
# web app's browser test in tests/tests/explorer.rs); otherwise says what to
# install.
#
# Env: CARGO_TARGET_DIR (default ~/.cache/fedpeg/target, kept between runs),
#      FEDPEG_TEST_ARGS (extra args for `cargo test`, e.g. a test filter),
#      FEDPEG_DOCKER_TEST (auto: the multi-host Docker test runs as root with
#      no filter; 0 skips it; 1 requires it).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || [ -n "${LIBCLANG_PATH:-}" ] || missing+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "test.sh: missing ${missing[*]}; install with: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

# The web app's browser test (tests/tests/explorer.rs) drives Debian's
# chromium with playwright-core from tests/web/package-lock.json (npm ci;
# no browser download).
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing chromium" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "test.sh: chromium is missing; install with: sudo apt-get install chromium" >&2
        exit 1
    fi
fi
if [ ! -d tests/web/node_modules/playwright-core ]; then
    (cd tests/web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

# The explorer test drives a stock Python gRPC client generated from the
# .proto files at test time: it needs grpcio and grpcio-tools.
if ! python3 -c "import grpc, grpc_tools" >/dev/null 2>&1; then
    echo "test.sh: installing grpcio grpcio-tools with pip" >&2
    python3 -m pip install -q "grpcio>=1.60" "grpcio-tools>=1.60"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedpeg/target}"
# sccache caches C++ (rocksdb) and Rust compiles across clean clones.
if [ -z "${RUSTC_WRAPPER:-}" ] && command -v sccache >/dev/null 2>&1; then
    export RUSTC_WRAPPER=sccache
    export SCCACHE_DIR="${SCCACHE_DIR:-$HOME/.cache/fedpeg/sccache}"
fi
export CARGO_INCREMENTAL=0

# Operator alert rules: promtool's own checks and unit tests (fast; before
# the build so a broken rule fails early).
deploy/monitoring/check.sh

# The multi-host Docker test (deploy/docker/test.sh) needs root: it installs
# and starts Docker. FEDPEG_DOCKER_TEST=0 skips it, =1 insists on it.
docker_test="${FEDPEG_DOCKER_TEST:-auto}"
if [ "$docker_test" = auto ]; then
    if [ "$(id -u)" = 0 ] && [ -z "${FEDPEG_TEST_ARGS:-}" ]; then docker_test=1; else docker_test=0; fi
fi
if [ "$docker_test" = 1 ]; then
    # The image's binaries are built alone (-p), as a release would be: the
    # workspace build below compiles the tests' Byzantine faults into fedpegd.
    cargo build -p fedpegd -p fedpeg-cli --bins
    image_bins=$(mktemp -d /tmp/fedpeg-image-bins.XXXXXX)
    trap 'rm -rf "$image_bins"' EXIT
    cp "$CARGO_TARGET_DIR/debug/fedpegd" "$CARGO_TARGET_DIR/debug/fedpeg" "$image_bins/"
fi

# End-to-end tests run the real binaries: build them first.
cargo build --workspace --bins
export FEDPEG_BIN_DIR="$CARGO_TARGET_DIR/debug"
# The hardened systemd unit: systemd-analyze verify + security.
deploy/systemd/check.sh "$FEDPEG_BIN_DIR"
# shellcheck disable=SC2086
cargo test --workspace ${FEDPEG_TEST_ARGS:-}
# The workspace build compiles the tests' Byzantine faults into fedpegd; a
# build of fedpegd alone (release, container) must not be able to turn them on.
if [ -z "${FEDPEG_TEST_ARGS:-}" ]; then
    cargo test -p fedpegd --lib faults
fi
if [ "$docker_test" = 1 ]; then
    deploy/docker/test.sh --bin-dir "$image_bins"
else
    echo "test.sh: skipped the multi-host Docker test (needs root; FEDPEG_DOCKER_TEST=1 to insist)" >&2
fi
