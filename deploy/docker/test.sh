#!/usr/bin/env bash
# deploy/docker/test.sh: the multi-host Docker test of the operator package.
#
#   deploy/docker/test.sh --bin-dir DIR
#
# DIR holds fedpegd and fedpeg built with `cargo build -p fedpegd -p
# fedpeg-cli` (deploy/test.sh does this). As root it installs what it needs
# from Debian (docker.io, docker-compose, debootstrap), starts dockerd when
# none runs, builds the base image locally (no registry), the images, and a
# federation with deploy/docker/federation.sh: 4 member stacks as separate
# compose projects (fedpegd + own bitcoind + Prometheus), an observer stack and
# a regtest miner, each member on its own network and its own address on one
# shared network. Then:
#   1. peg-in minted, transfers final, a peg-out confirmed on Bitcoin;
#   2. member m3 partitioned (docker network disconnect): 3 of 4 go on and
#      sign a peg-out; m3 stays where it was cut off;
#   3. member m2 killed (docker kill): 2 of 4 stop, a transfer waits unfinalized;
#   4. m2 back (docker start): the chain goes on, the waiting transfer is final;
#   5. m3 reconnected: it catches up and votes again;
#   6. every node has the same blocks at the checked heights, the same
#      balances, every transfer final, no equivocation; each member's
#      Prometheus scrapes it with the alert rules loaded; the container health
#      checks (grpc.health.v1) report healthy.
# Takes ~2 min on 2 cores once the images are cached, ~3 min cold. It only
# talks to loopback and to the containers and networks it creates.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir="${2:?--bin-dir needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "docker/test.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -n "$bin_dir" ] || { echo "docker/test.sh: --bin-dir is required" >&2; exit 2; }
bin_dir="$(cd "$bin_dir" && pwd)"
started=$SECONDS
step() { printf '\ndocker/test.sh [%3ds] %s\n' $((SECONDS - started)) "$*" >&2; }
fail() { printf 'docker/test.sh: FAIL: %s\n' "$*" >&2; exit 1; }

# --- what the test needs --------------------------------------------------
[ "$(id -u)" = 0 ] || fail "needs root (Docker, debootstrap)"
export FEDPEG_STACK_PREFIX=fedpegtest- FEDPEG_WAN_SUBNET="${FEDPEG_TEST_SUBNET:-172.29.0}" \
    FEDPEG_PORT_BASE="${FEDPEG_TEST_PORT_BASE:-22050}"
