#!/usr/bin/env bash
# A PostgreSQL server on this machine's loopback for one Optuna study shared by several search workers (docs/
# sweeping.md, "Many workers, one study"; tests/test_optuna_workers.py runs on it; .ci/run starts it before the
# tests, as it does scripts/local_slurm.sh). Needs root on Debian/Ubuntu.
#
#   sudo scripts/local_postgres.sh         # install postgresql when missing, set up and start the cluster, print the URL
#   sudo scripts/local_postgres.sh url     # print the URL (the cluster set up; nothing started)
#   sudo scripts/local_postgres.sh stop    # stop the cluster
#
# It prints postgresql+psycopg://cifar_lit:<password>@127.0.0.1:<port>/cifar_lit: a user cifar_lit with a password
# (generated once, kept root-only in the cluster's config folder) owning a database cifar_lit. Python reaches it
# through psycopg, which the project's `postgres` extra (in `dev`) installs.
# Idempotent, and it only touches what it set up itself: a Debian cluster of its own, named cifar_lit (pg_createcluster:
# its own data folder and port, listening on 127.0.0.1 only, not started at boot), marked by .cifar_lit_local in its
# config folder. Other clusters (Debian's "main" among them) are left as they are; a cifar_lit cluster without the
# marker is not this script's and is left alone.
set -euo pipefail

CLUSTER=cifar_lit
ROLE=cifar_lit
DATABASE=cifar_lit

die() { echo "local_postgres: $*" >&2; exit 1; }

action=${1:-start}
case "$action" in start|url|stop) ;; *) die "unknown argument $action (usage: local_postgres.sh [start|url|stop])" ;; esac
[ "$(id -u)" = 0 ] || die "needs root (it installs packages, runs the server as the postgres user, keeps the password)"

if [ "$action" = start ] && ! command -v pg_createcluster >/dev/null; then
    command -v apt-get >/dev/null || die "postgresql is missing and this is not a Debian/Ubuntu system"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
fi
command -v pg_lsclusters >/dev/null || die "no postgresql (run scripts/local_postgres.sh first)"

# the cluster: ours when it exists with the marker; else made with the newest installed server version
existing=$(pg_lsclusters -h | awk -v name="$CLUSTER" '$2 == name {print $1; exit}')
version=${existing:-$(ls /usr/lib/postgresql | sort -V | tail -1)}
CONF_DIR=/etc/postgresql/$version/$CLUSTER
MARKER=$CONF_DIR/.cifar_lit_local
URL_FILE=$CONF_DIR/cifar_lit.url
if [ -n "$existing" ] && [ ! -e "$MARKER" ]; then
    die "a cluster $version/$CLUSTER exists that this script did not set up (no $MARKER): not touching it"
fi

case "$action" in
    url) [ -s "$URL_FILE" ] || die "not set up (run scripts/local_postgres.sh)"; cat "$URL_FILE"; exit 0 ;;
    stop) [ -n "$existing" ] && pg_ctlcluster "$version" "$CLUSTER" stop -m fast 2>/dev/null || true; exit 0 ;;
esac

if [ -z "$existing" ]; then
    pg_createcluster "$version" "$CLUSTER" --start-conf=manual >/dev/null
    echo "listen_addresses = '127.0.0.1'  # scripts/local_postgres.sh: loopback only" >"$CONF_DIR/conf.d/cifar_lit.conf"
    touch "$MARKER"
fi
port=$(pg_conftool -s "$version" "$CLUSTER" show port)
status=$(pg_lsclusters -h | awk -v name="$CLUSTER" '$2 == name {print $4}')
[ "$status" = online ] || pg_ctlcluster "$version" "$CLUSTER" start

# the password: generated once, root-only; given to psql on its stdin (not in any process's arguments)
if [ -s "$URL_FILE" ]; then
    password=$(sed -E 's|^[^:]+://[^:]+:([^@]+)@.*|\1|' "$URL_FILE")
else
    password=$(tr -dc A-Za-z0-9 </dev/urandom | head -c 24 || true)
fi
runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 -d postgres >/dev/null <<SQL
SELECT 'CREATE ROLE $ROLE LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') \gexec
ALTER ROLE $ROLE PASSWORD '$password';
SELECT 'CREATE DATABASE $DATABASE OWNER $ROLE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DATABASE') \gexec
SQL
(umask 077 && echo "postgresql+psycopg://$ROLE:$password@127.0.0.1:$port/$DATABASE" >"$URL_FILE")
cat "$URL_FILE"
