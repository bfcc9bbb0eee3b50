/* store errors: the write the file system refused last, for /ready and the
 * API's 503 (store_writable). */
#include "store.h"
#include "store_internal.h"
#include "util/clock.h"

#include <pthread.h>
#include <stdio.h>

/* The last write the file system refused (disk full, I/O error, read-only),
 * until a transaction commits again or 60 s pass without another. Noted
 * where statements fail: store_exec_sql (COMMIT), the job claim, and Lua's
 * store.exec / store.tx. */
static pthread_mutex_t problem_lock = PTHREAD_MUTEX_INITIALIZER;
static char write_problem[160];
static double problem_at; /* clock_mono() of the last refusal */

void store_note_error(int code)
{
	int primary = code & 0xff;
	if (primary != SQLITE_FULL && primary != SQLITE_IOERR && primary != SQLITE_READONLY)
		return;
	pthread_mutex_lock(&problem_lock);
	snprintf(write_problem, sizeof write_problem, "%s", sqlite3_errstr(code));
	problem_at = clock_mono();
	pthread_mutex_unlock(&problem_lock);
}

void store_clear_problem(void)
{
	pthread_mutex_lock(&problem_lock);
	write_problem[0] = '\0';
	pthread_mutex_unlock(&problem_lock);
}

int store_writable(char *reason, size_t reasonlen)
{
	pthread_mutex_lock(&problem_lock);
	int trouble = write_problem[0] != '\0' && clock_mono() - problem_at < 60;
	if (trouble)
		snprintf(reason, reasonlen, "the state store cannot be written: %s", write_problem);
	pthread_mutex_unlock(&problem_lock);
	return trouble ? -1 : 0;
}

