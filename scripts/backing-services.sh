#!/usr/bin/env bash
# Makes sure the real backing services the tests use answer on 127.0.0.1, starting them if not:
# PostgreSQL 5432 (trust auth) and RabbitMQ 5672 (guest/guest; the RabbitMQ tests create a
# vhost each with rabbitmqctl, so that must work too).
set -euo pipefail

answers() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 60); do
    if answers "$port"; then echo "$name answers on $port"; return 0; fi
    sleep 1
  done
  echo "$name does not answer on 127.0.0.1:$port" >&2
  return 1
}

if ! answers 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
wait_for PostgreSQL 5432

if ! answers 5672; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached || true
fi
wait_for RabbitMQ 5672
# The port answers before the broker is ready for vhosts and queues.
timeout 120 rabbitmqctl await_startup >/dev/null
rabbitmqctl -q list_vhosts >/dev/null
echo "RabbitMQ is up (rabbitmqctl works)"
