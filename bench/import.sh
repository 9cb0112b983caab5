#!/usr/bin/env bash
# The CSV import alone, side by side in one run (issue 13 targets 2 and 4):
# this build against a baseline build, on SQLite and on PostgreSQL,
# alternating, ROUNDS rounds, with the 1-minute load average before each
# measurement and the CPU seconds each run cost (the client's user + system,
# plus the PostgreSQL server's, which the machine's load inflates far less
# than the wall time). Every run's stores are checked to hold the same
# rows and the same event log (md5 of the log in seq order, of the contacts
# and of the tags), against the baseline's.
#
#   BASE=/path/to/old/nurture bench/import.sh            # 1,000,000 rows
#   BASE=/path/to/old/nurture bench/import.sh 200000
#
# Environment: BIN (default $CARGO_TARGET_DIR/release/nurture), BASE
# (optional), ROUNDS (3). PostgreSQL: a throwaway server from
# .ci/with-postgres.sh (fsync off, as in the other benchmarks). Results:
# bench/out/import.md (appended) and stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${NURTURE_TEST_POSTGRES:-}" ]]; then
    exec .ci/with-postgres.sh "$0" "$@"
fi

ROWS="${1:-1000000}"
ROUNDS="${ROUNDS:-3}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/nurture}"
BASE="${BASE:-}"
OUT=bench/out/import
ADMIN="$NURTURE_TEST_POSTGRES"
mkdir -p "$OUT"
unset NURTURE_DATABASE
[[ -x "$BIN" ]] || { echo "bench: no $BIN; run cargo build --release first" >&2; exit 2; }
[[ -z "$BASE" || -x "$BASE" ]] || { echo "bench: BASE=$BASE is not executable" >&2; exit 2; }

# The contacts: the first ROWS rows of the file bench/scale.sh imports.
FULL=bench/out/contacts.csv
[[ -f "$FULL" ]] || python3 bench/gen_contacts.py --rows 1000000 --seed 20261101 --out "$FULL"
CSV="$OUT/contacts-$ROWS.csv"
[[ -f "$CSV" ]] || head -n $((ROWS + 1)) "$FULL" >"$CSV"
CONF="$OUT/nurture.yaml"
grep -v -e '^policies:' -e 'blast_guard' bench/nurture.yaml >"$CONF"

load() { awk '{ print $1 }' /proc/loadavg; }
PGDATA_DIR=$(psql -Atq "$ADMIN" -c "SHOW data_directory")
PM_PID=$(head -1 "$PGDATA_DIR/postmaster.pid")
TICK=$(getconf CLK_TCK)
# CPU seconds of the server's exited backends (the postmaster's children).
server_cpu() { awk -v t="$TICK" '{ printf "%.2f", ($16 + $17) / t }' "/proc/$PM_PID/stat"; }
# The log, contacts and tags, as md5s of the same text on both stores
# (times of the run left out: `at` of a tag is the import's now).
SUMS_SQL=("SELECT kind || '|' || contact_id || '|' || coalesce(name, '') FROM event_log ORDER BY seq"
    "SELECT id || '|' || coalesce(name, '') || '|' || coalesce(email, '') || '|' || created_at || '|' || attrs FROM contacts ORDER BY id"
    "SELECT contact_id || '|' || tag FROM contact_tags ORDER BY contact_id, tag")
sums() { # sums URL: three short md5s
    local q out=""
    for q in "${SUMS_SQL[@]}"; do
        case $1 in
            sqlite://*) out+="$(sqlite3 "${1#sqlite://}" "$q" | md5sum | cut -c1-8) " ;;
            *) out+="$(psql -Atq "$1" -c "$q" | md5sum | cut -c1-8) " ;;
        esac
    done
    echo "$out"
}

