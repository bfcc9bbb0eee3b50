/* fuzz_pgrst_error: a PostgREST (or gateway) error body — remote text —
 * through pgrst_error_line (src/supabase/client.c, a hand-written field
 * extractor) into a 400-byte line as the outbox does, then through the JSON
 * string escaping the log line gets (sbuf_add_json_string). The input is
 * NUL-terminated at its length, as a response sbuf is. Invariants: the line
 * fits its buffer; the escaped form is one JSON string literal (no raw
 * control character, no unescaped quote before the closing one). */
#include "supabase/client.h"
#include "util/sbuf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_json_string(const char *s, size_t n)
{
	if (n < 2 || s[0] != '"' || s[n - 1] != '"')
		abort();
	for (size_t i = 1; i < n - 1; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == '"')
			abort();
		if (c == '\\') {
			i++;
			if (i >= n - 1 || !strchr("\"\\/bfnrtu", s[i]))
				abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = malloc(size + 1);
	if (!body)
		abort();
	memcpy(body, data, size);
	body[size] = '\0';
	/* The outbox's size, and a tight one for the truncation paths. */
	static const size_t sizes[] = { 400, 16, 1 };
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		char *line = malloc(sizes[k]);
		if (!line)
			abort();
		pgrst_error_line(body, size, line, sizes[k]);
		size_t n = strnlen(line, sizes[k]);
		if (n >= sizes[k])
			abort();
		struct sbuf b;
		sbuf_init(&b);
		sbuf_add_json_string(&b, line, n);
		check_json_string(b.data, b.len);
		sbuf_free(&b);
		free(line);
	}
	free(body);
	return 0;
}
