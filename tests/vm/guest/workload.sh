#!/bin/sh
# The NFSv4.0 client workload, run by /init in the guest (busybox sh, no python).
# Every check prints exactly one line "@@RESULT <name> PASS" or "@@RESULT <name> FAIL <why>";
# "@@VALUE <key> <value>" lines carry what the host verifies on the server's disk afterwards;
# "@@PAUSE <what>" asks the host to act, and the guest waits for "go" on /dev/ttyS1.
# Config (from /config): SERVER_IP NFS_PORT EXPORT_PATH MOUNT_EXTRA BIG_MB SMALL_FILES
#                        BIGDIR_COUNT ONLY STEP_TIMEOUT
. /config
M=/mnt/nfs
K=$M/keep
export TZ=UTC LC_ALL=C

die() { echo "$*"; exit 1; }
say() { echo "$*" > /dev/console; }   # straight to the host, also from inside run_test
eq() { [ "$1" = "$2" ] || die "$3: got '$1', expected '$2'"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# run_test NAME FUNCTION [TIMEOUT]: run FUNCTION with set -e in its own session (so a step
# stuck on the server can be killed as a whole after TIMEOUT s, default STEP_TIMEOUT or 120)
# and report one result line. ONLY (space separated) limits the steps; mount/unmount always run.
run_test() {
    case "$1" in mount|unmount) ;; *)
        [ -z "${ONLY:-}" ] || case " $ONLY " in *" $1 "*) ;; *) return 0;; esac;;
    esac
    start=$(date +%s)
    limit=${3:-${STEP_TIMEOUT:-120}}
    setsid sh /workload.sh step "$2" > "/tmp/out.$1" 2>&1 &
    pid=$!
    ( sleep "$limit"; echo "step timed out after ${limit}s" >> "/tmp/out.$1"; kill -9 -"$pid" ) \
        > /dev/null 2>&1 &
    watchdog=$!
    wait $pid
    rc=$?
    kill $watchdog 2>/dev/null
    sed "s/^/  [$1] /" "/tmp/out.$1" | tail -n 20
    echo "  [$1] took $(( $(date +%s) - start ))s"
    if [ $rc -eq 0 ]; then
        echo "@@RESULT $1 PASS"
    else
        dmesg | grep -iE 'nfs|rpc|lockd' | grep -vE 'Regist|FS-Cache' | tail -n 8 | sed "s/^/  [$1 dmesg] /"
        echo "@@RESULT $1 FAIL rc=$rc: $(tail -n 3 "/tmp/out.$1" | tr '\n' '|')"
    fi
}

host_pause() {
    say "@@PAUSE $1"
    read -r reply <&9
    [ "$reply" = go ] || die "host answered '$reply' to pause $1"
}

mount_opts() { echo "$1port=$NFS_PORT$MOUNT_EXTRA"; }

t_mount() {
    mkdir -p $M
    mount -t nfs4 -o "$(mount_opts vers=4.0,)" "$SERVER_IP:$EXPORT_PATH" $M
    grep " $M nfs4 " /proc/mounts
    grep " $M nfs4 " /proc/mounts | grep -q "vers=4.0" || die "not mounted as 4.0"
    mkdir -p $K
}

t_big_file() {
    [ "${BIG_MB:-0}" -gt 0 ] || { echo "skipped (BIG_MB=0)"; return 0; }
    mkfifo /tmp/bigpipe
    md5sum < /tmp/bigpipe > /tmp/big.src &
    dd if=/dev/urandom bs=1M count="$BIG_MB" 2>/dev/null | tee /tmp/bigpipe \
        | dd of=$K/big bs=1M conv=fsync
    wait
    src=$(cut -d' ' -f1 /tmp/big.src)
    drop_caches
    back=$(md5sum < $K/big | cut -d' ' -f1)
    eq "$(stat -c %s $K/big)" $((BIG_MB * 1048576)) "size"
    eq "$back" "$src" "md5 after drop_caches"
    say "@@VALUE big_md5 $src"
}

t_small_files() {
    n=${SMALL_FILES:-2000}
    mkdir $M/small
    cd $M/small
    i=0
    while [ $i -lt "$n" ]; do echo "file $i" > f$i; i=$((i + 1)); done
    eq "$(ls | wc -l)" "$n" "entries after create"
    eq "$(stat -c %s -- * | grep -c .)" "$n" "stat count"
    drop_caches
    eq "$(cat f$((n - 1)))" "file $((n - 1))" "content of last file"
    eq "$(stat -c %s f7)" 7 "size of f7"
    echo "created and checked in $(( $(date +%s) - start ))s"
    rm -- f*
    eq "$(ls -A | wc -l)" 0 "entries after unlink"
    cd /
    rmdir $M/small
}

