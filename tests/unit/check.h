/* check.h: the few assertions the unit tests use. A failed CHECK prints the file,
 * line and expression and counts; CHECK_DONE() prints "N passed, M failed" and
 * returns the exit status. */
#ifndef TP_TEST_CHECK_H
#define TP_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int tp_checks_passed, tp_checks_failed;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (cond) {                                                            \
            tp_checks_passed++;                                                \
        } else {                                                               \
            tp_checks_failed++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
        }                                                                      \
    } while (0)

#define CHECK_MSG(cond, ...)                                                   \
    do {                                                                       \
        if (cond) {                                                            \
            tp_checks_passed++;                                                \
        } else {                                                               \
            tp_checks_failed++;                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__,   \
                    #cond);                                                    \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
        }                                                                      \
    } while (0)

#define CHECK_STATUS(expr, want)                                               \
    do {                                                                       \
        tp_status got_ = (expr);                                               \
        CHECK_MSG(got_ == (want), "got %s, want %s", tp_strerror(got_),        \
                  tp_strerror(want));                                          \
    } while (0)

#define CHECK_CONTAINS(haystack, needle)                                       \
    CHECK_MSG(strstr((haystack), (needle)) != NULL, "'%s' does not contain '%s'", \
              (haystack), (needle))

#define CHECK_NEAR(a, b, tol)                                                  \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.8g vs %.8g", (double)(a), \
              (double)(b))

#define CHECK_DONE()                                                           \
    (printf("%d passed, %d failed\n", tp_checks_passed, tp_checks_failed),    \
     tp_checks_failed ? 1 : 0)

#endif
