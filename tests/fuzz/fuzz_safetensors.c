/* fuzz_safetensors.c: libFuzzer target for the safetensors header validator. Any
 * buffer either fails cleanly or yields tensors whose every byte lies in the buffer
 * (or in the reader's aligned copies), which touching the first and last byte of
 * each tensor checks under ASan. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tp__safetensors *st = NULL;
    tp_error err;
    if (tp__safetensors_from_memory(data, size, "fuzz", &st, &err) != TP_OK) {
        /* a failure always explains itself */
        if (err.message[0] == '\0') __builtin_trap();
        return 0;
    }
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < st->count; i++) {
        const tp__st_tensor *t = &st->tensors[i];
        if (tp__safetensors_find(st, t->name) != t) __builtin_trap();
        if (t->nbytes == 0) continue;
        const uint8_t *p = t->data;
        sink ^= p[0];
        sink ^= p[t->nbytes - 1];
    }
    (void)sink;
    tp__safetensors_close(st);
    return 0;
}
