#ifndef CHIREDIS_SHIM_H
#define CHIREDIS_SHIM_H

#include <hiredis/hiredis.h>
#include <stdint.h>

// Swift does not import hiredis's function-like macros; these stand in for the ones we use.

/// `redisReaderGetError`: the reader's error text after `redisReaderFeed`/`redisReaderGetReply` failed.
static inline const char *chiredis_reader_error(redisReader *reader) {
    return reader->errstr;
}

/// Keep the reader's buffer instead of freeing it whenever it drains (hiredis frees past `maxbuf`).
static inline void chiredis_reader_set_max_buffer(redisReader *reader, size_t bytes) {
    reader->maxbuf = bytes;
}

/// After the Swift reply arena moved a partial reply's nodes down by `delta` (its reply-object
/// callbacks name nodes by index + 1): renames the objects of the reader's open tasks to match.
static inline void chiredis_reader_shift_objects(redisReader *reader, intptr_t delta) {
    for (int i = 0; i <= reader->ridx; i++) {
        if (reader->rstack[i].obj != NULL) reader->rstack[i].obj = (void *)((intptr_t)reader->rstack[i].obj - delta);
    }
    // The root of the reply being read, kept apart until the reply is complete.
    if (reader->reply != NULL) reader->reply = (void *)((intptr_t)reader->reply - delta);
}

#endif
