#!/usr/bin/env bash
# The scale story, measured (issue "faster than the script": a scale story on
# paper and in a test): N generated contacts (default 10,000,000) on
# PostgreSQL.
#
#   1. `contacts import` of the N rows: rows/s, peak memory;
#   2. what the store then weighs: the largest tables with their indexes;
#   3. the dry-run of a winback (the audience bench/workflows/bench-winback.yaml
#      uses, about 10% of the contacts) against the same SELECT in psql;
#   4. `status` and `report` on that store;
#   5. that winback enrolled on purpose (`enroll --existing`) and delivered
#      to a loopback webhook receiver by ONE daemon, then the same audience
#      in a second, identical workflow by THREE daemons on the same store:
#      messages/s at the receiver, and duplicates (requests minus distinct
#      message ids: must be 0).
#
#   bench/scale.sh              # 10,000,000 contacts (about an hour on 2 CPUs)
#   bench/scale.sh 1000000      # a quicker look
#
# Runs under .ci/with-postgres.sh (a throwaway server, default settings:
# shared_buffers 128 MB) unless NURTURE_TEST_POSTGRES already names a
# server. BIN and RECEIVER choose the binaries (default: the release build).
# Output: bench/out/scale/ (gitignored), the results table on stdout and
# appended to bench/out/scale/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${NURTURE_TEST_POSTGRES:-}" ]]; then
    exec .ci/with-postgres.sh "$0" "$@"
