#!/usr/bin/env bash
# Checks deploy/systemd/fedpegd.service: `systemd-analyze verify` (syntax,
# directives, the binary it starts) and `systemd-analyze security` (overall
# exposure at most 2.0, "OK"); and that both checks do fail on a broken or
# unhardened copy. Usage: check.sh [DIR-WITH-fedpegd] (default
# $FEDPEG_BIN_DIR, else target/debug).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin_dir="${1:-${FEDPEG_BIN_DIR:-$here/../../target/debug}}"
[ -x "$bin_dir/fedpegd" ] || { echo "systemd/check.sh: no fedpegd in $bin_dir (build it first)" >&2; exit 1; }
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
    else
        echo "systemd/check.sh: systemd-analyze missing; install with: sudo apt-get install systemd" >&2
        exit 1
    fi
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The unit as installed, but starting the binary just built.
sed "s#/usr/local/bin/fedpegd#$bin_dir/fedpegd#" "$here/fedpegd.service" >"$work/fedpegd.service"
# verify only warns about unknown keys: any output is a failure.
systemd-analyze verify "$work/fedpegd.service" >"$work/verify.txt" 2>&1 || true
if [ -s "$work/verify.txt" ]; then
    cat "$work/verify.txt" >&2
    echo "systemd/check.sh: systemd-analyze verify complained about fedpegd.service" >&2
    exit 1
fi
# Exposure is 0-10 shown, 0-100 for --threshold: 20 means "2.0, OK".
systemd-analyze security --offline=true --threshold=20 "$work/fedpegd.service" >"$work/security.txt" ||
    { cat "$work/security.txt"; echo "systemd/check.sh: fedpegd.service is exposed above 2.0" >&2; exit 1; }
grep "Overall exposure level" "$work/security.txt"

# The checks can fail: a misspelt directive, and the unit without hardening.
mkdir "$work/bad"
sed 's/^Restart=on-failure/Restartt=on-failure/' "$work/fedpegd.service" >"$work/bad/fedpegd.service"
systemd-analyze verify "$work/bad/fedpegd.service" >"$work/bad/verify.txt" 2>&1 || true
if ! grep -q "Unknown key 'Restartt'" "$work/bad/verify.txt"; then
    echo "systemd/check.sh: verify accepted a misspelt directive" >&2; exit 1
fi
grep -v -E '^(Protect|Private|Restrict|NoNewPrivileges|SystemCall|Capability|Memory|Lock|DevicePolicy|KeyringMode|ProcSubset|RemoveIPC|UMask)' \
    "$work/fedpegd.service" >"$work/bad/fedpegd.service"
if systemd-analyze security --offline=true --threshold=20 "$work/bad/fedpegd.service" >/dev/null 2>&1; then
    echo "systemd/check.sh: the security check passed an unhardened unit" >&2; exit 1
fi
echo "systemd/check.sh: fedpegd.service verified"
