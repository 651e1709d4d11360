#!/usr/bin/env bash
# Install what `make test-cluster` needs on a Debian machine, idempotently:
# the PostgreSQL and Redis servers from the OS packages (run as root; apt-get update only when
# something is missing) and the `cluster` extra (Celery provider, psycopg2) into the project venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV_BIN=${VENV_BIN:-.venv/bin}

have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_redis() { command -v redis-server >/dev/null; }

if ! have_postgres || ! have_redis; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install.sh: PostgreSQL or Redis server missing; run as root to apt-get install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends postgresql redis-server
fi

STAMP="$(dirname "$VENV_BIN")/.cluster-installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    "$VENV_BIN/pip" install -q -e ".[cluster]"
    touch "$STAMP"
fi
