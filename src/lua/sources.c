/* sources: one generation's files, read once and kept in memory. */
#include "lua/sources.h"
#include "util/fs.h"
#include "util/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_DEPTH 8

struct entry {
	char *path; /* normalised: no repeated or trailing '/' */
	int is_dir;
	char **names; /* is_dir: sorted, no dot files */
	size_t n;
	char *data; /* a file: its bytes, NUL-terminated */
	size_t len;
	char *err; /* could not be read: "path: reason" */
};

struct sources {
	atomic_int refs;
	char *lua_dir;
	struct entry *e;
	size_t n, cap;
};

/* Copies path into out (size outlen) without repeated or trailing '/'; -1
 * when it does not fit. */
static int normalise(const char *path, char *out, size_t outlen)
{
	size_t o = 0;
	for (const char *p = path; *p; p++) {
		if (*p == '/' && o > 0 && out[o - 1] == '/')
			continue;
		if (o + 1 >= outlen)
			return -1;
		out[o++] = *p;
	}
	while (o > 1 && out[o - 1] == '/')
		o--;
	out[o] = '\0';
	return 0;
}

static const struct entry *find(const struct sources *s, const char *path)
{
	char key[4096];
	if (normalise(path, key, sizeof key) < 0)
		return NULL;
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->e[i].path, key) == 0)
			return &s->e[i];
	return NULL;
}

static struct entry *add(struct sources *s, const char *path)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->e = xrealloc(s->e, s->cap * sizeof *s->e);
	}
	struct entry *e = &s->e[s->n++];
	memset(e, 0, sizeof *e);
	e->path = xstrdup(path);
	return e;
}

static char *error_text(const char *path, int errnum)
{
	size_t n = strlen(path) + strlen(strerror(errnum)) + 3;
	char *m = xmalloc(n);
	snprintf(m, n, "%s: %s", path, strerror(errnum));
	return m;
}

static void read_one(struct sources *s, const char *path)
{
	struct entry *e = add(s, path);
	/* As a read to EOF: a read error keeps what was read (a directory: ""). */
	if (fs_read_file(path, &e->data, &e->len) < 0)
		e->err = error_text(path, errno);
}

static int cmpstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files a generation holds: Lua, and the Python scripts LUA_DIR ships
 * into containers (Python files of resources/lib, issue 14), so a SIGHUP reload takes
 * a changed script along with the Lua that sends it. */
static int ends_with_lua(const char *name)
{
	size_t n = strlen(name);
	return (n > 4 && strcmp(name + n - 4, ".lua") == 0) || (n > 3 && strcmp(name + n - 3, ".py") == 0);
}

/* Reads dir's listing and its *.lua files; with depth > 0, its
 * subdirectories too (LUA_DIR's modules such as resources/app.lua). */
static void read_dir(struct sources *s, const char *dir, int depth)
{
	char key[4096];
	if (normalise(dir, key, sizeof key) < 0 || find(s, key))
		return;
	size_t di = s->n;
	add(s, key);
	DIR *d = opendir(key);
	if (!d) {
		s->e[di].err = error_text(key, errno);
		return;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			names = xrealloc(names, cap * sizeof *names);
		}
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof *names, cmpstr);
	s->e[di].is_dir = 1;
	s->e[di].names = names;
	s->e[di].n = n;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		if ((size_t)snprintf(path, sizeof path, "%s/%s", key, names[i]) >= sizeof path)
			continue;
		struct stat st;
		if (ends_with_lua(names[i]))
			read_one(s, path);
		else if (depth > 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			read_dir(s, path, depth - 1);
	}
}

struct sources *sources_read(const char *lua_dir, const char *tiers_dir, const char *profiles_dir,
			     const char *hooks_dir, const char *hosts_dir)
{
	struct sources *s = xcalloc(1, sizeof *s);
	atomic_init(&s->refs, 1);
	char key[4096];
	s->lua_dir = xstrdup(normalise(lua_dir, key, sizeof key) == 0 ? key : lua_dir);
	read_dir(s, lua_dir, MAX_DEPTH);
	read_dir(s, tiers_dir, 0);
	read_dir(s, profiles_dir, 0);
	read_dir(s, hooks_dir, 0);
	if (hosts_dir)
		read_dir(s, hosts_dir, 0);
	return s;
}

void sources_ref(struct sources *s)
{
	atomic_fetch_add(&s->refs, 1);
}

void sources_unref(struct sources *s)
{
	if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	for (size_t i = 0; i < s->n; i++) {
		struct entry *e = &s->e[i];
		for (size_t k = 0; k < e->n; k++)
			free(e->names[k]);
		free(e->names);
		free(e->data);
		free(e->err);
		free(e->path);
	}
	free(s->e);
	free(s->lua_dir);
	free(s);
}

const char *const *sources_list(const struct sources *s, const char *dir, size_t *n, const char **err)
{
	const struct entry *e = find(s, dir);
	*n = 0;
	*err = e ? e->err : NULL;
	if (!e || e->err || !e->is_dir)
		return NULL;
	*n = e->n;
	return (const char *const *)e->names;
}

const char *sources_file(const struct sources *s, const char *path, size_t *len, const char **err)
{
	const struct entry *e = find(s, path);
	*len = 0;
	*err = e ? e->err : NULL;
	if (!e || e->err || e->is_dir)
		return NULL;
	*len = e->len;
	return e->data;
}

const char *sources_module(const struct sources *s, const char *name, size_t *len, const char **path,
			   const char **err)
{
	static const char *const forms[] = { "%s/%s.lua", "%s/%s/init.lua" };
	char rel[1024];
	if (snprintf(rel, sizeof rel, "%s", name) >= (int)sizeof rel)
		return NULL;
	for (char *p = rel; *p; p++)
		if (*p == '.')
			*p = '/';
	for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
		char full[4096];
		if ((size_t)snprintf(full, sizeof full, forms[i], s->lua_dir, rel) >= sizeof full)
			continue;
		const struct entry *e = find(s, full);
		if (!e || e->is_dir)
			continue;
		*path = e->path;
		*len = e->len;
		*err = e->err;
		return e->err ? NULL : e->data;
	}
	*err = NULL;
	return NULL;
}
