#!/usr/bin/env bash
# System tools the tests use beside the venv: redis-server (the Redis job store and scale-out tests),
# docker-compose (`docker-compose config` on deploy/docker-compose.yml) and promtool (Prometheus
# config and rules). Missing ones are installed from Debian's packages when running as root;
# otherwise this says loudly which tests will skip. Fast when everything is there (no apt-get at all).
set -u
missing=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (Debian packages) for the Redis and deploy tests"
  export DEBIAN_FRONTEND=noninteractive
  # The packages' own daemons (redis on 6379, prometheus on 9090) must not start: the tests start their
  # own on free ports. A policy-rc.d that denies every start does that, for this install only.
  policy=/usr/sbin/policy-rc.d
  added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && added_policy=1
  fi
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  status=$?
  [ -n "$added_policy" ] && rm -f "$policy"
  [ $status -eq 0 ] && exit 0
  echo "WARNING: apt-get install ${missing[*]} failed"
fi
echo "WARNING: ${missing[*]} not available: the tests needing them SKIP (redis-server: tests/integration/redis;"
echo "         docker-compose/promtool: the deploy checks fall back to schema/PromQL checks)."
echo "         LAWM_REQUIRE_REDIS=1 (as .ci/run sets) turns a missing redis-server into a failure."
exit 0
