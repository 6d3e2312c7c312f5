# A small MIT Kerberos KDC for docker/compose.yaml's "kerberos" profile: on first start it makes
# the realm, the service principal nfs/$NFS_SERVER_NAME and a keytab for pynfsd in /keytab
# (a volume the pynfsd-krb5 service mounts), plus a krb5.conf there for clients to copy.
#
#   podman build -f docker/kdc.Dockerfile -t pynfsd-kdc docker
#
# For a test realm only: real sites use their own KDC and put the nfs/ key in a keytab.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends krb5-kdc krb5-admin-server krb5-user \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY kdc-entrypoint.sh /usr/local/sbin/kdc-entrypoint
ENV REALM=EXAMPLE.TEST NFS_SERVER_NAME=nfs-server.example.test KDC_HOST=kdc
VOLUME ["/var/lib/krb5kdc", "/keytab"]
EXPOSE 88/tcp 88/udp
HEALTHCHECK --interval=10s --timeout=5s --retries=3 CMD ["test", "-s", "/keytab/nfs.keytab"]
ENTRYPOINT ["/usr/local/sbin/kdc-entrypoint"]