declare -A RES SUMS
LOADS=()
# run NAME ROUND URL BIN: one import into a fresh store.
run() {
    local name=$1 round=$2 url=$3 bin=$4
    local l; l=$(load); LOADS+=("$l")
    local before; before=$(server_cpu)
    if /usr/bin/time -f "%e %M %U %S" -o "$OUT/time" env NURTURE_LOG=warn NURTURE_DATABASE="$url" \
        "$bin" --config "$CONF" contacts import "$CSV" >"$OUT/$name.out" 2>"$OUT/$name.err"; then
        read -r s kb u sy <"$OUT/time"
        sleep 1 # the postmaster adds a backend's CPU time when it reaps it
        local srv; srv=$(awk -v a="$before" -v b="$(server_cpu)" 'BEGIN { printf "%.1f", b - a }')
        RES["$name|$round"]="$s $((kb / 1024)) $l $(awk -v u="$u" -v s="$sy" 'BEGIN { printf "%.1f", u + s }') $srv"
    else
        RES["$name|$round"]="failed - $l - -"
        echo "bench: $name failed; see $OUT/$name.err" >&2; tail -n 3 "$OUT/$name.err" >&2
    fi
    SUMS["$name"]=$(sums "$url")
}
newdb() {
    local name="ni_$1_$RANDOM$RANDOM"
    psql -q "$ADMIN" -c "CREATE DATABASE $name" >/dev/null
    echo "${ADMIN%/*}/$name"
}

for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r (load $(load), $(nproc) CPUs)" >&2
    for who in base cur; do
        bin=$BIN; [[ $who == cur ]] || bin=$BASE
        [[ -n "$bin" ]] || continue
        url=$(newdb "$who")
        run "pg-$who" "$r" "$url" "$bin"
        psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS ${url##*/}" >/dev/null || true
        db="$PWD/$OUT/$who.db"; rm -f "$db" "$db-wal" "$db-shm"
        run "sqlite-$who" "$r" "sqlite://$db" "$bin"
        rm -f "$db" "$db-wal" "$db-shm"
    done
    for s in pg sqlite; do
        [[ -z "$BASE" || "${SUMS[$s-base]}" == "${SUMS[$s-cur]}" ]] \
            || echo "bench: $s round $r: the stores differ: base ${SUMS[$s-base]} / this ${SUMS[$s-cur]}" >&2
    done
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ), commit $commit, $ROWS contacts, $(nproc) CPUs, $ROUNDS rounds"
    echo
    echo "Load average (1 min) before the runs: min $(printf '%s\n' "${LOADS[@]}" | sort -n | head -1), max $(printf '%s\n' "${LOADS[@]}" | sort -n | tail -1)."
    echo "md5 (first 8) of the log, the contacts, the tags: PostgreSQL ${SUMS[pg-cur]:-}, SQLite ${SUMS[sqlite-cur]:-}"
    [[ -z "$BASE" ]] || echo "(baseline: PostgreSQL ${SUMS[pg-base]:-}, SQLite ${SUMS[sqlite-base]:-})"
    echo
    echo "| measure | runs: seconds (peak MB, load, CPU s client / server) | min s | median s | rows/s at min | min CPU s |"
    echo "|---|---|---:|---:|---:|---:|"
    for m in pg-base pg-cur sqlite-base sqlite-cur; do
        [[ -n "${RES[$m|1]:-}" ]] || continue
        cells=() secs=() cpus=()
        for r in $(seq 1 "$ROUNDS"); do
            read -r s mb l cpu srv <<<"${RES[$m|$r]}"
            cells+=("$s ($mb MB, $l, $cpu / $srv)")
            [[ "$s" == failed ]] && continue
            secs+=("$s"); cpus+=("$(awk -v a="$cpu" -v b="$srv" 'BEGIN { printf "%.1f", a + b }')")
        done
        sorted=$(printf '%s\n' "${secs[@]}" | sort -g)
        min=$(echo "$sorted" | head -1)
        med=$(echo "$sorted" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
        rate=$(awk -v n="$ROWS" -v s="$min" 'BEGIN { printf "%.0f", n / s }')
        echo "| $m | $(IFS='; '; echo "${cells[*]}") | $min | $med | $rate | $(printf '%s\n' "${cpus[@]}" | sort -g | head -1) |"
    done
} | tee -a bench/out/import.md
