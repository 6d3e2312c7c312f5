# Helpers the guest scripts share; /init's run layer holds it as /guestlib.sh, and a script
# reads it with `. /guestlib.sh` (busybox sh).

# result NAME "PASS|FAIL detail": one result line for the host
result() { echo "@@RESULT $1 $2"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
oneline() { tr '\n' ' ' < "$1"; }

# host_pause WHAT: ask the host to act; it answers "go" on fd 9 (ttyS1) when done
host_pause() {
    echo "@@PAUSE $1"
    read -r reply <&9
    [ "$reply" = go ] || echo "@@WARN host answered '$reply' to pause $1"
}

# try_write FILE: one attempt to create and write FILE; the error in /tmp/write.err
try_write() { ( echo "attempt" > "$1" ) 2> /tmp/write.err; }

# retry_until WANT CMD...: run CMD (dropping caches between tries, up to 30 s) until its
# outcome is WANT (ok or refused); prints the attempt that got it. The client may answer
# from cached access rights for up to actimeo.
retry_until() {
    want=$1
    shift
    n=0
    while [ $n -lt 30 ]; do
        n=$((n + 1))
        if "$@"; then got=ok; else got=refused; fi
        if [ "$got" = "$want" ]; then
            echo "$n"
            return 0
        fi
        drop_caches
        sleep 1
    done
    return 1
}

# mount_ops MOUNTPOINT [PREFIX]: the RPCs the client has sent on that mount, per operation,
# from /proc/self/mountstats: one "PREFIX OP COUNT" line per op with a nonzero count
mount_ops() {
    awk -v m="$1" -v prefix="${2:-OPS}" '$1 == "device" { on = ($5 == m); p = 0; next }
        on && /per-op statistics/ { p = 1; next }
        on && p && NF == 0 { p = 0 }
        on && p && $2 ~ /^[0-9]+$/ && $2 > 0 { sub(":", "", $1); print prefix, $1, $2 }' \
        /proc/self/mountstats
}
