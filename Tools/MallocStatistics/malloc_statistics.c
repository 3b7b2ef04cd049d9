// The live heap of a process as its allocator counts it, for session-load's samples (scripts/soak):
// RSS includes what glibc's per-thread arenas keep in reserve, which grows in steps as threads
// come and go; this does not.
#include "MallocStatistics.h"

#include <stdlib.h>  // defines __GLIBC__ on glibc

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#include <malloc.h>

size_t malloc_statistics_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}
#else
size_t malloc_statistics_in_use(void) { return 0; }
#endif
