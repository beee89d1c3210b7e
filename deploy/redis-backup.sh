#!/bin/sh
# Redis backups for docker-compose.prod.yml (the redis-backup service):
# BGSAVE, wait until it has finished (bounded), copy the RDB snapshot and the
# AOF directory to $BACKUP_DIR/redis/<UTC stamp>/, delete backups older than
# BACKUP_KEEP_DAYS. Runs as the Redis user eventbus-backup (deploy/users.acl),
# which may run BGSAVE, LASTSAVE and PING and nothing else.
#
#   redis-backup.sh once     one backup, exit 0 when it is copied
#   redis-backup.sh          one backup every BACKUP_INTERVAL seconds, forever
#
# Any failure (refused, unreachable, the save not finishing within
# BACKUP_TIMEOUT seconds, a copy failing) is printed to stderr and exits 1,
# so the container restarts and the failure shows in its logs and restart
# count instead of a loop that spins or copies nothing.
#
# The password comes from REDISCLI_AUTH or from the file named by
# REDIS_PASSWORD_FILE (a Docker secret); never from a command-line flag,
# which anyone on the host could read in `ps`.
set -eu

REDIS_HOST=${REDIS_HOST:-redis}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_BACKUP_USER=${REDIS_BACKUP_USER:-eventbus-backup}
DATA_DIR=${DATA_DIR:-/data}
RDB_FILE=${RDB_FILE:-dump.rdb}
AOF_DIR=${AOF_DIR:-appendonlydir}
BACKUP_DIR=${BACKUP_DIR:-/backups}
BACKUP_KEEP_DAYS=${BACKUP_KEEP_DAYS:-7}
BACKUP_INTERVAL=${BACKUP_INTERVAL:-3600}
BACKUP_TIMEOUT=${BACKUP_TIMEOUT:-600}

fail() {
    echo "redis-backup: $*" >&2
    exit 1
}

if [ -z "${REDISCLI_AUTH:-}" ] && [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    [ -r "$REDIS_PASSWORD_FILE" ] || fail "cannot read the password file $REDIS_PASSWORD_FILE"
    REDISCLI_AUTH=$(tr -d '\n' < "$REDIS_PASSWORD_FILE")
fi
[ -n "${REDISCLI_AUTH:-}" ] || fail "no password: set REDISCLI_AUTH or REDIS_PASSWORD_FILE"
export REDISCLI_AUTH

# redis-cli exits 0 even when Redis answers an error (NOPERM, WRONGPASS...),
# so every answer is checked for what it must be.
cli() {
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --user "$REDIS_BACKUP_USER" --no-auth-warning "$@" 2>&1
}

lastsave() {
    out=$(cli LASTSAVE) || fail "LASTSAVE failed: $out"
    case $out in
        '' | *[!0-9]*) fail "LASTSAVE refused by $REDIS_HOST:$REDIS_PORT: $out" ;;
    esac
    echo "$out"
}

backup_once() {
    before=$(lastsave)
    # LASTSAVE counts seconds: a save finishing in the same second as the
    # last one would look like no save at all.
    [ "$before" -lt "$(date +%s)" ] || sleep 1
    out=$(cli BGSAVE SCHEDULE) || fail "BGSAVE failed: $out"
    case $out in
        "Background saving started" | "Background saving scheduled" | *"already in progress"*) ;;
        *) fail "BGSAVE refused by $REDIS_HOST:$REDIS_PORT: $out" ;;
    esac
    waited=0
    now=$(lastsave)
    while [ "$now" = "$before" ]; do
        [ "$waited" -lt "$BACKUP_TIMEOUT" ] || fail "the snapshot did not finish within ${BACKUP_TIMEOUT}s (see the Redis log)"
        sleep 1
        waited=$((waited + 1))
        now=$(lastsave)
    done
    [ -s "$DATA_DIR/$RDB_FILE" ] || fail "no snapshot at $DATA_DIR/$RDB_FILE (is DATA_DIR the Redis data directory?)"
    dest="$BACKUP_DIR/redis/$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$dest.partial" || fail "cannot create $dest.partial"
    cp "$DATA_DIR/$RDB_FILE" "$dest.partial/" || fail "copying the snapshot failed"
    if [ -d "$DATA_DIR/$AOF_DIR" ]; then
        cp -r "$DATA_DIR/$AOF_DIR" "$dest.partial/" || fail "copying the AOF directory failed"
    fi
    # Complete backups only carry the final name.
    mv "$dest.partial" "$dest" || fail "cannot rename $dest.partial"
    find "$BACKUP_DIR/redis" -mindepth 1 -maxdepth 1 -mtime +"$BACKUP_KEEP_DAYS" -exec rm -rf {} +
    echo "redis-backup: saved $dest"
}

case "${1:-loop}" in
    once) backup_once ;;
    loop)
        while :; do
            backup_once
            sleep "$BACKUP_INTERVAL"
        done
        ;;
    *) fail "usage: redis-backup.sh [once]" ;;
esac
