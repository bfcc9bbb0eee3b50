/* fs: creating directories along a path (mode 0700 unless told); reading a
 * whole file. */
#ifndef MRPROV_FS_H
#define MRPROV_FS_H

#include <stddef.h>
#include <sys/types.h>

/* Creates every directory of path that is missing; with last set, path
 * itself too (else only its parents: path names a file). 0 or -1/errno. */
int fs_mkdirs(const char *path, mode_t mode, int last);

/* Reads the file at path to EOF into a malloc'd buffer, NUL-terminated (*len
 * without it); a read error keeps what was read. 0, or -1/errno when the
 * file cannot be opened. Aborts when memory runs out. */
int fs_read_file(const char *path, char **out, size_t *len);

#endif