make_tree() {
    mkdir -p /tmp/gen/a/b/c /tmp/gen/empty /tmp/gen/x
    for size in 0 1 511 4095 4096 4097 65535 65536 1048577; do
        dd if=/dev/urandom of=/tmp/gen/a/s$size bs=$size count=1 2>/dev/null || : > /tmp/gen/a/s$size
    done
    : > /tmp/gen/a/s0
    dd if=/dev/urandom of=/tmp/gen/a/b/c/big bs=1k count=3000 2>/dev/null
    seq 1 20000 > /tmp/gen/x/numbers
    cp -a /lib/modules /tmp/gen/modules
}

md5_list() { ( cd "$1" && find . -type f | sort | xargs md5sum ); }

t_tree_copy() {
    make_tree
    cp -a /tmp/gen $K/tree
    drop_caches
    md5_list /tmp/gen > /tmp/tree.src
    md5_list $K/tree > /tmp/tree.nfs
    cmp /tmp/tree.src /tmp/tree.nfs || { diff /tmp/tree.src /tmp/tree.nfs | head; die "md5 lists differ"; }
    for f in $(cd /tmp/gen && find . -type f); do cmp "/tmp/gen/$f" "$K/tree/$f"; done
    eq "$(cd $K/tree && find . | wc -l)" "$(cd /tmp/gen && find . | wc -l)" "entry count"
    [ -d $K/tree/empty ] || die "empty dir missing"
    say "@@VALUE tree_md5 $(md5sum < /tmp/tree.src | cut -d' ' -f1)"
}

t_renames() {
    d=$M/ren
    mkdir -p $d/a $d/b
    echo one > $d/a/f1
    mv $d/a/f1 $d/a/f2
    [ ! -e $d/a/f1 ] && eq "$(cat $d/a/f2)" one "rename within dir"
    mv $d/a/f2 $d/b/f3
    [ ! -e $d/a/f2 ] && eq "$(cat $d/b/f3)" one "rename across dirs"
    echo two > $d/b/victim
    mv $d/b/f3 $d/b/victim
    [ ! -e $d/b/f3 ] && eq "$(cat $d/b/victim)" one "rename over existing file"
    mkdir -p $d/a/sub/deep && echo deep > $d/a/sub/deep/f
    mv $d/a/sub $d/b/sub
    eq "$(cat $d/b/sub/deep/f)" deep "directory rename across dirs"
    drop_caches
    eq "$(ls $d/a | wc -l)" 0 "source dir empty"
    eq "$(ls $d/b | tr '\n' ' ')" "sub victim " "target dir listing"
    echo keep > $d/b/victim
    mv $d/b/victim $K/renamed
    say "@@VALUE renamed $(cat $K/renamed)"
    rm -rf $d
}

t_symlinks() {
    d=$M/links
    mkdir -p $d
    echo target-content > $d/target
    ln -s target $d/rel
    ln -s /nonexistent/dangling $d/dangling
    ln -s some/target/path $K/symlink
    drop_caches
    eq "$(readlink $d/rel)" target "readlink"
    eq "$(cat $d/rel)" target-content "read through symlink"
    eq "$(readlink $d/dangling)" /nonexistent/dangling "dangling readlink"
    [ -L $d/dangling ] && [ ! -e $d/dangling ] || die "dangling link state"
    eq "$(stat -c %F $d/rel)" "symbolic link" "lstat type"
    rm $d/rel $d/dangling
    [ -f $d/target ] || die "target removed with link"
    rm -rf $d
}

t_hard_links() {
    d=$M/hl
    mkdir -p $d
    echo shared > $d/a
    ln $d/a $d/b
    ln $d/a $d/c
    drop_caches
    eq "$(stat -c %h $d/a)" 3 "link count after two links"
    eq "$(stat -c %i $d/b)" "$(stat -c %i $d/a)" "same fileid"
    echo more >> $d/c
    eq "$(cat $d/a | tr '\n' ' ')" "shared more " "write via one link visible via other"
    rm $d/b
    eq "$(stat -c %h $d/a)" 2 "link count after unlink"
    echo pair > $K/hl1
    ln $K/hl1 $K/hl2
    rm -rf $d
}

