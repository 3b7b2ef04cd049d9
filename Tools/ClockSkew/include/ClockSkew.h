#ifndef CLOCK_SKEW_H
#define CLOCK_SKEW_H

/// The skew this process runs with (CLOCK_SKEW_MS), in milliseconds.
int clock_skew_milliseconds(void);

#endif
