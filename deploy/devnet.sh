#!/usr/bin/env bash
# Starts a local fedpeg federation for development: builds the binaries,
# starts a regtest bitcoind with a funded wallet (installing one if needed,
# see deploy/bitcoind.sh), creates N member keys and a regtest genesis with a
# funded dev "faucet" wallet, runs N members (each watching that bitcoind)
# plus one observer on 127.0.0.1, and stops them all cleanly on Ctrl-C.
#
#   deploy/devnet.sh [--members N]        (default 4)
#
# Env: FEDPEG_DEVNET_DIR (default ./devnet-data; reused if it exists and has
#      the same member count), FEDPEG_API_PORT (first gRPC port, default
#      20051), FEDPEG_P2P_PORT (first p2p port, default 30001),
#      FEDPEG_METRICS_PORT (first Prometheus port, default 9464),
#      FEDPEG_HTTP_PORT (the observer's web app, default 8080; member m0's
#      is the next port: a member also shows deposits still confirming),
#      FEDPEG_BTC_RPC_PORT (bitcoind RPC, default 18443),
#      FEDPEG_BTC_ZMQ_PORT (bitcoind's block notifications, default 28332),
#      CARGO_TARGET_DIR (default ~/.cache/fedpeg/target).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
members=4
while [ $# -gt 0 ]; do
    case "$1" in
        --members) members="${2:?--members needs a number}"; shift 2 ;;
        --members=*) members="${1#*=}"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "devnet.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
case "$members" in ''|*[!0-9]*) echo "devnet.sh: --members must be a number" >&2; exit 2 ;; esac
[ "$members" -ge 1 ] || { echo "devnet.sh: --members must be at least 1" >&2; exit 2; }
dir="${FEDPEG_DEVNET_DIR:-$root/devnet-data}"
# Below Linux's ephemeral range (32768+): the members' many bitcoind RPC
# connections leave TIME_WAIT sockets there that would block a restart's bind.
api0="${FEDPEG_API_PORT:-20051}"
p2p0="${FEDPEG_P2P_PORT:-30001}"
metrics0="${FEDPEG_METRICS_PORT:-9464}"
http0="${FEDPEG_HTTP_PORT:-8080}"
btc_rpc="${FEDPEG_BTC_RPC_PORT:-18443}"
btc_zmq="${FEDPEG_BTC_ZMQ_PORT:-28332}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fedpeg/target}"
if [ -z "${RUSTC_WRAPPER:-}" ] && command -v sccache >/dev/null 2>&1; then
    export RUSTC_WRAPPER=sccache SCCACHE_DIR="${SCCACHE_DIR:-$HOME/.cache/fedpeg/sccache}"
fi
# Same settings as deploy/test.sh, so the two share one build.
export CARGO_INCREMENTAL=0

echo "devnet: building fedpegd and fedpeg (the first build takes ~20 min: rocksdb is C++)" >&2
# -p, not --workspace: the workspace build would compile the tests' test-only
# Byzantine faults into fedpegd (see node/daemon/Cargo.toml).
cargo build -q -p fedpegd -p fedpeg-cli --bins
bin="$CARGO_TARGET_DIR/debug"

if [ -f "$dir/genesis.json" ] && [ "$(cat "$dir/members" 2>/dev/null)" != "$members" ]; then
    echo "devnet: $dir holds a devnet of $(cat "$dir/members" 2>/dev/null || echo '?') members; remove it or set FEDPEG_DEVNET_DIR" >&2
    exit 2
fi
mkdir -p "$dir"
if [ ! -f "$dir/genesis.json" ]; then
    args=()
    for i in $(seq 0 $((members - 1))); do
        "$bin/fedpegd" keygen --name "m$i" --p2p-address "/ip4/127.0.0.1/tcp/$((p2p0 + i))" \
            --out "$dir/m$i.key" --public-out "$dir/m$i.json" >/dev/null 2>&1
        args+=(--member "$dir/m$i.json")
    done
    faucet=$("$bin/fedpeg" --key "$dir/faucet.key" keygen --network regtest 2>/dev/null)
    # Three backup keys (2 of them recover the coins 144 blocks after they
    # confirm: `fedpeg recover`, README "If the federation is gone").
    for i in 0 1 2; do
        args+=(--backup-key "$("$bin/fedpegd" backup-keygen --out "$dir/backup$i.key" 2>/dev/null)")
    done
    args+=(--backup-threshold 2 --emergency-csv-blocks 144)
    "$bin/fedpegd" genesis --network regtest --chain-name fedpeg-devnet "${args[@]}" \
        --dev-balance "$faucet=10000000000" --out "$dir/genesis.json" >/dev/null
    echo "$members" > "$dir/members"
fi

