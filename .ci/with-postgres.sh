#!/usr/bin/env bash
# Runs CMD... with a throwaway PostgreSQL server, then stops it.
#
#   .ci/with-postgres.sh cargo test
#
# The server lives in a temporary folder, listens on 127.0.0.1 on a free port
# with trust authentication (a test server: nothing else can reach it), and
# is stopped and removed however CMD ends. CMD sees
#   NURTURE_TEST_POSTGRES=postgres://postgres@127.0.0.1:PORT/postgres
# (tests create a fresh database per test from it). NURTURE_PG_OPTIONS adds
# server options (`-c name=value ...`; bench/pg_statements.sh loads
# pg_stat_statements with it).
#
# PostgreSQL comes from Debian's packages; it is installed when no pg_ctl is
# found. PostgreSQL refuses to run as root, so as root the server runs as the
# `postgres` user (which the package creates) through runuser.
set -euo pipefail

find_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
    done
    return 1
}

bin=$(find_bin || true)
if [[ -z "$bin" ]]; then
    sudo=""
    [[ "$(id -u)" -eq 0 ]] || sudo=sudo
    echo "== apt-get install postgresql" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >&2
    bin=$(find_bin)
fi

# As root, run the server as `postgres`; otherwise as ourselves.
as_pg=()
if [[ "$(id -u)" -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    as_pg=(runuser -u postgres --)
fi

dir=$(mktemp -d /tmp/nurture-pg.XXXXXX)
chmod 755 "$dir"
[[ ${#as_pg[@]} -eq 0 ]] || chown postgres "$dir"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

stop() {
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT

# The C locale, unless NURTURE_PG_ICU_LOCALE names an ICU locale for the
# server's default collation (test.sh runs some tests under zh-CN).
locale=(--no-locale)
[[ -z "${NURTURE_PG_ICU_LOCALE:-}" ]] ||
    locale=(--locale=C.utf8 --locale-provider=icu "--icu-locale=$NURTURE_PG_ICU_LOCALE")
"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 "${locale[@]}" >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
# Tests and the three-daemon test open many connections; fsync off: a
# throwaway server need not survive a power cut, and tests run faster.
"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off ${NURTURE_PG_OPTIONS:-}" \
    start >/dev/null ||
    { cat "$dir/server.log" >&2; exit 1; }

export NURTURE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
echo "== PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
"$@"
