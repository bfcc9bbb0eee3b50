/* notify: the service manager's readiness protocol (systemd's sd_notify),
 * spoken directly: one datagram of "NAME=value" lines to the AF_UNIX socket
 * named by $NOTIFY_SOCKET (a path, or '@' for the abstract namespace).
 * Without NOTIFY_SOCKET every call does nothing, so mrprov behaves the same
 * under any other supervisor. No libsystemd: the protocol is this small. */
#ifndef MRPROV_NOTIFY_H
#define MRPROV_NOTIFY_H

#include <sys/socket.h>
#include <sys/un.h>

/* Takes NOTIFY_SOCKET from the environment (once, before threads start) and
 * removes it, so processes mrprov starts (a local dokku) cannot speak for
 * it. 1 when notifications will be sent, 0 when not asked for, -1 when the
 * name is unusable (logged; nothing will be sent). */
int notify_init(void);

/* Sends state (e.g. "READY=1\nSTATUS=...") to the socket notify_init took.
 * 0 when sent or nothing to do; -1 when the send failed (logged once: a
 * supervisor that went away must not fill the log). */
int notify_send(const char *state);

/* "RELOADING=1" with MONOTONIC_USEC (CLOCK_MONOTONIC now, in microseconds),
 * as systemd wants it before a reload; READY=1 ends the reload. */
int notify_reloading(void);

/* The socket address for a NOTIFY_SOCKET value: a path starting with '/'
 * or an abstract name starting with '@' (the '@' becomes a NUL byte).
 * 0, or -1 for anything else or a name too long. Exposed for tests. */
int notify_address(const char *name, struct sockaddr_un *sa, socklen_t *len);

#endif
