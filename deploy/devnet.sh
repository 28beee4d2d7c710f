#!/usr/bin/env bash
# Starts a local fedpeg chain for development: builds the binaries, creates
# a member key, a regtest genesis with a funded dev "faucet" wallet, and runs
# fedpegd in the foreground until Ctrl-C.
#
# Env: FEDPEG_DEVNET_DIR (default ./devnet-data; reused if it exists),
#      FEDPEG_API_PORT (default 50051), CARGO_TARGET_DIR (default ~/.cache/fedpeg/target).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dir="${FEDPEG_DEVNET_DIR:-$root/devnet-data}"
port="${FEDPEG_API_PORT:-50051}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedpeg/target}"
if [ -z "${RUSTC_WRAPPER:-}" ] && command -v sccache >/dev/null 2>&1; then
    export RUSTC_WRAPPER=sccache SCCACHE_DIR="${SCCACHE_DIR:-$HOME/.cache/fedpeg/sccache}"
fi
# Same settings as deploy/test.sh, so the two share one build.
export CARGO_INCREMENTAL=0

echo "devnet: building fedpegd and fedpeg (first build takes a while: rocksdb is C++)" >&2
cargo build -q --workspace --bins
bin="$CARGO_TARGET_DIR/debug"
mkdir -p "$dir"
if [ ! -f "$dir/genesis.json" ]; then
    "$bin/fedpegd" keygen --name alpha --out "$dir/member.key" --public-out "$dir/member.json" >/dev/null 2>&1
    faucet=$("$bin/fedpeg" --key "$dir/faucet.key" keygen --network regtest 2>/dev/null)
    "$bin/fedpegd" genesis --network regtest --chain-name fedpeg-devnet \
        --member "$dir/member.json" --dev-balance "$faucet=2100000000000000" \
        --out "$dir/genesis.json" >/dev/null
fi
cat >&2 <<MSG

fedpeg devnet: one-member chain on regtest, gRPC at http://127.0.0.1:$port
  data:    $dir
  faucet:  $dir/faucet.key (holds the dev balance)
Try, in another shell (the CLI is at $bin/fedpeg):
  export PATH="$bin:\$PATH" FEDPEG_NODE=http://127.0.0.1:$port
  fedpeg --key alice.key keygen
  fedpeg --key $dir/faucet.key send --to <alice's address> --amount 100000
  fedpeg --key alice.key balance
Stop with Ctrl-C.

MSG
exec "$bin/fedpegd" run --genesis "$dir/genesis.json" --data-dir "$dir/data" \
    --key "$dir/member.key" --api-listen "127.0.0.1:$port"
