/* Unit tests for src/lua/sources.c: a generation's files, read once and
 * served from memory however the files change afterwards. */
#include "check.h"
#include "lua/sources.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64];

static void put(const char *rel, const char *text)
{
	char path[256];
	snprintf(path, sizeof path, "%s/%s", root, rel);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
}

static void dir(const char *rel)
{
	char path[256];
	snprintf(path, sizeof path, "%s/%s", root, rel);
	mkdir(path, 0700);
}

int main(void)
{
	snprintf(root, sizeof root, "/tmp/mrprov-sources-XXXXXX");
	if (!mkdtemp(root))
		return 1;
	dir("lua");
	dir("lua/resources");
	dir("lua/pkg");
	dir("tiers");
	dir("profiles");
	put("profiles/split.lua", "return { build = 1 }\n");
	put("lua/boot.lua", "return 1\n");
	put("lua/resources/app.lua", "return 'app'\n");
	put("lua/pkg/init.lua", "return 'pkg'\n");
	put("lua/.hidden.lua", "return 'hidden'\n");
	put("tiers/starter.lua", "return { name = 'starter' }\n");
	put("tiers/free.lua", "return { name = 'free' }\n");
	put("tiers/notes.txt", "not read\n");

	char lua_dir[128], tiers_dir[128], profiles_dir[128], hooks_dir[128], path[256];
	snprintf(lua_dir, sizeof lua_dir, "%s/lua", root);
	snprintf(tiers_dir, sizeof tiers_dir, "%s/tiers/", root); /* a trailing '/' is the same directory */
	snprintf(hooks_dir, sizeof hooks_dir, "%s/hooks", root);   /* missing */
	snprintf(profiles_dir, sizeof profiles_dir, "%s/profiles", root);
	struct sources *s = sources_read(lua_dir, tiers_dir, profiles_dir, hooks_dir, NULL);

	/* Edits after the read are not seen. */
	put("profiles/split.lua", "edited (\n");
	put("tiers/free.lua", "this is not Lua (\n");
	put("tiers/team.lua", "return { name = 'team' }\n");
	put("lua/resources/app.lua", "error('edited')\n");

	size_t n = 0, len = 0;
	const char *err = NULL, *file = NULL;
	snprintf(path, sizeof path, "%s/tiers", root);
	const char *const *names = sources_list(s, path, &n, &err);
	CHECK(names != NULL && n == 3);
	if (names && n == 3) {
		CHECK_STR(names[0], "free.lua");
		CHECK_STR(names[1], "notes.txt");
		CHECK_STR(names[2], "starter.lua");
	}
	/* PROFILES_DIR is read like TIERS_DIR: its listing and its *.lua as they were. */
	snprintf(path, sizeof path, "%s/profiles", root);
	names = sources_list(s, path, &n, &err);
	CHECK(names != NULL && n == 1);
	snprintf(path, sizeof path, "%s/profiles/split.lua", root);
	CHECK_STR(sources_file(s, path, &len, &err), "return { build = 1 }\n");
	snprintf(path, sizeof path, "%s//tiers//free.lua", root);
	const char *data = sources_file(s, path, &len, &err);
	CHECK_STR(data, "return { name = 'free' }\n");
	CHECK(len == strlen("return { name = 'free' }\n"));
	snprintf(path, sizeof path, "%s/tiers/notes.txt", root); /* only *.lua are kept */
	CHECK(sources_file(s, path, &len, &err) == NULL && err == NULL);
	snprintf(path, sizeof path, "%s/tiers/team.lua", root);
	CHECK(sources_file(s, path, &len, &err) == NULL && err == NULL);

	CHECK(sources_list(s, hooks_dir, &n, &err) == NULL);
	CHECK(err != NULL && strstr(err, "No such file or directory") != NULL);

	const char *mod_path = NULL;
	CHECK_STR(sources_module(s, "resources.app", &len, &mod_path, &err), "return 'app'\n");
	snprintf(path, sizeof path, "%s/lua/resources/app.lua", root);
	CHECK_STR(mod_path, path);
	CHECK_STR(sources_module(s, "pkg", &len, &mod_path, &err), "return 'pkg'\n");
	CHECK(sources_module(s, "missing", &len, &mod_path, &err) == NULL && err == NULL);
	CHECK(sources_module(s, ".hidden", &len, &mod_path, &err) == NULL);

	/* A reference keeps the files alive after the reader lets go. */
	sources_ref(s);
	sources_unref(s);
	file = sources_module(s, "boot", &len, &mod_path, &err);
	CHECK_STR(file, "return 1\n");
	sources_unref(s);

	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", root);
	CHECK(system(cmd) == 0);
	return check_done();
}
