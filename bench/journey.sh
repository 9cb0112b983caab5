#!/usr/bin/env bash
# Issue 14's benchmark rows, on SQLite, in one run:
#
#  (1) a dry-run over N contacts of bench/journey/workflows/bench-ab.yaml (a
#      segment, an A/B split and a goal) against its floor, the same SELECT
#      of the same contacts in sqlite3;
#  (2) `nurture report bench-ab` over N enrollments (each with its split
#      row, its send row and a sent message; a purchase for one contact in
#      ten inside the goal's window), written into a copy of the store with
#      sqlite3.
#
#   bench/journey.sh              # 1,000,000 contacts and enrollments
#   bench/journey.sh 100000
#
# Environment: BIN (default $CARGO_TARGET_DIR/release/nurture), ROUNDS (3),
# AT, BASE (an older build to time the report against in the same rounds, on
# its own copy of the store: the store is then written at BASE's schema and
# BIN migrates its copy once, untimed but reported). Alternates the
# contenders in each round and records the 1-minute load average before
# every measurement, and CPU seconds (user + sys). Results:
# bench/out/journey/results.md (appended) and stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS="${1:-1000000}"
ROUNDS="${ROUNDS:-3}"
AT="${AT:-2026-11-01T10:00:00+08:00}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/nurture}"
OUT=bench/out/journey
WF=bench-ab
[[ -x "$BIN" ]] || { echo "bench: no $BIN; run cargo build --release first" >&2; exit 2; }
BASE="${BASE:-}"
[[ -z "$BASE" || -x "$BASE" ]] || { echo "bench: BASE $BASE is not an executable" >&2; exit 2; }
mkdir -p "$OUT"
unset NURTURE_DATABASE

FULL=bench/out/contacts.csv
[[ -f "$FULL" ]] || python3 bench/gen_contacts.py --rows 1000000 --seed 20261101 --out "$FULL"
CSV="$OUT/contacts-$ROWS.csv"
[[ -f "$CSV" ]] || head -n $((ROWS + 1)) "$FULL" >"$CSV"

# The project: the bench settings, the journey's workflow, segment, templates.
PROJ="$OUT/project"
rm -rf "$PROJ"; mkdir -p "$PROJ"
cp -r bench/journey/workflows bench/journey/segments bench/journey/templates "$PROJ/"
sed 's#^database:.*#database: sqlite://out/journey.db#' bench/nurture.yaml >"$PROJ/nurture.yaml"
mkdir -p "$PROJ/out"
DB="$PROJ/out/journey.db"
REPORT_DB="$PROJ/out/report.db"
BASE_DB="$PROJ/out/report-base.db"

at_s=$(date -d "$AT" +%s)
at_ms=$((at_s * 1000))
cutoff_ms=$((at_ms - 30 * 86400000))
day_ms=86400000

echo "== import $ROWS contacts" >&2
"${BASE:-$BIN}" --config "$PROJ/nurture.yaml" contacts import "$CSV" >&2
# Purchases (the goal's event) for one contact in twenty, a year before AT:
# the dry-run reads them for the goal; they do not change who is inactive
# (each contact was active after them).
sqlite3 "$DB" <<SQL
INSERT INTO events (contact_id, name, at, properties)
SELECT id, 'purchase', created_at - 365 * $day_ms, '{"amount": 99}'
  FROM contacts WHERE rowid % 20 = 0;
INSERT OR IGNORE INTO cron_ticks (workflow, tick_at, taken_at) VALUES ('$WF', 0, 0);
SQL

FLOOR="SELECT c.id, c.name, c.email, c.phone, c.wecom_external_userid, c.owner, c.timezone,
       c.created_at, c.last_active_at, c.unsubscribed, c.attrs,
       (SELECT group_concat(t.tag, ';') FROM contact_tags t WHERE t.contact_id = c.id) AS tags
  FROM contacts c
 WHERE coalesce(c.last_active_at, c.created_at) < $cutoff_ms
  AND EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'newsletter')
  AND json_extract(c.attrs, '\$.city') IN ('Shanghai', 'Beijing')
  AND NOT EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'do-not-disturb');"

