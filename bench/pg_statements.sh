#!/usr/bin/env bash
# Where PostgreSQL's time goes end to end: the e2e project of bench/e2e.sh
# (N contacts imported, then a welcome each POSTed to the loopback
# receiver) run once on a throwaway server with pg_stat_statements, then the
# server's time by statement, the server's CPU (its processes, exited
# backends included) and the daemon's. Statements over 4 ms are logged with
# their plans (auto_explain) in bench/out/pg_statements/server.log.
#
#   bench/pg_statements.sh              # N=100000, this build
#   BIN=/path/nurture bench/pg_statements.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [[ -z "${NURTURE_TEST_POSTGRES:-}" ]]; then
    export NURTURE_PG_OPTIONS="${NURTURE_PG_OPTIONS:--c shared_preload_libraries=pg_stat_statements,auto_explain -c pg_stat_statements.track=all -c auto_explain.log_min_duration=4}"
    exec .ci/with-postgres.sh "$0" "$@"
fi
N="${N:-100000}"
OUT="$ROOT/bench/out/pg_statements"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${BIN:-$TARGET/release/nurture}"
RECEIVER="$TARGET/release/examples/bench_receiver"
export NURTURE_LOG="${NURTURE_LOG:-warn}" NURTURE_API_TOKEN=bench-token
unset NURTURE_DATABASE
if [[ ! -x "$BIN" || ! -x "$RECEIVER" ]]; then
    cargo build --release --locked --bin nurture --example bench_receiver >&2
fi
mkdir -p "$OUT"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
source "$ROOT/bench/lib.sh"
start_listening receiver "$RECEIVER" 127.0.0.1:0
RECV="http://$ADDR"

P="$OUT/project"
DB="${NURTURE_TEST_POSTGRES%/*}/statements"
welcome_project "$P" "$DB" "$RECV" "$N"

psql -q "$NURTURE_TEST_POSTGRES" -c "DROP DATABASE IF EXISTS statements" -c "CREATE DATABASE statements"
psql -q "$DB" -c "CREATE EXTENSION pg_stat_statements"
"$BIN" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 >"$OUT/activate.out" 2>&1
"$BIN" --config "$P/nurture.yaml" contacts import "$P/contacts.csv" >"$OUT/import.log" 2>&1

# CPU seconds of the server's processes, with the backends that exited.
server_cpu() {
    local t=0 p f
    for p in $(pgrep -u "$(psql -Atq "$DB" -c 'SELECT current_user')" postgres || pgrep postgres); do
        f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        set -- $f
        t=$((t + ${12} + ${13} + ${14} + ${15}))
    done
    awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}
# The same by process kind ("postgres: walwriter", a backend, ...), one line
# each: kind, CPU ticks; the postmaster's line holds the exited backends and
# autovacuum workers (its children's time).
server_cpu_by_kind() {
    local p f
    for p in $(pgrep -u "$(psql -Atq "$DB" -c 'SELECT current_user')" postgres || pgrep postgres); do
        f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        set -- $f
        printf '%s\t%s\n' "$(tr '\0' ' ' <"/proc/$p/cmdline" | sed 's/ *$//; s/postgres: //; s/postgres .*statements .*/backend/; s/^\/.*\/postgres .*/postmaster (exited children included)/')" "$((${12} + ${13} + ${14} + ${15}))"
    done
}
psql -q "$DB" -c "SELECT pg_stat_statements_reset()" >/dev/null
curl -s -X POST "$RECV/reset" >/dev/null
c0=$(server_cpu)
server_cpu_by_kind >"$OUT/cpu_before"
/usr/bin/time -f '%e %U %S' -o "$OUT/time" "$BIN" --config "$P/nurture.yaml" run --until-idle --listen 127.0.0.1:0 >"$OUT/run.out" 2>"$OUT/run.err"
c1=$(server_cpu)
server_cpu_by_kind >"$OUT/cpu_after"
read -r wall user sys <"$OUT/time"
rate=$(curl -s "$RECV/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); d=(s["last_us"]-s["first_us"])/1e6; print("%d messages, %.0f msg/s" % (s["count"], s["count"]/d if d > 0 else 0))')
{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $N contacts"
    echo
    echo "$rate; run ${wall} s wall; daemon $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }') CPU s; server $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }') CPU s; load before $(awk '{ print $1 }' /proc/loadavg)"
    echo
    echo '```'
    psql -X "$DB" -c "SELECT left(regexp_replace(query, '\s+', ' ', 'g'), 60) AS statement, sum(calls) AS calls, sum(rows) AS rows,
                              round(sum(total_exec_time)::numeric / 1000, 2) AS seconds,
                              round(sum(total_plan_time)::numeric / 1000, 2) AS planning
                         FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'
                        GROUP BY 1 ORDER BY 4 DESC LIMIT 15"
    echo '```'
    echo
    echo "The server's CPU seconds by process (after minus before), and the tables' vacuums during the run:"
    echo
    echo '```'
    awk -F'\t' -v hz="$(getconf CLK_TCK)" 'NR == FNR { b[$1] += $2; next } { a[$1] += $2 }
        END { for (k in a) if (a[k] - b[k] > 0) printf "%6.2f  %s\n", (a[k] - b[k]) / hz, k }' \
        "$OUT/cpu_before" "$OUT/cpu_after" | sort -rn
    psql -X -Atq "$DB" -c "SELECT relname || ': ' || autovacuum_count || ' autovacuum, ' || autoanalyze_count || ' autoanalyze'
                             FROM pg_stat_user_tables WHERE autovacuum_count + autoanalyze_count > 0 ORDER BY relname"
    echo '```'
} | tee -a "$OUT/results.md"
srv=$(dirname "$(dirname "$(psql -Atq "$DB" -c 'SHOW data_directory')")")
cp "$srv/server.log" "$OUT/server.log" 2>/dev/null || true
