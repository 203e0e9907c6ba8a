#ifndef RELAY_CZLIB_SHIM_H
#define RELAY_CZLIB_SHIM_H

#include <zlib.h>

// deflateInit2/inflateInit2 are macros (they pass the zlib version and struct size),
// which Swift cannot import: wrap them.

/// Raw deflate (no zlib or gzip wrapper): Relay writes the gzip header and trailer itself.
static inline int relay_deflate_init_raw(z_streamp stream, int level) {
    return deflateInit2(stream, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
}
/// Inflate that accepts a gzip wrapper only.
static inline int relay_inflate_init_gzip(z_streamp stream) {
    return inflateInit2(stream, 16 + 15);
}

#endif
