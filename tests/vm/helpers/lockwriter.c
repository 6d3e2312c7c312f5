/*
 * lockwriter: hold an fcntl write lock on a file and append fsync'ed numbered records to it.
 *
 *   lockwriter FILE TAG COUNT INTERVAL_MS
 *
 * Opens FILE (O_WRONLY|O_APPEND|O_CREAT), takes a whole-file fcntl write lock (blocking), then
 * COUNT times: appends one 64-byte record, fsync()s, and reports on stdout, one line each:
 *
 *   @@LOCKED TAG                    the lock was granted
 *   @@FSYNCED TAG N                 record N is written and fsync() returned 0 (it is stable)
 *   @@IOERR TAG N write|fsync ERR   record N failed (e.g. EIO after the kernel lost the lock)
 *   @@DONE TAG OK ERRORS            all records attempted; the lock is released
 *
 * Record N is "TAG NNNNNN " followed by filler derived from N, ending in '\n' (64 bytes), so
 * the host can check every record on the server's disk. Exit 0 if no record failed, 1 if
 * some did, 2 on a setup error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RECORD 64

static void format_record(char *rec, const char *tag, int n)
{
	int len = snprintf(rec, RECORD, "%s %06d ", tag, n);
	for (int i = len; i < RECORD - 1; i++)
		rec[i] = 'a' + (n + i) % 26;
	rec[RECORD - 1] = '\n';
}

static void pause_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static int write_record(int fd, const char *tag, int n)
{
	char rec[RECORD];
	format_record(rec, tag, n);
	if (write(fd, rec, RECORD) != RECORD) {
		printf("@@IOERR %s %d write %s\n", tag, n, strerror(errno));
		return -1;
	}
	if (fsync(fd) != 0) {
		printf("@@IOERR %s %d fsync %s\n", tag, n, strerror(errno));
		return -1;
	}
	printf("@@FSYNCED %s %d\n", tag, n);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 5 || strlen(argv[2]) > 20) {
		fprintf(stderr, "usage: lockwriter FILE TAG COUNT INTERVAL_MS\n");
		return 2;
	}
	const char *tag = argv[2];
	int count = atoi(argv[3]), interval = atoi(argv[4]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0) {
		fprintf(stderr, "lockwriter: %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	if (fcntl(fd, F_SETLKW, &fl) != 0) {
		fprintf(stderr, "lockwriter: lock: %s\n", strerror(errno));
		return 2;
	}
	printf("@@LOCKED %s\n", tag);
	int errors = 0;
	for (int n = 1; n <= count; n++) {
		if (write_record(fd, tag, n) != 0)
			errors++;
		pause_ms(interval);
	}
	fl.l_type = F_UNLCK;
	fcntl(fd, F_SETLK, &fl);
	close(fd);
	printf("@@DONE %s %d %d\n", tag, count - errors, errors);
	return errors ? 1 : 0;
}
