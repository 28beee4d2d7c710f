#!/usr/bin/env bash
# deploy/bitcoind.sh: find or install a bitcoind + bitcoin-cli that fedpeg can run.
#
# Usage:
#   deploy/bitcoind.sh            print two lines on stdout (nothing else goes to stdout):
#                                   BITCOIND=/abs/path/to/bitcoind-executable
#                                   BITCOIN_CLI=/abs/path/to/bitcoin-cli-executable
#   deploy/bitcoind.sh --check    print only the version line of that bitcoind
#   deploy/bitcoind.sh --help
#
# Both printed paths are plain executables: run them with normal bitcoind /
# bitcoin-cli arguments. When they are the wrappers this script generates, the
# wrappers `exec`, so the pid you spawn IS bitcoind and SIGTERM/SIGKILL to it
# reach bitcoind directly.
#
# Callers:
#   bash:  eval "$(deploy/bitcoind.sh)"      # sets BITCOIND and BITCOIN_CLI
#          (values are printed unquoted; fine for the default cache paths, which
#           contain no whitespace or shell metacharacters)
#   Rust:  run it, split each stdout line at the first '=', use the values.
#
# Where the binaries come from, first match wins:
#   1. $BITCOIND (a path or a command name); $BITCOIN_CLI, else the bitcoin-cli
#      next to $BITCOIND, else bitcoin-cli on PATH.
#   2. bitcoind on PATH (bitcoin-cli: $BITCOIN_CLI, next to it, or on PATH).
#   3. A private install in ${FEDPEG_CACHE:-$HOME/.cache/fedpeg}/bitcoind.
#
# Why a private install: Debian 12 (bookworm, our machines) ships no bitcoind,
# and we may only reach Debian's package archive. Debian sid ships bitcoin-knots
# (a Bitcoin Core derivative with the same RPC), built against a newer glibc than
# bookworm has. So we download the .debs with apt under a throw-away apt config
# (the system's apt config, lists and dpkg database are never touched), unpack
# them with dpkg-deb, and run the binaries through the unpacked (newer) dynamic
# loader with an explicit library path, so the old system glibc is never mixed in.
# The runtime libraries are taken from trixie (stable) where trixie's version
# satisfies the Depends version, else from sid.
#
# The install is idempotent: a marker is written only after a smoke test passed,
# after which a run does no network access and returns at once. A flock
# serialises parallel first runs (e.g. several test binaries starting at once).
#
# Things callers should know about the private install (Bitcoin Knots 29.x):
#   - Knots defaults -walletimplicitsegwit=0, which makes wallets hand out
#     LEGACY (P2PKH) receive AND change addresses. Start it with
#     -addresstype=bech32 (change then follows) or ask for a type explicitly.
#   - Knots policy is stricter than Core (e.g. -permitbaremultisig=0,
#     -rejectparasites=1, -datacarriersize=83); use P2WSH, not bare multisig.
#   - In ps the node is named "bitcoind" (see write_wrapper), but
#     /proc/PID/exe is the unpacked ld-linux loader.
#
# Environment knobs:
#   BITCOIND, BITCOIN_CLI     use these binaries (see above)
#   FEDPEG_CACHE              cache root (default $HOME/.cache/fedpeg)
#   FEDPEG_DEBIAN_MIRROR      Debian archive URL (default http://deb.debian.org/debian)
set -euo pipefail

readonly PROG="deploy/bitcoind.sh"
# Bump when the install layout or wrapper format changes: a marker with another
# value makes the next run reinstall instead of trusting a stale tree.
readonly INSTALL_FORMAT="fedpeg-bitcoind-install-v2"
readonly MIRROR="${FEDPEG_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Release whose libraries we prefer (stable, so the set does not churn), and the
# one that actually carries bitcoin-knots (and newer libs when needed).
readonly STABLE_REL=trixie
readonly UNSTABLE_REL=sid
readonly MAIN_PKG=bitcoin-knots

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }

HINT="Alternatively install Bitcoin Core (bitcoind and bitcoin-cli) on PATH, or set
BITCOIND=/path/to/bitcoind (and BITCOIN_CLI=/path/to/bitcoin-cli if it is not next to it)."

