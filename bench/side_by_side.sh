#!/usr/bin/env bash
# Import and dry-run, side by side in one run, on SQLite and PostgreSQL,
# against their floors (the same SELECT in sqlite3 / psql) and, when given,
# a baseline binary: three alternating rounds, with the machine's load
# recorded before each measurement.
#
#   bench/side_by_side.sh                 # 1,000,000 contacts
#   bench/side_by_side.sh 200000          # fewer
#   BASE=/path/to/old/nurture bench/side_by_side.sh 200000
#
# Environment: BIN (default $CARGO_TARGET_DIR/release/nurture, built with
# `cargo build --release` first), BASE (a baseline build, optional), ROUNDS
# (3), AT (the dry-run's --at). PostgreSQL: a throwaway server from
# .ci/with-postgres.sh (fsync off, as in bench/delivery.sh). Results:
# bench/out/side_by_side.md (appended) and stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${NURTURE_TEST_POSTGRES:-}" ]]; then
    exec .ci/with-postgres.sh "$0" "$@"
fi

ROWS="${1:-1000000}"
ROUNDS="${ROUNDS:-3}"
AT="${AT:-2026-11-01T10:00:00+08:00}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/nurture}"
BASE="${BASE:-}"
OUT=bench/out/side
WF=bench-winback
ADMIN="$NURTURE_TEST_POSTGRES"
mkdir -p "$OUT"
unset NURTURE_DATABASE

[[ -x "$BIN" ]] || { echo "bench: no $BIN; run cargo build --release first" >&2; exit 2; }
[[ -z "$BASE" || -x "$BASE" ]] || { echo "bench: BASE=$BASE is not executable" >&2; exit 2; }

# The contacts: the first ROWS rows of the generated million.
FULL=bench/out/contacts.csv
if [[ ! -f "$FULL" ]]; then
    python3 bench/gen_contacts.py --rows 1000000 --seed 20261101 --out "$FULL"
fi
CSV="$OUT/contacts-$ROWS.csv"
[[ -f "$CSV" ]] || head -n $((ROWS + 1)) "$FULL" >"$CSV"

# A project: the bench's settings, workflows and templates.
PROJ="$OUT/project"
rm -rf "$PROJ"; mkdir -p "$PROJ"
cp -r bench/workflows bench/templates "$PROJ/"
sed 's#^database:.*#database: sqlite://out/bench.db#' bench/nurture.yaml >"$PROJ/nurture.yaml"
# The baseline gets the same settings when it accepts them. One older than
# the blast guard refuses `policies: blast_guard`: it gets the rest (it has
# no guard to turn off). A baseline given the stripped settings while it
# has the guard would dry-run with the guard on, which is not the same work.
if [[ -z "$BASE" ]] || NURTURE_DATABASE="sqlite://$PROJ/validate.db" $BASE --config "$PROJ/nurture.yaml" validate >/dev/null 2>&1; then
    cp "$PROJ/nurture.yaml" "$PROJ/nurture-base.yaml"
else
    echo "bench: BASE refuses policies: blast_guard; it runs without it" >&2
    grep -v -e '^policies:' -e 'blast_guard' "$PROJ/nurture.yaml" >"$PROJ/nurture-base.yaml"
fi
rm -f "$PROJ"/validate.db*

at_ms=$(( $(date -d "$AT" +%s) * 1000 ))
cutoff_ms=$(( at_ms - 30 * 86400000 ))
SQLITE_FLOOR="SELECT c.id, c.name, c.email, c.phone, c.wecom_external_userid, c.owner, c.timezone,
       c.created_at, c.last_active_at, c.unsubscribed, c.attrs,
       (SELECT group_concat(t.tag, ';') FROM contact_tags t WHERE t.contact_id = c.id) AS tags
  FROM contacts c
 WHERE coalesce(c.last_active_at, c.created_at) < $cutoff_ms
  AND EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'newsletter')
  AND json_extract(c.attrs, '\$.city') IN ('Shanghai', 'Beijing')
  AND NOT EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'do-not-disturb');"
