/* profile.h: the sums behind tp_profile_read (tpipe.h): the wall time of the core's
 * products, attentions and layer norms while profiling is on.
 *
 * Each timed call brackets itself with tp__profile_start / tp__profile_stop; with
 * profiling off the pair costs one relaxed atomic load. The sums are process-wide
 * atomics, so calls on any thread add to them at once. */
#ifndef TP_CORE_PROFILE_H
#define TP_CORE_PROFILE_H

#include <stdint.h>
#include <tpipe/tpipe.h>

/* The start of a timed call in nanoseconds, or 0 when profiling is off. */
uint64_t tp__profile_start(void);

/* Adds the time since `start` (nothing when start is 0) and `flops` to `part`. */
void tp__profile_stop(tp_profile_part part, uint64_t start, double flops);

#endif