# A regtest bitcoind for the peg, with a funded wallet "dev".
eval "$(deploy/bitcoind.sh)"
mkdir -p "$dir/bitcoind"
btc=("$BITCOIN_CLI" -regtest -datadir="$dir/bitcoind" -rpcport="$btc_rpc" -rpcuser=dev -rpcpassword=dev)
pids=()
stop() {
    trap - INT TERM EXIT
    echo "devnet: stopping" >&2
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop INT TERM EXIT
"$BITCOIND" -regtest -daemon=0 -server -listen=0 -listenonion=0 -prune=550 -fallbackfee=0.0002 \
    -addresstype=bech32 -changetype=bech32 -datadir="$dir/bitcoind" -rpcport="$btc_rpc" \
    -rpcuser=dev -rpcpassword=dev -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 \
    -zmqpubhashblock="tcp://127.0.0.1:$btc_zmq" >"$dir/bitcoind.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do "${btc[@]}" getblockchaininfo >/dev/null 2>&1 && break; sleep 0.2; done
"${btc[@]}" -named createwallet wallet_name=dev load_on_startup=true >/dev/null 2>&1 || "${btc[@]}" loadwallet dev >/dev/null 2>&1 || true
if [ "$("${btc[@]}" getblockcount)" -lt 101 ]; then
    "${btc[@]}" generatetoaddress 101 "$("${btc[@]}" getnewaddress "" bech32)" >/dev/null
fi
btc_args=(--bitcoin-rpc-url "http://127.0.0.1:$btc_rpc" --bitcoin-rpc-user dev --bitcoin-rpc-password dev
    --bitcoin-zmq-block "tcp://127.0.0.1:$btc_zmq")

for i in $(seq 0 $((members - 1))); do
    web=()
    [ "$i" = 0 ] && web=(--http-listen "127.0.0.1:$((http0 + 1))")
    "$bin/fedpegd" run --genesis "$dir/genesis.json" --data-dir "$dir/m$i-data" --key "$dir/m$i.key" \
        --api-listen "127.0.0.1:$((api0 + i))" --metrics-listen "127.0.0.1:$((metrics0 + i))" \
        "${web[@]}" "${btc_args[@]}" 2>"$dir/m$i.log" &
    pids+=($!)
done
obs=$((api0 + members))
"$bin/fedpegd" run --genesis "$dir/genesis.json" --data-dir "$dir/observer-data" \
    --api-listen "127.0.0.1:$obs" --metrics-listen "127.0.0.1:$((metrics0 + members))" \
    --http-listen "127.0.0.1:$http0" 2>"$dir/observer.log" &
pids+=($!)

{
    echo
    echo "fedpeg devnet: $members members + 1 observer on regtest"
    for i in $(seq 0 $((members - 1))); do
        echo "  member m$i   gRPC http://127.0.0.1:$((api0 + i))   p2p /ip4/127.0.0.1/tcp/$((p2p0 + i))   metrics http://127.0.0.1:$((metrics0 + i))/metrics   log $dir/m$i.log"
    done
    echo "  observer     gRPC http://127.0.0.1:$obs   metrics http://127.0.0.1:$((metrics0 + members))/metrics   log $dir/observer.log"
    echo "  faucet key   $dir/faucet.key (holds the dev balance)"
    echo
    echo "Web app (explorer, peg tracker, federation audit; read-only):"
    echo "  http://127.0.0.1:$http0/          served by the observer"
    echo "  http://127.0.0.1:$((http0 + 1))/          served by member m0 (also shows deposits while they confirm)"
    echo "  http://127.0.0.1:$http0/api/v1/openapi.yaml   its JSON + Server-Sent-Events API"
    echo
    echo "Try, in another shell:"
    echo "  export PATH=\"$bin:\$PATH\" FEDPEG_NODE=http://127.0.0.1:$api0"
    echo "  fedpeg --key alice.key keygen"
    echo "  fedpeg --key $dir/faucet.key send --to <alice's address> --amount 100000"
    echo "  fedpeg --key alice.key balance"
    echo "  fedpeg --node http://127.0.0.1:$obs status     # the observer follows the same chain"
    echo "  fedpeg --node http://127.0.0.1:$obs watch --from 0   # explorer feed: every block and its events"
    echo "  curl -s http://127.0.0.1:$((metrics0 + members))/metrics | grep -E '^fedpeg_(height|supply_sats|feed_)'"
    echo
    echo "Peg in (bitcoind regtest: RPC 127.0.0.1:$btc_rpc, user/password dev/dev, wallet dev):"
    echo "  alias btc='${btc[*]}'"
    echo "  fedpeg --key alice.key pegin                      # alice's deposit address"
    echo "  btc sendtoaddress <deposit address> 0.001"
    echo "  btc generatetoaddress 6 \$(btc getnewaddress)       # 6 confirmations: minted"
    echo "  fedpeg --key alice.key pegin --wait               # or watch it happen"
    echo "Stop with Ctrl-C."
    echo
} >&2
# Exit (and stop the rest) as soon as any node dies.
wait -n "${pids[@]}" || true
echo "devnet: a node exited; see the logs in $dir" >&2
