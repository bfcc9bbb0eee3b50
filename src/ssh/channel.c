/* ssh_pool channels: one request's exec channel driven through its states
 * (open, exec, read, close, wait closed, free) without blocking, deadlines
 * and cancellation, and how a finished request wakes its caller. Runs on the
 * session's thread only. */
#include "ssh/pool_internal.h"
#include "util/clock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ssh_request_free(struct request *rq)
{
	pthread_cond_destroy(&rq->cond);
	free(rq->cmd);
	free(rq->in);
	if (rq->in_fd >= 0)
		close(rq->in_fd);
	free(rq);
}

/* Finishes a request: the caller may return once done is set. */
void ssh_request_complete(struct session *s, struct request *rq)
{
	struct ssh_pool *p = s->pool;
	pthread_mutex_lock(&p->lock);
	if (rq->detached) {
		pthread_mutex_unlock(&p->lock);
		ssh_request_free(rq);
		return;
	}
	rq->done = 1;
	pthread_cond_signal(&rq->cond);
	pthread_mutex_unlock(&p->lock);
}

void ssh_request_fail(struct session *s, struct request *rq, const char *msg, int transient)
{
	if (rq->res) {
		snprintf(rq->res->error, sizeof rq->res->error, "%.250s", msg);
		rq->res->transient = transient;
		rq->res->exit_code = -1;
	}
	ssh_request_complete(s, rq);
}

/* ---- the channel state machine ---- */

