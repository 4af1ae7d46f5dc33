#!/usr/bin/env bash
# Make sure the machine's PostgreSQL (127.0.0.1:5432, database `test`, trust auth) and Redis (127.0.0.1:6379)
# answer, starting them when they are installed but down. SeaweedFS is started by the test harness itself.
set -u

fail() { echo "services: $*" >&2; exit 1; }

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! postgres_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "services: PostgreSQL is down, starting it"
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 30); do postgres_up && break; sleep 1; done
  fi
  postgres_up || fail "PostgreSQL does not answer on 127.0.0.1:5432. Install and start it (apt-get install postgresql; pg_ctlcluster <version> main start) with trust auth for 127.0.0.1."
fi
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" postgres 2>/dev/null | grep -q 1; then
  echo "services: creating database test"
  psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" postgres >/dev/null || fail "cannot create database test on 127.0.0.1:5432 as user postgres"
fi

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! redis_up; then
  command -v redis-server >/dev/null 2>&1 || fail "Redis does not answer on 127.0.0.1:6379 and redis-server is not installed (apt-get install redis-server)."
  echo "services: Redis is down, starting it"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 30); do redis_up && break; sleep 0.5; done
  redis_up || fail "Redis did not start on 127.0.0.1:6379 (see /var/log/redis/ci.log)."
fi
echo "services: PostgreSQL and Redis answer"
