/* Unit tests for src/metrics.c: the Prometheus text format. */
#include "check.h"
#include "metrics.h"

int main(void)
{
	CHECK(metrics_add("mrprov_jobs_total", "operation=\"provision\",outcome=\"succeeded\"", 1) == 0);
	CHECK(metrics_add("mrprov_jobs_total", "operation=\"provision\",outcome=\"succeeded\"", 2) == 0);
	CHECK(metrics_add("mrprov_no_such_metric", NULL, 1) < 0);
	CHECK(metrics_set("mrprov_jobs_total", NULL, 1) < 0); /* a counter is not a gauge */
	CHECK(metrics_set("mrprov_config_generation", NULL, 3) == 0);
	CHECK(metrics_observe("mrprov_dokku_command_duration_seconds", "outcome=\"ok\"", 0.02) == 0);
	CHECK(metrics_observe("mrprov_dokku_command_duration_seconds", "outcome=\"ok\"", 7) == 0);

	struct sbuf lb;
	sbuf_init(&lb);
	const char *kv[] = { "route", "a\"b\\c" };
	metrics_labels(&lb, kv, 1);
	CHECK_STR(lb.data, "route=\"a\\\"b\\\\c\"");
	sbuf_free(&lb);

	struct sbuf b;
	sbuf_init(&b);
	metrics_render(&b);
	CHECK(strstr(b.data, "# TYPE mrprov_jobs_total counter\n") != NULL);
	CHECK(strstr(b.data, "mrprov_jobs_total{operation=\"provision\",outcome=\"succeeded\"} 3\n") != NULL);
	CHECK(strstr(b.data, "mrprov_config_generation 3\n") != NULL);
	CHECK(strstr(b.data, "mrprov_dokku_command_duration_seconds_bucket{outcome=\"ok\",le=\"0.025\"} 1\n"));
	CHECK(strstr(b.data, "mrprov_dokku_command_duration_seconds_bucket{outcome=\"ok\",le=\"10\"} 2\n"));
	CHECK(strstr(b.data, "mrprov_dokku_command_duration_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 2\n"));
	CHECK(strstr(b.data, "mrprov_dokku_command_duration_seconds_count{outcome=\"ok\"} 2\n"));
	CHECK(strstr(b.data, "mrprov_dokku_command_duration_seconds_sum{outcome=\"ok\"} 7.02\n"));
	sbuf_free(&b);

	metrics_reset();
	sbuf_init(&b);
	metrics_render(&b);
	CHECK(strstr(b.data, "mrprov_jobs_total{") == NULL);
	sbuf_free(&b);
	return check_done();
}
