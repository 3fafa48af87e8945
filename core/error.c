/* error.c: tp_strerror and the message helpers. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *tp_strerror(tp_status status) {
    switch (status) {
    case TP_OK: return "ok";
    case TP_ERR_INVALID_ARGUMENT: return "invalid argument";
    case TP_ERR_NOT_FOUND: return "not found";
    case TP_ERR_IO: return "input/output error";
    case TP_ERR_FORMAT: return "malformed file or document";
    case TP_ERR_UNSUPPORTED: return "not supported";
    case TP_ERR_NOMEM: return "out of memory";
    case TP_ERR_ABI: return "module refused by the loader";
    case TP_ERR_BACKEND: return "compute backend failure";
    case TP_ERR_BUSY: return "busy";
    case TP_ERR_CANCELLED: return "cancelled";
    case TP_ERR_TIMEOUT: return "timed out";
    case TP_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *tp_version(void) {
#define TP_STR2(x) #x
#define TP_STR(x) TP_STR2(x)
    return TP_STR(TPIPE_VERSION_MAJOR) "." TP_STR(TPIPE_VERSION_MINOR) "." TP_STR(TPIPE_VERSION_PATCH);
}

void tp_free(void *ptr) { free(ptr); }

tp_status tp__error(tp_error *err, tp_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->status = status;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return status;
}

tp_status tp__error_prefix(tp_error *err, tp_status status, const char *fmt, ...) {
    if (!err) return status;
    char prefix[TP_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* join by hand: the message is cut at the buffer's end, never overflowed */
    char joined[TP_ERROR_MESSAGE_MAX];
    size_t cap = sizeof joined - 1, n = 0;
    const char *parts[3] = {prefix, ": ", err->message};
    for (int i = 0; i < 3; i++)
        for (const char *c = parts[i]; *c && n < cap; c++) joined[n++] = *c;
    joined[n] = '\0';
    memcpy(err->message, joined, n + 1);
    err->status = status;
    return status;
}
