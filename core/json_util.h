/* json_util.h: reading JSON files with cJSON, with errors that name the file, the
 * line/column of a syntax error, and the key at fault. Thread-safe. */
#ifndef TP_CORE_JSON_UTIL_H
#define TP_CORE_JSON_UTIL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <tpipe/tpipe.h>

/* Reads a whole file into a NUL-terminated malloc'd buffer. */
tp_status tp__read_file(const char *path, char **data, size_t *size, tp_error *err);

/* Parses `path`; a syntax error says "<path>: invalid JSON at line L, column C". */
tp_status tp__json_load(const char *path, cJSON **out, tp_error *err);
/* Same for a buffer; `what` names it in errors. */
tp_status tp__json_parse(const char *text, size_t len, const char *what, cJSON **out,
                         tp_error *err);

/* Typed getters. Absent key (or JSON null) -> `def` and TP_OK; present with the wrong
 * type -> TP_ERR_FORMAT "<file>: key '<key>' must be <type>, got <type>". */
tp_status tp__json_int(const cJSON *obj, const char *key, int64_t def, int64_t *out,
                       const char *file, tp_error *err);
tp_status tp__json_double(const cJSON *obj, const char *key, double def, double *out,
                          const char *file, tp_error *err);
tp_status tp__json_bool(const cJSON *obj, const char *key, int def, int *out,
                        const char *file, tp_error *err);
/* Returns a pointer into the tree (not a copy); `def` when absent. */
tp_status tp__json_string(const cJSON *obj, const char *key, const char *def,
                          const char **out, const char *file, tp_error *err);
/* Required variants: absent -> TP_ERR_FORMAT "<file>: missing key '<key>'". */
tp_status tp__json_require_int(const cJSON *obj, const char *key, int64_t *out,
                               const char *file, tp_error *err);

/* Dotted path lookup ("a.b.c"); NULL when any step is absent. */
const cJSON *tp__json_path(const cJSON *root, const char *path);

/* The shortest "%.Ng" text of finite x that strtod reads back as x exactly: the
 * digits of Python's repr(). */
void tp__shortest_double(double x, char *buf, size_t size);

/* Prints `tree` compactly, as cJSON_PrintUnformatted does, but with each non-integral
 * number in the shortest form that reads back as the same double, the way Python's
 * repr() prints floats (0.5894312262535095, not 0.58943122625350952), so tpipe's JSON
 * reads like transformers'. Rewrites those numbers in `tree` as raw text nodes. NULL
 * when out of memory. */
char *tp__json_print(cJSON *tree);

/* "object", "array", "string", "number", "bool", "null". */
const char *tp__json_type_name(const cJSON *item);

#endif