fi
ROOT=$PWD
N="${1:-10000000}"
[[ "$N" =~ ^[0-9]+$ ]] || { echo "bench: N must be a number, got '$N'" >&2; exit 2; }
SEED="${SEED:-20261101}"
# The dry-run's time: the winback's next tick after now (the workflows are
# activated now, and a dry-run before their activation shows nothing).
AT="${AT:-$(TZ=Asia/Shanghai date -d "$( [[ 10#$(TZ=Asia/Shanghai date +%H) -lt 10 ]] && echo today || echo tomorrow ) 10:00" +%Y-%m-%dT%H:%M:%S+08:00)}"
OUT="$ROOT/bench/out/scale"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${BIN:-$TARGET/release/nurture}"
RECEIVER="${RECEIVER:-$TARGET/release/examples/bench_receiver}"
export NURTURE_LOG="${NURTURE_LOG:-warn}" NURTURE_API_TOKEN=bench-token
unset NURTURE_DATABASE
mkdir -p "$OUT"
for tool in python3 psql curl; do
    command -v "$tool" >/dev/null || { echo "bench: needs $tool" >&2; exit 2; }
done
[[ -x /usr/bin/time ]] || { echo "bench: needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
if [[ ! -x "$BIN" || ! -x "$RECEIVER" ]]; then
    echo "== build" >&2
    cargo build --release --locked --bin nurture --example bench_receiver >&2
fi

CSV="$OUT/contacts-$N.csv"
if [[ ! -s "$CSV" ]]; then
    echo "== generate $N contacts" >&2
    python3 bench/gen_contacts.py --rows "$N" --seed "$SEED" --out "$CSV.part"
    mv "$CSV.part" "$CSV"
fi

ADMIN="$NURTURE_TEST_POSTGRES"
DB="${ADMIN%/*}/nurture_scale"
psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS nurture_scale" >/dev/null
psql -q "$ADMIN" -c "CREATE DATABASE nurture_scale" >/dev/null

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
source "$ROOT/bench/lib.sh"
rm -f "$OUT/receiver.err"
start_listening receiver "$RECEIVER" 127.0.0.1:0
RECV="http://$ADDR"

P="$OUT/project"
rm -rf "$P"; mkdir -p "$P/workflows" "$P/templates"
cat >"$P/nurture.yaml" <<YAML
database: $DB
timezone: Asia/Shanghai
# The benchmark enrolls a million contacts on purpose.
policies:
  blast_guard: off
channels:
  hook:
    kind: webhook
    url: $RECV/hook
fields:
  city: string
  level: string
  source: string
  lifetime_value: number
YAML
for wf in scale-one scale-three; do
    cat >"$P/workflows/$wf.yaml" <<YAML
name: $wf
description: The scale benchmark's winback (the audience of bench/workflows/bench-winback.yaml).
trigger:
  inactive: { for: 30d, check: "0 10 * * *" }
audience:
  all:
    - tag: newsletter
    - field: city
      in: [Shanghai, Beijing]
    - not: { tag: do-not-disturb }
steps:
  - send: { channel: hook, template: winback }
YAML
done
printf '{{contact.name}}, we miss you in {{contact.city}}. 20%% off this week: reply Y.' >"$P/templates/winback.hbs"
NUR=("$BIN" --config "$P/nurture.yaml")

load() { awk '{ print $1 }' /proc/loadavg; }
declare -A R   # name -> "seconds MB load"
timed() { # NAME CMD...: wall seconds and peak RSS of CMD
    local name=$1; shift
    local l; l=$(load)
    if /usr/bin/time -f "%e %M" -o "$OUT/time.$name" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; then
        read -r s kb <"$OUT/time.$name"
        R[$name]="$s $((kb / 1024)) $l"
    else
        R[$name]="failed - $l"
        echo "bench: $name failed; see $OUT/$name.err" >&2
        tail -n 5 "$OUT/$name.err" >&2
    fi
}
secs() { echo "${R[$1]}" | awk '{ print $1 }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }'; }

# The daemon first sees (activates) the workflows on the empty store: what is
# imported next is not "before activation" news to them (it would be, and
# would be skipped, otherwise).
"${NUR[@]}" run --until-idle --listen 127.0.0.1:0 >"$OUT/activate.out" 2>&1

echo "== import $N" >&2
timed import "${NUR[@]}" contacts import "$CSV"

echo "== sizes" >&2
psql -X -q -A -F ' ' -t "$DB" -c "SELECT relname, pg_total_relation_size(c.oid) / 1048576
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 2 DESC LIMIT 6" >"$OUT/sizes.txt"
psql -X -q -A -t "$DB" -c "SELECT pg_database_size(current_database()) / 1048576" >"$OUT/dbsize.txt"

at_ms=$(( $(date -d "$AT" +%s) * 1000 ))
cutoff_ms=$(( at_ms - 30 * 86400000 ))
FLOOR="SELECT c.id, c.name, c.email, c.phone, c.wecom_external_userid, c.owner, c.timezone,
       c.created_at, c.last_active_at, c.unsubscribed, c.attrs,
       (SELECT string_agg(t.tag, ';') FROM contact_tags t WHERE t.contact_id = c.id) AS tags
  FROM contacts c
 WHERE coalesce(c.last_active_at, c.created_at) < $cutoff_ms
  AND EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'newsletter')
  AND (CAST(c.attrs AS json) ->> 'city') IN ('Shanghai', 'Beijing')
  AND NOT EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id AND t.tag = 'do-not-disturb');"
# The winback has ticked before (as on a store a daemon has run on), so its
# tick at AT runs in the dry-run.
psql -q "$DB" -c "INSERT INTO cron_ticks (workflow, tick_at, taken_at) VALUES ('scale-one', 0, 0) ON CONFLICT DO NOTHING" >/dev/null
echo "== floor (psql) and dry-run, twice each, alternating" >&2
for r in 1 2; do
    timed "floor$r" psql -X -q -o /dev/null "$DB" -c "$FLOOR"
    timed "dryrun$r" "${NUR[@]}" dry-run --format jsonl --at "$AT" --workflow scale-one
done
matched=$(grep -c '"action":"send"' "$OUT/dryrun1.out" || true)

echo "== status, report" >&2
timed status "${NUR[@]}" status
timed report "${NUR[@]}" report scale-one

deliver() { # NAME WORKFLOW DAEMONS
    local name=$1 wf=$2 k=$3
    timed "enroll-$name" "${NUR[@]}" enroll "$wf" --existing
    curl -s -X POST "$RECV/reset" >/dev/null
    local l; l=$(load)
    local start; start=$(date +%s.%N)
    local pids=()
    for i in $(seq 1 "$k"); do
        "${NUR[@]}" run --until-idle --listen 127.0.0.1:0 >"$OUT/run-$name-$i.out" 2>"$OUT/run-$name-$i.err" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || echo "bench: a daemon of $name failed: see $OUT/run-$name-*.err" >&2; done
    local end; end=$(date +%s.%N)
    local stats; stats=$(curl -s "$RECV/stats")
    R[$name]=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); d=(s["last_us"]-s["first_us"])/1e6; w=float(sys.argv[3])-float(sys.argv[2]); print("%d %d %.0f %.0f %s" % (s["count"], s["unique"], s["count"]/d if d > 0 else 0, s["count"]/w if w > 0 else 0, sys.argv[4]))' "$stats" "$start" "$end" "$l")
}
echo "== one daemon" >&2
deliver one scale-one 1
echo "== three daemons" >&2
deliver three scale-three 3

{
    echo
    echo "### bench/scale.sh $N, PostgreSQL ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $("$BIN" --version 2>/dev/null || echo nurture))"
    echo
    echo "| measure | result | peak MB | load before |"
    echo "|---|---|---:|---:|"
    read -r s mb l <<<"${R[import]}"
    echo "| import $N contacts | ${s} s, $(rate "$N" "$s") rows/s | $mb | $l |"
    echo "| store after import | $(cat "$OUT/dbsize.txt") MB: $(awk '{ printf "%s%s %s MB", (NR > 1 ? ", " : ""), $1, $2 }' "$OUT/sizes.txt") | | |"
    for r in 1 2; do
        read -r fs fmb fl <<<"${R[floor$r]}"
        read -r ds dmb dl <<<"${R[dryrun$r]}"
        echo "| round $r: psql floor / dry-run ($matched sends) | $fs s / $ds s = $(awk -v a="$ds" -v b="$fs" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }') | $fmb / $dmb | $fl / $dl |"
    done
    for m in status report enroll-one enroll-three; do
        read -r s mb l <<<"${R[$m]}"
        echo "| \`$m\` | $s s | $mb | $l |"
    done
    for m in one three; do
        read -r count unique recv wall l <<<"${R[$m]}"
        echo "| deliver, $m daemon(s) | $count requests, $((count - unique)) duplicates; $recv msg/s at the receiver, $wall msg/s over the whole run (planning included) | | $l |"
    done
} | tee -a "$OUT/results.md"
