#!/usr/bin/env bash
# The nurture benchmark: import and dry-run over N generated contacts,
# against the floor of sqlite3 running the same query.
#
#   bench/run.sh            # 1,000,000 contacts
#   bench/run.sh 100000     # fewer, for a quick look
#
# Environment: AT (the dry-run's --at, default 2026-11-01T10:00:00+08:00),
# SEED (generator seed), COUNT_RUN=0 to skip the second, unmeasured dry-run
# that writes the jsonl to a file to count its lines.
#
# Everything it writes goes to bench/out/ (gitignored); results are printed as
# a markdown table and appended to bench/out/results.md.
set -euo pipefail

cd "$(dirname "$0")/.."

ROWS="${1:-1000000}"
SEED="${SEED:-20261101}"
AT="${AT:-2026-11-01T10:00:00+08:00}"
COUNT_RUN="${COUNT_RUN:-1}"
OUT=bench/out
CONFIG=bench/nurture.yaml
DB="$OUT/bench.db"          # what bench/nurture.yaml's `database` points at
BIN="${CARGO_TARGET_DIR:-target}/release/nurture"
WORKFLOW=bench-winback

# The store must be the one in bench/nurture.yaml, not one from the environment.
unset NURTURE_DATABASE

missing=()
[[ -x /usr/bin/time ]] || missing+=(time)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    echo "bench: missing ${missing[*]}; on Debian: sudo apt-get install -y ${missing[*]}" >&2
    exit 2
fi
[[ "$ROWS" =~ ^[0-9]+$ ]] || { echo "bench: ROWS must be a number, got '$ROWS'" >&2; exit 2; }

mkdir -p "$OUT"

echo "== build" >&2
cargo build --release --locked >&2

# Regenerate only when the rows or the seed changed: the generator is
# deterministic, so the same stamp means the same bytes.
CSV="$OUT/contacts.csv"
STAMP="rows=$ROWS seed=$SEED ref=2026-11-01 gen=$(sha1sum bench/gen_contacts.py | cut -c1-12)"
if [[ ! -f "$CSV" || "$(cat "$CSV.stamp" 2>/dev/null)" != "$STAMP" ]]; then
    echo "== generate $ROWS contacts" >&2
    python3 bench/gen_contacts.py --rows "$ROWS" --seed "$SEED" --out "$CSV"
    echo "$STAMP" >"$CSV.stamp"
else
    echo "== reuse $CSV ($STAMP)" >&2
fi

# wall seconds and peak RSS (MB) from a `/usr/bin/time -v` report
wall_of() {
    awk '/Elapsed \(wall clock\)/ { print $NF }' "$1" |
        awk -F: '{ if (NF == 3) printf "%.2f", $1 * 3600 + $2 * 60 + $3; else printf "%.2f", $1 * 60 + $2 }'
}
rss_of() { awk '/Maximum resident set size/ { printf "%.0f", $NF / 1024 }' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# --- (a) import into a fresh store -----------------------------------------
rm -f "$DB" "$DB-wal" "$DB-shm"
echo "== import" >&2
if ! /usr/bin/time -v -o "$OUT/time.import" \
    "$BIN" --config "$CONFIG" contacts import "$CSV" >"$OUT/import.log" 2>&1; then
    echo "bench: import failed; see $OUT/import.log and $OUT/time.import" >&2
    tail -n 5 "$OUT/import.log" >&2
    exit 1
fi
import_s=$(wall_of "$OUT/time.import")
import_mb=$(rss_of "$OUT/time.import")
import_rate=$(awk -v n="$ROWS" -v s="$import_s" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }')
stored=$(sqlite3 "$DB" "SELECT count(*) FROM contacts")
if [[ "$stored" != "$ROWS" ]]; then
    echo "bench: warning: the store holds $stored contacts, the file has $ROWS" >&2
fi

# --- (c) the floor: sqlite3 selecting the same rows and columns -------------
at_ms=$(( $(date -d "$AT" +%s) * 1000 ))
cutoff_ms=$(( at_ms - 30 * 86400000 ))
# Same conditions as bench/workflows/bench-winback.yaml plus the inactivity test.
WHERE="coalesce(c.last_active_at, c.created_at) < $cutoff_ms
  AND EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'newsletter')
  AND json_extract(c.attrs, '\$.city') IN ('Shanghai', 'Beijing')
  AND NOT EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'do-not-disturb')"
cat >"$OUT/floor.sql" <<SQL
SELECT c.id, c.name, c.email, c.phone, c.wecom_external_userid, c.owner, c.timezone,
       c.created_at, c.last_active_at, c.unsubscribed, c.attrs,
       (SELECT group_concat(t.tag, ';') FROM contact_tags t WHERE t.contact_id = c.id) AS tags
  FROM contacts c
 WHERE $WHERE;