prefix=$FEDPEG_STACK_PREFIX
base=$FEDPEG_PORT_BASE
sub=$FEDPEG_WAN_SUBNET
wan="${prefix}wan"
dir=$(mktemp -d /tmp/fedpeg-docker-test.XXXXXX)
dockerd_pid=""
miner_loop=""
fed() { "$here/federation.sh" "$1" --members 4 --dir "$dir"; }
cid() { # container of service $2 in stack $1
    docker ps -aq --filter "label=com.docker.compose.project=${prefix}$1" \
        --filter "label=com.docker.compose.service=$2"
}
cleanup() {
    local rc=$?
    if [ $rc != 0 ] && docker info >/dev/null 2>&1; then
        echo "docker/test.sh: failed after $((SECONDS - started)) s; last log lines:" >&2
        for s in m0 m1 m2 m3 observer; do
            local c
            c=$(cid "$s" fedpegd 2>/dev/null || true)
            if [ -n "$c" ]; then
                echo "--- $s fedpegd" >&2
                docker logs --tail 15 "$c" 2>&1 | cut -c1-300 >&2
            fi
        done
    fi
    if [ -n "$miner_loop" ]; then kill "$miner_loop" 2>/dev/null || true; fi
    if docker info >/dev/null 2>&1; then fed down >/dev/null 2>&1 || true; fi
    rm -rf "$dir"
    if [ -n "$dockerd_pid" ]; then kill "$dockerd_pid" 2>/dev/null || true; fi
    exit $rc
}
trap cleanup EXIT
apt_updated=0
apt_install() {
    if [ $apt_updated = 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v dockerd >/dev/null || { step "installing docker.io"; apt_install docker.io; }
if ! docker info >/dev/null 2>&1; then
    step "starting dockerd"
    dockerd >/tmp/fedpeg-dockerd.log 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail -20 /tmp/fedpeg-dockerd.log >&2; fail "dockerd did not start"; }
fi
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    step "installing docker-compose"
    apt_install docker-compose
fi
command -v curl >/dev/null || apt_install curl
command -v objdump >/dev/null || apt_install binutils
command -v debootstrap >/dev/null || apt_install debootstrap

step "images (base image from debootstrap when no registry has it)"
FEDPEG_DEBOOTSTRAP_BASE=1 "$here/build.sh" --bin-dir "$bin_dir" --with-test-images

step "0. a member stack refuses to start without its required values"
dc() { if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi; }
refused() { # refused ENV_FILE NAME: compose stops with NAME's message
    local out
    if out=$(dc --env-file "$1" -f "$here/compose.yml" config 2>&1); then
        fail "compose accepted $1 without $2"
    fi
    grep -q "set $2" <<<"$out" || fail "compose's refusal does not name $2: $out"
}
refused "$here/.env.example" '[A-Z_]*'   # as shipped: some required value is empty
# Each required value missing alone, with all the others set.
partial=$(mktemp /tmp/fedpeg-env.XXXXXX)
for missing in FEDPEG_IMAGE BITCOIN_CHAIN BITCOIN_RPC_PASSWORD FEDPEG_GENESIS FEDPEG_KEY_FILE FEDPEG_P2P_PORT; do
    sed 's|^BITCOIN_CHAIN=$|BITCOIN_CHAIN=regtest|; s|^BITCOIN_RPC_PASSWORD=$|BITCOIN_RPC_PASSWORD=x|;
         s|^FEDPEG_GENESIS=$|FEDPEG_GENESIS=/tmp/g.json|; s|^FEDPEG_KEY_FILE=$|FEDPEG_KEY_FILE=/tmp/m.key|' \
        "$here/.env.example" | grep -v "^$missing=" >"$partial"
    refused "$partial" "$missing"
done
rm -f "$partial"

# --- the federation ---------------------------------------------------------
step "starting 4 member stacks, an observer and a regtest miner"
fed up

node() { if [ "$1" = observer ]; then echo "http://127.0.0.1:$base"; else echo "http://127.0.0.1:$((base + 1 + ${1#m}))"; fi; }
cli() { "$bin_dir/fedpeg" "$@"; }
js() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
height() { cli --node "$(node "$1")" --json status 2>/dev/null | js 'd["height"]' || echo -1; }
hash_at() { cli --node "$(node "$1")" --json block "$2" | js 'd["hash"]'; }
balance() { cli --node "$(node "$2")" --json balance "$1" | js 'd["balance"]'; }
btc() { docker exec "${prefix}miner" bitcoin-cli -regtest -rpcuser=miner -rpcpassword=miner -rpcwallet=miner "$@"; }
# wait_until SECONDS WHAT COMMAND...: retry COMMAND every second.
wait_until() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || fail "$what: not within $limit s"
        sleep 1
    done
}
above() { [ "$(height "$1")" -gt "$2" ]; }
at_least() { [ "$(height "$1")" -ge "$2" ]; }
faucet="$dir/wallets/faucet.key"
txids=()
send() { # send FROM_NODE KEY TO AMOUNT: waits until final
    local t
    t=$(cli --node "$(node "$1")" --key "$2" --json send --to "$3" --amount "$4" --timeout-secs 60 | js 'd["txid"]')
    txids+=("$t")
}

