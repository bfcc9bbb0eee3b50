/* jobs: the worker pool. WORKERS threads each own a Lua state; a worker
 * claims the next queued job from the store and runs `worker.run(id)` in
 * Lua. Owns waking, waiting for a job and graceful stop; never runs two jobs
 * of one subscription at once (the claim query skips them). */
#ifndef MRPROV_JOBS_H
#define MRPROV_JOBS_H

#include <stddef.h>

int jobs_start(int nworkers, char *err, size_t errlen);
/* Wakes idle workers (a job was queued). */
void jobs_notify(void);
/* 1 when job id finished within secs, 0 on timeout, -1 unknown job. */
int jobs_wait(const char *id, double secs);
/* Shutdown, first step: no job is claimed any more; running jobs see
 * jobs_stopping() and stop at their next checkpoint; jobs_sleep returns. */
void jobs_request_stop(void);
/* 1 once a stop was requested. */
int jobs_stopping(void);
/* Sleeps secs unless a stop is requested; 1 when it slept, 0 when woken by it. */
int jobs_sleep(double secs);
/* Requests the stop, waits up to grace_s for the workers to leave, and joins
 * them when all did. Returns the number still running (not joined: their
 * threads and states are left alone; the caller must not free what they use). */
int jobs_stop(double grace_s);
/* Number of workers running a job now. */
int jobs_busy(void);

#endif
