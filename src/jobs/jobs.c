/* jobs: worker threads, wake-ups and waiting for a job to finish. */
#include "jobs/jobs.h"
#include "lua/runtime.h"
#include "store/store.h"
#include "util/log.h"
#include "util/xalloc.h"

#include <errno.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct worker {
	pthread_t thread;
	int index;
	lua_State *L;
	atomic_int busy;
	atomic_int done; /* thread has left its loop */
};

static struct worker *workers;
static int nworkers;
static atomic_int stopping;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;	   /* a job was queued */
static pthread_cond_t finished = PTHREAD_COND_INITIALIZER; /* a job finished */
static unsigned long wake_seq;

static void deadline_in(struct timespec *ts, double secs)
{
	clock_gettime(CLOCK_REALTIME, ts);
	long long ns = (long long)ts->tv_nsec + (long long)(secs * 1e9);
	ts->tv_sec += (time_t)(ns / 1000000000LL);
	ts->tv_nsec = (long)(ns % 1000000000LL);
}

void jobs_notify(void)
{
	pthread_mutex_lock(&lock);
	wake_seq++;
	pthread_cond_broadcast(&wake);
	pthread_mutex_unlock(&lock);
}

int jobs_stopping(void)
{
	return atomic_load(&stopping);
}

int jobs_sleep(double secs)
{
	struct timespec end;
	deadline_in(&end, secs);
	pthread_mutex_lock(&lock);
	int rc = 0;
	while (!atomic_load(&stopping) && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&wake, &lock, &end);
	pthread_mutex_unlock(&lock);
	return atomic_load(&stopping) ? 0 : 1;
}

int jobs_wait(const char *id, double secs)
{
	struct timespec end;
	deadline_in(&end, secs);
	for (;;) {
		int f = store_job_finished(id);
		if (f != 0)
			return f;
		/* Shutting down: the job will not finish in this process. */
		if (atomic_load(&stopping))
			return 0;
		pthread_mutex_lock(&lock);
		/* Re-check at least every 200 ms: a job may finish between the
		 * query above and the wait below. */
		struct timespec slice;
		deadline_in(&slice, 0.2);
		if (slice.tv_sec > end.tv_sec || (slice.tv_sec == end.tv_sec && slice.tv_nsec > end.tv_nsec))
			slice = end;
		int rc = pthread_cond_timedwait(&finished, &lock, &slice);
		pthread_mutex_unlock(&lock);
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		if (rc == ETIMEDOUT && (now.tv_sec > end.tv_sec ||
					(now.tv_sec == end.tv_sec && now.tv_nsec >= end.tv_nsec)))
			return store_job_finished(id) == 1 ? 1 : 0;
	}
}

/* Makes sure the worker's state exists and is on the current generation,
 * between jobs. */
static int refresh_state(struct worker *w)
{
	if (w->L && rt_state_generation(w->L) == rt_generation())
		return 0;
	char err[1024];
	lua_State *L = rt_new_state(err, sizeof err);
	if (!L) {
		log_error("worker %d: cannot load the Lua configuration: %s", w->index, err);
		return w->L ? 0 : -1; /* keep the old state if there is one */
	}
	if (w->L)
		rt_close_state(w->L);
	w->L = L;
	return 0;
}

static void run_job(struct worker *w, const char *id)
{
	char err[2048];
	if (refresh_state(w) < 0) {
		store_job_fail(id, "the Lua configuration could not be loaded");
		return;
	}
	lua_State *L = w->L;
	int top = lua_gettop(L);
	if (rt_getfunc(L, "worker", "run", err, sizeof err) == 0) {
		lua_pushstring(L, id);
		if (rt_pcall(L, 1, 0, err, sizeof err) == 0) {
			lua_settop(L, top);
			return;
		}
	}
	log_error("job %s: worker script failed: %s", id, err);
	/* The failure must be recorded, or the job would look running for ever:
	 * while the store refuses it (disk full), retry with backoff; a stop
	 * leaves the job running, to be requeued on the next start. */
	for (double delay = 0.5; store_job_fail(id, err) < 0;) {
		if (!jobs_sleep(delay))
			break;
		delay = delay < 5 ? delay * 2 : 10;
	}
	lua_settop(L, top);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char id[128];
	while (!atomic_load(&stopping)) {
		pthread_mutex_lock(&lock);
		unsigned long seen = wake_seq;
		pthread_mutex_unlock(&lock);

		int got = store_job_claim(id, sizeof id);
		if (got == 1) {
			atomic_store(&w->busy, 1);
			log_debug("worker %d: running job %s", w->index, id);
			run_job(w, id);
			atomic_store(&w->busy, 0);
			pthread_mutex_lock(&lock);
			pthread_cond_broadcast(&finished);
			/* another job of this subscription may now be claimable */
			wake_seq++;
			pthread_cond_broadcast(&wake);
			pthread_mutex_unlock(&lock);
			continue;
		}
		/* Nothing to do: sleep until notified (or 1 s, to pick up jobs
		 * queued by another process on the same store). */
		pthread_mutex_lock(&lock);
		if (seen == wake_seq && !atomic_load(&stopping)) {
			struct timespec ts;
			deadline_in(&ts, 1.0);
			pthread_cond_timedwait(&wake, &lock, &ts);
		}
		pthread_mutex_unlock(&lock);
	}
	if (w->L) {
		rt_close_state(w->L);
		w->L = NULL;
	}
	atomic_store(&w->done, 1);
	return NULL;
}

int jobs_start(int n, char *err, size_t errlen)
{
	int requeued = store_jobs_requeue();
	if (requeued > 0)
		log_info("jobs: resuming %d unfinished job(s)", requeued);
	workers = xcalloc((size_t)n, sizeof *workers);
	nworkers = n;
	for (int i = 0; i < n; i++) {
		/* A worker builds its Lua state before its first job (refresh_state),
		 * from the generation's sources kept in memory: an idle worker costs
		 * no state, and a late state still sees what the reload checked. */
		workers[i].index = i;
		if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
			snprintf(err, errlen, "cannot start worker thread %d", i);
			nworkers = i;
			jobs_stop(0);
			return -1;
		}
	}
	return 0;
}

int jobs_busy(void)
{
	int busy = 0;
	for (int i = 0; i < nworkers; i++)
		busy += atomic_load(&workers[i].busy);
	return busy;
}

void jobs_request_stop(void)
{
	atomic_store(&stopping, 1);
	jobs_notify();
	pthread_mutex_lock(&lock);
	pthread_cond_broadcast(&finished);
	pthread_mutex_unlock(&lock);
}

int jobs_stop(double grace_s)
{
	jobs_request_stop();
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	int still = 0;
	for (;;) {
		int alive = 0;
		for (int i = 0; i < nworkers; i++)
			alive += !atomic_load(&workers[i].done);
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		double elapsed = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
		if (alive == 0 || elapsed >= grace_s) {
			still = alive;
			break;
		}
		struct timespec nap = { 0, 20 * 1000 * 1000 };
		nanosleep(&nap, NULL);
	}
	if (still == 0) {
		for (int i = 0; i < nworkers; i++)
			pthread_join(workers[i].thread, NULL);
		free(workers);
		workers = NULL;
		nworkers = 0;
	}
	return still;
}
