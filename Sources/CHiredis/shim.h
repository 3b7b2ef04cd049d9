#ifndef CHIREDIS_SHIM_H
#define CHIREDIS_SHIM_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

// Swift does not import hiredis's function-like macros; these stand in for the ones we use.
// They also hide the two layouts of the reader: hiredis 0.14 keeps its open tasks in a fixed
// `rstack[9]`, hiredis 1.x in a growable `task` array of pointers (and has two more reply-object
// callbacks, for RESP3 doubles and booleans).

#if !defined(HIREDIS_MAJOR)
#error "hiredis.h does not define HIREDIS_MAJOR"
#endif

/// `redisReaderGetError`: the reader's error text after `redisReaderFeed`/`redisReaderGetReply` failed.
static inline const char *chiredis_reader_error(redisReader *reader) {
    return reader->errstr;
}

/// Keep the reader's buffer instead of freeing it whenever it drains (hiredis frees past `maxbuf`).
static inline void chiredis_reader_set_max_buffer(redisReader *reader, size_t bytes) {
    reader->maxbuf = bytes;
}

/// The open task at depth `index` (0 is the reply's root), or NULL.
static inline redisReadTask *chiredis_reader_task(redisReader *reader, int index) {
    if (index < 0 || index > reader->ridx) return NULL;
#if HIREDIS_MAJOR >= 1
    return reader->task[index];
#else
    return &reader->rstack[index];
#endif
}

/// After the Swift reply arena moved a partial reply's nodes down by `delta` (its reply-object
/// callbacks name nodes by index + 1): renames the objects of the reader's open tasks to match.
static inline void chiredis_reader_shift_objects(redisReader *reader, intptr_t delta) {
    for (int i = 0; i <= reader->ridx; i++) {
        redisReadTask *task = chiredis_reader_task(reader, i);
        if (task->obj != NULL) task->obj = (void *)((intptr_t)task->obj - delta);
    }
    // The root of the reply being read, kept apart until the reply is complete.
    if (reader->reply != NULL) reader->reply = (void *)((intptr_t)reader->reply - delta);
}

/// Bytes received and not yet consumed by the reader: the unread part of a reply in progress.
static inline size_t chiredis_reader_buffered(redisReader *reader) {
    return reader->len - reader->pos;
}

/// The length a bulk string being read announced (`$<length>\r\n`), before its bytes arrived:
/// -1 when no bulk string is being read or its header is not complete yet. Lengths beyond
/// 2^62 read as 2^62. hiredis keeps a bulk string's header unconsumed until the whole string is
/// in its buffer, so this is how a reply too large is refused before it arrives.
static inline long long chiredis_reader_announced_bulk_length(redisReader *reader) {
    redisReadTask *task = chiredis_reader_task(reader, reader->ridx);
    if (task == NULL || task->type != REDIS_REPLY_STRING) return -1;
    const char *bytes = reader->buf + reader->pos;
    size_t count = reader->len - reader->pos;
    long long length = 0;
    size_t index = 0;
    for (; index < count && bytes[index] >= '0' && bytes[index] <= '9'; index++) {
        if (length < (1LL << 62) / 10) length = length * 10 + (bytes[index] - '0');
        else length = 1LL << 62;
    }
    if (index == 0 || index == count || bytes[index] != '\r') return -1;
    return length;
}

#if HIREDIS_MAJOR >= 1
// RESP3 doubles and booleans: we speak RESP2, where they do not exist. Refused (a NULL object
// makes hiredis fail the read); the Swift side names the refusal.
static void *chiredis_refuse_double(const redisReadTask *task, double value, char *text, size_t count) {
    (void)task; (void)value; (void)text; (void)count;
    return NULL;
}
static void *chiredis_refuse_bool(const redisReadTask *task, int value) {
    (void)task; (void)value;
    return NULL;
}
#endif

/// Reply-object callbacks for a reader (hiredis 0.14 has five, 1.x seven): the RESP2 ones given,
/// the RESP3-only ones refusing.
static inline redisReplyObjectFunctions *chiredis_reply_functions(
    void *(*create_string)(const redisReadTask *, char *, size_t),
#if HIREDIS_MAJOR >= 1
    void *(*create_array)(const redisReadTask *, size_t),
#else
    void *(*create_array)(const redisReadTask *, int),
#endif
    void *(*create_integer)(const redisReadTask *, long long),
    void *(*create_nil)(const redisReadTask *),
    void (*free_object)(void *)) {
    redisReplyObjectFunctions *functions = calloc(1, sizeof(redisReplyObjectFunctions));
    if (functions == NULL) return NULL;
    functions->createString = create_string;
    functions->createArray = create_array;
    functions->createInteger = create_integer;
    functions->createNil = create_nil;
    functions->freeObject = free_object;
#if HIREDIS_MAJOR >= 1
    functions->createDouble = chiredis_refuse_double;
    functions->createBool = chiredis_refuse_bool;
#endif
    return functions;
}

/// The hiredis version this module was compiled against, e.g. 1005000 for 1.5.0.
static inline int chiredis_version(void) {
    return HIREDIS_MAJOR * 1000000 + HIREDIS_MINOR * 1000 + HIREDIS_PATCH;
}

#endif
