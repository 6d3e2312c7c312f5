/*
 * loadgen: a native NFSv4.0 load generator for bench.saturation.
 *
 * Usage: loadgen HOST PORT SPEC
 *
 * It keeps conns x depth COMPOUND calls in flight (a "slot" each) over `conns` TCP connections,
 * one thread, epoll.  The calls are pre-encoded by the Python side (bench/sat_setup.py) and read
 * from SPEC, a text file of "key value..." lines:
 *
 *   mode simple|openclose   conns N   depth N   warmup SEC   seconds SEC   drain SEC
 *   expect N                (simple) length of every reply's COMPOUND4res, -1: any length
 *   req HEX                 (simple) an RPC call message; slot i sends req[i % nreq]
 *   slot SEQID OPEN_SEQID_OFF CLOSE_SEQID_OFF CLOSE_STATEID_OFF OPEN_HEX CLOSE_HEX
 *                           (openclose, one line per slot) its open-owner's next seqid, the
 *                           offsets of the seqid fields in its OPEN and CLOSE calls and of the
 *                           stateid in its CLOSE call
 *
 * Every call gets a fresh xid (patched into bytes 0-3 of the message; its low 12 bits name the
 * slot), is sent with one record mark, and as soon as its reply is in the slot sends its next
 * call.  Every reply is checked: its xid must be the slot's outstanding one, the RPC reply must
 * be MSG_ACCEPTED/SUCCESS, the COMPOUND status NFS4_OK, and (simple) its length the expected one.
 * In openclose mode a slot alternates OPEN (PUTFH dir, OPEN, ...) and CLOSE (PUTFH file, CLOSE)
 * with the stateid of the OPEN reply, advancing its owner's seqid as RFC 7530 section 9.1.7
 * says; one operation is one OPEN and its CLOSE.  An OPEN reply asking for OPEN_CONFIRM is an
 * error.  Every error is counted by kind and printed; none is dropped.
 *
 * Output, one line each, flushed at once (the Python side samples CPU times when it reads them):
 *   ready                              all connections are up, the first calls are sent
 *   begin REPLIES OPS ERRORS           the warm-up is over: the measured window starts
 *   end REPLIES OPS ERRORS NANOSECONDS the window is over (its length by CLOCK_MONOTONIC)
 *   error KIND COUNT                   for each kind of error seen (nfs-STATUS, rpc-..., ...)
 *   done REPLIES OPS ERRORS LOST       after the drain: totals (a call never answered within
 *                                      the drain is an error of kind "lost")
 * Exit status: 0 when it ran (errors or not), 2 on a bad spec, 3 on a socket failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SLOTS 4096
#define SLOT_BITS 12
#define MAX_REQS 4096
#define IN_CAP (4 << 20)
#define OP_OPEN 18
#define OP_CLOSE 4
#define MAX_KINDS 64

enum { IDLE, SIMPLE, OPENING, CLOSING };

typedef struct { uint8_t *b; size_t n; } buf_t;

typedef struct {
    int conn;
    int state;
    uint32_t xid;
    uint32_t seqid;
    size_t open_seqid_off, close_seqid_off, close_stateid_off;
    buf_t open, close;
} slot_t;

typedef struct {
    int fd;
    uint8_t *out; size_t out_len, out_cap, out_sent;
    uint8_t *in; size_t in_len;
    int want_out;
} conn_t;

static int openclose, nconns = 4, depth = 16, nslots, nreqs;
static double warmup = 1.0, seconds = 5.0, drain = 10.0;
static long expect = -1;
static buf_t reqs[MAX_REQS];
static slot_t slots[MAX_SLOTS];
static conn_t *conns;
static uint32_t xid_counter = 1;
static int stopping, outstanding;
static unsigned long long replies, ops, errors;
static char kind_name[MAX_KINDS][32];
static unsigned long long kind_count[MAX_KINDS];
static int nkinds;

static void count_error(const char *kind, long detail) {
    char name[32];
    if (detail >= 0) snprintf(name, sizeof name, "%s-%ld", kind, detail);
    else snprintf(name, sizeof name, "%s", kind);
    errors++;
    int i = 0;
    while (i < nkinds && strcmp(kind_name[i], name)) i++;
    if (i == nkinds && nkinds == MAX_KINDS) {   /* table full: the last row collects the rest */
        i = MAX_KINDS - 1;
        snprintf(kind_name[i], sizeof kind_name[i], "other");
    } else if (i == nkinds) {
        memcpy(kind_name[nkinds++], name, sizeof name);
    }
    kind_count[i]++;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(int code, const char *what) {
    fprintf(stderr, "loadgen: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
    exit(code);
}

static void bad(const char *what) { errno = 0; die(2, what); }

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static buf_t unhex(const char *s) {
    size_t n = strlen(s);
    buf_t b = { malloc(n / 2 + 1), n / 2 };
    if (n % 2 || n < 8 || !b.b) bad("hex string");
    for (size_t i = 0; i < b.n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) bad("hex digit");
        b.b[i] = (uint8_t)v;
    }
    return b;
}