# --- 1. peg-in, transfers, peg-out with all four --------------------------
step "1. peg-in, transfers and a peg-out with all 4 members"
alice=$(cli --key "$dir/alice.key" --json keygen --network regtest | js 'd["address"]')
bob=$(cli --key "$dir/bob.key" --json keygen --network regtest | js 'd["address"]')
send m0 "$faucet" "$alice" 1000000
send m1 "$faucet" "$bob" 500000
deposit=$(cli --node "$(node m0)" --key "$dir/alice.key" --json pegin | js 'd["deposit_address"]')
# Three deposits: each mint's spend cost goes to the fee pool, which pays
# the Bitcoin fees of the two peg-outs below (a batch waits for the pool).
for _ in 1 2 3; do btc sendtoaddress "$deposit" 0.001 >/dev/null; done
btc generatetoaddress 6 "$(btc getnewaddress)" >/dev/null
minted() { [ "$(balance "$alice" m0)" -ge $((1000000 + 3 * 98680)) ]; }
wait_until 120 "peg-in minted" minted
echo "peg-in minted: alice has $(balance "$alice" m0) sats" >&2
# pegout NODE ADDRESS SATS: a peg-out, mined until confirmed; checks that
# ADDRESS (used for nothing else) holds exactly one output of SATS.
pegout() {
    local miner_addr state got
    miner_addr=$(btc getnewaddress)
    ( while :; do btc generatetoaddress 1 "$miner_addr" >/dev/null 2>&1 || true; sleep 3; done ) &
    miner_loop=$!
    state=$(cli --node "$(node "$1")" --key "$dir/alice.key" --json pegout --to "$2" --amount "$3" \
        --wait --timeout-secs 300 | tail -1 | js 'd["state"]')
    kill "$miner_loop"; miner_loop=""
    [ "$state" = CONFIRMED ] || fail "peg-out state $state, want CONFIRMED"
    got=$(btc listunspent 1 9999999 "[\"$2\"]" | js '" ".join(str(round(u["amount"] * 1e8)) for u in d)')
    [ "$got" = "$3" ] || fail "the peg-out address holds [$got], want exactly [$3]"
    echo "peg-out confirmed: $3 sats at $2" >&2
}
pegout m2 "$(btc getnewaddress)" 30000

# --- 2. partition m3: 3 of 4 go on ---------------------------------------
step "2. partition m3 from the others (docker network disconnect); 3 of 4 finalize and sign a peg-out"
# m3's precommits, as the others see them in commit certificates.
m3_signed() {
    curl -fsS "http://127.0.0.1:$((base + 200))/metrics" |
        awk '/^fedpeg_member_last_signed_height\{member="m3"\}/ { print $2; f = 1 } END { if (!f) print -1 }'
}
docker network disconnect "$wan" "$(cid m3 fedpegd)"
sleep 2
h_part=$(height m0)
h3=$(height m3)
signed3=$(m3_signed)
[ "$h_part" -gt 0 ] && [ "$h3" -gt 0 ] || fail "heights at the partition: m0 $h_part, m3 $h3"
send m0 "$faucet" "$bob" 1111
send m1 "$dir/bob.key" "$alice" 222
wait_until 30 "3 of 4 keep finalizing" above m0 $((h_part + 2))
# The peg threshold is 3 of 4: m3's signature is not needed.
pegout m1 "$(btc getnewaddress)" 20000
[ "$(height m3)" = "$h3" ] || fail "partitioned m3 moved from $h3 to $(height m3)"
[ "$(m3_signed)" = "$signed3" ] || fail "m3's precommit is in certificates after the partition ($signed3 -> $(m3_signed))"
echo "3 of 4: m0 at $(height m0), m3 cut off at $h3 (last signed $signed3)" >&2

# --- 3. kill m2: 2 of 4 stop safely ---------------------------------------
step "3. kill m2 (docker kill): 2 of 4 must stop"
docker kill "$(cid m2 fedpegd)" >/dev/null
sleep 3
h_stop=$(height m0)
[ "$h_stop" -gt "$h_part" ] || fail "m0 at $h_stop, not past the partition height $h_part"
pending=$(cli --node "$(node m0)" --key "$dir/alice.key" --json send --to "$bob" --amount 333 --no-wait | js 'd["txid"]')
txids+=("$pending")
sleep 15
[ "$(height m0)" = "$h_stop" ] || fail "m0 moved from $h_stop to $(height m0) with 2 of 4 members"
[ "$(height m1)" = "$h_stop" ] || fail "m1 at $(height m1), m0 stopped at $h_stop"
[ "$(height m3)" = "$h3" ] || fail "partitioned m3 moved from $h3 to $(height m3)"
status=$(cli --node "$(node m0)" --json tx "$pending" | js 'd["status"]')
[ "$status" = TRANSACTION_STATUS_PENDING ] || fail "the transfer sent to 2 of 4 is $status, want it pending"
for s in m0 m1; do
    [ "$(docker inspect -f '{{.State.Running}}' "$(cid $s fedpegd)")" = true ] || fail "$s exited while stalled"
done
echo "2 of 4: stopped at $h_stop for 15 s, transfer $pending is $status" >&2

# --- 4. m2 returns: the chain heals ---------------------------------------
step "4. start m2 again"
docker start "$(cid m2 fedpegd)" >/dev/null
wait_until 90 "the chain goes on after m2 returns" above m0 "$h_stop"
final() { [ "$(cli --node "$(node m2)" --json tx "$pending" 2>/dev/null | js 'd["status"]')" = TRANSACTION_STATUS_FINALIZED ]; }
wait_until 60 "the waiting transfer is final" final
echo "healed: m0 at $(height m0); the waiting transfer is final" >&2

