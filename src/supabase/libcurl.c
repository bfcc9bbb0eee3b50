/* libcurl: dlopen on first use, one table of entry points. */
#include "supabase/libcurl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#ifndef MRPROV_LIBCURL_SONAME
#define MRPROV_LIBCURL_SONAME "libcurl.so.4"
#endif

static struct libcurl lib;
static int loaded;
static char load_error[256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* POSIX leaves a data→function pointer conversion to the implementation;
 * dlsym's own documentation uses this form. */
#define BIND(field, name)                                                                                  \
	do {                                                                                               \
		void *sym = dlsym(h, name);                                                                \
		if (!sym) {                                                                                \
			snprintf(load_error, sizeof load_error, "%s: no symbol %s", MRPROV_LIBCURL_SONAME, name); \
			return;                                                                            \
		}                                                                                          \
		*(void **)(&lib.field) = sym;                                                              \
	} while (0)

static void load(void)
{
	void *h = dlopen(MRPROV_LIBCURL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *why = dlerror();
		snprintf(load_error, sizeof load_error, "cannot load libcurl: %s", why ? why : MRPROV_LIBCURL_SONAME);
		return;
	}
	CURLcode (*global_init)(long);
	*(void **)(&global_init) = dlsym(h, "curl_global_init");
	if (!global_init) {
		snprintf(load_error, sizeof load_error, "%s: no symbol curl_global_init", MRPROV_LIBCURL_SONAME);
		return;
	}
	BIND(easy_init, "curl_easy_init");
	BIND(easy_setopt, "curl_easy_setopt");
	BIND(easy_perform, "curl_easy_perform");
	BIND(easy_getinfo, "curl_easy_getinfo");
	BIND(easy_reset, "curl_easy_reset");
	BIND(easy_cleanup, "curl_easy_cleanup");
	BIND(easy_strerror, "curl_easy_strerror");
	BIND(slist_append, "curl_slist_append");
	BIND(slist_free_all, "curl_slist_free_all");
	BIND(version_info, "curl_version_info");
	global_init(CURL_GLOBAL_DEFAULT);
	loaded = 1;
}

const struct libcurl *libcurl_get(char *err, size_t errlen)
{
	pthread_once(&once, load);
	if (!loaded && err)
		snprintf(err, errlen, "%s", load_error);
	return loaded ? &lib : NULL;
}
