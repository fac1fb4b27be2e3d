#!/usr/bin/env bash
# Starts a throwaway OpenLDAP server on ldap://127.0.0.1:3389 loaded with directory.ldif (the
# project's example directory: 152 people with managers, 4 groups), for the LDAP quick start.
# Needs Debian's slapd and ldap-utils (apt-get install -y slapd ldap-utils). Admin:
# cn=admin,dc=example,dc=com, password "secret".
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(bash "$here/../../tests/ldap/slapd.sh" start -p "${PORT:-3389}" "$here/directory.ldif")"
dir="$(sed -n 's/^DIR=//p' <<<"$out")"
url="$(sed -n 's/^URL=//p' <<<"$out")"
echo "slapd runs at $url with $(sed -n 's/^LOADED=//p' <<<"$out") entries."
echo "Sync it:  M365_SECRET_LDAP_BIND_PASSWORD=secret cargo run --release --bin m365-provisioner -- sync --config $here/m365-provisioner.toml"
echo "Stop it:  bash $here/../../tests/ldap/slapd.sh stop $dir"
