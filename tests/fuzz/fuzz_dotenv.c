/* fuzz_dotenv: `.env` text (src/config.c). The input is the file: first the
 * in-memory parser with its invariants (names are identifiers, the error line
 * exists), then the whole config_load from a scratch file (defaults, numbers,
 * addresses, the API key list, the secret). */
#include "config.h"
#include "util/log.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[4096];

static void check_name(void *ud, const char *name, const char *value)
{
	int *n = ud;
	(*n)++;
	if (!*name || isdigit((unsigned char)*name) || !value)
		abort();
	for (const char *c = name; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '_')
			abort();
}

static void remove_scratch(void)
{
	unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* Only the input decides: nothing from the environment. */
	for (const struct config_var *v = config_vars; v->name; v++)
		unsetenv(v->name);
	log_set_level(LOG_ERROR);
	const char *tmp = getenv("TMPDIR");
	snprintf(path, sizeof path, "%s/mrprov-fuzz-dotenv-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	close(fd);
	atexit(remove_scratch);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int n = 0;
	int bad = config_parse_dotenv((const char *)data, size, check_name, &n);
	size_t lines = 0;
	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	lines += size && data[size - 1] != '\n';
	if (bad < 0 || (size_t)bad > lines)
		abort();
	if (bad)
		return 0;

	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
		abort();
	struct config c;
	char err[512];
	err[0] = '\0';
	if (config_load(&c, path, err, sizeof err) == 0) {
		if (config_get("PROVISIONER_SECRET"))
			config_load_secret(&c, 0, err, sizeof err);
	} else if (!err[0]) {
		abort(); /* a refusal always says why */
	}
	config_free(&c); /* also after a refusal: the API keys may be split already */
	return 0;
}
