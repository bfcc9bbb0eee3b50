/* clock: monotonic and wall-clock seconds as doubles, and the ISO-8601 UTC
 * form (milliseconds, "Z") used in logs, the store and the API. */
#ifndef MRPROV_CLOCK_H
#define MRPROV_CLOCK_H

#include <stddef.h>

#define CLOCK_ISO_LEN 32

double clock_mono(void);
double clock_real(void);
/* epoch < 0: now. */
void clock_iso(double epoch, char out[CLOCK_ISO_LEN]);

#endif
