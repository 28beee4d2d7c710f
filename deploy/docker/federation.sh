#!/usr/bin/env bash
# deploy/docker/federation.sh: a whole test federation in Docker, from one
# command: N member stacks (deploy/docker/compose.yml: fedpegd, its own
# bitcoind, Prometheus), one observer stack, and a regtest "miner" bitcoind
# that stands for the Bitcoin network. Each stack is its own compose project
# on its own network; fedpegd and bitcoind also join one shared network with
# fixed addresses, as separate hosts would be.
#
#   deploy/docker/federation.sh up   [--members N] [--dir DIR]   generate once, then start
#   deploy/docker/federation.sh down [--dir DIR]                 stop; remove containers, volumes, network
#   deploy/docker/federation.sh ps   [--dir DIR]
#
# DIR (default ./docker-federation) keeps the keys, genesis.json and each
# stack's .env; `up` on an existing DIR reuses them. The images must exist:
# deploy/docker/build.sh --with-test-images. Regtest only.
#
# Ports on 127.0.0.1 (FEDPEG_PORT_BASE, default 21050): observer gRPC BASE,
# member i gRPC BASE+1+i, p2p BASE+100+i, metrics BASE+200+i, Prometheus
# BASE+300+i. The miner's RPC is reached with `docker exec`.
#
# Env: FEDPEG_WAN_SUBNET (default 172.28.0; a /24 prefix), FEDPEG_STACK_PREFIX
#      (default fedpeg-: names of projects, containers and the network).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"
[ $# -gt 0 ] && shift
members=4
dir="$(pwd)/docker-federation"
while [ $# -gt 0 ]; do
    case "$1" in
        --members) members="${2:?--members needs a number}"; shift 2 ;;
        --dir) dir="${2:?--dir needs a directory}"; shift 2 ;;
        *) echo "federation.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
case "$cmd" in
    up|down|ps) ;;
    -h|--help|help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "federation.sh: give up, down or ps (try --help)" >&2; exit 2 ;;
esac
case "$members" in ''|*[!0-9]*) echo "federation.sh: --members must be a number" >&2; exit 2 ;; esac
[ "$members" -ge 1 ] && [ "$members" -le 19 ] || { echo "federation.sh: --members must be 1 to 19" >&2; exit 2; }
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
sub="${FEDPEG_WAN_SUBNET:-172.28.0}"
base="${FEDPEG_PORT_BASE:-21050}"
prefix="${FEDPEG_STACK_PREFIX:-fedpeg-}"
wan="${prefix}wan"
miner="${prefix}miner"
image="${FEDPEG_IMAGE:-fedpeg.invalid/fedpegd:latest}"
log() { printf 'federation.sh: %s\n' "$*" >&2; }

# Containers may not have more open files than this host allows.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 65536 ]; then
    export FEDPEG_NOFILE="${FEDPEG_NOFILE:-$hard}"
fi

# `docker compose` (v2 plugin) or Debian's docker-compose (v1.29).
compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    elif command -v docker-compose >/dev/null; then
        docker-compose "$@"
    else
        log "neither 'docker compose' nor docker-compose is installed (Debian: apt-get install docker-compose)"
        exit 1
    fi
}
# The compose command line of stack NAME (m0, m1, ..., observer).
stack() {
    local name="$1"
    shift
    if [ "$name" = observer ]; then
        compose --env-file "$dir/observer/.env" -f "$here/observer.yml" -f "$here/observer.wan.yml" \
            -p "${prefix}observer" "$@"
    else
        compose --env-file "$dir/$name/.env" -f "$here/compose.yml" -f "$here/compose.wan.yml" \
            -p "${prefix}$name" "$@"
    fi
}
stacks() {
    local i
    for i in $(seq 0 $(($(cat "$dir/members") - 1))); do echo "m$i"; done
    echo observer
}
btc() { docker exec "$miner" bitcoin-cli -regtest -rpcuser=miner -rpcpassword=miner "$@"; }
secret() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

