/* http request deadlines: every open connection is tracked (MHD's
 * notify-connection callback) with the time its awaited request began; a
 * reaper thread shuts down the socket of one that has not delivered a whole
 * request (headers and body) within HTTP_REQUEST_TIMEOUT.
 *
 * Why: MHD's own connection timeout is an idle timeout, reset by every
 * byte, so a client sending one header byte every few seconds would hold a
 * thread (and one of HTTP_MAX_CONNECTIONS) for ever. */
#include "http/server_internal.h"
#include "metrics.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/xalloc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

/* One open connection, for the request deadline. The list is guarded by
 * conns_mu; a connection is unlinked in MHD's CLOSED notification, which
 * MHD calls before it closes the socket, so fd is open while listed. */
struct conn {
	struct conn *prev, *next;
	MHD_socket fd;
	double since;	/* when the request now awaited began */
	int receiving;	/* waiting for a request's headers or body */
	int reaped;	/* shut down by the reaper */
};

static pthread_mutex_t conns_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reaper_cv;
static struct conn *conns;
static pthread_t reaper;
static int reaper_running, reaper_stop;
static int limit_s; /* HTTP_REQUEST_TIMEOUT */

/* The reaper: shuts down (does not close: MHD owns the descriptor) the
 * socket of every connection that has waited for one request longer than
 * HTTP_REQUEST_TIMEOUT; the connection's thread then sees the end of its
 * input and MHD closes the connection. Sleeps until the earliest deadline. */
static void *reaper_main(void *arg)
{
	(void)arg;
	double limit = limit_s;
	pthread_mutex_lock(&conns_mu);
	while (!reaper_stop) {
		double now = clock_mono(), next = now + limit;
		int n = 0;
		for (struct conn *k = conns; k; k = k->next) {
			if (!k->receiving || k->reaped)
				continue;
			if (k->since + limit <= now) {
				shutdown(k->fd, SHUT_RDWR);
				k->reaped = 1;
				n++;
			} else if (k->since + limit < next) {
				next = k->since + limit;
			}
		}
		if (n) {
			metrics_add("mrprov_http_request_timeouts_total", NULL, n);
			log_info("http: closed %d connection(s) that sent no complete request within %d s", n,
				  limit_s);
		}
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		double wait = next - now + 0.01;
		ts.tv_sec += (time_t)wait;
		ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&reaper_cv, &conns_mu, &ts);
	}
	pthread_mutex_unlock(&conns_mu);
	return NULL;
}

void http_deadline_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
				 enum MHD_ConnectionNotificationCode toe)
{
	(void)cls;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (!info)
			return; /* untracked: MHD's idle timeout still applies */
		struct conn *k = xcalloc(1, sizeof *k);
		k->fd = info->connect_fd;
		k->since = clock_mono();
		k->receiving = 1;
		pthread_mutex_lock(&conns_mu);
		k->next = conns;
		if (conns)
			conns->prev = k;
		conns = k;
		pthread_mutex_unlock(&conns_mu);
		*socket_context = k;
		return;
	}
	struct conn *k = *socket_context;
	if (!k)
		return;
	pthread_mutex_lock(&conns_mu);
	if (k->prev)
		k->prev->next = k->next;
	else
		conns = k->next;
	if (k->next)
		k->next->prev = k->prev;
	pthread_mutex_unlock(&conns_mu);
	free(k);
	*socket_context = NULL;
}

void http_deadline_mark(struct MHD_Connection *c, int receiving)
{
	const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn *k = info ? info->socket_context : NULL;
	if (!k)
		return;
	pthread_mutex_lock(&conns_mu);
	k->receiving = receiving;
	k->since = clock_mono();
	pthread_mutex_unlock(&conns_mu);
}

int http_deadline_start(int limit, char *err, size_t errlen)
{
	limit_s = limit;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&reaper_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&reaper, NULL, reaper_main, NULL) != 0) {
		snprintf(err, errlen, "http: cannot start the request-deadline thread");
		return -1;
	}
	reaper_running = 1;
	return 0;
}

void http_deadline_stop(void)
{
	if (!reaper_running)
		return;
	pthread_mutex_lock(&conns_mu);
	reaper_stop = 1;
	pthread_cond_signal(&reaper_cv);
	pthread_mutex_unlock(&conns_mu);
	pthread_join(reaper, NULL);
	pthread_cond_destroy(&reaper_cv);
	reaper_running = 0;
}