# --- 5. m3 reconnected: it catches up and votes ----------------------------
step "5. reconnect m3"
docker network connect --ip "$sub.13" "$wan" "$(cid m3 fedpegd)"
target=$(height m0)
wait_until 120 "m3 catches up" at_least m3 "$target"
send m3 "$faucet" "$alice" 444
# m3 signs commits again: its precommit in the latest certificates.
m3_votes() {
    curl -fsS "http://127.0.0.1:$((base + 200))/metrics" |
        awk -v want="$1" '/^fedpeg_member_last_signed_height\{member="m3"\}/ && $2 >= want { ok = 1 } END { exit !ok }'
}
signed_target=$(height m0)
wait_until 60 "m3 votes again" m3_votes "$signed_target"

# --- 6. one chain, nothing lost ---------------------------------------------
step "6. no fork, nothing lost, monitoring and health"
tip=$(height observer)
for h in "$h_part" "$h_stop" $((h_stop + 1)) "$target" "$tip"; do
    want=$(hash_at m0 "$h")
    for s in m1 m2 m3 observer; do
        wait_until 30 "$s reaches $h" at_least "$s" "$h"
        got=$(hash_at "$s" "$h")
        [ "$got" = "$want" ] || fail "block $h: $s has $got, m0 has $want"
    done
done
# Balances, once every node has the blocks m0 has now (every transfer is
# final by now, so no balance changes after this).
now=$(height m0)
for s in m1 m2 m3 observer; do wait_until 30 "$s reaches $now" at_least "$s" "$now"; done
for who in "$alice" "$bob"; do
    want=$(balance "$who" observer)
    for s in m0 m1 m2 m3; do
        [ "$(balance "$who" "$s")" = "$want" ] || fail "balance of $who differs on $s"
    done
done
for t in "${txids[@]}"; do
    st=$(cli --node "$(node observer)" --json tx "$t" | js 'd["status"]')
    [ "$st" = TRANSACTION_STATUS_FINALIZED ] || fail "transfer $t is $st on the observer"
done
for i in 0 1 2 3; do
    eq=$(curl -fsS "http://127.0.0.1:$((base + 200 + i))/metrics" | awk '/^fedpeg_equivocations_detected_total/ {print $2}')
    [ "$eq" = 0 ] || fail "m$i reports $eq equivocations"
done
# Each member hears its bitcoind's blocks over ZMQ (compose.yml): one more
# block reaches every member's node (m2 restarted since the last one).
btc generatetoaddress 1 "$(btc getnewaddress)" >/dev/null
heard() { # member $1's count of block notifications since it started
    local n
    n=$(curl -fsS "http://127.0.0.1:$((base + 200 + $1))/metrics" | awk '/^fedpeg_bitcoin_block_notifications_total/ {print $2}')
    [ "${n:-0}" -gt 0 ]
}
for i in 0 1 2 3; do
    wait_until 30 "m$i hears its bitcoind's blocks over ZMQ" heard "$i"
done
prom_ok() { # member $1's Prometheus scrapes its fedpegd
    curl -fsS "http://127.0.0.1:$((base + 300 + $1))/api/v1/targets" | js 'd["data"]["activeTargets"][0]["health"]' | grep -qx up
}
for i in 0 1 2 3; do
    wait_until 60 "m$i's Prometheus scrapes m$i" prom_ok "$i"
    rules=$(curl -fsS "http://127.0.0.1:$((base + 300 + i))/api/v1/rules" | js 'sum(len(g["rules"]) for g in d["data"]["groups"])')
    [ "$rules" -ge 12 ] || fail "m$i's Prometheus loaded $rules rules"
done
healthy() {
    local s
    for s in m0 m1 m2 m3 observer; do
        [ "$(docker inspect -f '{{.State.Health.Status}}' "$(cid "$s" fedpegd)")" = healthy ] || return 1
    done
}
wait_until 60 "every fedpegd container healthy" healthy
step "PASS: tip $tip on all 5 nodes, ${#txids[@]} transfers and 2 peg-outs final, 0 equivocations, $rules alert rules in each member's Prometheus ($((SECONDS - started)) s)"
