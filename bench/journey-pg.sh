#!/usr/bin/env bash
# Issue 14's `nurture report` row on PostgreSQL: the store bench/journey.sh
# writes for SQLite (one bench-ab enrollment per contact, started 10 days
# before AT, its split record, its send record and a sent message; a
# purchase 2 days after the start for one contact in seven, and one a year
# before for one in twenty), generated in SQL, then `nurture report bench-ab
# --format json` timed.
#
#   .ci/with-postgres.sh bench/journey-pg.sh          # 1,000,000 enrollments
#   .ci/with-postgres.sh bench/journey-pg.sh 100000
#
# Environment: BIN (default $CARGO_TARGET_DIR/release/nurture), ROUNDS (3),
# AT, BASE (an older build timed in the same rounds against its own database,
# `journey_base`, written the same way at BASE's schema). Records the 1-minute
# load average before every run, and CPU seconds (user + sys) of the client;
# the server's CPU is read from /proc for the server's processes. Results:
# bench/out/journey-pg/results.md (appended) and stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS="${1:-1000000}"
ROUNDS="${ROUNDS:-3}"
AT="${AT:-2026-11-01T10:00:00+08:00}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/nurture}"
ADMIN="${NURTURE_TEST_POSTGRES:?run under .ci/with-postgres.sh}"
OUT=bench/out/journey-pg
WF=bench-ab
[[ -x "$BIN" ]] || { echo "bench: no $BIN; run cargo build --release first" >&2; exit 2; }
BASE="${BASE:-}"
[[ -z "$BASE" || -x "$BASE" ]] || { echo "bench: BASE $BASE is not an executable" >&2; exit 2; }
mkdir -p "$OUT"
unset NURTURE_DATABASE

URL="${ADMIN%/*}/journey"
BASE_URL="${ADMIN%/*}/journey_base"
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS journey" -c "CREATE DATABASE journey" \
    -c "DROP DATABASE IF EXISTS journey_base"
PROJ="$OUT/project"
rm -rf "$PROJ"; mkdir -p "$PROJ"
cp -r bench/journey/workflows bench/journey/segments bench/journey/templates "$PROJ/"
sed "s#^database:.*#database: $URL#" bench/nurture.yaml >"$PROJ/nurture.yaml"
# Any command that opens the store creates the schema.
"$BIN" --config "$PROJ/nurture.yaml" status >/dev/null
if [[ -n "$BASE" ]]; then
    psql -q "$ADMIN" -c "CREATE DATABASE journey_base"
    sed "s#^database:.*#database: $BASE_URL#" bench/nurture.yaml >"$PROJ/nurture-base.yaml"
    "$BASE" --config "$PROJ/nurture-base.yaml" status >/dev/null
fi

