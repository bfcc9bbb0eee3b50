/* metrics: Prometheus counters, gauges and histograms kept in C and rendered
 * in the text exposition format. Owns the list of metric families; callers
 * (C and Lua) can only touch families declared in metrics.c. Thread-safe. */
#ifndef MRPROV_METRICS_H
#define MRPROV_METRICS_H

#include "util/sbuf.h"

/* labels: NULL or the already-rendered label set without braces, e.g.
 * `route="status",status="200"` (see metrics_labels). Return -1 when the
 * family is unknown or of another type. */
int metrics_add(const char *name, const char *labels, double v);
int metrics_set(const char *name, const char *labels, double v);
int metrics_observe(const char *name, const char *labels, double v);
/* Removes a gauge's series (an instance that is gone); -1 when the family
 * is unknown or not a gauge. */
int metrics_drop(const char *name, const char *labels);
/* Renders k/v pairs into `k1="v1",k2="v2"` with Prometheus escaping. */
void metrics_labels(struct sbuf *out, const char *const *kv, int npairs);
void metrics_render(struct sbuf *out);
void metrics_reset(void);

#endif
