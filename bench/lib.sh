# Shared by the bench scripts: `source bench/lib.sh` (from the repository root) after OUT
# and PIDS are set.

# start_listening NAME CMD...: runs CMD in the background (output in
# $OUT/NAME.out, errors appended to $OUT/NAME.err), remembers its pid in PID
# and PIDS, and waits for its "listening on ADDR" line: ADDR is then set.
# Up to 20 s (a daemon restarting on a big store takes a while).
start_listening() {
    local name=$1; shift
    "$@" >"$OUT/$name.out" 2>>"$OUT/$name.err" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 1 400); do
        if ADDR=$(sed -n 's/^listening on //p' "$OUT/$name.out" | head -n1) && [[ -n "$ADDR" ]]; then
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || { echo "bench: $name exited; see $OUT/$name.err" >&2; exit 1; }
        sleep 0.05
    done
    echo "bench: $name did not print its address" >&2
    exit 1
}

# welcome_project DIR DATABASE RECV N: the end-to-end project (bench/e2e.sh,
# bench/pg_statements.sh): a webhook channel `hook` to RECV/hook, a welcome
# to every new contact, and DIR/contacts.csv with N contacts.
welcome_project() {
    local dir=$1 database=$2 recv=$3 n=$4
    rm -rf "$dir"; mkdir -p "$dir/workflows" "$dir/templates"
    cat >"$dir/nurture.yaml" <<YAML
database: $database
timezone: Asia/Shanghai
# The benchmark enrolls every contact at once on purpose.
policies:
  blast_guard: off
channels:
  hook:
    kind: webhook
    url: $recv/hook
YAML
    cat >"$dir/workflows/welcome.yaml" <<'YAML'
trigger: { contact_created: {} }
steps:
  - send: { channel: hook, template: welcome }
YAML
    printf 'Welcome, {{contact.name}}! Your account {{contact.id}} is ready.' >"$dir/templates/welcome.hbs"
    python3 - "$n" >"$dir/contacts.csv" <<'PY'
import sys
print("id,name,email")
for i in range(int(sys.argv[1])):
    print(f"t{i:07},Name {i},t{i:07}@example.com")
PY
}
