/* io_impl.h — internal to engine/io: helpers shared by the file readers. Not a public API. */
#ifndef DYN_IO_IMPL_H
#define DYN_IO_IMPL_H

#include <stddef.h>

/* Copies s into buf (n >= 8 bytes) for use in a message: bytes outside printable ASCII become
 * '?' and a long string is cut with "...". Returns buf. Names in messages come from files that
 * may be hostile; this keeps control characters out of logs and replies. */
const char *dyn__printable(const char *s, char *buf, size_t n);

#endif
