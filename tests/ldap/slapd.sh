#!/usr/bin/env bash
# Throwaway OpenLDAP server for the LDAP source tests (Debian's slapd 2.5; apt-get install -y slapd
# ldap-utils). Nothing outside the temp directory is touched; the system slapd is never used.
#
#   slapd.sh start [-p PORT] [-d DIR] [-t] [LDIF...]
#       Starts slapd on ldap://127.0.0.1:PORT (PORT 0 or absent: a free port is picked) with its
#       cn=config, mdb database, pidfile, log and ldapi socket in DIR (default: a new mktemp dir),
#       then loads each LDIF with `ldapadd -c` (OpenDJ-only `aci:` lines are dropped first; entries
#       the schema refuses, or outside the suffix, are skipped and logged in DIR/load.log).
#       -t: also offer StartTLS, with a throwaway CA (DIR/tls/ca.pem) and a server certificate for
#       IP 127.0.0.1 / DNS localhost made with openssl.
#       Prints shell-evaluable KEY=VALUE lines: DIR PID PORT URL BASE BINDDN BINDPW CA LOADED FAILED
#       (CA is empty without -t).
#   slapd.sh stop DIR
#       Kills the slapd whose PID is in DIR/slapd.pid (only if that process really is a slapd run
#       from DIR), waits for it to exit and removes DIR.
#   slapd.sh restart DIR
#       Stops that slapd and starts it again on the same port with the same database (the syncprov
#       session log is in memory, so this is how to test the present-phase fallback). Prints PID=.
#
# Server: suffix $SLAPD_SUFFIX (default dc=example,dc=com), rootdn cn=admin,<suffix>, password
# $SLAPD_ADMIN_PW (default "secret"); cn=config rootdn cn=admin,cn=config with the same password,
# and root may use SASL EXTERNAL over ldapi://DIR/ldapi.
# Overlays:
#   syncprov  RFC 4533 content sync (refreshOnly polling with a cookie). Its in-memory session log
#             ($SLAPD_SESSIONLOG write operations, default 1000; 0 = none) is what lets a refresh
#             with a cookie name deleted (or out-of-scope) entries explicitly, in a Sync Info
#             syncIdSet with refreshDeletes TRUE; without it, after a restart (the log lives in
#             memory) or once more writes than the log holds have happened, slapd answers with the
#             present phase instead: a syncIdSet (refreshDeletes FALSE) of every surviving entryUUID.
#   memberof  memberOf on users for groupOfNames/member and (second instance) for
#             groupOfUniqueNames/uniqueMember, the group class Example.ldif uses. Groups in an LDIF
#             are loaded after the other entries so their members exist. Note: memberof changes a
#             user's memberOf without touching its entryCSN, so syncprov does not report it.
# Env: SLAPD_SUFFIX, SLAPD_ADMIN_PW, SLAPD_SESSIONLOG, SLAPD_DEBUG (slapd -d level, default 0).
set -euo pipefail

die() { echo "slapd.sh: $*" >&2; exit 1; }
for b in slapd slapadd slappasswd ldapadd ldapsearch; do
  command -v "$b" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
  command -v "$b" >/dev/null 2>&1 || die "$b not found (apt-get install -y slapd ldap-utils)"
done

# launch DIR PORT: start slapd in the foreground-debug mode (so $! is slapd itself) and wait until
# it answers; returns 1 if it died (e.g. the port was taken) or never answered.
launch() {
  local dir=$1 port=$2 ldapi
  ldapi="ldapi://$(printf %s "$dir/ldapi" | sed 's,/,%2F,g')"
  slapd -h "ldap://127.0.0.1:$port/ $ldapi" -F "$dir/slapd.d" -d "${SLAPD_DEBUG:-0}" </dev/null >>"$dir/slapd.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 1
    if ldapsearch -x -H "ldap://127.0.0.1:$port" -b "" -s base -LLL 1.1 >/dev/null 2>&1; then
      echo "$port" >"$dir/port"; return 0
    fi
    sleep 0.05
  done
  kill "$pid" 2>/dev/null; return 1
}
# kill_own DIR: kill the slapd in DIR/slapd.pid, only if it really is a slapd run with -F DIR/slapd.d
kill_own() {
  local dir=$1 pid
  [[ -f $dir/slapd.pid ]] || return 0
  pid=$(cat "$dir/slapd.pid")
  if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "-F $dir/slapd.d"; then
    kill "$pid"
    for _ in $(seq 1 50); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
    [[ -e /proc/$pid ]] && kill -9 "$pid"
  fi
  rm -f "$dir/slapd.pid"
}

cmd=${1:-}; shift || true
case "$cmd" in
stop)
  d=${1:?usage: slapd.sh stop DIR}
  kill_own "$d"
  [[ -d $d && -f $d/config.ldif ]] && rm -rf "$d"
  exit 0
  ;;
restart)
  d=${1:?usage: slapd.sh restart DIR}; d=$(cd "$d" && pwd)
  kill_own "$d"
  launch "$d" "$(cat "$d/port")" || { tail -5 "$d/slapd.log" >&2; die "slapd did not restart"; }
  echo "PID=$(cat "$d/slapd.pid")"
  exit 0
  ;;
start) ;;
*) die "usage: slapd.sh start [-p PORT] [-d DIR] [LDIF...] | stop DIR | restart DIR" ;;
esac

PORT=0; D=; TLS=
while getopts "p:d:t" o; do
  case $o in p) PORT=$OPTARG ;; d) D=$OPTARG ;; t) TLS=1 ;; *) die "bad option" ;; esac
