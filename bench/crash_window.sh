#!/usr/bin/env bash
# The crash window (issue 12 item 10): how many messages a `kill -9` of the
# daemon makes go out twice, at webhook `concurrency` 8 and 64.
#
#   bench/crash_window.sh               # N=60000 contacts, KILLS=5 per concurrency
#   CONCS="64" KILLS=10 bench/crash_window.sh
#   BIN=/path/to/other/nurture NO_BUILD=1 bench/crash_window.sh   # another build, side by side
#
# For each concurrency: a fresh project whose one workflow sends a webhook to
# every new contact, N contacts imported while the daemon runs, the loopback receiver
# (examples/bench_receiver.rs, which counts requests and distinct message
# ids) answering at once. The daemon (`run --lease-ms 2000`) is started and,
# while it delivers, killed with SIGKILL each time the receiver has seen
# another N/(KILLS+1) requests, then started again; after the last kill a
# final `run --until-idle` delivers the rest. Duplicates = requests −
# distinct message ids (every message carries its id as the idempotency key);
# the script checks that every message arrived. Results go to
# bench/out/crash/results.md (gitignored) and are printed.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
N="${N:-60000}"
KILLS="${KILLS:-5}"
CONCS="${CONCS:-8 64}"
LEASE_MS="${LEASE_MS:-2000}"
OUT="$ROOT/bench/out/crash"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${BIN:-$TARGET/release/nurture}"
RECEIVER="${RECEIVER:-$TARGET/release/examples/bench_receiver}"
export NURTURE_API_TOKEN=bench-token
export NURTURE_LOG="${NURTURE_LOG:-warn}"
unset NURTURE_DATABASE

for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench: needs $tool" >&2; exit 2; }
done
mkdir -p "$OUT"
if [[ -z "${NO_BUILD:-}" ]]; then
    echo "== build" >&2
    cargo build --release --locked --bin nurture --example bench_receiver >&2
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# Starts "$@" in the background (stdout to $OUT/$1.out); waits for its
# "listening on ADDR" line; sets ADDR and PID.
source bench/lib.sh   # (the script runs from the repository root)

stat_of() { curl -s "$RECV/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

start_listening receiver "$RECEIVER" 127.0.0.1:0
RECV="http://$ADDR"

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
RESULT="$OUT/results.md"
{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ) binary $BIN (checkout $COMMIT), N=$N, $KILLS kills per run, lease ${LEASE_MS} ms, $(nproc) CPUs, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| concurrency | kills | requests | distinct messages | sent twice | per kill (mean) | wall |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
} >>"$RESULT"

for CONC in $CONCS; do
    P="$OUT/c$CONC"
    rm -rf "$P"
    mkdir -p "$P/workflows" "$P/templates"
    cat >"$P/nurture.yaml" <<EOF
database: sqlite://nurture.db
timezone: Asia/Shanghai
policies:
  blast_guard: off
channels:
  hook: { kind: webhook, url: "$RECV/hook", concurrency: $CONC }
EOF
    printf 'trigger: { contact_created: {} }\nsteps:\n  - send: { channel: hook, template: welcome }\n' >"$P/workflows/welcome.yaml"
    printf 'Welcome, {{contact.name}}!' >"$P/templates/welcome.hbs"
    python3 - "$N" >"$P/contacts.csv" <<'EOF'
import sys
n = int(sys.argv[1])
print("id,name,email")
for i in range(n):
    print(f"k{i:07},Name {i},k{i:07}@example.com")
EOF
    curl -s -X POST "$RECV/reset" >/dev/null
    echo "== concurrency $CONC: $KILLS kills" >&2
    t0=$(date +%s.%N)
    for k in $(seq 1 "$KILLS"); do
        at=$(( k * N / (KILLS + 1) ))
        start_listening "daemon-c$CONC" "$BIN" --config "$P/nurture.yaml" run --listen 127.0.0.1:0 --lease-ms "$LEASE_MS"
        DPID=$PID
        if (( k == 1 )); then
            # Imported while the daemon runs: the workflow is live, so
            # every new contact enters it.
            "$BIN" --config "$P/nurture.yaml" contacts import "$P/contacts.csv" >"$OUT/import-c$CONC.log" 2>&1
        fi
        until (( $(stat_of count) >= at )); do
            kill -0 "$DPID" 2>/dev/null || { echo "bench: the daemon exited before $at receipts" >&2; exit 1; }
            sleep 0.01
        done
        kill -9 "$DPID"
        wait "$DPID" 2>/dev/null || true
        c=$(stat_of count); u=$(stat_of unique)
        echo "   kill $k at $c receipts ($u distinct; $((c - u)) sent twice so far)" >&2
        (( u < N )) || echo "   (kill $k came after the last message: raise N)" >&2
    done
    "$BIN" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 --lease-ms "$LEASE_MS" \
        >"$OUT/last-c$CONC.out" 2>"$OUT/last-c$CONC.err"
    wall=$(python3 -c "import time,sys; print('%.1f s' % (time.time() - float(sys.argv[1])))" "$t0")
    count=$(stat_of count)
    unique=$(stat_of unique)
    if (( unique != N )); then
        echo "bench: only $unique of $N messages arrived" >&2
        exit 1
    fi
    twice=$((count - unique))
    mean=$(python3 -c "print('%.1f' % ($twice / $KILLS))")
    echo "| $CONC | $KILLS | $count | $unique | $twice | $mean | $wall |" | tee -a "$RESULT"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULT"
