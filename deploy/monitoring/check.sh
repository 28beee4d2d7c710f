#!/usr/bin/env bash
# Checks the Prometheus alert rules and runs their unit tests with promtool
# (Debian package `prometheus`, installed here when missing and root), and
# checks that the Grafana dashboard is JSON whose every query parses as
# PromQL (promtool checks them as recording rules).
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
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - fedpeg-dashboard.json "$work/dashboard-rules.yml" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert exprs, "the dashboard has no queries"
with open(sys.argv[2], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        f.write(f"      - record: dashboard_query_{i}\n        expr: {json.dumps(e)}\n")
print(f"dashboard: {len(d['panels'])} panels, {len(exprs)} queries")
PY
promtool check rules "$work/dashboard-rules.yml"
