#!/usr/bin/env bash
# Install the load clients of the HTTP benchmarks when they are not on the machine: wrk (the HTTP
# client) and pgbench (Debian's postgresql-client ships it; older releases put it in postgresql-contrib).
set -euo pipefail
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v pgbench >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || need+=(postgresql-client)
if [[ ${#need[@]} -eq 0 ]]; then
  exit 0
fi
echo "installing ${need[*]} for the benchmarks"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
