/* error.h: filling a tp_error. Internal to libtpipe. Thread-safe (no shared state). */
#ifndef TP_CORE_ERROR_H
#define TP_CORE_ERROR_H

#include <tpipe/tpipe.h>

/* Sets err (when not NULL) to `status` and a printf-formatted one-line message;
 * returns `status` so callers can `return tp__error(err, ...)`. */
tp_status tp__error(tp_error *err, tp_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to the message of a failure with status `status` that a
 * callee already reported in `err` (adding context on the way up); returns `status`. */
tp_status tp__error_prefix(tp_error *err, tp_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TP_TRY(expr)                           \
    do {                                       \
        tp_status tp__s = (expr);              \
        if (tp__s != TP_OK) return tp__s;      \
    } while (0)

#endif