t_attributes() {
    f=$K/attrs
    echo attrs > $f
    chmod 640 $f
    chown 1234:5678 $f
    touch -d "2001-02-03 04:05:06" $f
    truncate -s 100000 $f
    touch -d "2001-02-03 04:05:06" $f
    mkdir -p $K/attrdir && chmod 1750 $K/attrdir
    drop_caches
    eq "$(stat -c '%a %u %g %Y %s' $f)" "640 1234 5678 981173106 100000" "attributes after set"
    eq "$(stat -c %a $K/attrdir)" 1750 "sticky dir mode"
    eq "$(stat -c '%a %u %g %Y' $M/hostfile)" "604 4321 8765 1234567890" "host-set attributes"
    eq "$(cat $M/hostfile)" "made on the host" "host file content"
}

t_directories() {
    mkdir -p $M/dirs/a/b/c/d/e/f
    [ -d $M/dirs/a/b/c/d/e/f ] || die "nested dir missing"
    echo x > $M/dirs/a/b/file
    if rmdir $M/dirs/a/b 2>/dev/null; then die "rmdir of a non-empty dir succeeded"; fi
    rm $M/dirs/a/b/file
    (cd $M && rmdir -p dirs/a/b/c/d/e/f)
    [ ! -e $M/dirs ] || die "rmdir -p left $M/dirs"
    mkdir $M/dup
    if mkdir $M/dup 2>/dev/null; then die "mkdir over existing dir succeeded"; fi
    rmdir $M/dup
}

t_large_directory() {
    n=${BIGDIR_COUNT:-10000}
    drop_caches
    eq "$(ls -A $M/bigdir | wc -l)" "$n" "entries listed"
    eq "$(ls -A $M/bigdir | sort -u | wc -l)" "$n" "distinct entries"
    eq "$(find $M/bigdir -name 'entry-*' | wc -l)" "$n" "entries found by find"
    [ -e $M/bigdir/entry-00000 ] && [ -e "$M/bigdir/entry-$(printf %05d $((n - 1)))" ] \
        || die "first/last entry missing"
}

t_exclusive_create() {
    f=$M/excl
    ( set -C; echo first > $f ) || die "O_EXCL create failed"
    if ( set -C; echo second > $f ) 2>/dev/null; then die "second O_EXCL create succeeded"; fi
    drop_caches
    eq "$(cat $f)" first "content after O_EXCL create"
    # EXCLUSIVE4 keeps the verifier in the times until the client's SETATTR (RFC 7530 §16.16.5)
    [ "$(stat -c %Y $f)" -gt 1500000000 ] || die "mtime not set after O_EXCL create: $(stat -c %Y $f)"
    [ "$(stat -c %a $f)" != 0 ] || die "mode 0 after O_EXCL create"
    rm $f
}

t_large_offsets() {
    dd if=/dev/urandom of=/tmp/block bs=4k count=1 2>/dev/null
    dd if=/tmp/block of=$K/sparse bs=4k seek=1048577 conv=notrunc 2>/dev/null   # at 4 GiB + 4 KiB
    drop_caches
    eq "$(stat -c %s $K/sparse)" $(( 1048578 * 4096 )) "size beyond 2^32"
    eq "$(dd if=$K/sparse bs=4k skip=1048577 count=1 2>/dev/null | md5sum)" \
        "$(md5sum < /tmp/block)" "block read back at 4 GiB"
    eq "$(dd if=$K/sparse bs=4k skip=1000 count=1 2>/dev/null | tr -d '\0' | wc -c)" 0 "hole reads as zeros"
    say "@@VALUE sparse_block_md5 $(md5sum < /tmp/block | cut -d' ' -f1)"
}

t_concurrent_writes() {
    dd if=/dev/urandom of=/tmp/chunks bs=1M count=8 2>/dev/null
    : > $K/concurrent
    for i in 0 1 2 3 4 5 6 7; do
        dd if=/tmp/chunks of=$K/concurrent bs=1M skip=$i seek=$i count=1 conv=notrunc 2>/dev/null &
    done
    wait
    drop_caches
    eq "$(md5sum < $K/concurrent)" "$(md5sum < /tmp/chunks)" "8 concurrent writers"
    say "@@VALUE concurrent_md5 $(md5sum < /tmp/chunks | cut -d' ' -f1)"
}

lock_pair() {  # lock_pair KIND TYPE FILE [START LEN]: holder + conflicting waiter
    kind=$1; type=$2; file=$3; shift 3
    rm -f /tmp/ready /tmp/released
    locktest $kind $type $file hold 1 /tmp/ready /tmp/released "$@" &
    holder=$!
    while [ ! -e /tmp/ready ]; do sleep 0.1; done
    if locktest $kind ex $file try "$@"; then die "$kind $type: conflicting try succeeded"; fi
    locktest $kind ex $file wait /tmp/released "$@" || die "$kind $type: waiter got the lock before release (rc=$?)"
    wait $holder || die "$kind holder failed"
}