at_ms=$(( $(date -d "$AT" +%s) * 1000 ))
day_ms=86400000
start_ms=$((at_ms - 10 * day_ms))
created_ms=$((start_ms - 400 * day_ms))
year_ago_ms=$((start_ms - 365 * day_ms))
goal_ms=$((start_ms + 2 * day_ms))
write_store() { # URL
    local url=$1 cols="" vals=""
    # Since migration 0040 a step record carries its enrollment's workflow
    # and start.
    if [[ $(psql -tA "$url" -c "SELECT count(*) FROM information_schema.columns
            WHERE table_name = 'enrollment_steps' AND column_name = 'workflow'") == 1 ]]; then
        cols=", workflow, started_at" vals=", workflow, started_at"
    fi
    echo "== writing $ROWS contacts and enrollments into ${url##*/}" >&2
psql -q -v ON_ERROR_STOP=1 "$url" <<SQL
BEGIN;
INSERT INTO contacts (id, name, created_at, updated_at)
SELECT 'c' || lpad(i::text, 7, '0'), 'N' || i, $created_ms, $created_ms
  FROM generate_series(1, $ROWS) i;
INSERT INTO events (contact_id, name, at, properties)
SELECT 'c' || lpad(i::text, 7, '0'), 'purchase', $year_ago_ms, '{"amount": 99}'
  FROM generate_series(20, $ROWS, 20) i;
INSERT INTO enrollments (id, workflow, contact_id, entry_key, status, step_id, last_step_id, started_at, ended_at, end_reason)
SELECT i, '$WF', 'c' || lpad(i::text, 7, '0'), 'spell:0', 'done', NULL,
       CASE WHEN i % 2 = 0 THEN 'send-a' ELSE 'send-b' END, $start_ms, $start_ms, 'done'
  FROM generate_series(1, $ROWS) i;
SELECT setval(pg_get_serial_sequence('enrollments', 'id'), $ROWS);
INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail$cols)
SELECT id, 'offer', started_at, 'split', CASE WHEN id % 2 = 0 THEN 'a' ELSE 'b' END$vals FROM enrollments;
INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail$cols)
SELECT id, last_step_id, started_at, 'send', NULL$vals FROM enrollments;
INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body, status,
                    attempts, not_before, next_attempt_at, created_at, sent_at)
SELECT 'm' || id, workflow, contact_id, id, last_step_id, 'sms', contact_id, 'bench', 'sent',
       1, started_at, started_at, started_at, started_at + 1000 FROM enrollments;
INSERT INTO events (contact_id, name, at, properties)
SELECT contact_id, 'purchase', $goal_ms, '{"amount": 99}' FROM enrollments WHERE id % 7 = 0;
COMMIT;
VACUUM ANALYZE;
SQL
}
write_store "$URL"
[[ -z "$BASE" ]] || write_store "$BASE_URL"

# CPU seconds of this server's processes (user + sys, from /proc): the
# report's work happens in the server, which `time` does not see. A backend
# that ended is counted in the postmaster's reaped-children times. (Other
# servers on the machine listen on other ports.)
PORT="${ADMIN##*:}"; PORT="${PORT%%/*}"
POSTMASTER=$(pgrep -o -f -- "-p $PORT " || true)
server_cpu() {
    [[ -n "$POSTMASTER" ]] || { echo 0; return; }
    local pids; pids="$POSTMASTER $(pgrep -d ' ' -P "$POSTMASTER" || true)"
    local tck; tck=$(getconf CLK_TCK)
    for p in $pids; do cat "/proc/$p/stat" 2>/dev/null || true; done |
        awk -v t="$tck" '{ sub(/^.*\) /, ""); s += $12 + $13 + $14 + $15 } END { printf "%.2f", s / t }'
}
declare -A RES
run() { # name config
    local name=$1 cfg=$2 l c0 c1
    l=$(awk '{ print $1 }' /proc/loadavg)
    c0=$(server_cpu)
    /usr/bin/time -f "%e %U %S %M" -o "$OUT/time" \
        "${3:-$BIN}" --config "$cfg" report "$WF" --format json >"$OUT/$name.out"
    c1=$(server_cpu)
    read -r s u sy kb <"$OUT/time"
    RES[$name]+="${RES[$name]:+; }$s s (CPU $(awk -v a="$u" -v b="$sy" 'BEGIN { printf "%.2f", a + b }') s client, $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }') s server, $((kb / 1024)) MB, load $l)"
}
for r in $(seq 1 "$ROUNDS"); do
    [[ -z "$BASE" ]] || run report-base "$PROJ/nurture-base.yaml" "$BASE"
    run report "$PROJ/nurture.yaml"
done
entered=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["groups"][0]["entered"])' "$OUT/report.out")
SAME=""
if [[ -n "$BASE" ]]; then
    cmp -s "$OUT/report-base.out" "$OUT/report.out" && SAME=" BASE ($BASE) and BIN printed the same report, byte for byte." ||
        SAME=" BASE and BIN printed DIFFERENT reports: diff $OUT/report-base.out $OUT/report.out."
fi
pg=$(psql -tA "$URL" -c "SHOW server_version")
{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), PostgreSQL $pg, $ROWS enrollments, $(nproc) CPUs"
    echo
    echo "report: $entered enrollments.$SAME"
    echo
    [[ -z "$BASE" ]] || echo "- report-base: ${RES[report-base]}"
    echo "- report: ${RES[report]}"
} | tee -a "$OUT/results.md"