PG_FLOOR="SELECT c.id, c.name, c.email, c.phone, c.wecom_external_userid, c.owner, c.timezone,
       c.created_at, c.last_active_at, c.unsubscribed, c.attrs,
       (SELECT string_agg(t.tag, ';') FROM contact_tags t WHERE t.contact_id = c.id) AS tags
  FROM contacts c
 WHERE coalesce(c.last_active_at, c.created_at) < $cutoff_ms
  AND EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'newsletter')
  AND (CAST(c.attrs AS json) ->> 'city') IN ('Shanghai', 'Beijing')
  AND NOT EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'do-not-disturb');"

declare -A RES   # "measure|round" -> "seconds MB load cpu"
load() { awk '{ print $1 }' /proc/loadavg; }
# CPU seconds used by the PostgreSQL server's exited backends (the
# postmaster's children's user + system time): with the client's own, a
# measure of work that the machine's load does not inflate.
PGDATA_DIR=$(psql -Atq "$ADMIN" -c "SHOW data_directory")
PM_PID=$(head -1 "$PGDATA_DIR/postmaster.pid")
TICK=$(getconf CLK_TCK)
server_cpu() { awk -v t="$TICK" '{ printf "%.2f", ($16 + $17) / t }' "/proc/$PM_PID/stat"; }
LOADS=()
# settle: no measurement shares the machine with the work the one before
# it left behind. The kernel writes the dirty pages of the files just
# written (a million rows imported into PostgreSQL is a gigabyte) to disk
# first, then we wait (up to a minute) until the server runs nothing of
# its own, such as an autovacuum worker reading those rows. Without this,
# SQLite's import right after PostgreSQL's took 8.0-8.4 s and 10.7 CPU s
# (2026-12-02, 18:39Z) against 6.5-7.4 s and 9.0 CPU s alone.
settle() {
    local i busy
    sync
    for i in $(seq 1 300); do
        busy=$(psql -Atq "$ADMIN" -c "SELECT count(*) FROM pg_stat_activity
            WHERE pid <> pg_backend_pid()
              AND (backend_type = 'autovacuum worker' OR (backend_type = 'client backend' AND state <> 'idle'))")
        [[ "$busy" == 0 ]] && return 0
        sleep 0.2
    done
    echo "bench: the server was still busy after a minute; measuring anyway" >&2
}
# run NAME ROUND CMD...: wall seconds and peak RSS of CMD into RES.
run() {
    local name=$1 round=$2; shift 2
    settle
    local l; l=$(load)
    LOADS+=("$l")
    local before; before=$(server_cpu)
    if /usr/bin/time -f "%e %M %U %S" -o "$OUT/time" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; then
        read -r s kb u sy <"$OUT/time"
        # The postmaster adds an exited backend's CPU time to its own
        # children's total when it reaps it, on SIGCHLD: give it a moment.
        sleep 1
        local cpu; cpu=$(awk -v a="$before" -v b="$(server_cpu)" -v u="$u" -v s="$sy" 'BEGIN { printf "%.1f", b - a + u + s }')
        RES["$name|$round"]="$s $((kb / 1024)) $l $cpu"
    else
        RES["$name|$round"]="failed - $l -"
        echo "bench: $name failed; see $OUT/$name.err" >&2
        tail -n 3 "$OUT/$name.err" >&2
    fi
}
newdb() {
    local name="nb_$1_$RANDOM$RANDOM"
    psql -q "$ADMIN" -c "CREATE DATABASE $name" >/dev/null
    echo "${ADMIN%/*}/$name"
}
tick() { # the workflow ticked before: its tick at AT runs (as in bench/run.sh)
    case $1 in
        sqlite://*) sqlite3 "${1#sqlite://}" "INSERT OR IGNORE INTO cron_ticks (workflow, tick_at, taken_at) VALUES ('$WF', 0, 0)" ;;
        *) psql -q "$1" -c "INSERT INTO cron_ticks (workflow, tick_at, taken_at) VALUES ('$WF', 0, 0) ON CONFLICT DO NOTHING" >/dev/null ;;
    esac
}
DRY=(dry-run --format jsonl --at "$AT" --workflow "$WF")

