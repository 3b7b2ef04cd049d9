#ifndef MALLOC_STATISTICS_H
#define MALLOC_STATISTICS_H

#include <stddef.h>

/// Bytes the C allocator has handed out and not yet had back (glibc's mallinfo2: uordblks plus
/// hblkhd), the process's live heap whatever its arenas hold in reserve; 0 where unknown.
size_t malloc_statistics_in_use(void);

#endif