static void read_slot(const char *rest, int k) {
    slot_t *s = &slots[k];
    char *open_hex = malloc(strlen(rest) + 1), *close_hex = malloc(strlen(rest) + 1);
    unsigned long seq;
    if (!open_hex || !close_hex) bad("out of memory");
    if (sscanf(rest, "%lu %zu %zu %zu %s %s", &seq, &s->open_seqid_off, &s->close_seqid_off,
               &s->close_stateid_off, open_hex, close_hex) != 6) bad("slot line");
    s->seqid = (uint32_t)seq;
    s->open = unhex(open_hex);
    s->close = unhex(close_hex);
    if (s->open_seqid_off + 4 > s->open.n || s->close_seqid_off + 4 > s->close.n ||
        s->close_stateid_off + 16 > s->close.n) bad("slot offsets");
    free(open_hex);
    free(close_hex);
}

static void read_spec(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(2, path);
    size_t cap = 0;
    char *line = NULL, key[32];
    int nslot_lines = 0, n;
    while (getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\n")] = 0;
        if (sscanf(line, "%31s %n", key, &n) != 1) continue;
        const char *rest = line + n;
        if (!strcmp(key, "mode")) openclose = !strcmp(rest, "openclose");
        else if (!strcmp(key, "conns")) nconns = atoi(rest);
        else if (!strcmp(key, "depth")) depth = atoi(rest);
        else if (!strcmp(key, "warmup")) warmup = atof(rest);
        else if (!strcmp(key, "seconds")) seconds = atof(rest);
        else if (!strcmp(key, "drain")) drain = atof(rest);
        else if (!strcmp(key, "expect")) expect = atol(rest);
        else if (!strcmp(key, "req") && nreqs < MAX_REQS) reqs[nreqs++] = unhex(rest);
        else if (!strcmp(key, "slot") && nslot_lines < MAX_SLOTS) read_slot(rest, nslot_lines++);
        else bad(line);
    }
    free(line);
    fclose(f);
    nslots = nconns * depth;
    if (nconns < 1 || depth < 1 || nslots > MAX_SLOTS) bad("conns x depth");
    if (openclose ? nslot_lines != nslots : nreqs < 1) bad("slot or req lines");
}

static void enqueue(conn_t *c, const buf_t *msg, slot_t *s, int k) {
    size_t need = c->out_len + 4 + msg->n;
    if (need > c->out_cap) {
        c->out_cap = need * 2;
        c->out = realloc(c->out, c->out_cap);
        if (!c->out) die(3, "out of memory");
    }
    uint8_t *p = c->out + c->out_len;
    put32(p, 0x80000000u | (uint32_t)msg->n);
    memcpy(p + 4, msg->b, msg->n);
    s->xid = (xid_counter++ << SLOT_BITS) | (uint32_t)k;
    put32(p + 4, s->xid);
    c->out_len = need;
    outstanding++;
}

/* The slot's next call: simple: its request; openclose: CLOSE after a good OPEN, else OPEN.
 * Once stopping, only the CLOSE of an open is still sent: no file is left open. */