for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r (load $(load), $(nproc) CPUs)" >&2
    if [[ -n "$BASE" ]]; then
        base_pg=$(newdb base)
        run pg-import-base "$r" env NURTURE_DATABASE="$base_pg" $BASE --config "$PROJ/nurture-base.yaml" contacts import "$CSV"
        tick "$base_pg"
        run pg-dry-base "$r" env NURTURE_DATABASE="$base_pg" $BASE --config "$PROJ/nurture-base.yaml" "${DRY[@]}"
    fi
    cur_pg=$(newdb cur)
    run pg-import "$r" env NURTURE_DATABASE="$cur_pg" $BIN --config "$PROJ/nurture.yaml" contacts import "$CSV"
    tick "$cur_pg"
    run pg-floor "$r" psql -X -q -o /dev/null "$cur_pg" -c "$PG_FLOOR"
    # nurture's sessions run without JIT (store::PG_SESSION_SETTINGS); the
    # floor under the same setting too.
    run pg-floor-nojit "$r" psql -X -q -o /dev/null "$cur_pg" -c "SET jit = off" -c "$PG_FLOOR"
    run pg-dry "$r" env NURTURE_DATABASE="$cur_pg" $BIN --config "$PROJ/nurture.yaml" "${DRY[@]}"
    # SQLite's measurements with no PostgreSQL database left to vacuum.
    psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS ${cur_pg##*/}" >/dev/null || true
    [[ -z "$BASE" ]] || psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS ${base_pg##*/}" >/dev/null || true
    db="$PWD/$OUT/bench-$r.db"; rm -f "$db" "$db-wal" "$db-shm"
    run sqlite-import "$r" env NURTURE_DATABASE="sqlite://$db" $BIN --config "$PROJ/nurture.yaml" contacts import "$CSV"
    tick "sqlite://$db"
    run sqlite-floor "$r" sh -c "sqlite3 '$db' >/dev/null <<'SQL'
$SQLITE_FLOOR
SQL"
    run sqlite-dry "$r" env NURTURE_DATABASE="sqlite://$db" $BIN --config "$PROJ/nurture.yaml" "${DRY[@]}"
    sends_pg=$(grep -c '"action":"send"' "$OUT/pg-dry.out" || true)
    sends_sq=$(grep -c '"action":"send"' "$OUT/sqlite-dry.out" || true)
    echo "   sends: PostgreSQL $sends_pg, SQLite $sends_sq" >&2
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ), commit $commit, $ROWS contacts, $(nproc) CPUs, $ROUNDS rounds"
    echo
    echo "Load average (1 min) before the measurements: min $(printf '%s\n' "${LOADS[@]}" | sort -n | head -1), max $(printf '%s\n' "${LOADS[@]}" | sort -n | tail -1). Sends in the last round's dry-runs: PostgreSQL $sends_pg, SQLite $sends_sq."
    echo
    echo "| measure | runs: seconds (peak MB, load, CPU s client+server) | min s | median s | rows/s at min |"
    echo "|---|---|---:|---:|---:|"
    for m in pg-import-base pg-import sqlite-import pg-floor pg-floor-nojit pg-dry pg-dry-base sqlite-floor sqlite-dry; do
        [[ -n "${RES[$m|1]:-}" ]] || continue
        cells=() secs=()
        for r in $(seq 1 "$ROUNDS"); do
            read -r s mb l cpu <<<"${RES[$m|$r]}"
            cells+=("$s ($mb MB, $l, $cpu)")
            [[ "$s" == failed ]] || secs+=("$s")
        done
        sorted=$(printf '%s\n' "${secs[@]}" | sort -g)
        min=$(echo "$sorted" | head -1)
        med=$(echo "$sorted" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
        rate=""
        [[ $m == *import* ]] && rate=$(awk -v n="$ROWS" -v s="$min" 'BEGIN { printf "%.0f", n / s }')
        echo "| $m | $(IFS='; '; echo "${cells[*]}") | $min | $med | $rate |"
    done
} | tee -a bench/out/side_by_side.md