generate() {
    log "generating $members member keys and genesis in $dir"
    # The image's user (uid 10001) makes the keys and reads the public files.
    chmod 0755 "$dir"
    local args=() i
    for i in $(seq 0 $((members - 1))); do
        install -d -o 10001 -g 10001 -m 0700 "$dir/m$i"
        rm -f "$dir/m$i/member.key" "$dir/m$i/member.json"   # a half-made earlier run
        docker run --rm --network none --user 10001:10001 -v "$dir/m$i:/out" "$image" keygen --name "m$i" \
            --p2p-address "/ip4/$sub.$((10 + i))/tcp/7000" \
            --out /out/member.key --public-out /out/member.json >"$dir/keygen.log" 2>&1 ||
            { cat "$dir/keygen.log" >&2; exit 1; }
        args+=(--member "/fed/m$i/member.json")
        cat >"$dir/m$i/.env" <<EOF
BITCOIN_CHAIN=regtest
BITCOIN_RPC_PASSWORD=$(secret)
FEDPEG_GENESIS=$dir/genesis.json
FEDPEG_KEY_FILE=$dir/m$i/member.key
FEDPEG_P2P_BIND=127.0.0.1
FEDPEG_P2P_PORT=$((base + 100 + i))
FEDPEG_API_PORT=$((base + 1 + i))
FEDPEG_METRICS_PORT=$((base + 200 + i))
PROMETHEUS_PORT=$((base + 300 + i))
FEDPEG_IMAGE=$image
FEDPEG_WAN_NETWORK=$wan
FEDPEG_WAN_IP=$sub.$((10 + i))
BITCOIND_WAN_IP=$sub.$((40 + i))
BITCOIND_EXTRA_ARGS=-addnode=$sub.2:18444 -fallbackfee=0.0002
FEDPEG_LOG_FORMAT=text
EOF
    done
    mkdir -p "$dir/observer"
    cat >"$dir/observer/.env" <<EOF
FEDPEG_GENESIS=$dir/genesis.json
FEDPEG_API_PORT=$base
FEDPEG_METRICS_PORT=$((base + 200 + members))
FEDPEG_IMAGE=$image
FEDPEG_WAN_NETWORK=$wan
FEDPEG_WAN_IP=$sub.30
FEDPEG_LOG_FORMAT=text
EOF
    # A dev wallet funded at genesis (regtest only), for transfers.
    install -d -o 10001 -g 10001 -m 0700 "$dir/wallets"
    local faucet
    faucet=$(docker run --rm --user 10001:10001 -v "$dir/wallets:/w" --entrypoint fedpeg "$image" \
        --json --key /w/faucet.key keygen --network regtest |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["address"])')
    install -d -o 10001 -g 10001 "$dir/out"
    docker run --rm --network none --user 10001:10001 -v "$dir:/fed" "$image" genesis --network regtest \
        --chain-name fedpeg-docker "${args[@]}" --dev-balance "$faucet=10000000000" \
        --out /fed/out/genesis.json >/dev/null
    mv "$dir/out/genesis.json" "$dir/genesis.json"
    rmdir "$dir/out"
    chmod 0644 "$dir/genesis.json"
    rm -f "$dir/keygen.log"
    echo "$members" >"$dir/members"
}

up() {
    if [ -f "$dir/genesis.json" ]; then
        if [ "$(cat "$dir/members")" != "$members" ]; then
            log "$dir holds a federation of $(cat "$dir/members") members, not $members: using it (remove $dir for a new one)"
            members=$(cat "$dir/members")
        fi
        log "reusing $dir ($members members)"
    else
        generate
    fi
    docker network inspect "$wan" >/dev/null 2>&1 ||
        docker network create --subnet "$sub.0/24" "$wan" >/dev/null
    if ! docker container inspect "$miner" >/dev/null 2>&1; then
        docker run -d --name "$miner" --network "$wan" --ip "$sub.2" fedpeg.invalid/bitcoind:knots \
            -regtest -datadir=/data -server -listen=1 -rpcbind=0.0.0.0 -rpcallowip=0.0.0.0/0 \
            -rpcuser=miner -rpcpassword=miner -fallbackfee=0.0002 -addresstype=bech32 \
            -changetype=bech32 -txindex=0 >/dev/null
    fi
    docker start "$miner" >/dev/null
    local i
    for i in $(seq 1 100); do btc getblockchaininfo >/dev/null 2>&1 && break; sleep 0.2; done
    btc -named createwallet wallet_name=miner load_on_startup=true >/dev/null 2>&1 ||
        btc loadwallet miner >/dev/null 2>&1 || true
    if [ "$(btc getblockcount)" -lt 101 ]; then
        btc generatetoaddress 101 "$(btc getnewaddress)" >/dev/null
    fi
    # All stacks at once: each waits for its own bitcoind to be healthy.
    local s pids=() failed=0
    for s in $(stacks); do
        log "starting stack ${prefix}$s"
        stack "$s" up -d >/dev/null 2>"$dir/compose-$s.log" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || failed=1; done
    if [ $failed = 1 ]; then
        for s in $(stacks); do cat "$dir/compose-$s.log" >&2; done
        exit 1
    fi
    log "waiting for every fedpegd to be healthy"
    local deadline=$((SECONDS + 180)) unhealthy
    while :; do
        unhealthy=""
        for s in $(stacks); do
            local id
            id=$(stack "$s" ps -q fedpegd)
            [ "$(docker inspect -f '{{.State.Health.Status}}' "$id")" = healthy ] || unhealthy+=" $s"
        done
        [ -z "$unhealthy" ] && break
        [ $SECONDS -lt $deadline ] || { log "not healthy after 180 s:$unhealthy"; exit 1; }
        sleep 2
    done
    cat >&2 <<EOF

fedpeg federation in Docker: $members members + 1 observer (regtest), files in $dir
  observer     gRPC http://127.0.0.1:$base
$(for i in $(seq 0 $((members - 1))); do echo "  member m$i    gRPC http://127.0.0.1:$((base + 1 + i))   metrics http://127.0.0.1:$((base + 200 + i))/metrics   Prometheus http://127.0.0.1:$((base + 300 + i))"; done)
  faucet key   $dir/wallets/faucet.key
  Bitcoin      docker exec $miner bitcoin-cli -regtest -rpcuser=miner -rpcpassword=miner -rpcwallet=miner ...
  stop         $0 down --dir $dir
EOF
}

down() {
    [ -f "$dir/members" ] || { log "no federation in $dir"; exit 0; }
    local s
    for s in $(stacks); do
        [ -f "$dir/$s/.env" ] && stack "$s" down -v --remove-orphans >/dev/null 2>&1 || true
    done
    docker rm -f -v "$miner" >/dev/null 2>&1 || true
    docker network rm "$wan" >/dev/null 2>&1 || true
    log "stopped; keys and genesis stay in $dir"
}

ps_() {
    local s
    for s in $(stacks); do stack "$s" ps; done
}

case "$cmd" in
    up) up ;;
    down) down ;;
    ps) ps_ ;;
esac
