# Sourced by scripts/test: the third-party Stripe fakes the end-to-end tests start on 127.0.0.1,
# schemathesis, which generates requests from the service's /openapi.json, and Debian's chromium
# with playwright-core, which drive the dashboard.
ensure_fakes() {
  local dir=tests/fakes
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "== installing Node.js (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  if ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (Debian package), which the dashboard test drives headless"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if [ ! -d "$dir/node_modules/stripe-stateful-mock" ] || [ ! -d "$dir/node_modules/playwright-core" ]; then
    echo "== installing stripe-stateful-mock and playwright-core (npm)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  if ! python3 -c "import localstripe, stripe" >/dev/null 2>&1; then
    echo "== installing localstripe and the stripe signature oracle (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check "localstripe==1.15.10" "stripe==16.1.0"
  fi
  if ! python3 -c "import schemathesis" >/dev/null 2>&1; then
    echo "== installing schemathesis (PyPI), which tests the API from /openapi.json"
    python3 -m pip install --quiet --disable-pip-version-check "schemathesis==4.32.5"
  fi
}
