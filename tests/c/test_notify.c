/* Unit tests for src/util/notify.c: the sd_notify datagrams reach a socket
 * bound at a path and at an abstract name; nothing happens without
 * NOTIFY_SOCKET; an unusable name or a missing listener is not fatal. */
#include "check.h"
#include "util/notify.h"

#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

/* A datagram socket bound to name (as NOTIFY_SOCKET spells it), or -1. */
static int listener(const char *name)
{
	struct sockaddr_un sa;
	socklen_t len;
	if (notify_address(name, &sa, &len) < 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, len) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* The next datagram within 5 s into buf (NUL-terminated), or "" if none. */
static const char *next(int fd, char *buf, size_t n)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	buf[0] = '\0';
	if (poll(&p, 1, 5000) == 1) {
		ssize_t got = recv(fd, buf, n - 1, 0);
		buf[got > 0 ? got : 0] = '\0';
	}
	return buf;
}

int main(void)
{
	char buf[256], path[64], abstract[64];
	struct sockaddr_un sa;
	socklen_t len;

	/* Names: absolute paths and '@' abstract names only. */
	CHECK(notify_address("relative/sock", &sa, &len) < 0);
	CHECK(notify_address("@", &sa, &len) < 0);
	CHECK(notify_address("", &sa, &len) < 0);
	CHECK(notify_address("@abc", &sa, &len) == 0 && sa.sun_path[0] == '\0' &&
	      memcmp(sa.sun_path + 1, "abc", 3) == 0);

	/* Without NOTIFY_SOCKET: off, and sending does nothing. */
	unsetenv("NOTIFY_SOCKET");
	CHECK(notify_init() == 0);
	CHECK(notify_send("READY=1") == 0);

	/* A socket bound at a path. */
	snprintf(path, sizeof path, "/tmp/mrprov-notify-%d.sock", (int)getpid());
	unlink(path);
	int fd = listener(path);
	CHECK(fd >= 0);
	setenv("NOTIFY_SOCKET", path, 1);
	CHECK(notify_init() == 1);
	/* Taken out of the environment: children cannot speak for mrprov. */
	CHECK(getenv("NOTIFY_SOCKET") == NULL);
	CHECK(notify_send("READY=1\nSTATUS=serving") == 0);
	CHECK_STR(next(fd, buf, sizeof buf), "READY=1\nSTATUS=serving");
	CHECK(notify_reloading() == 0);
	next(fd, buf, sizeof buf);
	CHECK(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
	CHECK(buf[27] >= '1' && buf[27] <= '9' && strspn(buf + 27, "0123456789") == strlen(buf + 27));
	close(fd);
	unlink(path);
	/* The listener went away: a failure, reported, never fatal. */
	CHECK(notify_send("STOPPING=1") == -1);
	CHECK(notify_send("STOPPING=1") == -1);

	/* An abstract name. */
	snprintf(abstract, sizeof abstract, "@mrprov-notify-test-%d", (int)getpid());
	fd = listener(abstract);
	CHECK(fd >= 0);
	setenv("NOTIFY_SOCKET", abstract, 1);
	CHECK(notify_init() == 1);
	CHECK(notify_send("STOPPING=1") == 0);
	CHECK_STR(next(fd, buf, sizeof buf), "STOPPING=1");
	close(fd);

	/* An unusable name: off, and said so. */
	setenv("NOTIFY_SOCKET", "not-absolute", 1);
	CHECK(notify_init() == -1);
	CHECK(notify_send("READY=1") == 0);
	return check_done();
}