t_flock() {
    f=$M/lockfile-flock
    : > $f
    locktest flock ex $f try || die "uncontended flock failed"
    lock_pair flock ex $f
    lock_pair flock sh $f
    rm -f /tmp/ready
    locktest flock sh $f hold 2 /tmp/ready /tmp/released &
    holder=$!
    while [ ! -e /tmp/ready ]; do sleep 0.1; done
    locktest flock sh $f try || die "second shared flock refused"
    wait $holder
}

t_fcntl_locks() {
    f=$M/lockfile-fcntl
    dd if=/dev/zero of=$f bs=1k count=1 2>/dev/null
    locktest fcntl ex $f try 0 0 || die "uncontended whole-file lock failed"
    lock_pair fcntl ex $f 0 100
    rm -f /tmp/ready
    locktest fcntl ex $f hold 1 /tmp/ready /tmp/released 0 100 &
    holder=$!
    while [ ! -e /tmp/ready ]; do sleep 0.1; done
    locktest fcntl ex $f try 100 100 || die "adjacent range refused"
    if locktest fcntl ex $f try 50 100; then die "overlapping range granted"; fi
    if locktest fcntl sh $f try 99 1; then die "read lock inside write lock granted"; fi
    eq "$(locktest fcntl ex $f getlk 50 100)" "conflict ex 0 100" "F_GETLK"
    eq "$(locktest fcntl ex $f getlk 200 10)" "none" "F_GETLK free range"
    wait $holder
    lock_pair fcntl sh $f 0 0
}

t_negotiation() {
    mkdir -p /mnt/auto
    mount -t nfs4 -o "$(mount_opts)" "$SERVER_IP:$EXPORT_PATH" /mnt/auto
    line=$(grep " /mnt/auto nfs4 " /proc/mounts)
    echo "$line"
    umount /mnt/auto
    case "$line" in *vers=4.0,*) ;; *) die "negotiated: $line";; esac
}

# restart_case DIR PAUSE: keep a file open, let the host restart the server (PAUSE restart:
# SIGTERM + start; PAUSE crash: SIGKILL + start), then carry on with the same files.
restart_case() {
    d=$M/$1
    mkdir -p $d
    echo before > $d/closed
    echo line1 > $d/held
    exec 3>> $d/held
    echo line2 >&3
    sync
    host_pause "$2"
    echo line3 >&3
    exec 3>&-
    drop_caches
    eq "$(cat $d/closed)" before "closed file content after $2"
    eq "$(cat $d/held | tr '\n' ' ')" "line1 line2 line3 " "file held open across $2"
    echo after > $d/new
    drop_caches
    eq "$(cat $d/new)" after "new file after $2"
    locktest fcntl ex $d/held try 0 0 || die "lock after $2"
    cp $d/held $K/$1-held
}

t_server_restart() { restart_case restart restart; }

t_server_crash() { restart_case crash crash; }

t_unmount() {
    cd /
    umount $M
    if grep -q " $M nfs4 " /proc/mounts; then die "still mounted"; fi
}

if [ "${1:-}" = step ]; then   # re-entered by run_test: run one step function
    set -e
    start=$(date +%s)
    "$2"
    exit 0
fi

exec 9< /dev/ttyS1
stty -F /dev/ttyS1 -echo 2>/dev/null || true
run_test mount t_mount
grep -q " $M nfs4 " /proc/mounts || exit 1
run_test big_file t_big_file 400
run_test small_files t_small_files 300
run_test tree_copy t_tree_copy
run_test renames t_renames
run_test symlinks t_symlinks
run_test hard_links t_hard_links
run_test attributes t_attributes
run_test directories t_directories
run_test large_directory t_large_directory
run_test exclusive_create t_exclusive_create
run_test large_offsets t_large_offsets
run_test concurrent_writes t_concurrent_writes
run_test flock t_flock
run_test fcntl_locks t_fcntl_locks
run_test negotiation t_negotiation
run_test server_restart t_server_restart 180
run_test server_crash t_server_crash 180
grep " $M " /proc/self/mountstats >/dev/null 2>&1 && sed -n '/^\tper-op/,/^$/p' /proc/self/mountstats | awk 'NF>1 && $2>0 {print "  [ops] " $1, $2}' | head -60
run_test unmount t_unmount
