/*
 * locktest: flock(2) and fcntl(2) lock tester for the guest (busybox has no flock applet).
 *
 *   locktest KIND TYPE FILE try   [START LEN]            exit 0 acquired, 1 would block
 *   locktest KIND TYPE FILE hold  SECS READY MARKER [START LEN]
 *       take the lock (blocking), create READY, sleep SECS, create MARKER, release, exit 0
 *   locktest KIND TYPE FILE wait  MARKER [START LEN]
 *       take the lock (blocking); exit 0 if MARKER already exists (the holder released first),
 *       3 if it does not (the lock was granted while the holder still held it)
 *   locktest fcntl TYPE FILE getlk START LEN             print "none" or "conflict T START LEN"
 *
 * KIND is flock or fcntl, TYPE is ex (exclusive/write) or sh (shared/read).
 * Exit status 2 means an unexpected error (message on stderr).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static int is_fcntl, exclusive;
static off_t range_start, range_len;

static int die(const char *what)
{
	fprintf(stderr, "locktest: %s: %s\n", what, strerror(errno));
	exit(2);
}

static int lock(int fd, int blocking)
{
	if (!is_fcntl)
		return flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | (blocking ? 0 : LOCK_NB));
	struct flock fl = { .l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET,
			    .l_start = range_start, .l_len = range_len };
	return fcntl(fd, blocking ? F_SETLKW : F_SETLK, &fl);
}

static void unlock(int fd)
{
	struct flock fl = { .l_type = F_UNLCK, .l_whence = SEEK_SET,
			    .l_start = range_start, .l_len = range_len };
	if ((is_fcntl ? fcntl(fd, F_SETLK, &fl) : flock(fd, LOCK_UN)) != 0)
		die("unlock");
}

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT, 0644);
	if (fd < 0 || close(fd) != 0)
		die(path);
}

static int do_try(int fd)
{
	if (lock(fd, 0) == 0) {
		unlock(fd);
		return 0;
	}
	if (errno == EWOULDBLOCK || errno == EAGAIN || errno == EACCES)
		return 1;
	return die("try lock");
}

static int do_hold(int fd, int secs, const char *ready, const char *marker)
{
	if (lock(fd, 1) != 0)
		die("hold lock");
	touch(ready);
	sleep(secs);
	touch(marker);
	unlock(fd);
	return 0;
}

static int do_wait(int fd, const char *marker)
{
	if (lock(fd, 1) != 0)
		die("wait lock");
	int released_first = access(marker, F_OK) == 0;
	unlock(fd);
	return released_first ? 0 : 3;
}

static int do_getlk(int fd)
{
	struct flock fl = { .l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET,
			    .l_start = range_start, .l_len = range_len };
	if (fcntl(fd, F_GETLK, &fl) != 0)
		die("F_GETLK");
	if (fl.l_type == F_UNLCK)
		printf("none\n");
	else
		printf("conflict %s %lld %lld\n", fl.l_type == F_WRLCK ? "ex" : "sh",
		       (long long)fl.l_start, (long long)fl.l_len);
	return 0;
}

static void set_range(int argc, char **argv, int at)
{
	if (argc > at + 1) {
		range_start = atoll(argv[at]);
		range_len = atoll(argv[at + 1]);
	}
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: locktest flock|fcntl ex|sh FILE try|hold|wait|getlk ...\n");
		return 2;
	}
	is_fcntl = strcmp(argv[1], "fcntl") == 0;
	exclusive = strcmp(argv[2], "ex") == 0;
	int fd = open(argv[3], exclusive ? O_RDWR | O_CREAT : O_RDONLY, 0644);
	if (fd < 0)
		die(argv[3]);
	const char *op = argv[4];
	if (strcmp(op, "try") == 0) {
		set_range(argc, argv, 5);
		return do_try(fd);
	}
	if (strcmp(op, "hold") == 0 && argc >= 8) {
		set_range(argc, argv, 8);
		return do_hold(fd, atoi(argv[5]), argv[6], argv[7]);
	}
	if (strcmp(op, "wait") == 0 && argc >= 6) {
		set_range(argc, argv, 6);
		return do_wait(fd, argv[5]);
	}
	if (strcmp(op, "getlk") == 0 && is_fcntl) {
		set_range(argc, argv, 5);
		return do_getlk(fd);
	}
	fprintf(stderr, "locktest: bad arguments\n");
	return 2;
}
