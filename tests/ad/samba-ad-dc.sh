#!/usr/bin/env bash
# A throwaway Active Directory domain controller (Debian's Samba) for the tests of the LDAP
# source in `directory = "active-directory"` mode (tests/src/samba.rs). Nothing outside DIR is
# touched; the system's Samba service is never used.
#
#   samba-ad-dc.sh provision DIR [REALM] [ADMINPASS]
#       A fresh domain in DIR (a new directory: DIR must not exist, or be empty), no DNS,
#       Administrator's password ADMINPASS (default Passw0rd!Adm1n). About 10 s.
#       Populate it here, before `start`, with samba-tool on the local database, e.g.
#         samba-tool user create NAME PASS --mail-address=M -s DIR/etc/smb.conf
#         samba-tool group addmembers G a,b -s DIR/etc/smb.conf
#       (samba-tool against ldap:// wants Kerberos or NTLM); after `start`, use simple binds:
#         ldapmodify -x -H ldap://ADDRESS -D Administrator@REALM -w ADMINPASS
#   samba-ad-dc.sh start DIR [ADDRESS] [OWNER_PID]
#       Serves LDAP (only) on ADDRESS:389 (default 127.0.0.1) and waits until it answers; prints
#       PID=<samba's pid> and URL=ldap://ADDRESS. Port 389 is fixed, so one instance per
#       address; Samba refuses an address no interface carries (ip addr add 127.0.0.N/8 dev lo).
#       With OWNER_PID, a watchdog stops Samba and removes DIR once that process is gone.
#   samba-ad-dc.sh stop DIR
#       Stops the Samba whose PID is in DIR/samba.pid, if that process really runs DIR's
#       configuration.
#
# Needs root and Debian's samba and ldap-utils:
#   DEBIAN_FRONTEND=noninteractive apt-get install -y samba ldap-utils
set -euo pipefail

die() { echo "samba-ad-dc.sh: $*" >&2; exit 1; }
need() {
  for program in "$@"; do
    command -v "$program" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
    command -v "$program" >/dev/null 2>&1 \
      || die "$program not found (DEBIAN_FRONTEND=noninteractive apt-get install -y samba ldap-utils)"
  done
}

# ours DIR PID: whether PID is a samba holding DIR's files open (samba rewrites its command line,
# so that cannot tell).
ours() {
  [[ $(readlink "/proc/$2/exe" 2>/dev/null) == */samba ]] \
    && find "/proc/$2/fd" -maxdepth 1 -lname "$1/*" 2>/dev/null | grep -q .
}
# stop_own DIR: SIGTERM to the samba in DIR/samba.pid (its children follow it), only when that
# process is DIR's; waits for it to end.
stop_own() {
  local dir=$1 pid
  [[ -f $dir/samba.pid ]] || return 0
  pid=$(cat "$dir/samba.pid")
  if ours "$dir" "$pid"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
    [[ -e /proc/$pid ]] && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$dir/samba.pid"
}

cmd=${1:-}; dir=${2:-}
dir=$(realpath -m -- "$dir")
[[ -n $cmd && -n $dir ]] || die "usage: samba-ad-dc.sh provision|start|stop DIR ..."
case "$cmd" in
provision)
  need samba-tool
  realm=${3:-AD.EXAMPLE.TEST}; pass=${4:-'Passw0rd!Adm1n'}
  [[ ! -e $dir || -z "$(ls -A "$dir")" ]] || die "$dir is not empty"
  mkdir -p "$dir"
  # ldb:nosync: no fsync per write (a throwaway database), about twice as fast to load.
  samba-tool domain provision --targetdir="$dir" --realm="$realm" --domain="${realm%%.*}" \
    --server-role=dc --dns-backend=NONE --adminpass="$pass" --use-rfc2307 \
    --option="interfaces=lo" --option="bind interfaces only=yes" \
    --option="ldb:nosync=true" --option="log file=$dir/log.%m" >"$dir/provision.log" 2>&1 \
    || die "provision failed: $(tail -5 "$dir/provision.log")"
  echo "REALM=$realm"
  ;;
start)
  need samba ldapsearch
  addr=${3:-127.0.0.1}; owner=${4:-}
  [[ -f $dir/etc/smb.conf ]] || die "$dir holds no provisioned domain (run provision first)"
  stop_own "$dir"
  # -i: in the foreground (so $! is samba itself), logging to stdout. Its pid file and sockets
  # go under DIR: with the defaults (/run/samba) a second instance, or the system's own Samba,
  # refuses to start.
  mkdir -p "$dir/run/ncalrpc"
  samba -i -s "$dir/etc/smb.conf" --option="interfaces=$addr" --option="bind interfaces only=yes" \
    --option="ldap server require strong auth=no" --option="server services=ldap" \
    --option="pid directory=$dir/run" --option="ncalrpc dir=$dir/run/ncalrpc" \
    </dev/null >"$dir/samba.log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/samba.pid"
  up=0
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    if ldapsearch -x -H "ldap://$addr" -b '' -s base -LLL 1.1 >/dev/null 2>&1; then up=1; break; fi
    sleep 0.1
  done
  if [[ $up = 0 ]]; then
    stop_own "$dir"
    die "samba did not answer on $addr:389: $(tail -5 "$dir/samba.log")"
  fi
  if [[ -n $owner ]]; then
    # The watchdog: detached from this script's output, so the caller does not wait for it.
    (
      while kill -0 "$owner" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
      stop_own "$dir"
      rm -rf "$dir"
    ) </dev/null >/dev/null 2>&1 &
  fi
  echo "PID=$pid"
  echo "URL=ldap://$addr"
  ;;
stop)
  stop_own "$dir"
  ;;
*) die "usage: samba-ad-dc.sh provision|start|stop DIR ..." ;;
esac