# The report's store: a copy with one bench-ab enrollment per contact,
# started at AT - 10 d, its split row (arm by rowid), its send row and a sent
# message; a purchase 2 days after the start for one contact in seven (inside
# the 7-day goal).
echo "== writing $ROWS enrollments for the report" >&2
rm -f "$REPORT_DB" "$REPORT_DB-wal" "$REPORT_DB-shm"
sqlite3 "$DB" "VACUUM INTO '$REPORT_DB'"
start_ms=$((at_ms - 10 * day_ms))
# Since migration 0040 a step record carries its enrollment's workflow and
# start; a store at an older schema gets them from the migration.
STEP_COLS="" STEP_VALS=""
if [[ $(sqlite3 "$REPORT_DB" "SELECT count(*) FROM pragma_table_info('enrollment_steps') WHERE name = 'workflow'") == 1 ]]; then
    STEP_COLS=", workflow, started_at" STEP_VALS=", workflow, started_at"
fi
sqlite3 "$REPORT_DB" <<SQL
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
BEGIN;
INSERT INTO enrollments (id, workflow, contact_id, entry_key, status, step_id, last_step_id, started_at, ended_at, end_reason)
SELECT rowid, '$WF', id, 'spell:0', 'done', NULL, CASE WHEN rowid % 2 = 0 THEN 'send-a' ELSE 'send-b' END,
       $start_ms, $start_ms, 'done'
  FROM contacts;
INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail$STEP_COLS)
SELECT id, 'offer', started_at, 'split', CASE WHEN id % 2 = 0 THEN 'a' ELSE 'b' END$STEP_VALS FROM enrollments;
INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail$STEP_COLS)
SELECT id, last_step_id, started_at, 'send', NULL$STEP_VALS FROM enrollments;
INSERT INTO outbox (id, workflow, contact_id, enrollment_id, step_id, channel, recipient, body, status,
                    attempts, not_before, next_attempt_at, created_at, sent_at)
SELECT 'm' || id, workflow, contact_id, id, last_step_id, 'sms', contact_id, 'bench', 'sent',
       1, started_at, started_at, started_at, started_at + 1000 FROM enrollments;
INSERT INTO events (contact_id, name, at, properties)
SELECT contact_id, 'purchase', started_at + 2 * $day_ms, '{"amount": 99}' FROM enrollments WHERE id % 7 = 0;
COMMIT;
ANALYZE;
SQL
REPORT_CFG="$PROJ/nurture-report.yaml"
sed 's#^database:.*#database: sqlite://out/report.db#' "$PROJ/nurture.yaml" >"$REPORT_CFG"
MIGRATED=""
if [[ -n "$BASE" ]]; then
    BASE_CFG="$PROJ/nurture-report-base.yaml"
    cp "$REPORT_DB" "$BASE_DB"
    sed 's#^database:.*#database: sqlite://out/report-base.db#' "$PROJ/nurture.yaml" >"$BASE_CFG"
    # BIN's first open migrates its copies (untimed in the rounds).
    echo "== $BIN migrates the report's store" >&2
    /usr/bin/time -f "%e %U %S %M" -o "$OUT/time" "$BIN" --config "$REPORT_CFG" report "$WF" >/dev/null
    read -r s u sy kb <"$OUT/time"
    MIGRATED="First open by BIN (migrations on $ROWS enrollments): $s s wall, $(awk -v a="$u" -v b="$sy" 'BEGIN { printf "%.2f", a + b }') CPU s, $((kb / 1024)) MB."
    "$BIN" --config "$PROJ/nurture.yaml" report "$WF" >/dev/null
fi

