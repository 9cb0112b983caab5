#!/usr/bin/env bash
# End to end, side by side (issue "faster than the script a data person
# would write"): N contacts imported, then a welcome message each POSTed to
# the same loopback receiver, by
#   - nurture: `contacts import` then `nurture run --until-idle` (durable:
#     event log, enrollments, outbox);
#   - the peer: bench/peer.py (sqlite3 + Jinja2 + aiohttp, 64 in flight, no
#     durability) reading the same contacts from the store nurture imported;
#   - the HTTP limit: wrk (Debian's package) POSTing a fixed body, 64
#     connections, for WRK_S seconds.
# Alternating, ROUNDS rounds (3), min and median; the load average before
# each run is recorded. messages/s = requests / (last - first receipt) at
# the receiver (examples/bench_receiver.rs).
#
#   bench/e2e.sh            # N=100000
#   N=20000 bench/e2e.sh    # a quicker look
#   PG=1 bench/e2e.sh       # also nurture on PostgreSQL (a throwaway server
#                           # from .ci/with-postgres.sh), same contacts and
#                           # receiver, in the same rounds
#
# Needs: python3 (venv), sqlite3, curl, wrk (apt-get install wrk). The peer's
# dependencies are pinned in bench/requirements.txt and installed from PyPI
# into bench/out/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [[ -n "${PG:-}" && -z "${NURTURE_TEST_POSTGRES:-}" ]]; then
    exec .ci/with-postgres.sh "$0" "$@"
fi
N="${N:-100000}"
ROUNDS="${ROUNDS:-3}"
WRK_S="${WRK_S:-5}"
OUT="$ROOT/bench/out/e2e"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${BIN:-$TARGET/release/nurture}"
RECEIVER="${RECEIVER:-$TARGET/release/examples/bench_receiver}"
export NURTURE_LOG="${NURTURE_LOG:-warn}" NURTURE_API_TOKEN=bench-token
unset NURTURE_DATABASE
mkdir -p "$OUT"

