/* libcurl: loads libcurl the first time it is needed (the Supabase outbox,
 * `mrprov version`), so a service without SUPABASE_URL never maps it nor
 * the libraries it pulls in (libssl, krb5, ldap, nghttp2, ...: about 1.5 MB
 * of resident pages). Owns the handle of the library; never unloads it. */
#ifndef MRPROV_LIBCURL_H
#define MRPROV_LIBCURL_H

#include <curl/curl.h>
#include <stddef.h>

struct libcurl {
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *h, CURLoption opt, ...);
	CURLcode (*easy_perform)(CURL *h);
	CURLcode (*easy_getinfo)(CURL *h, CURLINFO info, ...);
	void (*easy_reset)(CURL *h);
	void (*easy_cleanup)(CURL *h);
	const char *(*easy_strerror)(CURLcode rc);
	struct curl_slist *(*slist_append)(struct curl_slist *list, const char *s);
	void (*slist_free_all)(struct curl_slist *list);
	curl_version_info_data *(*version_info)(CURLversion v);
};

/* The library, loaded and curl_global_init'ed once; NULL when it cannot be
 * loaded, with the reason in err (when not NULL). Thread-safe. */
const struct libcurl *libcurl_get(char *err, size_t errlen);

#endif