done
shift $((OPTIND - 1))
if [[ -z $D ]]; then D=$(mktemp -d -t ldap-slapd.XXXXXX); else mkdir -p "$D"; fi
D=$(cd "$D" && pwd)
[[ -e $D/slapd.d/cn=config.ldif ]] && die "$D already holds a slapd config"
mkdir -p "$D/slapd.d" "$D/db"

SUFFIX=${SLAPD_SUFFIX:-dc=example,dc=com}
ADMIN_PW=${SLAPD_ADMIN_PW:-secret}
SESSIONLOG=${SLAPD_SESSIONLOG:-1000}
PW_HASH=$(slappasswd -s "$ADMIN_PW")
tls_lines=""; CA=""
if [[ -n $TLS ]]; then
  command -v openssl >/dev/null 2>&1 || die "openssl not found (needed for -t)"
  T=$D/tls; mkdir -p "$T"
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj "/CN=slapd.sh test CA" \
      -keyout "$T/ca.key" -out "$T/ca.pem"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$T/server.key" -out "$T/server.csr"
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$T/server.ext"
    openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 7 \
      -extfile "$T/server.ext" -out "$T/server.pem"
  } >"$T/openssl.log" 2>&1 || { cat "$T/openssl.log" >&2; die "openssl failed"; }
  CA=$T/ca.pem
  tls_lines="olcTLSCACertificateFile: $T/ca.pem
olcTLSCertificateFile: $T/server.pem
olcTLSCertificateKeyFile: $T/server.key"
fi
sessionlog_line=""
[[ $SESSIONLOG != 0 ]] && sessionlog_line="olcSpSessionlog: $SESSIONLOG"

cat >"$D/config.ldif" <<LDIF
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: $D/slapd.pid
olcArgsFile: $D/slapd.args
$tls_lines

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: syncprov
olcModuleLoad: memberof

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif
include: file:///etc/ldap/schema/cosine.ldif
include: file:///etc/ldap/schema/nis.ldif
include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcSizeLimit: 500

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcRootDN: cn=admin,cn=config
olcRootPW: $PW_HASH
olcAccess: to * by dn.exact=gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth manage by * break

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: $SUFFIX
olcDbDirectory: $D/db
olcRootDN: cn=admin,$SUFFIX
olcRootPW: $PW_HASH
olcDbMaxSize: 104857600
olcDbNoSync: TRUE
olcDbIndex: objectClass eq
olcDbIndex: entryCSN,entryUUID eq
olcDbIndex: uid,mail eq
olcDbIndex: member,uniqueMember,memberOf eq
olcLastMod: TRUE
olcLimits: dn.exact="cn=admin,$SUFFIX" size=unlimited time=unlimited
olcAccess: to attrs=userPassword by anonymous auth by * none
olcAccess: to * by * read

dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {0}syncprov
olcSpCheckpoint: 100 10
$sessionlog_line

dn: olcOverlay={1}memberof,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {1}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf

dn: olcOverlay={2}memberof,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {2}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfUniqueNames
olcMemberOfMemberAD: uniqueMember
olcMemberOfMemberOfAD: memberOf
LDIF
slapadd -n0 -F "$D/slapd.d" -l "$D/config.ldif" >"$D/slapadd.log" 2>&1 || { cat "$D/slapadd.log" >&2; die "slapadd of cn=config failed"; }

started=
for _ in $(seq 1 20); do
  p=$PORT
  if [[ $p == 0 ]]; then
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue # something listens there
  fi
  launch "$D" "$p" && { started=$p; break; }
  [[ $PORT != 0 ]] && break # a fixed port: do not wander off to another one
done
[[ -n $started ]] || { tail -5 "$D/slapd.log" >&2; die "slapd did not start (see $D/slapd.log)"; }
PORT=$started
URL="ldap://127.0.0.1:$PORT"
BINDDN="cn=admin,$SUFFIX"

loaded=0; failed=0
: >"$D/load.out"; : >"$D/load.log"
for ldif in "$@"; do
  [[ -r $ldif ]] || die "cannot read $ldif"
  # Drop OpenDJ access-control lines (and their continuation lines), which slapd's schema lacks,
  # and load group entries after everything else: memberof only writes memberOf onto members
  # that already exist when the group is added (Example.ldif lists its groups before ou=People).
  awk '/^aci:/{skip=1; next} skip && /^ /{next} {skip=0; print}' "$ldif" |
    awk -v first="$D/load-1.ldif" -v groups="$D/load-2.ldif" 'BEGIN{RS=""; ORS="\n\n"}
      { if (tolower($0) ~ /\nobjectclass: *groupof(unique)?names[ \t]*(\n|$)/) print > groups; else print > first }'
  for f in "$D/load-1.ldif" "$D/load-2.ldif"; do
    [[ -f $f ]] || continue
    ldapadd -c -x -H "$URL" -D "$BINDDN" -w "$ADMIN_PW" -f "$f" >>"$D/load.out" 2>>"$D/load.log" || true
    rm -f "$f"
  done
done
if [[ $# -gt 0 ]]; then
  attempted=$(grep -c '^adding new entry' "$D/load.out" || true)
  failed=$(grep -c '^ldap_add: ' "$D/load.log" || true)
  loaded=$((attempted - failed))
fi

echo "DIR=$D"
echo "PID=$(cat "$D/slapd.pid")"
echo "PORT=$PORT"
echo "URL=$URL"
echo "BASE=$SUFFIX"
echo "BINDDN=$BINDDN"
echo "BINDPW=$ADMIN_PW"
echo "CA=$CA"
echo "LOADED=$loaded"
echo "FAILED=$failed"
