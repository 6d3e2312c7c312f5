/*
 * holdwrite: write over an existing file and keep it open, so the written pages stay dirty.
 *
 *   holdwrite FILE READYFILE TEXT
 *
 * open(FILE, O_WRONLY) (no O_CREAT, no O_TRUNC), one write(TEXT) at offset 0, then create
 * READYFILE and sleep until killed. No descriptor of FILE is ever duplicated or closed: on NFS
 * every close() of one flushes the file's dirty pages (nfs_file_flush), which a shell
 * redirection would do, and the Linux client also sends the first write into a file it has
 * just created or truncated at once. With writeback off in the guest, the data then leaves the
 * client only on fsync, a recall or the final close. Exit 2 on a usage error, 1 when a call
 * fails.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int fd, ready;
	size_t len;

	if (argc != 4) {
		fprintf(stderr, "usage: holdwrite FILE READYFILE TEXT\n");
		return 2;
	}
	fd = open(argv[1], O_WRONLY);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	len = strlen(argv[3]);
	if (write(fd, argv[3], len) != (ssize_t)len) {
		perror("write");
		return 1;
	}
	ready = open(argv[2], O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (ready < 0) {
		perror(argv[2]);
		return 1;
	}
	for (;;)
		pause();
}
