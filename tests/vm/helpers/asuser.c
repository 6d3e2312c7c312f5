/*
 * asuser: run a program as another user with no supplementary groups.
 *
 *   asuser UID GID PROG [ARG...]
 *
 * setgroups(0), setgid(GID), setuid(UID), then execvp(PROG). The guest's AUTH_SYS credentials
 * for the program's NFS calls then carry UID, GID and an empty group list: only a server that
 * looks the groups up itself (manage-gids) can grant access through a supplementary group.
 * Exit 2 on a usage error, 1 when an identity call fails, 127 when PROG cannot be run.
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int number(const char *text, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(text, &end, 10);
	return errno == 0 && *text != '\0' && *end == '\0';
}

int main(int argc, char **argv)
{
	unsigned long uid, gid;

	if (argc < 4 || !number(argv[1], &uid) || !number(argv[2], &gid)) {
		fprintf(stderr, "usage: asuser UID GID PROG [ARG...]\n");
		return 2;
	}
	if (setgroups(0, NULL) != 0 || setgid((gid_t)gid) != 0 || setuid((uid_t)uid) != 0) {
		fprintf(stderr, "asuser: %s\n", strerror(errno));
		return 1;
	}
	execvp(argv[3], argv + 3);
	fprintf(stderr, "asuser: %s: %s\n", argv[3], strerror(errno));
	return 127;
}