for tool in python3 sqlite3 curl wrk; do
    command -v "$tool" >/dev/null || { echo "bench: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
if [[ ! -x "$BIN" || ! -x "$RECEIVER" ]]; then
    echo "== build" >&2
    cargo build --release --locked --bin nurture --example bench_receiver >&2
fi
VENV="$ROOT/bench/out/venv"
if [[ ! -x "$VENV/bin/python" ]] || ! cmp -s bench/requirements.txt "$VENV/requirements.txt"; then
    echo "== venv for the Python peer (bench/requirements.txt)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r bench/requirements.txt
    cp bench/requirements.txt "$VENV/requirements.txt"
fi

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
source "$ROOT/bench/lib.sh"
rm -f "$OUT/receiver.err"
start_listening receiver "$RECEIVER" 127.0.0.1:0
RECV="http://$ADDR"
RECV_PID=$PID

P="$OUT/project"
welcome_project "$P" "sqlite://nurture.db" "$RECV" "$N"
cat >"$OUT/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"message_id":"m","workflow":"welcome","contact_id":"t0000001","to":"t0000001@example.com","subject":null,"body":"Welcome, Name 1! Your account t0000001 is ready.","contact":{"id":"t0000001","name":"Name 1"}}'
LUA

rate() { # messages/s at the receiver since the last reset
    curl -s "$RECV/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); d=(s["last_us"]-s["first_us"])/1e6; print("%d %.0f" % (s["count"], s["count"]/d if d > 0 else 0))'
}
load() { awk '{ print $1 }' /proc/loadavg; }
declare -A R C
# CPU ticks of the pids given (their exited children included: the
# postmaster's holds the backends that ended).
ticks() {
    local t=0 p a
    for p in "$@"; do
        read -ra a < <(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        t=$((t + a[11] + a[12] + a[13] + a[14]))
    done
    echo "$t"
}
# timed WHO CMD...: runs the daemon CMD and keeps, for the CPU table, its CPU
# seconds, the PostgreSQL server's and the receiver's during the run, and
# the run's wall time, in C[WHO|round].
timed() {
    local who=$1; shift
    local hz s0 r0 s1 r1 u sy e
    hz=$(getconf CLK_TCK)
    s0=$(ticks $(pgrep -x postgres || true)); r0=$(ticks "$RECV_PID")
    /usr/bin/time -f '%e %U %S' -o "$OUT/time" "$@"
    # The daemon's backends end after it does: their time is counted once
    # the postmaster has collected them.
    if [[ -n "${PG:-}" ]]; then
        for _ in $(seq 1 100); do
            [[ $(psql -Atq "$NURTURE_TEST_POSTGRES" -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'e2e'") == 0 ]] && break
            sleep 0.02
        done
    fi
    s1=$(ticks $(pgrep -x postgres || true)); r1=$(ticks "$RECV_PID")
    read -r e u sy <"$OUT/time"
    C[$who|$r]=$(awk -v e="$e" -v u="$u" -v sy="$sy" -v s="$((s1 - s0))" -v rc="$((r1 - r0))" -v hz="$hz" \
        'BEGIN { printf "%.2f %.2f %.2f %.2f", u + sy, s / hz, rc / hz, e }')
}
# A fresh store with the workflow activated and the N contacts imported.
fresh_store() {
    rm -f "$P"/nurture.db*
    # The daemon first sees (activates) the workflow on an empty store, so
    # the contacts imported next are news to it (contacts that were there
    # before a workflow's activation do not enter it).
    "$1" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 >"$OUT/activate.out" 2>&1
    "$1" --config "$P/nurture.yaml" contacts import "$P/contacts.csv" >"$OUT/import.log" 2>&1
}
# The same on PostgreSQL: a fresh database each round.
if [[ -n "${PG:-}" ]]; then
    PG_URL="${NURTURE_TEST_POSTGRES%/*}/e2e"
    sed "s#^database:.*#database: $PG_URL#" "$P/nurture.yaml" >"$P/nurture-pg.yaml"
fi
fresh_pg() {
    psql -q "$NURTURE_TEST_POSTGRES" -c "DROP DATABASE IF EXISTS e2e" -c "CREATE DATABASE e2e"
    "$1" --config "$P/nurture-pg.yaml" run --until-idle --listen 127.0.0.1:0 >"$OUT/activate-pg.out" 2>&1
    "$1" --config "$P/nurture-pg.yaml" contacts import "$P/contacts.csv" >"$OUT/import-pg.log" 2>&1
}
# BASE=/path/to/nurture adds a baseline build, run on its own fresh store
# in the same rounds (with PG=1 on PostgreSQL too: "base-postgres").
WHO="nurture"
[[ -n "${PG:-}" ]] && WHO="$WHO postgres"
[[ -n "${BASE:-}" ]] && WHO="$WHO base"
[[ -n "${BASE:-}" && -n "${PG:-}" ]] && WHO="$WHO base-postgres"
WHO="$WHO peer wrk"
for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r" >&2
    fresh_store "$BIN"
    # The peer reads the contacts before nurture's run, from the same store.
    curl -s -X POST "$RECV/reset" >/dev/null
    l=$(load)
    "$VENV/bin/python" bench/peer.py "$P/nurture.db" "$RECV/hook" 64 >"$OUT/peer.out"
    read -r n m <<<"$(rate)"; R[peer|$r]="$m $n $l"
    curl -s -X POST "$RECV/reset" >/dev/null
    l=$(load)
    timed nurture "$BIN" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 >"$OUT/run.out" 2>"$OUT/run.err"
    read -r n m <<<"$(rate)"; R[nurture|$r]="$m $n $l"
    if [[ -n "${PG:-}" ]]; then
        fresh_pg "$BIN"
        curl -s -X POST "$RECV/reset" >/dev/null
        l=$(load)
        timed postgres "$BIN" --config "$P/nurture-pg.yaml" run --until-idle --listen 127.0.0.1:0 >"$OUT/run-pg.out" 2>"$OUT/run-pg.err"
        read -r n m <<<"$(rate)"; R[postgres|$r]="$m $n $l"
    fi
    if [[ -n "${BASE:-}" ]]; then
        fresh_store "$BASE"
        curl -s -X POST "$RECV/reset" >/dev/null
        l=$(load)
        timed base "$BASE" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 >"$OUT/base.out" 2>"$OUT/base.err"
        read -r n m <<<"$(rate)"; R[base|$r]="$m $n $l"
        if [[ -n "${PG:-}" ]]; then
            fresh_pg "$BASE"
            curl -s -X POST "$RECV/reset" >/dev/null
            l=$(load)
            timed base-postgres "$BASE" --config "$P/nurture-pg.yaml" run --until-idle --listen 127.0.0.1:0 >"$OUT/base-pg.out" 2>"$OUT/base-pg.err"
            read -r n m <<<"$(rate)"; R[base-postgres|$r]="$m $n $l"
        fi
    fi
    curl -s -X POST "$RECV/reset" >/dev/null
    l=$(load)
    w=$(wrk -t2 -c64 -d"${WRK_S}s" -s "$OUT/post.lua" "$RECV/hook" | awk '/Requests\/sec/ { printf "%.0f", $2 }')
    R[wrk|$r]="$w - $l"
    curl -s -X POST "$RECV/reset" >/dev/null
done
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ), commit $commit, $N contacts, $(nproc) CPUs, $ROUNDS alternating rounds"
    echo
    echo "| who | runs: msg/s (requests, load before) | min | median |"
    echo "|---|---|---:|---:|"
    for who in $WHO; do
        cells=() vals=()
        for r in $(seq 1 "$ROUNDS"); do
            read -r m n l <<<"${R[$who|$r]}"
            cells+=("$m ($n, $l)"); vals+=("$m")
        done
        sorted=$(printf '%s\n' "${vals[@]}" | sort -g)
        echo "| $who | $(IFS=';'; echo "${cells[*]}") | $(echo "$sorted" | head -1) | $(echo "$sorted" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }') |"
    done
    echo
    echo "CPU seconds of each run (the daemon; the PostgreSQL server, its exited backends included; the receiver), their sum, and how busy that kept the machine's $(nproc) CPUs over the daemon's run:"
    echo
    echo "| who | round | msg/s | daemon | server | receiver | sum | CPU µs per message | wall s | busy |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for who in nurture postgres base base-postgres; do
        for r in $(seq 1 "$ROUNDS"); do
            [[ -n "${C[$who|$r]:-}" ]] || continue
            read -r d s v e <<<"${C[$who|$r]}"
            read -r m n _ <<<"${R[$who|$r]}"
            awk -v w="$who" -v r="$r" -v m="$m" -v n="$n" -v d="$d" -v s="$s" -v v="$v" -v e="$e" -v c="$(nproc)" \
                'BEGIN { printf "| %s | %d | %s | %.2f | %.2f | %.2f | %.2f | %.0f | %.2f | %.0f%% |\n", w, r, m, d, s, v, d + s + v, 1e6 * (d + s + v) / (n > 0 ? n : 1), e, 100 * (d + s + v) / (e * c) }'
        done
    done
} | tee -a "$OUT/results.md"
