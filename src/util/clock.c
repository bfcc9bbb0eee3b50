/* clock: clock_gettime wrappers. */
#include "util/clock.h"

#include <stdio.h>
#include <time.h>

static double seconds(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double clock_mono(void)
{
	return seconds(CLOCK_MONOTONIC);
}

double clock_real(void)
{
	return seconds(CLOCK_REALTIME);
}

void clock_iso(double epoch, char out[CLOCK_ISO_LEN])
{
	struct timespec ts;
	if (epoch < 0) {
		clock_gettime(CLOCK_REALTIME, &ts);
	} else {
		ts.tv_sec = (time_t)epoch;
		ts.tv_nsec = (long)((epoch - (double)ts.tv_sec) * 1e9);
	}
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, CLOCK_ISO_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, CLOCK_ISO_LEN - n, ".%03ldZ", ts.tv_nsec / 1000000);
}
