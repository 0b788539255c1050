# Sourced by the test script: make sure PostgreSQL and Redis answer on 127.0.0.1,
# installing them from Debian packages and starting them when they are absent.

pg_answers() {
    "$PY" - "$1" <<'PYEOF' >/dev/null 2>&1
import sys
import psycopg
url = sys.argv[1].replace("postgresql+psycopg://", "postgresql://")
psycopg.connect(url, connect_timeout=3).close()
PYEOF
}

ensure_postgres() {
    local url="${CXR_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}"
    if pg_answers "$url"; then
        export CXR_TEST_POSTGRES_URL="$url"
        return
    fi
    # The machine's own cluster may just be stopped.
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ] && [ "$(id -u)" = 0 ]; then
        for version in /etc/postgresql/*; do
            pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start 2>/dev/null || true
        done
        sleep 2
        if pg_answers "$url"; then export CXR_TEST_POSTGRES_URL="$url"; return; fi
    fi
    # Otherwise a private throwaway cluster with trust auth on its own port, so the
    # machine's own PostgreSQL configuration is never touched.
    local bindir
    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    if [ -z "$bindir" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing postgresql ..." >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
            bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
        else
            echo "PostgreSQL is needed for the integration tests: sudo apt-get install postgresql" >&2
            exit 1
        fi
    fi
    local dir="${TMPDIR:-/tmp}/cxr-test-postgres" port=55432 run_as=()
    if [ "$(id -u)" = 0 ]; then run_as=(runuser -u postgres --); fi
    if [ ! -f "$dir/PG_VERSION" ]; then
        mkdir -p "$dir" && [ "$(id -u)" = 0 ] && chown postgres "$dir"
        "${run_as[@]}" "$bindir/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
    fi
    "${run_as[@]}" "$bindir/pg_ctl" -D "$dir" -o "-p $port -k $dir -c listen_addresses=127.0.0.1" \
        -l "$dir/log" -w start >/dev/null 2>&1 || true
    "${run_as[@]}" "$bindir/createdb" -h 127.0.0.1 -p $port -U postgres test 2>/dev/null || true
    url="postgresql+psycopg://postgres@127.0.0.1:$port/test"
    pg_answers "$url" || { echo "could not start PostgreSQL (see $dir/log)" >&2; exit 1; }
    export CXR_TEST_POSTGRES_URL="$url"
}

ensure_redis() {
    local port="${CXR_TEST_REDIS_PORT:-6379}"
    if command -v redis-cli >/dev/null && [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ]; then
        export CXR_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
        return
    fi
    if ! command -v redis-server >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing redis-server ..." >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
        else
            echo "Redis is needed for the integration tests: sudo apt-get install redis-server" >&2
            exit 1
        fi
    fi
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/cxr-test-redis.log" >/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
        sleep 0.5
    done
    export CXR_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
}

# The PACS integration tests talk to real DICOM peers from Debian packages: DCMTK
# (storescu, echoscu), Orthanc, and dicom3tools (the dciodvfy validator). Installed when
# absent and running as root; otherwise those tests skip, saying what to install.
ensure_dicom_tools() {
    local missing=()
    command -v storescu >/dev/null || missing+=(dcmtk)
    # Orthanc is in /usr/sbin, off a normal user's PATH.
    command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
    command -v dciodvfy >/dev/null || missing+=(dicom3tools)
    [ "${#missing[@]}" -eq 0 ] && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]} ..." >&2
        # On a host with systemd the package also starts Orthanc's own service; the
        # tests never use it: they run their own Orthanc on free loopback ports.
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null; }; then
            echo "could not install ${missing[*]}: the PACS tests that need them will skip" >&2
        fi
    else
        echo "the PACS tests need ${missing[*]} (sudo apt-get install ${missing[*]}); they skip without" >&2
    fi
}

# The web pages' browser test drives Debian's chromium through Playwright (never a
# browser Playwright downloads). Installed when absent and running as root; otherwise
# that test skips, saying what to install.
ensure_chromium() {
    command -v chromium >/dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing chromium ..." >&2
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            chromium >/dev/null; }; then
            echo "could not install chromium: the browser test of the web pages will skip" >&2
        fi
    else
        echo "the web pages' browser test needs chromium (sudo apt-get install chromium); it skips without" >&2
    fi
}
