/* log: JSON lines on stderr with an ISO-8601 UTC timestamp. */
#include "log.h"
#include "sbuf.h"
#include "util/clock.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *const names[] = { "DEBUG", "INFO", "WARNING", "ERROR" };
static enum log_level threshold = LOG_INFO;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

int log_level_parse(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (strcasecmp(name, names[i]) == 0)
			return i;
	if (strcasecmp(name, "WARN") == 0)
		return LOG_WARNING;
	return -1;
}

const char *log_level_name(enum log_level level)
{
	return names[level];
}

void log_set_level(enum log_level level)
{
	threshold = level;
}

int log_enabled(enum log_level level)
{
	return level >= threshold;
}

void log_write(enum log_level level, const char *msg, const char *fields_json)
{
	if (!log_enabled(level))
		return;
	char ts[CLOCK_ISO_LEN];
	clock_iso(-1, ts);

	struct sbuf b;
	sbuf_init(&b);
	sbuf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, names[level]);
	sbuf_add_json_string(&b, msg, strlen(msg));
	if (fields_json && *fields_json) {
		sbuf_addc(&b, ',');
		sbuf_adds(&b, fields_json);
	}
	sbuf_adds(&b, "}\n");
	pthread_mutex_lock(&out_lock);
	fwrite(b.data, 1, b.len, stderr);
	fflush(stderr);
	pthread_mutex_unlock(&out_lock);
	sbuf_free(&b);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	log_write(level, msg, NULL);
}
