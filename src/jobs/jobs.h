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
/* Stops claiming, lets running jobs finish (up to grace_s), joins. Returns
 * the number of workers still busy when the grace period ended. */
int jobs_stop(double grace_s);
/* Number of workers running a job now. */
int jobs_busy(void);

#endif
