/* fs: creating directories along a path (mode 0700 unless told). */
#ifndef MRPROV_FS_H
#define MRPROV_FS_H

#include <sys/types.h>

/* Creates every directory of path that is missing; with last set, path
 * itself too (else only its parents: path names a file). 0 or -1/errno. */
int fs_mkdirs(const char *path, mode_t mode, int last);

#endif
