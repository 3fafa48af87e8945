/* json_util.c: JSON files with errors that say where. */
#include "json_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

tp_status tp__read_file(const char *path, char **data, size_t *size, tp_error *err) {
    *data = NULL;
    if (size) *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return tp__error(err, e == ENOENT ? TP_ERR_NOT_FOUND : TP_ERR_IO, "%s: %s", path,
                         strerror(e));
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 65536) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return tp__error(err, TP_ERR_NOMEM, "%s: out of memory reading the file", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return tp__error(err, TP_ERR_IO, "%s: read error", path);
    }
    buf[len] = '\0';
    *data = buf;
    if (size) *size = len;
    return TP_OK;
}

static int is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* cJSON is lenient inside strings where JSON (RFC 8259) and Python's json module are
 * not: it cuts a string at a bad \u escape instead of failing, and takes raw control
 * characters. One pass over the string literals refuses both, so a malformed body is
 * an error, not a silently different input. Returns the offset of the first fault,
 * or len when there is none. */
static size_t bad_string_at(const char *text, size_t len) {
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (!in_string) {
            if (c == '"') in_string = 1;
            continue;
        }
        if (c == '"') {
            in_string = 0;
        } else if (c < 0x20) {
            return i;
        } else if (c == '\\') {
            if (i + 1 >= len) return i;
            char e = text[++i];
            if (e == 'u') {
                if (i + 4 >= len || !is_hex(text[i + 1]) || !is_hex(text[i + 2]) ||
                    !is_hex(text[i + 3]) || !is_hex(text[i + 4]))
                    return i - 1;
                i += 4;
            } else if (!strchr("\"\\/bfnrt", e) || e == '\0') {
                return i - 1;
            }
        }
    }
    return len;
}

