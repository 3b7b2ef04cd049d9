// A test tool: LD_PRELOAD this library and set CLOCK_SKEW_MS (for example -3600000) to run a
// process whose wall clock is off by that much, as on an app server with a wrong clock.
//
// Only the wall clock moves (clock_gettime of CLOCK_REALTIME*, gettimeofday, time). Monotonic
// clocks and glibc's own timed waits are left alone, so timers and sleeps behave normally (a
// general tool like libfaketime also rewrites timed waits, which hangs libdispatch with negative
// offsets).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include "ClockSkew.h"

static long long skew_ns = 0;
static int (*real_clock_gettime)(clockid_t, struct timespec *) = 0;
static int (*real_gettimeofday)(struct timeval *, void *) = 0;

// Also called from the wrappers: a program's own constructors (redis-server's allocator) may ask
// the time before this library's constructor ran.
__attribute__((constructor)) static void clock_skew_init(void) {
    if (real_clock_gettime && real_gettimeofday) return;
    const char *text = getenv("CLOCK_SKEW_MS");
    skew_ns = text ? atoll(text) * 1000000LL : 0;
    real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    real_gettimeofday = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
}

static void shift(struct timespec *ts) {
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + skew_ns;
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    clock_skew_init();
    int result = real_clock_gettime(clock, ts);
    if (result == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) shift(ts);
    return result;
}

int gettimeofday(struct timeval *tv, void *tz) {
    clock_skew_init();
    int result = real_gettimeofday(tv, tz);
    if (result == 0) {
        struct timespec ts = {tv->tv_sec, tv->tv_usec * 1000};
        shift(&ts);
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return result;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}

int clock_skew_milliseconds(void) { return (int)(skew_ns / 1000000LL); }
