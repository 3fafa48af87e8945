/* spare.h: the block of scratch a model keeps between forwards.
 *
 * A forward's run state is megabytes (DistilBERT at 128 tokens: about 4 MB). Handed
 * back to malloc after every call, glibc trims it off the heap's top and returns it
 * to the kernel, and the next call faults every page in again, zeroed: 1,538 page
 * faults a DistilBERT forward on the development machine. So a model keeps the last
 * block a forward gave back, and the next forward that fits takes it instead of
 * allocating. Blocks above TP__SPARE_MAX_BYTES are not kept (their faults are small
 * beside the forward that needs them, and they would stay resident).
 *
 * Thread-safety: take and give may run on any threads at once (one atomic exchange
 * each); a forward that finds no spare allocates its own, and of two given back at
 * once the later is kept. A zeroed tp__spare is empty and ready. */
#ifndef TP_CORE_MODELS_SPARE_H
#define TP_CORE_MODELS_SPARE_H

#include <stddef.h>

enum { TP__SPARE_MAX_BYTES = 256 << 20 };

typedef struct tp__spare {
    void *_Atomic block; /* the kept block, its byte count in the header before it */
} tp__spare;

/* A block of at least `bytes` bytes (64-byte aligned), uninitialised: the spare if it
 * is large enough, else a new one. NULL when out of memory. */
void *tp__spare_take(tp__spare *s, size_t bytes);

/* Gives back a block from tp__spare_take (NULL is ignored): kept as the spare, or
 * freed. */
void tp__spare_give(tp__spare *s, void *block);

/* Frees the spare; s is empty again. */
void tp__spare_clear(tp__spare *s);

#endif
