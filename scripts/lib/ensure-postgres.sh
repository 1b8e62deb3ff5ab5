# Sourced by scripts/test and .ci/run: make sure a PostgreSQL server answers on 127.0.0.1:5432
# with trust auth for user postgres, installing and starting Debian's package if needed.
ensure_postgres() {
  local host=127.0.0.1 port=5432
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -h "$host" -p "$port" -q; then
    return 0
  fi
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "== installing PostgreSQL (Debian package)"
    if [ "$(id -u)" -ne 0 ]; then
      echo "PostgreSQL is not installed and this is not root: install the 'postgresql' package" >&2
      return 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    echo "== starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    # The tests connect over TCP as postgres without a password.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if [ -w "$hba" ] && ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
      pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
    fi
  fi
  for _ in $(seq 1 30); do
    pg_isready -h "$host" -p "$port" -q && return 0
    sleep 1
  done
  echo "PostgreSQL did not become ready on $host:$port" >&2
  return 1
}
