#ifndef CHIREDIS_SHIM_H
#define CHIREDIS_SHIM_H

#include <hiredis/hiredis.h>

// Swift does not import hiredis's function-like macros; these stand in for the ones we use.

/// `redisReaderGetError`: the reader's error text after `redisReaderFeed`/`redisReaderGetReply` failed.
static inline const char *chiredis_reader_error(redisReader *reader) {
    return reader->errstr;
}

/// Keep the reader's buffer instead of freeing it whenever it drains (hiredis frees past `maxbuf`).
static inline void chiredis_reader_set_max_buffer(redisReader *reader, size_t bytes) {
    reader->maxbuf = bytes;
}

#endif
