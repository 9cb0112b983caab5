#!/usr/bin/env bash
# The dry-run's memory and time over N contacts (issue 15: "memory flat"),
# SQLite and PostgreSQL, the CLI (`dry-run --format jsonl`) and the API's
# stream (`GET /v1/dry-run?format=jsonl` from `nurture console`), for this
# build and, when given, a baseline build; the sqlite3 / psql floor beside
# them. Alternating rounds; the 1-minute load average before each run.
#
#   bench/dry_run_memory.sh 100000 1000000
#   BASE=/path/to/old/nurture ROUNDS=3 bench/dry_run_memory.sh 1000000
#
# Peak RSS: /usr/bin/time's maximum resident set for the CLI; the console
# process's VmHWM (/proc/PID/status) after the stream ended for the API.
# Results: bench/out/memory/results.md (appended) and stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${NURTURE_TEST_POSTGRES:-}" ]]; then
    exec .ci/with-postgres.sh "$0" "$@"
fi
SIZES=("$@"); [[ ${#SIZES[@]} -gt 0 ]] || SIZES=(100000 1000000)
ROUNDS="${ROUNDS:-2}"
AT="${AT:-2026-11-01T10:00:00+08:00}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/nurture}"
BASE="${BASE:-}"
OUT=bench/out/memory
WF=bench-winback
ADMIN="$NURTURE_TEST_POSTGRES"
mkdir -p "$OUT"
unset NURTURE_DATABASE
FULL=bench/out/contacts.csv
[[ -f "$FULL" ]] || python3 bench/gen_contacts.py --rows 1000000 --seed 20261101 --out "$FULL"
PROJ="$OUT/project"
rm -rf "$PROJ"; mkdir -p "$PROJ/out"
cp -r bench/workflows bench/templates "$PROJ/"
sed 's#^database:.*#database: sqlite://out/bench.db#' bench/nurture.yaml >"$PROJ/nurture.yaml"
echo 'listen: 127.0.0.1:0' >>"$PROJ/nurture.yaml"
export NURTURE_API_TOKEN=bench-token
at_ms=$(( $(date -d "$AT" +%s) * 1000 )); cutoff_ms=$(( at_ms - 30 * 86400000 ))
FLOOR_SQ="SELECT c.id, c.name, c.email, c.phone, c.wecom_external_userid, c.owner, c.timezone, c.created_at, c.last_active_at, c.unsubscribed, c.attrs, (SELECT group_concat(t.tag, ';') FROM contact_tags t WHERE t.contact_id = c.id) FROM contacts c WHERE coalesce(c.last_active_at, c.created_at) < $cutoff_ms AND EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'newsletter') AND json_extract(c.attrs, '\$.city') IN ('Shanghai', 'Beijing') AND NOT EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'do-not-disturb');"
FLOOR_PG="${FLOOR_SQ//group_concat/string_agg}"
FLOOR_PG=$(printf '%s' "$FLOOR_PG" | sed "s/json_extract(c.attrs, '\$.city')/(CAST(c.attrs AS json) ->> 'city')/")

load() { awk '{ print $1 }' /proc/loadavg; }
LINES=()
# cli NAME DBURL BIN
cli() {
    local l; l=$(load)
    /usr/bin/time -f "%e %M %U %S" -o "$OUT/time" env NURTURE_DATABASE="$2" "$3" --config "$PROJ/nurture.yaml" \
        dry-run --format jsonl --at "$AT" --workflow "$WF" >"$OUT/out.jsonl"
    read -r s kb u sy <"$OUT/time"
    LINES+=("| $1 | $s | $(awk -v u="$u" -v s="$sy" 'BEGIN { printf "%.2f", u + s }') | $((kb / 1024)) | $(grep -c '"action":"send"' "$OUT/out.jsonl") | $l |")
}
# api NAME DBURL BIN: the console's stream, read whole by curl.
api() {
    local l; l=$(load)
    NURTURE_DATABASE="$2" "$3" --config "$PROJ/nurture.yaml" console --listen 127.0.0.1:0 >"$OUT/console.out" 2>"$OUT/console.err" &
    local pid=$!
    local url=""
    for _ in $(seq 1 200); do
        url=$(grep -o 'http://[^ ]*' "$OUT/console.out" 2>/dev/null | head -1 || true)
        [[ -n "$url" ]] && break
        sleep 0.1
    done
    url="${url%/console/}"
    local t0; t0=$(date +%s.%N)
    curl -sf -H "Authorization: Bearer $NURTURE_API_TOKEN" \
        "$url/v1/dry-run?format=jsonl&workflow=$WF&at=${AT//+/%2B}" -o "$OUT/api.jsonl"
    local t1; t1=$(date +%s.%N)
    local hwm; hwm=$(awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    LINES+=("| $1 | $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') | - | $hwm | $(grep -c '"action":"send"' "$OUT/api.jsonl") | $l |")
}
floor() {
    local l; l=$(load)
    /usr/bin/time -f "%e %M %U %S" -o "$OUT/time" "${@:2}" >/dev/null
    read -r s kb u sy <"$OUT/time"
    LINES+=("| $1 | $s | $(awk -v u="$u" -v s="$sy" 'BEGIN { printf "%.2f", u + s }') | $((kb / 1024)) | - | $l |")
}

for n in "${SIZES[@]}"; do
    csv="$OUT/contacts-$n.csv"
    [[ -f "$csv" ]] || head -n $((n + 1)) "$FULL" >"$csv"
    sq="$PWD/$OUT/bench-$n.db"; rm -f "$sq" "$sq-wal" "$sq-shm"
    NURTURE_DATABASE="sqlite://$sq" "$BIN" --config "$PROJ/nurture.yaml" contacts import "$csv" >&2
    sqlite3 "$sq" "INSERT OR IGNORE INTO cron_ticks (workflow, tick_at, taken_at) VALUES ('$WF', 0, 0)"
    pgname="nb_mem_$n"; psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $pgname" -c "CREATE DATABASE $pgname" >/dev/null
    pg="${ADMIN%/*}/$pgname"
    NURTURE_DATABASE="$pg" "$BIN" --config "$PROJ/nurture.yaml" contacts import "$csv" >&2
    psql -q "$pg" -c "INSERT INTO cron_ticks (workflow, tick_at, taken_at) VALUES ('$WF', 0, 0) ON CONFLICT DO NOTHING" >/dev/null
    for r in $(seq 1 "$ROUNDS"); do
        echo "== $n contacts, round $r (load $(load))" >&2
        floor "$n sqlite3 floor" sqlite3 "$sq" "$FLOOR_SQ"
        [[ -z "$BASE" ]] || cli "$n SQLite CLI, baseline" "sqlite://$sq" "$BASE"
        cli "$n SQLite CLI" "sqlite://$sq" "$BIN"
        [[ -z "$BASE" ]] || api "$n SQLite API stream, baseline" "sqlite://$sq" "$BASE"
        api "$n SQLite API stream" "sqlite://$sq" "$BIN"
        floor "$n psql floor" psql -X -q -o /dev/null "$pg" -c "$FLOOR_PG"
        [[ -z "$BASE" ]] || cli "$n PostgreSQL CLI, baseline" "$pg" "$BASE"
        cli "$n PostgreSQL CLI" "$pg" "$BIN"
        [[ -z "$BASE" ]] || api "$n PostgreSQL API stream, baseline" "$pg" "$BASE"
        api "$n PostgreSQL API stream" "$pg" "$BIN"
    done
    psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $pgname" >/dev/null || true
done
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ), commit $commit${BASE:+ (baseline $BASE)}, $(nproc) CPUs, $ROUNDS rounds"
    echo
    echo "| run | wall s | CPU s (user+sys) | peak MB | sends | load before |"
    echo "|---|---:|---:|---:|---:|---:|"
    printf '%s\n' "${LINES[@]}"
} | tee -a "$OUT/results.md"
