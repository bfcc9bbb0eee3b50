/* fuzz_token: the token allowlist of src/dokku/transport.c — what may cross
 * to Dokku as one argument. Invariant: whatever is accepted is non-empty, of
 * safe characters only ([A-Za-z0-9._:/=+@,-], so no space, quote, `$`, `;`,
 * NUL or newline), and not one of the words Dokku's SSH entry swallows;
 * whatever is refused says why. transport_run in dry-run then refuses an
 * argv holding a refused token before anything is recorded. */
#include "dokku/transport.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int safe_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
	       c == ':' || c == '/' || c == '=' || c == '+' || c == '@' || c == ',' || c == '-';
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char err[256];
	if (transport_init(TRANSPORT_DRY_RUN, NULL, NULL, err, sizeof err) < 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *reason = NULL;
	int ok = transport_token_ok((const char *)data, size, &reason);
	if (ok) {
		if (size == 0)
			abort();
		for (size_t i = 0; i < size; i++)
			if (!safe_char(data[i]))
				abort();
		static const char *const lost[] = { "-n", "-e", "-E", "--help", "--version" };
		for (size_t i = 0; i < sizeof lost / sizeof lost[0]; i++)
			if (strlen(lost[i]) == size && memcmp(data, lost[i], size) == 0)
				abort();
	} else if (!reason || !*reason) {
		abort();
	}

	/* The same bytes as an argv (split at NULs, as C strings are). */
	char *copy = malloc(size + 1);
	if (!copy)
		abort();
	memcpy(copy, data, size);
	copy[size] = '\0';
	const char *argv[8];
	int argc = 0;
	for (char *s = copy; argc < 8 && s <= copy + size; s += strlen(s) + 1)
		argv[argc++] = s;
	int all_ok = 1;
	for (int i = 0; i < argc; i++)
		all_ok &= transport_token_ok(argv[i], strlen(argv[i]), &reason);
	struct transport_result res;
	int rc = transport_run(argv, argc, 1, -1, &res);
	if ((rc == 0) != all_ok || (rc < 0 && !res.error[0]))
		abort();
	transport_result_free(&res);
	free(copy);
	return 0;
}