static void send_next(int k) {
    slot_t *s = &slots[k];
    conn_t *c = &conns[s->conn];
    if (stopping && s->state != OPENING) { s->state = IDLE; return; }
    if (!openclose) {
        s->state = SIMPLE;
        enqueue(c, &reqs[k % nreqs], s, k);
    } else if (s->state == OPENING) {
        put32(s->close.b + s->close_seqid_off, s->seqid);
        s->state = CLOSING;
        enqueue(c, &s->close, s, k);
    } else {
        put32(s->open.b + s->open_seqid_off, s->seqid);
        s->state = OPENING;
        enqueue(c, &s->open, s, k);
    }
}

/* RFC 7530 section 9.1.7: the seqid advances unless the op failed with one of these
 * (STALE_CLIENTID, STALE_STATEID, BAD_STATEID, BAD_SEQID, BADXDR, RESOURCE, NOFILEHANDLE,
 * MOVED). */
static int seqid_advances(uint32_t st) {
    static const uint32_t keep[] = { 10022, 10023, 10025, 10026, 10036, 10018, 10020, 10019 };
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (st == keep[i]) return 0;
    return 1;
}

/* In a COMPOUND4res of PUTFH + want_op + ...: want_op's status and the bytes after it (its
 * result), or NULL when the reply holds no result of want_op. */
static const uint8_t *second_result(const uint8_t *r, size_t n, uint32_t want_op, uint32_t *st) {
    if (n < 8) return NULL;
    size_t taglen = get32(r + 4), pos = 8 + ((taglen + 3) & ~(size_t)3);
    if (taglen > n || pos + 4 + 16 > n || get32(r + pos) < 2) return NULL;
    pos += 4 + 8;                          /* the count, PUTFH's resop and status */
    if (get32(r + pos) != want_op) return NULL;
    *st = get32(r + pos + 4);
    return r + pos + 8;
}

static void open_reply(slot_t *s, const uint8_t *r, size_t n, uint32_t status) {
    uint32_t st = 0;
    const uint8_t *res = second_result(r, n, OP_OPEN, &st);
    if (res && seqid_advances(st)) s->seqid++;
    s->state = IDLE;                       /* the next call opens again, unless all is well */
    if (status) return;                    /* counted by the caller */
    if (!res || res + 16 + 20 + 4 > r + n) { count_error("short-open-reply", -1); return; }
    if (get32(res + 16 + 20) & 2) { count_error("open-confirm-asked", -1); return; }
    memcpy(s->close.b + s->close_stateid_off, res, 16);
    s->state = OPENING;
}

static void close_reply(slot_t *s, const uint8_t *r, size_t n, uint32_t status) {
    uint32_t st = 0;
    if (second_result(r, n, OP_CLOSE, &st) && seqid_advances(st)) s->seqid++;
    if (!status) ops++;
    s->state = IDLE;
}

/* The COMPOUND4res of an accepted, successful RPC reply; NULL (error counted) otherwise. */
static const uint8_t *compound_res(const uint8_t *rec, size_t n, size_t *rn) {
    if (n < 24) { count_error("short-reply", -1); return NULL; }
    size_t pos = 20 + ((get32(rec + 16) + 3) & ~(size_t)3);
    if (get32(rec + 4) != 1) count_error("rpc-not-reply", -1);
    else if (get32(rec + 8) != 0) count_error("rpc-denied", get32(rec + 12));
    else if (get32(rec + 16) > n || pos + 8 > n) count_error("short-reply", -1);
    else if (get32(rec + pos) != 0) count_error("rpc-accept", get32(rec + pos));
    else { *rn = n - pos - 4; return rec + pos + 4; }
    return NULL;
}

static void reply(const uint8_t *rec, size_t n) {
    if (n < 4) { count_error("short-reply", -1); return; }
    uint32_t xid = get32(rec), k = xid & ((1u << SLOT_BITS) - 1);
    if (k >= (uint32_t)nslots || slots[k].xid != xid || slots[k].state == IDLE) {
        count_error("unknown-xid", -1);
        return;
    }
    slot_t *s = &slots[k];
    outstanding--;
    replies++;
    size_t rn = 0;
    const uint8_t *r = compound_res(rec, n, &rn);
    uint32_t status = r ? get32(r) : 0;
    if (r && status) count_error("nfs", status);
    if (!r) s->state = IDLE;
    else if (s->state == OPENING) open_reply(s, r, rn, status);
    else if (s->state == CLOSING) close_reply(s, r, rn, status);
    else if (expect >= 0 && rn != (size_t)expect) count_error("reply-length", (long)rn);
    else if (!status) ops++;
    send_next((int)k);
}