SQL
echo "== floor (sqlite3)" >&2
/usr/bin/time -v -o "$OUT/time.floor" sqlite3 "$DB" <"$OUT/floor.sql" >/dev/null
floor_s=$(wall_of "$OUT/time.floor")
floor_mb=$(rss_of "$OUT/time.floor")
matched_sql=$(sqlite3 "$DB" "SELECT count(*) FROM contacts c WHERE $WHERE")

# --- (b) the dry-run ------------------------------------------------------
# The workflow has ticked before (as on a store a daemon has been running
# on): its tick at AT runs. On a store where it never ticked, the first tick
# a daemon sees is recorded, not run, and the dry-run shows just that.
sqlite3 "$DB" "INSERT OR IGNORE INTO cron_ticks (workflow, tick_at, taken_at) VALUES ('$WORKFLOW', 0, 0)"
DRY=("$BIN" --config "$CONFIG" dry-run --format jsonl --at "$AT" --workflow "$WORKFLOW")
echo "== dry-run" >&2
dry_s="failed" dry_mb="-" dry_ratio="-" lines="-" sends="-"
if /usr/bin/time -v -o "$OUT/time.dryrun" "${DRY[@]}" >/dev/null 2>"$OUT/dryrun.log"; then
    dry_s=$(wall_of "$OUT/time.dryrun")
    dry_mb=$(rss_of "$OUT/time.dryrun")
    dry_ratio=$(ratio "$dry_s" "$floor_s")
    if [[ "$COUNT_RUN" != 0 ]]; then
        echo "== dry-run again, to a file, to count its lines" >&2
        "${DRY[@]}" >"$OUT/dryrun.jsonl" 2>>"$OUT/dryrun.log"
        lines=$(wc -l <"$OUT/dryrun.jsonl")
        sends=$(grep -c '"action":"send"' "$OUT/dryrun.jsonl" || true)
    fi
else
    echo "bench: dry-run failed; see $OUT/dryrun.log" >&2
    tail -n 5 "$OUT/dryrun.log" >&2 || true
fi

# --- (d) the week ahead: the quick start's workflows, --until 7d -------------
# The quick start's own settings and workflows (nurture.yaml at the root) on
# the same store: a million imported contacts, none of them news to the
# event-triggered workflows (before_activation), winback and the newsletter
# at their real ticks, the blast guard holding what is over its limit.
UNTIL=(env NURTURE_DATABASE="sqlite://$PWD/$DB" "$BIN" --config nurture.yaml dry-run --format jsonl --at "$AT" --until 7d)
echo "== dry-run --until 7d (quick-start workflows)" >&2
until_s="failed" until_mb="-" until_lines="-"
if /usr/bin/time -v -o "$OUT/time.until" "${UNTIL[@]}" >"$OUT/until.jsonl" 2>"$OUT/until.log"; then
    until_s=$(wall_of "$OUT/time.until")
    until_mb=$(rss_of "$OUT/time.until")
    until_lines=$(wc -l <"$OUT/until.jsonl")
else
    echo "bench: dry-run --until failed; see $OUT/until.log" >&2
    tail -n 5 "$OUT/until.log" >&2 || true
fi
until_ratio=$(ratio "$until_s" "$floor_s")

# --- report -----------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo "+dirty")
cpu=$(lscpu 2>/dev/null | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')
mem=$(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo)
report=$(cat <<EOF
### $(date -u +%Y-%m-%dT%H:%MZ), commit $commit$dirty, $ROWS contacts

Machine: $(nproc) CPUs ($cpu), $mem RAM. Dry-run at $AT, workflow $WORKFLOW.

| measurement | wall (s) | peak RSS (MB) | derived | target |
|---|---:|---:|---|---|
| import \`contacts import\` | $import_s | $import_mb | $import_rate contacts/s | ≥ 100,000 contacts/s |
| dry-run \`--format jsonl\` | $dry_s | $dry_mb | $dry_ratio × floor | ≤ 2× floor, < 300 MB |
| floor: sqlite3 same SELECT | $floor_s | $floor_mb | | |
| dry-run \`--until 7d\`, quick-start workflows | $until_s | $until_mb | $until_ratio × floor, $until_lines rows | |

Rows matched: $matched_sql by SQL; dry-run output: $lines lines, $sends sends.
EOF
)
echo "$report"
{ echo; echo "$report"; } >>"$OUT/results.md"
if [[ "$lines" != "-" && "$sends" != "$matched_sql" ]]; then
    echo "bench: warning: the dry-run sent to $sends contacts, SQL matched $matched_sql" >&2
fi
