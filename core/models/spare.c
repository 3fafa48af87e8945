/* spare.c: see spare.h. Each block carries its usable size in a 64-byte header, so
 * that the data stays 64-byte aligned for the vector kernels. */
#include "spare.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

enum { HEADER = 64 };

static size_t block_bytes(void *block) { return *(size_t *)((char *)block - HEADER); }

static void block_free(void *block) {
    if (block) free((char *)block - HEADER);
}

void *tp__spare_take(tp__spare *s, size_t bytes) {
    void *kept = atomic_exchange(&s->block, NULL);
    if (kept && block_bytes(kept) >= bytes) return kept;
    block_free(kept); /* too small for this call: replaced by the larger one it gives back */
    if (bytes > SIZE_MAX - 2 * HEADER) return NULL;
    char *raw = aligned_alloc(HEADER, HEADER + (bytes + HEADER - 1) / HEADER * HEADER);
    if (!raw) return NULL;
    *(size_t *)raw = bytes;
    return raw + HEADER;
}

void tp__spare_give(tp__spare *s, void *block) {
    if (!block) return;
    if (block_bytes(block) > TP__SPARE_MAX_BYTES) {
        block_free(block);
        return;
    }
    block_free(atomic_exchange(&s->block, block));
}

void tp__spare_clear(tp__spare *s) { block_free(atomic_exchange(&s->block, NULL)); }