static void parse_input(conn_t *c) {
    size_t pos = 0;
    while (c->in_len - pos >= 4) {
        uint32_t mark = get32(c->in + pos), len = mark & 0x7fffffffu;
        if (!(mark & 0x80000000u)) bad("a reply in more than one fragment (not supported)");
        if (len > IN_CAP - 4) bad("a reply larger than the input buffer");
        if (c->in_len - pos - 4 < len) break;
        reply(c->in + pos + 4, len);
        pos += 4 + len;
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

static void flush_out(int ep, conn_t *c) {
    while (c->out_sent < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_sent, c->out_len - c->out_sent);
        if (w < 0 && errno == EAGAIN) break;
        if (w < 0) die(3, "write");
        c->out_sent += (size_t)w;
    }
    if (c->out_sent == c->out_len) c->out_sent = c->out_len = 0;
    int want = c->out_len > 0;
    if (want != c->want_out) {
        struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c };
        if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev)) die(3, "epoll_ctl");
        c->want_out = want;
    }
}

/* One read per readiness (level-triggered: what is left is reported again). */
static void on_readable(conn_t *c) {
    ssize_t r = read(c->fd, c->in + c->in_len, IN_CAP - c->in_len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (r < 0) die(3, "read");
    if (r == 0) { errno = 0; die(3, "the server closed a connection"); }
    c->in_len += (size_t)r;
    parse_input(c);
}

static void connect_all(const char *host, int port, int ep) {
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) bad("host address");
    conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns) die(3, "out of memory");
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        int one = 1;
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa)) die(3, "connect");
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fcntl(c->fd, F_SETFL, O_NONBLOCK)) die(3, "O_NONBLOCK");
        c->in = malloc(IN_CAP);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (!c->in || epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev)) die(3, "epoll_ctl");
    }
    for (int k = 0; k < nslots; k++) {
        slots[k].conn = k % nconns;
        slots[k].state = IDLE;
        send_next(k);
    }
    for (int i = 0; i < nconns; i++) flush_out(ep, &conns[i]);
}

/* Wait for and handle events until `until` (monotonic seconds), or until nothing is
 * outstanding when `drain_only`. */
static void run_until(int ep, double until, int drain_only) {
    struct epoll_event evs[64];
    for (double t = now(); t < until && !(drain_only && outstanding == 0); t = now()) {
        int ms = (int)((until - t) * 1000) + 1;
        int n = epoll_wait(ep, evs, 64, ms > 100 ? 100 : ms);
        if (n < 0 && errno != EINTR) die(3, "epoll_wait");
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
            flush_out(ep, c);
        }
    }
}

static void report(const char *what) {
    printf("%s %llu %llu %llu", what, replies, ops, errors);
}

int main(int argc, char **argv) {
    if (argc != 4) bad("usage: loadgen HOST PORT SPEC");
    read_spec(argv[3]);
    int ep = epoll_create1(0);
    if (ep < 0) die(3, "epoll_create1");
    connect_all(argv[1], atoi(argv[2]), ep);
    printf("ready\n");
    fflush(stdout);
    double start = now();
    run_until(ep, start + warmup, 0);
    double begin = now();
    report("begin");
    printf("\n");
    fflush(stdout);
    run_until(ep, begin + seconds, 0);
    double end = now();
    report("end");
    printf(" %lld\n", (long long)((end - begin) * 1e9));
    fflush(stdout);
    stopping = 1;
    run_until(ep, end + drain, 1);
    for (int i = 0; i < outstanding; i++) count_error("lost", -1);
    for (int i = 0; i < nkinds; i++) printf("error %s %llu\n", kind_name[i], kind_count[i]);
    report("done");
    printf(" %d\n", outstanding);
    return 0;
}
