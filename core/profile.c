/* profile.c: see profile.h. */
#include "profile.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

static atomic_int enabled;
static _Atomic uint64_t nanoseconds[TP_PROFILE_PARTS], calls[TP_PROFILE_PARTS];
/* flops in units of 1024, so that a long profile of large products stays in range */
static _Atomic uint64_t kiloflops[TP_PROFILE_PARTS];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t tp__profile_start(void) {
    if (!atomic_load_explicit(&enabled, memory_order_relaxed)) return 0;
    const uint64_t t = now_ns();
    return t ? t : 1;
}

void tp__profile_stop(tp_profile_part part, uint64_t start, double flops) {
    if (!start || (unsigned)part >= TP_PROFILE_PARTS) return;
    const uint64_t t = now_ns();
    atomic_fetch_add_explicit(&nanoseconds[part], t > start ? t - start : 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&calls[part], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&kiloflops[part], (uint64_t)(flops / 1024), memory_order_relaxed);
}

void tp_profile_enable(int on) { atomic_store(&enabled, on != 0); }

void tp_profile_read(tp_profile *p, int reset) {
    tp_profile got;
    memset(&got, 0, sizeof got);
    for (int i = 0; i < TP_PROFILE_PARTS; i++) {
        const uint64_t ns = reset ? atomic_exchange(&nanoseconds[i], 0) : atomic_load(&nanoseconds[i]);
        const uint64_t n = reset ? atomic_exchange(&calls[i], 0) : atomic_load(&calls[i]);
        const uint64_t kf = reset ? atomic_exchange(&kiloflops[i], 0) : atomic_load(&kiloflops[i]);
        got.seconds[i] = (double)ns * 1e-9;
        got.calls[i] = n;
        got.flops[i] = (double)kf * 1024;
    }
    if (p) *p = got;
}
