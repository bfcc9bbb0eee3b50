/* notify: sd_notify without libsystemd (see notify.h). */
#include "util/notify.h"
#include "util/log.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_un target;
static socklen_t target_len; /* 0: notifications off */
static int warned;

int notify_address(const char *name, struct sockaddr_un *sa, socklen_t *len)
{
	size_t n = name ? strlen(name) : 0;
	/* An abstract name is not NUL-terminated: its length is the address's. */
	if (n < 2 || n >= sizeof sa->sun_path || (name[0] != '/' && name[0] != '@'))
		return -1;
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, name, n);
	if (name[0] == '@') {
		sa->sun_path[0] = '\0';
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	}
	return 0;
}

int notify_init(void)
{
	const char *name = getenv("NOTIFY_SOCKET");
	target_len = 0;
	warned = 0;
	if (!name || !*name)
		return 0;
	int rc = notify_address(name, &target, &target_len);
	if (rc < 0) {
		target_len = 0;
		log_warn("NOTIFY_SOCKET: \"%.80s\" is neither an absolute path nor an abstract name; not notifying",
			 name);
	}
	unsetenv("NOTIFY_SOCKET");
	return rc < 0 ? -1 : 1;
}

int notify_send(const char *state)
{
	if (!target_len)
		return 0;
	int rc = -1;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto out;
	size_t n = strlen(state);
	/* MSG_NOSIGNAL: the socket is a datagram one, but be safe where it is not. */
	if (sendto(fd, state, n, MSG_NOSIGNAL, (const struct sockaddr *)&target, target_len) == (ssize_t)n)
		rc = 0;
out:
	if (rc < 0 && !warned) {
		warned = 1;
		log_warn("NOTIFY_SOCKET: cannot notify the service manager: %s", strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

int notify_reloading(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	char msg[96];
	snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL);
	return notify_send(msg);
}
