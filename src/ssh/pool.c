/* ssh_pool: the public API (src/ssh/pool.h). Creates the pool and one
 * thread per session (session.c), hands each command to the least loaded
 * session and waits for it, reports the pool's state, cancels and frees.
 * Host keys: hostkey.c; channels: channel.c; shared types: pool_internal.h. */
#define _GNU_SOURCE
#include "ssh/pool_internal.h"
#include "util/clock.h"
#include "util/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void lib_init(void)
{
	libssh2_init(0);
}

static void wake(struct session *s)
{
	char c = 1;
	ssize_t r = write(s->wake[1], &c, 1);
	(void)r;
}

struct ssh_pool *ssh_pool_new(const struct ssh_pool_opts *o, char *err, size_t errlen)
{
	pthread_once(&init_once, lib_init);
	struct ssh_pool *p = xcalloc(1, sizeof *p);
	p->name = xstrdup(o->name ? o->name : "default");
	p->host = xstrdup(o->host);
	p->user = xstrdup(o->user);
	p->key_path = xstrdup(o->key_path);
	p->known_hosts = xstrdup(o->known_hosts);
	p->port = o->port;
	p->tofu = o->host_key_tofu;
	p->connect_timeout_s = o->connect_timeout_s > 0 ? o->connect_timeout_s : SSH_POOL_CONNECT_TIMEOUT_S;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->kh_lock, NULL);
	p->n = o->sessions > 0 ? o->sessions : 1;
	p->sess = xcalloc((size_t)p->n, sizeof *p->sess);
	int channels = o->channels > 0 ? o->channels : SSH_POOL_CHANNELS;
	if (channels > MAX_CHANNELS)
		channels = MAX_CHANNELS;
	for (int i = 0; i < p->n; i++) {
		struct session *s = &p->sess[i];
		s->pool = p;
		s->index = i;
		s->sock = -1;
		s->max_ch = channels;
		if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
			snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
			p->n = i;
			ssh_pool_free(p);
			return NULL;
		}
		if (pthread_create(&s->thread, NULL, ssh_session_main, s) != 0) {
			snprintf(err, errlen, "cannot start an SSH thread");
			close(s->wake[0]);
			close(s->wake[1]);
			p->n = i;
			ssh_pool_free(p);
			return NULL;
		}
	}
	return p;
}

/* The least loaded connected session, else the least loaded. Caller holds
 * p->lock. */
static struct session *least_loaded(struct ssh_pool *p)
{
	struct session *best = NULL;
	int best_load = 1 << 30;
	for (int pass = 0; pass < 2 && !best; pass++) {
		for (int i = 0; i < p->n; i++) {
			struct session *s = &p->sess[i];
			int load = s->queued + s->nactive;
			if ((pass == 0 && !s->connected) || load >= best_load)
				continue;
			best = s;
			best_load = load;
		}
	}
	return best;
}

int ssh_pool_run(struct ssh_pool *p, const char *cmd, double timeout_s, int out_fd, struct ssh_result *res)
{
	return ssh_pool_run_input(p, cmd, NULL, 0, timeout_s, out_fd, res);
}

static int run_request(struct ssh_pool *p, struct request *rq, double timeout_s, int out_fd,
		       struct ssh_result *res);

static struct request *new_request(const char *cmd, struct ssh_result *res)
{
	memset(res, 0, sizeof *res);
	res->exit_code = -1;
	sbuf_init(&res->out);
	sbuf_init(&res->err);
	struct request *rq = xcalloc(1, sizeof *rq);
	rq->cmd = xstrdup(cmd);
	rq->in_fd = -1;
	return rq;
}

int ssh_pool_run_input(struct ssh_pool *p, const char *cmd, const char *in, size_t in_len, double timeout_s,
		       int out_fd, struct ssh_result *res)
{
	struct request *rq = new_request(cmd, res);
	if (in) {
		rq->in = xmalloc(in_len ? in_len : 1);
		memcpy(rq->in, in, in_len);
		rq->in_len = in_len;
	}
	return run_request(p, rq, timeout_s, out_fd, res);
}

