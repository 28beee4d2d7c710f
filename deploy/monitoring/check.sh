#!/usr/bin/env bash
# Checks the Prometheus alert rules and runs their unit tests with promtool
# (Debian package `prometheus`, installed here when missing and root).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "monitoring/check.sh: installing prometheus (for promtool)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    else
        echo "monitoring/check.sh: promtool missing; install with: sudo apt-get install prometheus" >&2
        exit 1
    fi
fi
promtool check rules fedpeg-alerts.yml
promtool test rules fedpeg-alerts.test.yml
