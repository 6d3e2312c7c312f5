#!/bin/sh
# Entry point of docker/kdc.Dockerfile: make the realm once, then run krb5kdc in the
# foreground. Idempotent: an existing database (volume /var/lib/krb5kdc) is kept, and the
# keytab is written only when missing (rewriting it would change the key's version).
# Environment: REALM, NFS_SERVER_NAME (the name clients mount pynfsd by), KDC_HOST (the name
# clients reach this KDC by), EXTRA_PRINCIPALS (space-separated, made with random keys and
# added to /keytab/clients.keytab, e.g. "nfs/client1.example.test alice").
set -eu
: "${REALM:?}" "${NFS_SERVER_NAME:?}" "${KDC_HOST:?}"
DB=/var/lib/krb5kdc

mkdir -p /etc/krb5kdc "$DB" /keytab
cat > /etc/krb5kdc/kdc.conf <<CONF
[kdcdefaults]
    kdc_ports = 88
    kdc_tcp_ports = 88
[realms]
    $REALM = {
        database_name = $DB/principal
        key_stash_file = $DB/stash
        acl_file = /etc/krb5kdc/kadm5.acl
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }
CONF
cat > /keytab/krb5.conf <<CONF
[libdefaults]
    default_realm = $REALM
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    dns_canonicalize_hostname = false
[realms]
    $REALM = {
        kdc = $KDC_HOST
    }
CONF
cp /keytab/krb5.conf /etc/krb5.conf
: > /etc/krb5kdc/kadm5.acl

if [ ! -e "$DB/principal" ]; then
    kdb5_util create -s -r "$REALM" -P "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi
if [ ! -s /keytab/nfs.keytab ]; then
    kadmin.local -q "addprinc -randkey nfs/$NFS_SERVER_NAME@$REALM" >/dev/null
    kadmin.local -q "ktadd -k /keytab/nfs.keytab nfs/$NFS_SERVER_NAME@$REALM" >/dev/null
    for p in ${EXTRA_PRINCIPALS:-}; do
        kadmin.local -q "addprinc -randkey $p@$REALM" >/dev/null
        kadmin.local -q "ktadd -k /keytab/clients.keytab $p@$REALM" >/dev/null
    done
    chmod 0600 /keytab/*.keytab
fi
echo "kdc: realm $REALM, service principal nfs/$NFS_SERVER_NAME@$REALM in /keytab/nfs.keytab"
exec krb5kdc -n