die() {
    log "error: $*"
    printf '%s\n' "$HINT" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

# Absolute path of an executable given as a path or as a command name; fails if
# it is not an executable file. Symlinks are kept as given (a sibling
# bitcoin-cli is looked up next to the name the user chose).
abs_exec() {
    local p=$1
    if [[ $p != */* ]]; then
        p=$(type -P -- "$p") || return 1
    fi
    [[ $p == /* ]] || p=$PWD/$p
    [[ -f $p && -x $p ]] || return 1
    printf '%s\n' "$p"
}

# bitcoin-cli to pair with a given bitcoind: $BITCOIN_CLI, sibling, then PATH.
find_cli() {
    local bd=$1 cli
    if [[ -n ${BITCOIN_CLI:-} ]]; then
        abs_exec "$BITCOIN_CLI" || die "BITCOIN_CLI=$BITCOIN_CLI is not an executable file"
        return
    fi
    if cli=$(abs_exec "$(dirname -- "$bd")/bitcoin-cli"); then
        printf '%s\n' "$cli"
        return
    fi
    if cli=$(abs_exec bitcoin-cli); then
        printf '%s\n' "$cli"
        return
    fi
    die "found bitcoind at $bd but no bitcoin-cli next to it or on PATH; set BITCOIN_CLI=/path/to/bitcoin-cli"
}

# ---------------------------------------------------------------------------
# Private install
# ---------------------------------------------------------------------------

CACHE_ROOT="${FEDPEG_CACHE:-${HOME:?neither FEDPEG_CACHE nor HOME is set}/.cache/fedpeg}"
DIR="$CACHE_ROOT/bitcoind"
ROOT="$DIR/root"        # unpacked .debs
BIN="$DIR/bin"          # generated wrappers (what we print)
LIBEXEC="$DIR/libexec"  # loader symlinks named after the programs
APTDIR="$DIR/apt"       # private apt state; deleted after a good install
MARKER="$DIR/.installed"
LOGFILE="$DIR/install.log"

installed() {
    [[ -f $MARKER && $(<"$MARKER") == "$INSTALL_FORMAT" &&
        -x $BIN/bitcoind && -x $BIN/bitcoin-cli && -x $ROOT/usr/bin/bitcoind ]]
}

# Quote a string for /bin/sh single quotes (the wrappers are sh, for speed).
sh_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# Debian architecture -> (multiarch triplet, dynamic loader name). Only these two
# have been thought about; x86_64 is the one that is tested.
arch_info() {
    local arch
    arch=$(dpkg --print-architecture)
    case $arch in
        amd64) echo "$arch x86_64-linux-gnu ld-linux-x86-64.so.2" ;;
        arm64) echo "$arch aarch64-linux-gnu ld-linux-aarch64.so.1" ;;
        *) die "no private bitcoind install for architecture '$arch'" ;;
    esac
}

# apt-get with the private config. APT_CONFIG is read before the parts
# dir and the main config, so pointing those at empty places here means none of
# the system's apt.conf.d hooks (PackageKit, appstream, ...) run and none of its
# sources are used.
papt() { APT_CONFIG="$APTDIR/apt.conf" "$@"; }

write_apt_config() {
    local arch=$1 p
    rm -rf "$APTDIR"
    mkdir -p "$APTDIR"/{parts,prefs,state/lists/partial,cache/archives/partial,log,debs}
    : >"$APTDIR/state/status"
    {
        echo "deb [signed-by=$KEYRING] $MIRROR $STABLE_REL main"
        echo "deb [signed-by=$KEYRING] $MIRROR $UNSTABLE_REL main"
    } >"$APTDIR/sources.list"
    {
        echo "Dir::Etc::Main \"/dev/null\";"
        echo "Dir::Etc::Parts \"$APTDIR/parts\";"
        echo "Dir::Etc::Preferences \"/dev/null\";"
        echo "Dir::Etc::PreferencesParts \"$APTDIR/prefs\";"
        echo "Dir::Etc::SourceList \"$APTDIR/sources.list\";"
        echo "Dir::Etc::SourceParts \"/dev/null\";"
        echo "Dir::State \"$APTDIR/state\";"
        echo "Dir::State::status \"$APTDIR/state/status\";"
        echo "Dir::Cache \"$APTDIR/cache\";"
        echo "Dir::Log \"$APTDIR/log\";"
        echo "APT::Architecture \"$arch\";"
        echo "APT::Architectures { \"$arch\"; };"
        echo "APT::Default-Release \"$STABLE_REL\";"
        echo "Acquire::Languages \"none\";"
        # index_release() reads the Packages lists as plain text.
        echo "Acquire::GzipIndexes \"false\";"
        echo "Acquire::Retries \"3\";"
        echo "Acquire::http::Timeout \"30\";"
        # The archive mirror we can reach serves sid's InRelease past its
        # Valid-Until date (the system's apt config disables this check too).
        echo "Acquire::Check-Valid-Until \"false\";"
        # As root apt drops to user _apt for downloads, which cannot enter a
        # cache under /root; it would fall back with a warning anyway.
        if [[ $EUID -eq 0 ]]; then echo "APT::Sandbox::User \"root\";"; fi
        # Keep any proxy the system's apt is configured with.
        for p in Acquire::http::Proxy Acquire::https::Proxy; do
            local v
            v=$(apt-config dump "$p" 2>/dev/null | sed -n "s/^$p \"\(.*\)\";\$/\1/p" | head -n1)
            if [[ -n $v ]]; then echo "$p \"$v\";"; fi
        done
    } >"$APTDIR/apt.conf"
}

# Index the downloaded Packages lists of release $1 into IDX_VER/IDX_DEP, keyed
# "release/package". Only Section: libs packages (and $MAIN_PKG) are kept: the
# other dependencies (debconf, systemd, adduser, ...) serve installing a system
# service, not running the binaries out of an unpacked tree. Parsing the lists
# with awk once is far faster than one apt-cache call per dependency.
declare -A IDX_VER=() IDX_DEP=()
index_release() {
    local rel=$1 arch=$2 file name ver deps
    local -a files
    shopt -s nullglob
    files=("$APTDIR"/state/lists/*_dists_"${rel}"_main_binary-"${arch}"_Packages)
    shopt -u nullglob
    ((${#files[@]} == 1)) || die "expected one Packages list for $rel, found ${#files[@]} (log: $LOGFILE)"
    file=${files[0]}
    while IFS=$'\t' read -r name ver deps; do
        IDX_VER[$rel/$name]=$ver
        IDX_DEP[$rel/$name]=$deps
    done < <(awk -v main="$MAIN_PKG" 'BEGIN { RS = ""; FS = "\n" }
        {
            n = v = s = d = ""
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^Package: /) n = substr($i, 10)
                else if ($i ~ /^Version: /) v = substr($i, 10)
                else if ($i ~ /^Section: /) s = substr($i, 10)
                else if ($i ~ /^(Pre-)?Depends: /) {
                    sub(/^(Pre-)?Depends: /, "", $i)
                    d = d (d == "" ? "" : ", ") $i
                }
            }
            if (s ~ /libs$/ || n == main) print n "\t" v "\t" d
        }' "$file")
}

# Runtime closure of $MAIN_PKG into PKG_REL[name]=release, PKG_VER[name]=version.
# Libraries come from $STABLE_REL unless a versioned Depends needs the newer one
# from $UNSTABLE_REL. smoke_test() then proves, with the loader itself, that the
# closure covers everything the binaries link.
declare -A PKG_REL=() PKG_VER=()
# One Depends alternative: name, optional :arch qualifier, optional (op version).
readonly DEP_RE='^[[:space:]]*([^[:space:](:]+)(:[a-z0-9]+)?[[:space:]]*(\(([<>=]+)[[:space:]]*([^)[:space:]]+)\))?'
resolve_closure() {
    [[ -n ${IDX_VER[$UNSTABLE_REL/$MAIN_PKG]:-} ]] || die "package $MAIN_PKG not found in Debian $UNSTABLE_REL"
    PKG_REL[$MAIN_PKG]=$UNSTABLE_REL
    PKG_VER[$MAIN_PKG]=${IDX_VER[$UNSTABLE_REL/$MAIN_PKG]}
    local -a queue=("$MAIN_PKG")
    while ((${#queue[@]})); do
        local p=${queue[0]} clause
        queue=("${queue[@]:1}")
        local -a clauses
        IFS=',' read -r -a clauses <<<"${IDX_DEP[${PKG_REL[$p]}/$p]}"
        for clause in "${clauses[@]}"; do
            local alt chosen="" op="" want="" name
            local -a alts
            IFS='|' read -r -a alts <<<"$clause"
            # First alternative we know as a library package (virtual or
            # non-library alternatives are passed over).
            for alt in "${alts[@]}"; do
                [[ $alt =~ $DEP_RE ]] || continue
                name=${BASH_REMATCH[1]}
                if [[ -n ${IDX_VER[$STABLE_REL/$name]:-}${IDX_VER[$UNSTABLE_REL/$name]:-} ]]; then
                    chosen=$name op=${BASH_REMATCH[4]} want=${BASH_REMATCH[5]}
                    break
                fi
            done
            if [[ -z $chosen ]]; then
                echo "skip dependency of $p (not a library):$clause" >>"$LOGFILE"
                continue
            fi
            local rel=${PKG_REL[$chosen]:-$STABLE_REL}
            [[ -n ${IDX_VER[$rel/$chosen]:-} ]] || rel=$UNSTABLE_REL
            local ver=${IDX_VER[$rel/$chosen]}
            if [[ -n $op ]] && ! dpkg --compare-versions "$ver" "$op" "$want"; then
                rel=$UNSTABLE_REL
                ver=${IDX_VER[$rel/$chosen]:-}
                if [[ -z $ver ]] || ! dpkg --compare-versions "$ver" "$op" "$want"; then
                    die "no version of $chosen in $STABLE_REL or $UNSTABLE_REL satisfies '$op $want' (needed by $p)"
                fi
            fi
            # New package, or moved to the other release: (re)walk its deps.
            if [[ ${PKG_REL[$chosen]:-} != "$rel" ]]; then
                PKG_REL[$chosen]=$rel
                PKG_VER[$chosen]=$ver
                queue+=("$chosen")
            fi
        done
    done
}

# The wrapper execs the loader through a symlink named like the program: the
# kernel takes the process name (/proc/PID/comm, what `ps -C`, `pgrep -x` and
# top show) from the exec'd file name, so the node shows up as "bitcoind"
# rather than "ld-linux-x86-64". The loader does not care what it is called.
write_wrapper() {
    local name=$1 loader=$2 libpath=$3
    local tmp="$BIN/.$name.tmp"
    ln -sfn "$loader" "$LIBEXEC/$name"
    {
        echo '#!/bin/sh'
        echo "# Generated by fedpeg's deploy/bitcoind.sh: run the unpacked $name with its own"
        echo "# (newer) glibc. exec keeps the pid, so signals to this script reach $name."
        echo "exec $(sh_quote "$LIBEXEC/$name") --inhibit-cache --library-path $(sh_quote "$libpath") $(sh_quote "$ROOT/usr/bin/$name") \"\$@\""
    } >"$tmp"
    chmod 0755 "$tmp"
    mv -f "$tmp" "$BIN/$name"
}

# Every library the binaries link must come from our tree; a "not found" or a
# fallback to the system's /lib would break (old glibc) or hide a missing dep.
smoke_test() {
    local loader=$1 libpath=$2 name out
    for name in bitcoind bitcoin-cli; do
        out=$("$loader" --inhibit-cache --library-path "$libpath" --list "$ROOT/usr/bin/$name" 2>&1) ||
            die "loader cannot load $name: $out"
        if grep -q 'not found' <<<"$out"; then
            die "missing libraries for $name:"$'\n'"$(grep 'not found' <<<"$out")"
        fi
        local bad
        bad=$(grep -F '=> /' <<<"$out" | grep -vF "=> $ROOT/" || true)
        [[ -z $bad ]] || die "$name would load system libraries:"$'\n'"$bad"
        out=$("$BIN/$name" -version 2>&1) || die "$BIN/$name -version failed: $out"
        grep -q 'version' <<<"$out" || die "$BIN/$name -version printed no version: $out"
    done
}

do_install() {
    if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        die "no bitcoind found, and apt-get/dpkg-deb (needed to fetch one) are missing"
    fi
    [[ -r $KEYRING ]] || die "no bitcoind found and $KEYRING is missing (apt-get install debian-archive-keyring)"
    local info arch triplet ldname
    info=$(arch_info) # separate step: a die inside would be lost in a here-string
    read -r arch triplet ldname <<<"$info"

    log "no bitcoind on PATH and none cached: installing Debian's $MAIN_PKG into $DIR (one time, needs $MIRROR)"
    rm -rf "$ROOT" "$BIN" "$LIBEXEC" "$MARKER"
    : >"$LOGFILE"
    # The lists and .debs are ~150 MB of scratch; never leave them behind.
    trap 'rm -rf "$APTDIR"' EXIT
    write_apt_config "$arch"

    # --error-on=any: a source that cannot be fetched must fail here, not
    # later as a confusing "package not found".
    papt apt-get -q --error-on=any update >>"$LOGFILE" 2>&1 ||
        die "apt-get update against $MIRROR failed (log: $LOGFILE):"$'\n'"$(tail -n 5 "$LOGFILE")"
    index_release "$STABLE_REL" "$arch"
    index_release "$UNSTABLE_REL" "$arch"
    resolve_closure

    local -a specs=()
    local p
    for p in "${!PKG_VER[@]}"; do specs+=("$p=${PKG_VER[$p]}"); done
    (cd "$APTDIR/debs" && papt apt-get -q download "${specs[@]}") >>"$LOGFILE" 2>&1 ||
        die "downloading ${specs[*]} failed (log: $LOGFILE):"$'\n'"$(tail -n 5 "$LOGFILE")"

    mkdir -p "$ROOT" "$BIN" "$LIBEXEC"
    local deb
    for deb in "$APTDIR"/debs/*.deb; do
        dpkg-deb -x "$deb" "$ROOT" || die "cannot unpack $deb"
    done
    # Docs, man pages and locales are dead weight in a cache.
    rm -rf "$ROOT"/usr/share/{doc,man,info,locale,lintian}

    # The real loader file lives in the triplet dir; /lib64/... is a symlink in
    # the .deb, possibly absolute (pointing at the system loader), so avoid it.
    local loader="" c
    for c in "$ROOT/usr/lib/$triplet/$ldname" "$ROOT/lib/$triplet/$ldname"; do
        if [[ -f $c && ! -L $c ]]; then loader=$c; break; fi
    done
    [[ -n $loader ]] || die "unpacked libc6 has no $ldname"
    local libpath="$ROOT/usr/lib/$triplet:$ROOT/lib/$triplet"

    for p in bitcoind bitcoin-cli bitcoin-tx bitcoin-wallet bitcoin-util; do
        if [[ -x $ROOT/usr/bin/$p ]]; then write_wrapper "$p" "$loader" "$libpath"; fi
    done
    smoke_test "$loader" "$libpath"

    for p in "${!PKG_VER[@]}"; do printf '%s %s %s\n' "$p" "${PKG_VER[$p]}" "${PKG_REL[$p]}"; done |
        sort >"$DIR/PACKAGES"
    rm -rf "$APTDIR"
    printf '%s\n' "$INSTALL_FORMAT" >"$MARKER.tmp"
    mv -f "$MARKER.tmp" "$MARKER"
    local v
    v=$("$BIN/bitcoind" -version)
    log "installed ${v%%$'\n'*} (package list: $DIR/PACKAGES)"
}

ensure_installed() {
    installed && return 0
    mkdir -p "$DIR" || die "cannot create $DIR (set FEDPEG_CACHE to a writable directory)"
    command -v flock >/dev/null || die "flock (util-linux) is needed to install bitcoind safely"
    exec 9>"$DIR/.lock"
    flock -w 900 9 || die "timed out waiting for another install in $DIR (lock $DIR/.lock)"
    # Whoever held the lock before us may have finished the job.
    installed || do_install
    exec 9>&-
}

# ---------------------------------------------------------------------------

resolve() {
    if [[ -n ${BITCOIND:-} ]]; then
        BD=$(abs_exec "$BITCOIND") || die "BITCOIND=$BITCOIND is not an executable file"
        CLI=$(find_cli "$BD")
    elif BD=$(abs_exec bitcoind); then
        CLI=$(find_cli "$BD")
    else
        ensure_installed
        BD=$BIN/bitcoind
        if [[ -n ${BITCOIN_CLI:-} ]]; then CLI=$(find_cli "$BD"); else CLI=$BIN/bitcoin-cli; fi
    fi
}

main() {
    local mode=print
    case "${1:-}" in
        "") ;;
        --check) mode=check ;;
        -h | --help) usage; exit 0 ;;
        *) log "unknown argument: $1 (see $PROG --help)"; exit 2 ;;
    esac
    local BD CLI
    resolve
    if [[ $mode == check ]]; then
        local v
        v=$("$BD" -version) || die "$BD -version failed"
        printf '%s\n' "${v%%$'\n'*}"
    else
        printf 'BITCOIND=%s\nBITCOIN_CLI=%s\n' "$BD" "$CLI"
    fi
}

main "$@"
