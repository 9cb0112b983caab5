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
# AT. Alternates the contenders in each round and records the 1-minute load
# average before every measurement. Results: bench/out/journey/results.md
# (appended) and stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS="${1:-1000000}"
ROUNDS="${ROUNDS:-3}"
AT="${AT:-2026-11-01T10:00:00+08:00}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/nurture}"
OUT=bench/out/journey
WF=bench-ab
[[ -x "$BIN" ]] || { echo "bench: no $BIN; run cargo build --release first" >&2; exit 2; }
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

at_s=$(date -d "$AT" +%s)
at_ms=$((at_s * 1000))
cutoff_ms=$((at_ms - 30 * 86400000))
day_ms=86400000

echo "== import $ROWS contacts" >&2
"$BIN" --config "$PROJ/nurture.yaml" contacts import "$CSV" >&2
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
sqlite3 "$REPORT_DB" <<SQL
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
BEGIN;
INSERT INTO enrollments (id, workflow, contact_id, entry_key, status, step_id, last_step_id, started_at, ended_at, end_reason)
SELECT rowid, '$WF', id, 'spell:0', 'done', NULL, CASE WHEN rowid % 2 = 0 THEN 'send-a' ELSE 'send-b' END,
       $start_ms, $start_ms, 'done'
  FROM contacts;
INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail)
SELECT id, 'offer', started_at, 'split', CASE WHEN id % 2 = 0 THEN 'a' ELSE 'b' END FROM enrollments;
INSERT INTO enrollment_steps (enrollment_id, step_id, ran_at, action, detail)
SELECT id, last_step_id, started_at, 'send', NULL FROM enrollments;
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

declare -A RES
LOADS=()
load() { awk '{ print $1 }' /proc/loadavg; }
run() {
    local name=$1 round=$2; shift 2
    local l; l=$(load); LOADS+=("$l")
    if /usr/bin/time -f "%e %M" -o "$OUT/time" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; then
        read -r s kb <"$OUT/time"
        RES["$name|$round"]="$s $((kb / 1024)) $l"
    else
        RES["$name|$round"]="failed - $l"
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
    run report "$r" "$BIN" --config "$REPORT_CFG" report "$WF" --format json
done
sends=$(grep -c '"action":"send"' "$OUT/dry-run.out" || true)
arms=$(grep -c '"action":"split"' "$OUT/dry-run.out" || true)
matched=$(sqlite3 "$DB" "$FLOOR" | wc -l)
entered=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["groups"][0]["entered"])' "$OUT/report.out" 2>/dev/null || echo "?")

stats() { # name -> "min median"
    local name=$1
    for r in $(seq 1 "$ROUNDS"); do echo "${RES["$name|$r"]%% *}"; done | sort -n |
        awk '{ v[NR] = $1 } END { printf "%s %s", v[1], v[int((NR + 1) / 2)] }'
}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo
    echo "### $(date -u +%Y-%m-%dT%H:%MZ), commit $commit, $ROWS contacts, $(nproc) CPUs, $ROUNDS rounds"
    echo
    echo "Load average (1 min) before the measurements: min $(printf '%s\n' "${LOADS[@]}" | sort -n | head -1), max $(printf '%s\n' "${LOADS[@]}" | sort -n | tail -1). Dry-run: $sends sends, $arms split rows (floor rows: $matched); report: $entered enrollments."
    echo
    echo "| measure | runs: seconds (peak MB, load) | min s | median s |"
    echo "|---|---|---:|---:|"
    for name in floor dry-run report; do
        cells=()
        for r in $(seq 1 "$ROUNDS"); do
            read -r s mb l <<<"${RES["$name|$r"]}"
            cells+=("$s ($mb MB, $l)")
        done
        read -r mn md <<<"$(stats "$name")"
        echo "| $name | $(IFS=';'; echo "${cells[*]}" | sed 's/;/; /g') | $mn | $md |"
    done
    read -r fmn fmd <<<"$(stats floor)"
    read -r dmn dmd <<<"$(stats dry-run)"
    echo
    echo "dry-run / floor: $(awk -v a="$dmn" -v b="$fmn" 'BEGIN { printf "%.2f", a / b }')× (min), $(awk -v a="$dmd" -v b="$fmd" 'BEGIN { printf "%.2f", a / b }')× (median)."
} | tee -a "$OUT/results.md"