declare -A RES
LOADS=()
load() { awk '{ print $1 }' /proc/loadavg; }
run() {
    local name=$1 round=$2; shift 2
    local l; l=$(load); LOADS+=("$l")
    if /usr/bin/time -f "%e %M %U %S" -o "$OUT/time" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; then
        read -r s kb u sy <"$OUT/time"
        RES["$name|$round"]="$s $((kb / 1024)) $l $(awk -v a="$u" -v b="$sy" 'BEGIN { printf "%.2f", a + b }')"
    else
        RES["$name|$round"]="failed - $l -"
        echo "bench: $name failed; see $OUT/$name.err" >&2
        tail -n 3 "$OUT/$name.err" >&2
    fi
}
for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r (load $(load), $(nproc) CPUs)" >&2
    run floor "$r" sh -c "sqlite3 '$DB' >/dev/null <<'SQL'
$FLOOR
SQL"
    run dry-run "$r" "$BIN" --config "$PROJ/nurture.yaml" dry-run --format jsonl --at "$AT" --workflow "$WF"
    [[ -z "$BASE" ]] || run report-base "$r" "$BASE" --config "$BASE_CFG" report "$WF" --format json
    run report "$r" "$BIN" --config "$REPORT_CFG" report "$WF" --format json
done
NAMES=(floor dry-run report)
if [[ -n "$BASE" ]]; then
    NAMES=(floor dry-run report-base report)
    cmp -s "$OUT/report-base.out" "$OUT/report.out" && SAME="BASE and BIN printed the same report, byte for byte." ||
        SAME="BASE and BIN printed DIFFERENT reports: diff $OUT/report-base.out $OUT/report.out"
fi
sends=$(grep -c '"action":"send"' "$OUT/dry-run.out" || true)
arms=$(grep -c '"action":"split"' "$OUT/dry-run.out" || true)
matched=$(sqlite3 "$DB" "$FLOOR" | wc -l)
entered=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["groups"][0]["entered"])' "$OUT/report.out" 2>/dev/null || echo "?")

stats() { # name [field] -> "min median" of wall seconds (field 1) or CPU s (4)
    local name=$1 f=${2:-1}
    for r in $(seq 1 "$ROUNDS"); do echo "${RES["$name|$r"]}" | awk -v f="$f" '{ print $f }'; done | sort -n |
        awk '{ v[NR] = $1 } END { printf "%s %s", v[1], v[int((NR + 1) / 2)] }'
}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ), commit $commit, $ROWS contacts, $(nproc) CPUs, $ROUNDS rounds"
    echo
    echo "Load average (1 min) before the measurements: min $(printf '%s\n' "${LOADS[@]}" | sort -n | head -1), max $(printf '%s\n' "${LOADS[@]}" | sort -n | tail -1). Dry-run: $sends sends, $arms split rows (floor rows: $matched); report: $entered enrollments."
    echo
    [[ -z "$MIGRATED" ]] || { echo "$MIGRATED"; echo; }
    [[ -z "$BASE" ]] || { echo "report-base: $BASE. $SAME"; echo; }
    echo "| measure | runs: seconds (CPU s, peak MB, load) | min s | median s | min CPU s |"
    echo "|---|---|---:|---:|---:|"
    for name in "${NAMES[@]}"; do
        cells=()
        for r in $(seq 1 "$ROUNDS"); do
            read -r s mb l cpu <<<"${RES["$name|$r"]}"
            cells+=("$s ($cpu, $mb MB, $l)")
        done
        read -r mn md <<<"$(stats "$name")"
        read -r cmn _ <<<"$(stats "$name" 4)"
        echo "| $name | $(IFS=';'; echo "${cells[*]}" | sed 's/;/; /g') | $mn | $md | $cmn |"
    done
    read -r fmn fmd <<<"$(stats floor)"
    read -r dmn dmd <<<"$(stats dry-run)"
    echo
    echo "dry-run / floor: $(awk -v a="$dmn" -v b="$fmn" 'BEGIN { printf "%.2f", a / b }')× (min), $(awk -v a="$dmd" -v b="$fmd" 'BEGIN { printf "%.2f", a / b }')× (median)."
} | tee -a "$OUT/results.md"