/* 1-based line and column of text[pos]. */
static void line_col(const char *text, size_t pos, int *line, int *col) {
    *line = 1, *col = 1;
    for (size_t i = 0; i < pos; i++) {
        if (text[i] == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

/* The message for a fault bad_string_at found: "invalid JSON at line L, column C: a
 * bad escape in a string". */
static tp_status string_fault(const char *what, const char *text, size_t bad, tp_error *err) {
    int line, col;
    line_col(text, bad, &line, &col);
    return tp__error(err, TP_ERR_FORMAT, "%s%sinvalid JSON at line %d, column %d: %s in a string",
                     what ? what : "", what ? ": " : "", line, col,
                     (unsigned char)text[bad] < 0x20 ? "a raw control character" : "a bad escape");
}

tp_status tp__json_parse(const char *text, size_t len, const char *what, cJSON **out,
                         tp_error *err) {
    *out = NULL;
    if (len == 0) return tp__error(err, TP_ERR_FORMAT, "%s: empty, expected JSON", what);
    size_t bad = bad_string_at(text, len);
    if (bad < len) return string_fault(what, text, bad, err);
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (*out) return TP_OK;
    /* cJSON reports where it stopped; turn that into a line and column. */
    int line, col;
    line_col(text, (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0, &line,
             &col);
    return tp__error(err, TP_ERR_FORMAT, "%s: invalid JSON at line %d, column %d", what, line, col);
}

tp_status tp_json_check(const char *text, size_t len, tp_error *err) {
    if (!text) return tp__error(err, TP_ERR_INVALID_ARGUMENT, "tp_json_check: text is NULL");
    size_t bad = bad_string_at(text, len);
    return bad < len ? string_fault(NULL, text, bad, err) : TP_OK;
}

tp_status tp__json_load(const char *path, cJSON **out, tp_error *err) {
    char *text;
    size_t len;
    *out = NULL;
    TP_TRY(tp__read_file(path, &text, &len, err));
    tp_status st = tp__json_parse(text, len, path, out, err);
    free(text);
    return st;
}

const char *tp__json_type_name(const cJSON *item) {
    if (!item) return "nothing";
    if (cJSON_IsObject(item)) return "an object";
    if (cJSON_IsArray(item)) return "an array";
    if (cJSON_IsString(item)) return "a string";
    if (cJSON_IsNumber(item)) return "a number";
    if (cJSON_IsBool(item)) return "a boolean";
    if (cJSON_IsNull(item)) return "null";
    return "an invalid value";
}

static const cJSON *get(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static tp_status wrong_type(const char *file, const char *key, const char *want,
                            const cJSON *got, tp_error *err) {
    return tp__error(err, TP_ERR_FORMAT, "%s: key '%s' must be %s, got %s", file, key, want,
                     tp__json_type_name(got));
}

tp_status tp__json_int(const cJSON *obj, const char *key, int64_t def, int64_t *out,
                       const char *file, tp_error *err) {
    const cJSON *v = get(obj, key);
    *out = def;
    if (!v) return TP_OK;
    if (!cJSON_IsNumber(v)) return wrong_type(file, key, "an integer", v, err);
    double d = v->valuedouble;
    if (d != (double)(int64_t)d || d > 9.0e15 || d < -9.0e15)
        return tp__error(err, TP_ERR_FORMAT, "%s: key '%s' must be an integer, got %g", file,
                         key, d);
    *out = (int64_t)d;
    return TP_OK;
}

tp_status tp__json_require_int(const cJSON *obj, const char *key, int64_t *out,
                               const char *file, tp_error *err) {
    if (!get(obj, key)) return tp__error(err, TP_ERR_FORMAT, "%s: missing key '%s'", file, key);
    return tp__json_int(obj, key, 0, out, file, err);
}

tp_status tp__json_double(const cJSON *obj, const char *key, double def, double *out,
                          const char *file, tp_error *err) {
    const cJSON *v = get(obj, key);
    *out = def;
    if (!v) return TP_OK;
    if (!cJSON_IsNumber(v)) return wrong_type(file, key, "a number", v, err);
    *out = v->valuedouble;
    return TP_OK;
}

tp_status tp__json_bool(const cJSON *obj, const char *key, int def, int *out,
                        const char *file, tp_error *err) {
    const cJSON *v = get(obj, key);
    *out = def;
    if (!v) return TP_OK;
    if (!cJSON_IsBool(v)) return wrong_type(file, key, "true or false", v, err);
    *out = cJSON_IsTrue(v);
    return TP_OK;
}

tp_status tp__json_string(const cJSON *obj, const char *key, const char *def,
                          const char **out, const char *file, tp_error *err) {
    const cJSON *v = get(obj, key);
    *out = def;
    if (!v) return TP_OK;
    if (!cJSON_IsString(v)) return wrong_type(file, key, "a string", v, err);
    *out = v->valuestring;
    return TP_OK;
}

const cJSON *tp__json_path(const cJSON *root, const char *path) {
    const cJSON *cur = root;
    const char *p = path;
    char key[256];
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof key) return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        cur = cJSON_IsObject(cur) ? cJSON_GetObjectItemCaseSensitive(cur, key) : NULL;
        p += n + (dot ? 1 : 0);
    }
    return cur;
}

/* Binary search: if N digits read back as x, so do N + 1 (x rounded to N + 1 digits
 * is at least as close to x as x rounded to N, which is an N + 1 digit number too). A
 * float32 score printed as a double needs 16-17 digits: 5 conversions instead of 17,
 * each a printf and a strtod (a token-classification response has thousands). */
void tp__shortest_double(double x, char *buf, size_t size) {
    int lo = 1, hi = 17, printed = 0; /* 17 digits always read back */
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        snprintf(buf, size, "%.*g", mid, x);
        printed = mid;
        if (strtod(buf, NULL) == x)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (printed != lo) snprintf(buf, size, "%.*g", lo, x); /* buf holds a failed try */
}

static int shorten_numbers(cJSON *item) {
    for (; item; item = item->next) {
        if (cJSON_IsNumber(item)) {
            double x = item->valuedouble;
            if (!isfinite(x) || x == floor(x)) continue; /* cJSON prints these already */
            char text[32];
            tp__shortest_double(x, text, sizeof text);
            char *raw = strdup(text);
            if (!raw) return 0;
            item->type = cJSON_Raw;
            item->valuestring = raw; /* cJSON_Delete frees it */
        } else if (item->child && !shorten_numbers(item->child)) {
            return 0;
        }
    }
    return 1;
}

char *tp__json_print(cJSON *tree) {
    if (!tree || !shorten_numbers(tree)) return NULL;
    return cJSON_PrintUnformatted(tree);
}
