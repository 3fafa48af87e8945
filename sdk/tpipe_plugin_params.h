/*
 * tpipe_plugin_params.h: checking a request's parameters in a task plugin, with the
 * messages tpipe's own plugins give ("parameter 'top_k' must be a positive integer
 * or null, got \"x\""). Header-only static functions over cJSON: nothing here
 * crosses the ABI, so a plugin may use it or not. Pure functions: thread-safe.
 */
#ifndef TPIPE_PLUGIN_PARAMS_H
#define TPIPE_PLUGIN_PARAMS_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "tpipe_plugin.h"

/* The size a core table must have for `member` to be there: pass the last member a
 * plugin calls to tp_plugin_require_core. */
#define TP_CORE_API_SIZE_THROUGH(member) \
    (offsetof(tp_core_api, member) + sizeof(((tp_core_api *)0)->member))

/* For init(): TP_ERR_ABI, with a message naming the plugin, unless `core` is a table
 * of at least `needed` bytes (an older core lacks the members appended since). */
static inline tp_status tp_plugin_require_core(const tp_core_api *core, size_t needed,
                                               const char *plugin, tp_error *err)
{
    if (core && core->struct_size >= needed) return TP_OK;
    if (err) {
        err->status = TP_ERR_ABI;
        snprintf(err->message, sizeof err->message,
                 "%s plugin: the core's function table is too short (%zu bytes, this plugin "
                 "needs %zu): the core is older than the plugin",
                 plugin, core ? core->struct_size : (size_t)0, needed);
    }
    return TP_ERR_ABI;
}

/* A JSON value as a short text for a message, cut with "..." to fit `cap`. */
static inline void tp_plugin_describe_value(const cJSON *v, char *buf, size_t cap)
{
    char *s = v ? cJSON_PrintUnformatted(v) : NULL;
    if (!s) {
        snprintf(buf, cap, "%s", v ? "?" : "nothing");
        return;
    }
    if (strlen(s) >= cap && cap > 4) {
        memcpy(buf, s, cap - 4);
        strcpy(buf + cap - 4, "...");
    } else {
        snprintf(buf, cap, "%s", s);
    }
    cJSON_free(s);
}

/* TP_ERR_INVALID_ARGUMENT "parameter '<name>' must be <expected>, got <value>". */
static inline tp_status tp_plugin_bad_param(const tp_core_api *core, tp_error *err,
                                            const char *name, const char *expected,
                                            const cJSON *got)
{
    char shown[96];
    tp_plugin_describe_value(got, shown, sizeof shown);
    return core->error_set(err, TP_ERR_INVALID_ARGUMENT, "parameter '%s' must be %s, got %s",
                           name, expected, shown);
}

/* 1 and *out set when `v` is a whole number in [lo, hi]; 0 otherwise. */
static inline int tp_plugin_as_int(const cJSON *v, int lo, int hi, int *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != floor(d)) return 0;
    *out = (int)d;
    return 1;
}

/* "a string", "a number", "a boolean", "null", "a list", "an object". */
static inline const char *tp_plugin_type_name(const cJSON *v)
{
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "a list";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

#endif