static int write_all(int fd, const char *buf, size_t n)
{
	while (n) {
		ssize_t w = write(fd, buf, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

/* What a state step tells progress(): go on with the next state, or return
 * this to the session loop. */
enum { STEP_NEXT = 100 };

static int open_channel(struct session *s, struct request *rq)
{
	rq->ch = libssh2_channel_open_session(s->s);
	if (!rq->ch) {
		int e = libssh2_session_last_errno(s->s);
		if (e == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (e == LIBSSH2_ERROR_CHANNEL_FAILURE && s->nactive > 1) {
			/* The server's MaxSessions is lower than ours: wait for a slot. */
			s->max_ch = s->nactive - 1;
			return 2;
		}
		if (e == LIBSSH2_ERROR_CHANNEL_FAILURE) {
			ssh_request_fail(s, rq, "the server refused a channel", 1);
			return 1;
		}
		return -1;
	}
	rq->st = RQ_EXEC;
	return STEP_NEXT;
}

static int exec_command(struct request *rq)
{
	int rc = libssh2_channel_exec(rq->ch, rq->cmd);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	if (rc < 0) {
		rq->st = RQ_CLOSE;
		if (rq->res)
			snprintf(rq->res->error, sizeof rq->res->error, "exec refused by the server");
		return STEP_NEXT;
	}
	rq->st = rq->in ? RQ_WRITE : RQ_READ;
	return STEP_NEXT;
}

static int read_stdout(struct request *rq, char *buf, size_t buflen);
static int read_stderr(struct request *rq, char *buf, size_t buflen);

/* The next chunk of a file-fed stdin into rq->in: 1 when there is one, 0 at
 * the file's end (closed then), -1 when it cannot be read: the request then
 * fails (its channel is closed without an EOF of ours; the caller treats
 * the command as failed whatever it did with the part it got). */
static int refill_input(struct request *rq)
{
	if (rq->in_fd < 0)
		return 0;
	for (;;) {
		ssize_t n = read(rq->in_fd, rq->in, SSH_INPUT_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (rq->res)
				snprintf(rq->res->error, sizeof rq->res->error, "cannot read the command's input: %s",
					 strerror(errno));
			return -1;
		}
		if (n == 0) {
			close(rq->in_fd);
			rq->in_fd = -1;
			return 0;
		}
		rq->in_len = (size_t)n;
		rq->in_off = 0;
		return 1;
	}
}

/* Sends the command's stdin, then its EOF. Output is drained on every turn
 * too: a command that writes more than the channel's window before it reads
 * its input would otherwise wait for us while we wait for it. A channel the
 * server closed or ended early stops the sending (the command did not want
 * the rest; its exit code tells), anything else is a session error. */
static int write_input(struct request *rq)
{
	char buf[32768];
	if (read_stdout(rq, buf, sizeof buf) < 0 || read_stderr(rq, buf, sizeof buf) < 0)
		return -1;
	for (;;) {
		if (rq->in_off == rq->in_len) {
			int more = refill_input(rq);
			if (more < 0) {
				rq->st = RQ_CLOSE;
				return STEP_NEXT;
			}
			if (!more)
				break;
		}
		/* The command's output ended (it exited, or will without reading
		 * more): libssh2 would answer EAGAIN for ever once the window is
		 * used up, as the server adjusts it no more. */
		if (libssh2_channel_eof(rq->ch)) {
			rq->st = RQ_READ;
			return STEP_NEXT;
		}
		ssize_t n = libssh2_channel_write(rq->ch, rq->in + rq->in_off, rq->in_len - rq->in_off);
		if (n == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (n == LIBSSH2_ERROR_CHANNEL_CLOSED || n == LIBSSH2_ERROR_CHANNEL_EOF_SENT ||
		    n == LIBSSH2_ERROR_CHANNEL_UNKNOWN) {
			rq->st = RQ_READ;
			return STEP_NEXT;
		}
		if (n < 0)
			return -1;
		rq->in_off += (size_t)n;
	}
	int rc = libssh2_channel_send_eof(rq->ch);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return 0;
	if (rc < 0 && rc != LIBSSH2_ERROR_CHANNEL_CLOSED && rc != LIBSSH2_ERROR_CHANNEL_EOF_SENT &&
	    rc != LIBSSH2_ERROR_CHANNEL_UNKNOWN)
		return -1;
	rq->st = RQ_READ;
	return STEP_NEXT;
}

/* Drains what stdout holds now, into the caller's file or buffer. Returns
 * 1 when something arrived, 0 when nothing, -1 on a session error. */
static int read_stdout(struct request *rq, char *buf, size_t buflen)
{
	int got = 0;
	for (;;) {
		ssize_t n = libssh2_channel_read(rq->ch, buf, buflen);
		if (n == LIBSSH2_ERROR_EAGAIN || n == 0)
			return got;
		if (n < 0)
			return -1;
		got = 1;
		if (!rq->res)
			continue; /* the caller has gone: drain and drop */
		rq->res->out_bytes += (size_t)n;
		if (rq->out_fd >= 0) {
			if (write_all(rq->out_fd, buf, (size_t)n) < 0 && !rq->res->error[0])
				snprintf(rq->res->error, sizeof rq->res->error, "cannot write the output: %s",
					 strerror(errno));
		} else {
			sbuf_add(&rq->res->out, buf, (size_t)n);
		}
	}
}

/* Drains what stderr holds now (kept up to 1 MiB). Same returns. */
static int read_stderr(struct request *rq, char *buf, size_t buflen)
{
	int got = 0;
	for (;;) {
		ssize_t n = libssh2_channel_read_stderr(rq->ch, buf, buflen);
		if (n == LIBSSH2_ERROR_EAGAIN || n == 0)
			return got;
		if (n < 0)
			return -1;
		got = 1;
		if (rq->res && rq->res->err.len < 1024 * 1024)
			sbuf_add(&rq->res->err, buf, (size_t)n);
	}
}

/* Reads stdout and stderr until the channel's EOF, and what arrived with it. */
static int read_output(struct request *rq)
{
	char buf[32768];
	for (;;) {
		int out = read_stdout(rq, buf, sizeof buf);
		if (out < 0)
			return -1;
		int err = read_stderr(rq, buf, sizeof buf);
		if (err < 0)
			return -1;
		if (!libssh2_channel_eof(rq->ch))
			return 0;
		if (!out && !err)
			break;
		/* drain what arrived with the EOF */
	}
	rq->st = RQ_CLOSE;
	return STEP_NEXT;
}

static int close_channel(struct request *rq)
{
	if (libssh2_channel_close(rq->ch) == LIBSSH2_ERROR_EAGAIN)
		return 0;
	rq->st = RQ_WAIT_CLOSED;
	return STEP_NEXT;
}

/* The server confirmed the close: the exit status (or 128 + 9 for a
 * command killed by a signal without one) is final. */
static int collect_exit_status(struct session *s, struct request *rq)
{
	if (libssh2_channel_wait_closed(rq->ch) == LIBSSH2_ERROR_EAGAIN)
		return 0;
	if (rq->res && !rq->res->error[0]) {
		int code = libssh2_channel_get_exit_status(rq->ch);
		char *sig = NULL;
		libssh2_channel_get_exit_signal(rq->ch, &sig, NULL, NULL, NULL, NULL, NULL);
		if (sig) {
			code = code ? code : 128 + 9;
			libssh2_free(s->s, sig);
		}
		rq->res->exit_code = code;
	}
	rq->st = RQ_FREE;
	return STEP_NEXT;
}

static int free_channel(struct session *s, struct request *rq)
{
	if (libssh2_channel_free(rq->ch) == LIBSSH2_ERROR_EAGAIN)
		return 0;
	rq->ch = NULL;
	pthread_mutex_lock(&s->pool->lock);
	if (rq->res && !rq->res->error[0])
		s->pool->last_ok = clock_mono();
	pthread_mutex_unlock(&s->pool->lock);
	ssh_request_complete(s, rq);
	return 1;
}

/* Advances one request as far as it goes without blocking. Returns 1 when
 * finished (removed), 0 when waiting, 2 when it must wait for a free channel
 * slot, -1 on a session error. */
static int progress(struct session *s, struct request *rq)
{
	for (;;) {
		int r = -1;
		switch (rq->st) {
		case RQ_OPEN:
			r = open_channel(s, rq);
			break;
		case RQ_EXEC:
			r = exec_command(rq);
			break;
		case RQ_WRITE:
			r = write_input(rq);
			break;
		case RQ_READ:
			r = read_output(rq);
			break;
		case RQ_CLOSE:
			r = close_channel(rq);
			break;
		case RQ_WAIT_CLOSED:
			r = collect_exit_status(s, rq);
			break;
		case RQ_FREE:
			r = free_channel(s, rq);
			break;
		}
		if (r != STEP_NEXT)
			return r;
	}
}

/* ---- deadlines, cancellation, the active set ---- */

/* A request past its deadline: the caller is told now; the channel is
 * closed in the background and the request freed afterwards. Returns 1
 * when the request is gone already (it had no channel yet). */
static int expire(struct session *s, struct request *rq, int cancelled)
{
	struct ssh_pool *p = s->pool;
	pthread_mutex_lock(&p->lock);
	rq->cancelled = cancelled;
	rq->res = NULL;
	rq->detached = 1;
	rq->done = 1;
	rq->expired_at = clock_mono();
	pthread_cond_signal(&rq->cond);
	pthread_mutex_unlock(&p->lock);
	if (rq->st == RQ_OPEN) {
		ssh_request_complete(s, rq); /* detached: frees it */
		return 1;
	}
	if (rq->st < RQ_CLOSE)
		rq->st = RQ_CLOSE;
	return 0;
}

/* Queued requests take free channel slots, oldest first. */
static void admit_queued(struct session *s)
{
	pthread_mutex_lock(&s->pool->lock);
	while (s->queue && s->nactive < s->max_ch) {
		struct request *rq = s->queue;
		s->queue = rq->next;
		if (!s->queue)
			s->queue_tail = NULL;
		s->queued--;
		rq->next = NULL;
		s->active[s->nactive++] = rq;
	}
	pthread_mutex_unlock(&s->pool->lock);
}

/* Back to the head of the queue until a channel frees up. */
static void requeue_first(struct session *s, struct request *rq)
{
	pthread_mutex_lock(&s->pool->lock);
	rq->next = s->queue;
	s->queue = rq;
	if (!s->queue_tail)
		s->queue_tail = rq;
	s->queued++;
	pthread_mutex_unlock(&s->pool->lock);
}

/* One turn for one active request. Returns 1 when it leaves the active set
 * (finished, expired before it had a channel, given up, or requeued). */
static int drive_one(struct session *s, struct request *rq, double now, int stopping, int cancelled)
{
	if (((rq->deadline && now > rq->deadline) || cancelled) && !rq->detached && expire(s, rq, cancelled))
		return 1;
	/* The server confirms a channel's close only when the command ends,
	 * which an expired command may never do: give the channel up (the
	 * session frees it when it is recycled) instead of holding the slot. */
	if (rq->detached && rq->st >= RQ_CLOSE && (stopping || now - rq->expired_at > 5)) {
		s->abandoned++;
		ssh_request_complete(s, rq);
		return 1;
	}
	int r = progress(s, rq);
	if (r == 2)
		requeue_first(s, rq);
	else if (r < 0)
		ssh_session_broken(s, ssh_lib_error(s->s));
	return r == 1 || r == 2;
}

void ssh_channels_drive(struct session *s, int stopping, int cancelled)
{
	admit_queued(s);
	double now = clock_mono();
	for (int i = 0; i < s->nactive && s->connected; i++) {
		if (drive_one(s, s->active[i], now, stopping, cancelled))
			s->active[i--] = s->active[--s->nactive];
	}
}
