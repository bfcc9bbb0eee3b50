/* log: JSON-lines logging on stderr, one line per event, thread-safe.
 * Owns the level threshold. Never receives secrets: callers pass only
 * redacted text (the Lua side masks values before they reach here). */
#ifndef MRPROV_LOG_H
#define MRPROV_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARNING, LOG_ERROR };

/* Returns -1 for an unknown name. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level level);
void log_set_level(enum log_level level);
int log_enabled(enum log_level level);

/* fields_json: NULL or the inside of a JSON object (`"k":"v","n":1`), appended as is. */
void log_write(enum log_level level, const char *msg, const char *fields_json);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
