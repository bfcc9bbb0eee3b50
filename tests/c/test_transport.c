/* Unit tests for src/dokku/transport.c: token safety, dry-run and local
 * execution with argv (no shell), exit codes, timeouts. */
#include "check.h"
#include "dokku/transport.h"

#include <fcntl.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int ok(const char *s)
{
	const char *reason;
	return transport_token_ok(s, strlen(s), &reason);
}

int main(void)
{
	CHECK(ok("apps:create"));
	CHECK(ok("mr-sub123-abc12345-backend"));
	CHECK(ok("MINDROOM_TIER=cHJvZmVzc2lvbmFs"));
	CHECK(ok("/var/lib/dokku/data/storage/mr-x:/app/data"));
	CHECK(ok("ghcr.io/tulir/tuwunel:latest"));
	CHECK(ok("--no-restart"));
	CHECK(!ok(""));
	CHECK(!ok("a b"));
	CHECK(!ok("a;b"));
	CHECK(!ok("$(id)"));
	CHECK(!ok("`id`"));
	CHECK(!ok("a'b"));
	CHECK(!ok("a\"b"));
	CHECK(!ok("a\nb"));
	CHECK(!ok("a|b"));
	CHECK(!ok("a&b"));
	CHECK(!ok("a\\b"));
	CHECK(!ok("-n"));
	/* issue 12 item 23: every word echo reads as options is lost too */
	CHECK(!ok("-e"));
	CHECK(!ok("-E"));
	CHECK(!ok("-ne"));
	CHECK(!ok("-eE"));
	CHECK(!ok("-nn"));
	CHECK(!ok("-Een"));
	CHECK(ok("-"));
	CHECK(ok("-f"));
	CHECK(ok("-nx"));
	CHECK(ok("--ne"));
	CHECK(!ok("--help"));
	const char *reason;
	CHECK(!transport_token_ok("a\0b", 3, &reason));

	char err[256];
	struct transport_result r;
	const char *argv1[] = { "apps:create", "mr-a-12345678" };
	CHECK(transport_init(TRANSPORT_DRY_RUN, NULL, NULL, err, sizeof err) == 0);
	CHECK(transport_run(argv1, 2, 5, -1, &r) == 0 && r.exit_code == 0 && r.out.len == 0);
	transport_result_free(&r);
	const char *bad[] = { "config:set", "app", "K=v;rm -rf /" };
	CHECK(transport_run(bad, 3, 5, -1, &r) < 0 && strstr(r.error, "argument 3"));
	transport_result_free(&r);

	/* issue 12 item 18: a command line over TRANSPORT_MAX_COMMAND is refused
	 * with its size (libssh2 cannot send it as one exec request) */
	static char big[TRANSPORT_MAX_COMMAND];
	memset(big, 'A', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	const char *long_cmd[] = { "c:s", big }; /* 3 + 1 + 32767 bytes, then 32763 */
	CHECK(transport_run(long_cmd, 2, 5, -1, &r) < 0 && strstr(r.error, "32771 bytes long"));
	transport_result_free(&r);
	big[sizeof big - 5] = '\0';
	CHECK(transport_run(long_cmd, 2, 5, -1, &r) == 0);
	transport_result_free(&r);

	CHECK(transport_init(TRANSPORT_SSH, NULL, NULL, err, sizeof err) < 0 && strstr(err, "DOKKU_HOST"));

	/* Local mode runs the program with an argv: /bin/echo prints exactly its arguments. */
	CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/bin/echo", err, sizeof err) == 0);
	const char *argv2[] = { "a:b", "$HOME" };
	/* `$HOME` is not a safe token, so it never reaches the program. */
	CHECK(transport_run(argv2, 2, 5, -1, &r) < 0);
	transport_result_free(&r);
	const char *argv3[] = { "a:b", "c=d" };
	CHECK(transport_run(argv3, 2, 5, -1, &r) == 0 && r.exit_code == 0);
	CHECK_STR(r.out.data, "a:b c=d\n");
	transport_result_free(&r);

	CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/bin/false", err, sizeof err) == 0);
	CHECK(transport_run(argv3, 2, 5, -1, &r) == 0 && r.exit_code == 1);
	transport_result_free(&r);

	CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/bin/sleep", err, sizeof err) == 0);
	const char *argv4[] = { "5" };
	CHECK(transport_run(argv4, 1, 0.2, -1, &r) < 0 && r.transient && strstr(r.error, "timed out"));
	transport_result_free(&r);

	CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/nonexistent/dokku", err, sizeof err) == 0);
	CHECK(transport_run(argv3, 2, 5, -1, &r) == 0 && r.exit_code == 127);
	transport_result_free(&r);

	/* A local `dokku` sees none of mrprov's settings, only what it needs
	 * to run (PATH, HOME, ...), and the umask mrprov was started with. */
	setenv("PROVISIONER_API_KEYS", "api-key-secret-1", 1);
	setenv("WEBHOOK_SECRET", "webhook-secret-2", 1);
	setenv("SUPABASE_SERVICE_KEY", "supabase-secret-3", 1);
	setenv("PROVISIONER_SECRET", "provisioner-secret-4", 1);
	setenv("HOME", "/home/mrprov-test", 1);
	CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/usr/bin/env", err, sizeof err) == 0);
	const char *argv5[] = { "-u", "NONE" }; /* env -u NONE: print the environment */
	CHECK(transport_run(argv5, 2, 5, -1, &r) == 0 && r.exit_code == 0);
	CHECK(r.out.data && strstr(r.out.data, "PATH=") && strstr(r.out.data, "HOME=/home/mrprov-test\n"));
	CHECK(r.out.data && !strstr(r.out.data, "secret"));
	CHECK(r.out.data && !strstr(r.out.data, "PROVISIONER_") && !strstr(r.out.data, "WEBHOOK_") &&
	      !strstr(r.out.data, "SUPABASE_"));
	transport_result_free(&r);
	umask(077);
	transport_child_umask(022);
	CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/bin/sh", err, sizeof err) == 0);
	const char *argv6[] = { "-c", "umask" };
	CHECK(transport_run(argv6, 2, 5, -1, &r) == 0 && r.exit_code == 0);
	CHECK_STR(r.out.data, "0022\n");
	transport_result_free(&r);

	/* Streaming stdout to a file (backups). */
	CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/bin/echo", err, sizeof err) == 0);
	char path[] = "/tmp/mrprov-transport-XXXXXX";
	int fd = mkstemp(path);
	CHECK(transport_run(argv3, 2, 5, fd, &r) == 0 && r.out.len == 0 && r.out_bytes == 8);
	transport_result_free(&r);
	char buf[32] = "";
	CHECK(pread(fd, buf, sizeof buf - 1, 0) == 8);
	CHECK_STR(buf, "a:b c=d\n");
	close(fd);
	unlink(path);

	/* issue 14: a command's stdin (git:from-archive's build context). Local
	 * mode feeds it on a pipe while reading the output: /bin/cat echoes
	 * 600 KiB back, more than a pipe holds either way. */
	signal(SIGPIPE, SIG_IGN); /* as main.c */
	size_t in_len = 600 * 1024;
	char *in = malloc(TRANSPORT_MAX_INPUT + 1);
	for (size_t i = 0; i < TRANSPORT_MAX_INPUT + 1; i++)
		in[i] = (char)(i * 7 + (i >> 10));
	CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/bin/cat", err, sizeof err) == 0);
	const char *argv7[] = { "-" };
	CHECK(transport_run_input(argv7, 1, in, in_len, 10, -1, &r) == 0 && r.exit_code == 0);
	CHECK(r.out.len == in_len && memcmp(r.out.data, in, in_len) == 0);
	transport_result_free(&r);
	/* Empty input: the command sees its end at once (cat does not wait). */
	CHECK(transport_run_input(argv7, 1, "", 0, 10, -1, &r) == 0 && r.exit_code == 0 && r.out.len == 0);
	transport_result_free(&r);
	/* A command that does not read its input: no hang, no SIGPIPE. */
	CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/bin/true", err, sizeof err) == 0);
	CHECK(transport_run_input(argv7, 1, in, in_len, 10, -1, &r) == 0 && r.exit_code == 0);
	transport_result_free(&r);
	/* More than TRANSPORT_MAX_INPUT is refused before anything runs, in
	 * every mode (a dry-run plan fails where a real run would). */
	CHECK(transport_run_input(argv7, 1, in, TRANSPORT_MAX_INPUT + 1, 10, -1, &r) < 0);
	CHECK(strstr(r.error, "1048577 bytes") && strstr(r.error, "at most 1048576"));
	transport_result_free(&r);
	CHECK(transport_init(TRANSPORT_DRY_RUN, NULL, NULL, err, sizeof err) == 0);
	CHECK(transport_run_input(argv7, 1, in, TRANSPORT_MAX_INPUT + 1, 10, -1, &r) < 0);
	transport_result_free(&r);
	CHECK(transport_run_input(argv7, 1, in, TRANSPORT_MAX_INPUT, 10, -1, &r) == 0 && r.exit_code == 0);
	transport_result_free(&r);

	/* issue 16: stdin streamed from a file (a move's exports), any size:
	 * 3 MiB through /bin/cat, read from where the file stands. */
	{
		size_t in_big = 3 * 1024 * 1024 + 17;
		char *data = malloc(in_big);
		for (size_t i = 0; i < in_big; i++)
			data[i] = (char)(i * 31 + (i >> 12));
		char ipath[] = "/tmp/mrprov-transport-in-XXXXXX";
		int ifd = mkstemp(ipath);
		CHECK(ifd >= 0 && write(ifd, data, in_big) == (ssize_t)in_big && lseek(ifd, 0, SEEK_SET) == 0);
		CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/bin/cat", err, sizeof err) == 0);
		CHECK(transport_run_fd_on(NULL, argv7, 1, ifd, 20, -1, &r) == 0 && r.exit_code == 0);
		CHECK(r.out.len == in_big && memcmp(r.out.data, data, in_big) == 0);
		transport_result_free(&r);
		/* at its end: an empty input, and the command ends */
		CHECK(transport_run_fd_on(NULL, argv7, 1, ifd, 20, -1, &r) == 0 && r.exit_code == 0 && r.out.len == 0);
		transport_result_free(&r);
		/* a command that does not read it: no hang */
		CHECK(lseek(ifd, 0, SEEK_SET) == 0);
		CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/bin/true", err, sizeof err) == 0);
		CHECK(transport_run_fd_on(NULL, argv7, 1, ifd, 20, -1, &r) == 0 && r.exit_code == 0);
		transport_result_free(&r);
		/* a descriptor that cannot be read is an error, not an empty input */
		int wfd = open(ipath, O_WRONLY);
		CHECK(transport_init(TRANSPORT_LOCAL, NULL, "/bin/cat", err, sizeof err) == 0);
		CHECK(transport_run_fd_on(NULL, argv7, 1, wfd, 20, -1, &r) < 0 && strstr(r.error, "input"));
		transport_result_free(&r);
		close(wfd);
		close(ifd);
		unlink(ipath);
		free(data);
	}
	free(in);

	/* issue 16: named hosts. Dry-run and local know the implicit host alone. */
	char names[TRANSPORT_MAX_HOSTS][TRANSPORT_HOST_NAME_MAX + 1];
	CHECK(transport_hosts(names, TRANSPORT_MAX_HOSTS) == 1 && strcmp(names[0], "default") == 0);
	CHECK(transport_host_name_ok("h1") && transport_host_name_ok("eu-west_2") && !transport_host_name_ok("H1") &&
	      !transport_host_name_ok("1h") && !transport_host_name_ok("") && !transport_host_name_ok("a b"));
	/* SSH with host files only (no DOKKU_HOST): no implicit host; a host
	 * list is checked whole, and a refused one changes nothing. */
	struct ssh_pool_opts none = { .sessions = 1 };
	CHECK(transport_init(TRANSPORT_SSH, &none, NULL, err, sizeof err) == 0);
	CHECK(transport_hosts(names, TRANSPORT_MAX_HOSTS) == 0);
	CHECK(transport_run_on(NULL, argv3, 2, NULL, 0, 5, -1, &r) < 0 && strstr(r.error, "no Dokku host named 'default'"));
	transport_result_free(&r);
	char key[] = "/tmp/mrprov-transport-key-XXXXXX";
	int kfd = mkstemp(key); /* mode 0600 */
	close(kfd);
	struct transport_host list[2] = {
		{ "h1", "127.0.0.1", 1, "dokku", key, "/tmp/none" },
		{ "Bad", "127.0.0.1", 1, "dokku", key, "/tmp/none" },
	};
	CHECK(transport_hosts_set(list, 2, err, sizeof err) < 0);
	CHECK(transport_hosts(names, TRANSPORT_MAX_HOSTS) == 0);
	chmod(key, 0644);
	CHECK(transport_hosts_set(list, 1, err, sizeof err) < 0 && strstr(err, "host h1: key_path") &&
	      strstr(err, "0644"));
	chmod(key, 0600);
	CHECK(transport_hosts_set(list, 1, err, sizeof err) == 0);
	CHECK(transport_hosts(names, TRANSPORT_MAX_HOSTS) == 1 && strcmp(names[0], "h1") == 0);
	/* port 1 on loopback refuses: the host is unhealthy, its command a
	 * transient failure; another name is no host at all */
	char why[300];
	CHECK(transport_host_check("h1", 30, why, sizeof why) < 0 && strstr(why, "Dokku did not answer"));
	CHECK(transport_run_on("h2", argv3, 2, NULL, 0, 5, -1, &r) < 0 && strstr(r.error, "no Dokku host named 'h2'"));
	transport_result_free(&r);
	CHECK(transport_hosts_set(NULL, 0, err, sizeof err) == 0); /* no files: the implicit host, none here */
	CHECK(transport_hosts(names, TRANSPORT_MAX_HOSTS) == 0);
	transport_shutdown();
	unlink(key);
	return check_done();
}
