#!/bin/sh
# Entry point for docker-compose.prod.yml: reads Docker secrets from files
# into the variables eventbus reads, then runs eventbus with the arguments.
# Secrets never appear on a command line (ps) or in the compose file.
set -eu
read_secret() { [ -r "/run/secrets/$1" ] && tr -d '\n' < "/run/secrets/$1" || true; }

pass=$(read_secret redis_admin_password)
[ -n "$pass" ] && export REDIS_PASSWORD="$pass"
pg=$(read_secret postgres_password)
if [ -n "$pg" ] && [ -z "${DATABASE_URL:-}" ]; then
    # URL-encode nothing here: keep PostgreSQL passwords to [A-Za-z0-9_-].
    export DATABASE_URL="postgres://${POSTGRES_USER}:${pg}@${POSTGRES_HOST:-postgres}:5432/${POSTGRES_DB}"
fi
token=$(read_secret api_token)
[ -n "$token" ] && export EVENT_BUS_API_TOKEN="$token"
token=$(read_secret api_read_token)
[ -n "$token" ] && export EVENT_BUS_API_READ_TOKEN="$token"
exec eventbus "$@"