int ssh_pool_run_fd(struct ssh_pool *p, const char *cmd, int in_fd, double timeout_s, int out_fd,
		    struct ssh_result *res)
{
	struct request *rq = new_request(cmd, res);
	/* a request given up at its deadline outlives the caller's descriptor */
	rq->in_fd = fcntl(in_fd, F_DUPFD_CLOEXEC, 0);
	if (rq->in_fd < 0) {
		snprintf(res->error, sizeof res->error, "cannot read the command's input: %s", strerror(errno));
		ssh_request_free(rq);
		return -1;
	}
	rq->in = xmalloc(SSH_INPUT_CHUNK); /* in_len = 0: the first write reads */
	return run_request(p, rq, timeout_s, out_fd, res);
}

static int run_request(struct ssh_pool *p, struct request *rq, double timeout_s, int out_fd,
		       struct ssh_result *res)
{
	rq->deadline = timeout_s > 0 ? clock_mono() + timeout_s : 0;
	rq->out_fd = out_fd;
	rq->res = res;
	pthread_cond_init(&rq->cond, NULL);

	pthread_mutex_lock(&p->lock);
	if (p->stopping || p->cancelled) {
		pthread_mutex_unlock(&p->lock);
		snprintf(res->error, sizeof res->error, "cancelled: shutting down");
		res->transient = 1;
		ssh_request_free(rq);
		return -1;
	}
	struct session *best = least_loaded(p);
	if (best->queue_tail)
		best->queue_tail->next = rq;
	else
		best->queue = rq;
	best->queue_tail = rq;
	best->queued++;
	pthread_mutex_unlock(&p->lock);
	wake(best);

	pthread_mutex_lock(&p->lock);
	while (!rq->done)
		pthread_cond_wait(&rq->cond, &p->lock);
	int detached = rq->detached;
	int cancelled = rq->cancelled;
	pthread_mutex_unlock(&p->lock);
	if (detached && cancelled) {
		snprintf(res->error, sizeof res->error, "cancelled: shutting down");
		res->transient = 1;
	} else if (detached && timeout_s > 0) {
		snprintf(res->error, sizeof res->error, "timed out after %.0f s", timeout_s);
		res->transient = 1;
	}
	if (!detached)
		ssh_request_free(rq);
	return res->error[0] ? -1 : 0;
}

void ssh_result_free(struct ssh_result *res)
{
	sbuf_free(&res->out);
	sbuf_free(&res->err);
}

int ssh_pool_connected(struct ssh_pool *p)
{
	int n = 0;
	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < p->n; i++)
		n += p->sess[i].connected;
	pthread_mutex_unlock(&p->lock);
	return n;
}

double ssh_pool_last_ok(struct ssh_pool *p)
{
	pthread_mutex_lock(&p->lock);
	double t = p->last_ok;
	pthread_mutex_unlock(&p->lock);
	return t;
}

void ssh_pool_last_error(struct ssh_pool *p, char *out, size_t outlen)
{
	pthread_mutex_lock(&p->lock);
	snprintf(out, outlen, "%s", p->last_error);
	pthread_mutex_unlock(&p->lock);
}

void ssh_pool_host_key(struct ssh_pool *p, char *out, size_t outlen)
{
	pthread_mutex_lock(&p->lock);
	snprintf(out, outlen, "%s", p->host_key);
	pthread_mutex_unlock(&p->lock);
}

void ssh_pool_cancel(struct ssh_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->cancelled = 1;
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n; i++)
		wake(&p->sess[i]);
}

void ssh_pool_free(struct ssh_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->n; i++) {
		wake(&p->sess[i]);
		pthread_join(p->sess[i].thread, NULL);
		close(p->sess[i].wake[0]);
		close(p->sess[i].wake[1]);
	}
	free(p->sess);
	free(p->name);
	free(p->host);
	free(p->user);
	free(p->key_path);
	free(p->known_hosts);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->kh_lock);
	free(p);
}
