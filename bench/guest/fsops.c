/*
 * fsops: the per-operation workloads of bench/cpu_per_op.py, in one static binary for the guest
 * (busybox has no O_DIRECT random I/O, and a fork per file would make the guest, not the
 * server, the subject of the measurement).
 *
 *   fsops create  DIR N         open(DIR/fI, O_CREAT|O_WRONLY, 0644) + close, I = 0..N-1
 *   fsops stat    DIR N         stat(DIR/fI)
 *   fsops rename  DIR N         rename(DIR/fI, DIR/gI)
 *   fsops unlink  DIR N         unlink(DIR/gI)
 *   fsops readdir DIR TIMES [COLD]  TIMES times: list DIR (opendir/readdir, i.e. getdents64)
 *                               and count the entries; with COLD 1, drop the caches before
 *                               each listing (sync + /proc/sys/vm/drop_caches, as the guest's
 *                               root) so that every listing goes to the server
 *   fsops randread  FILE N SEED  N preads of 4 KiB at random 4 KiB-aligned offsets, O_DIRECT
 *   fsops randwrite FILE N SEED  N pwrites of 4 KiB likewise (the file keeps its size)
 *
 * Prints one line "fsops OP COUNT" (entries seen per listing for readdir, else operations
 * done). Exit 0 on success, 1 when a call fails (message on stderr), 2 on a usage error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK 4096

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "fsops: %s %s: %s\n", what, path, strerror(errno));
	return 1;
}

static void name(char *out, size_t size, const char *dir, char prefix, long i)
{
	snprintf(out, size, "%s/%c%ld", dir, prefix, i);
}

static int create_files(const char *dir, long n)
{
	char path[4096];

	for (long i = 0; i < n; i++) {
		name(path, sizeof(path), dir, 'f', i);
		int fd = open(path, O_CREAT | O_WRONLY, 0644);
		if (fd < 0 || close(fd) != 0)
			return fail("create", path);
	}
	return 0;
}

static int stat_files(const char *dir, long n)
{
	char path[4096];
	struct stat st;

	for (long i = 0; i < n; i++) {
		name(path, sizeof(path), dir, 'f', i);
		if (stat(path, &st) != 0)
			return fail("stat", path);
	}
	return 0;
}

static int rename_files(const char *dir, long n)
{
	char from[4096], to[4096];

	for (long i = 0; i < n; i++) {
		name(from, sizeof(from), dir, 'f', i);
		name(to, sizeof(to), dir, 'g', i);
		if (rename(from, to) != 0)
			return fail("rename", from);
	}
	return 0;
}

static int unlink_files(const char *dir, long n)
{
	char path[4096];

	for (long i = 0; i < n; i++) {
		name(path, sizeof(path), dir, 'g', i);
		if (unlink(path) != 0)
			return fail("unlink", path);
	}
	return 0;
}

static int drop_caches(void)
{
	int fd;

	sync();
	fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	if (fd < 0 || write(fd, "3\n", 2) != 2)
		return fail("write", "/proc/sys/vm/drop_caches");
	return close(fd);
}

/* Lists DIR `times` times (from a cold cache if `cold`); the entry count (without . and ..) in *seen. */
static int list_dir(const char *dir, long times, int cold, long *seen)
{
	for (long t = 0; t < times; t++) {
		if (cold && drop_caches() != 0)
			return 1;
		DIR *d = opendir(dir);
		struct dirent *e;
		long count = 0;

		if (d == NULL)
			return fail("opendir", dir);
		/* drop_caches skips pages still held in a CPU's LRU batch (the last listing's, when the
		 * directory fits a page or two); FADV_DONTNEED drains those batches and drops them too. */
		if (cold && (errno = posix_fadvise(dirfd(d), 0, 0, POSIX_FADV_DONTNEED)) != 0)
			return fail("posix_fadvise", dir);
		errno = 0;
		while ((e = readdir(d)) != NULL)
			count += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
		if (errno != 0)
			return fail("readdir", dir);
		closedir(d);
		if (t > 0 && count != *seen) {
			fprintf(stderr, "fsops: %s listed %ld then %ld entries\n", dir, *seen, count);
			return 1;
		}
		*seen = count;
	}
	return 0;
}

/* xorshift64*: a reproducible offset sequence without libc's rand state. */
static uint64_t next_random(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 2685821657736338717ULL;
}

static int random_io(const char *file, long n, uint64_t seed, int writing)
{
	void *buf;
	struct stat st;
	int fd = open(file, (writing ? O_WRONLY : O_RDONLY) | O_DIRECT);

	if (fd < 0)
		return fail("open O_DIRECT", file);
	if (fstat(fd, &st) != 0 || st.st_size < BLOCK) {
		fprintf(stderr, "fsops: %s is smaller than one block\n", file);
		return 1;
	}
	if (posix_memalign(&buf, BLOCK, BLOCK) != 0)
		return fail("posix_memalign", file);
	memset(buf, 0x5a, BLOCK);
	uint64_t blocks = (uint64_t)st.st_size / BLOCK, state = seed | 1;
	for (long i = 0; i < n; i++) {
		off_t at = (off_t)(next_random(&state) % blocks) * BLOCK;
		ssize_t done = writing ? pwrite(fd, buf, BLOCK, at) : pread(fd, buf, BLOCK, at);
		if (done != BLOCK)
			return fail(writing ? "pwrite" : "pread", file);
	}
	free(buf);
	return close(fd) != 0 ? fail("close", file) : 0;
}

static int number(const char *text, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(text, &end, 10);
	return errno == 0 && *text != '\0' && *end == '\0' && *out >= 0;
}

int main(int argc, char **argv)
{
	long n, extra = 0, seen = 0;
	int rc;

	if (argc < 4 || !number(argv[3], &n) || (argc == 5 && !number(argv[4], &extra)) ||
	    argc > 5) {
		fprintf(stderr, "usage: fsops create|stat|rename|unlink DIR N\n"
				"       fsops readdir DIR TIMES [COLD]\n"
				"       fsops randread|randwrite FILE N [SEED]\n");
		return 2;
	}
	const char *op = argv[1], *path = argv[2];
	if (strcmp(op, "create") == 0)
		rc = create_files(path, n);
	else if (strcmp(op, "stat") == 0)
		rc = stat_files(path, n);
	else if (strcmp(op, "rename") == 0)
		rc = rename_files(path, n);
	else if (strcmp(op, "unlink") == 0)
		rc = unlink_files(path, n);
	else if (strcmp(op, "readdir") == 0)
		rc = list_dir(path, n, argc == 5 && extra == 1, &seen);
	else if (strcmp(op, "randread") == 0 || strcmp(op, "randwrite") == 0)
		rc = random_io(path, n, (uint64_t)extra + 1, op[4] == 'w');
	else {
		fprintf(stderr, "fsops: unknown operation %s\n", op);
		return 2;
	}
	if (rc == 0)
		printf("fsops %s %ld\n", op, strcmp(op, "readdir") == 0 ? seen : n);
	return rc != 0;
}
