/*
 * conformance.c: tpipe-conformance, the parity check against transformers.
 *
 * Replays every case of a fixture's reference.json (see /work/shared/fixtures/README.md
 * and docs/conformance.md) through the public API only, on every backend, and prints
 * one FAIL line per case that differs, a count per fixture and the total last.
 *
 *   tpipe-conformance [--backend NAME] [--kinds LIST] [--verbose] DIR...
 *
 * --kinds restricts a run to some case kinds (the test suite gates a fixture on the
 * kinds its features cover so far); the first line then says which, and a full run
 * without it still reports every kind.
 *
 * Exit status: 0 when nothing failed, 1 when something did, 2 on a usage error or a
 * reference.json that cannot be read.
 *
 * Single-threaded: one runtime, its backend switched between passes.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tpipe/tpipe.h"

#define TOLERANCE 1e-4
#define MSG_MAX 1024

static const char *const ALL_BACKENDS[] = {"ref", "openblas", "onednn"};
#define N_ALL_BACKENDS (sizeof ALL_BACKENDS / sizeof ALL_BACKENDS[0])

/* ------------------------------------------------------------ run state */

typedef struct counts {
    long passed, failed;
} counts;

typedef struct cached_pipeline {
    char *task;
    tp_pipeline *p;
    char *error;   /* why tp_pipeline_new failed; p is NULL then */
} cached_pipeline;

typedef struct fixture {
    const char *dir;
    char name[256];     /* what the lines print: the directory's base name */
    cJSON *ref;
} fixture;

typedef struct run {
    tp_runtime *rt;
    const char *backends[N_ALL_BACKENDS];
    size_t n_backends;
    int verbose;
    const char *kinds;   /* comma-separated case kinds to run; NULL: all */
    counts total;
    /* the fixture being replayed */
    const fixture *fx;
    counts fx_counts;
    /* per (fixture, backend): created on first use, freed when the backend is done */
    tp_model *model;
    char *model_error;
    int model_tried;
    cached_pipeline *pipes;
    size_t n_pipes;
} run;

/* ------------------------------------------------------------ reporter */

/* Records one case. `worst` < 0 means no float was compared. `fmt` says what
 * differs (ignored when ok). */
static void report(run *r, const char *kind, long index, const char *source, int ok,
                   double worst, const char *fmt, ...)
{
    if (ok) {
        r->fx_counts.passed++;
        r->total.passed++;
        if (r->verbose) {
            printf("PASS %s %s[%ld] %s", r->fx->name, kind, index, source);
            if (worst >= 0)
                printf(" (max |diff| %.1e)", worst);
            printf("\n");
        }
        return;
    }
    r->fx_counts.failed++;
    r->total.failed++;
    char msg[MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("FAIL %s %s[%ld] %s: %s\n", r->fx->name, kind, index, source, msg);
}

/* ------------------------------------------------------------ small helpers */

static int file_exists(const char *dir, const char *name)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* vocab.txt; vocab.json + merges.txt; a SentencePiece model (*.spm, spiece.model). */
static int has_legacy_vocab(const char *dir)
{
    if (file_exists(dir, "vocab.txt") || file_exists(dir, "spiece.model"))
        return 1;
    if (file_exists(dir, "vocab.json") && file_exists(dir, "merges.txt"))
        return 1;
    int found = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL)
        found = has_suffix(e->d_name, ".spm");
    closedir(d);
    return found;
}

static int is_integral(double v)
{
    return isfinite(v) && v == floor(v) && fabs(v) < 9007199254740992.0;
}

/* A short JSON rendering of a value for messages: at most ~60 characters. */
static void describe(const cJSON *v, char *buf, size_t size)
{
    if (!v) {
        snprintf(buf, size, "nothing");
        return;
    }
    if (cJSON_IsNumber(v)) {
        if (is_integral(v->valuedouble))
            snprintf(buf, size, "%.0f", v->valuedouble);
        else
            snprintf(buf, size, "%.7g", v->valuedouble);
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        snprintf(buf, size, "?");
        return;
    }
    if (strlen(s) > 60)
        snprintf(buf, size, "%.57s...", s);
    else
        snprintf(buf, size, "%s", s);
    cJSON_free(s);
}

static const char *json_type_name(const cJSON *v)
{
    if (cJSON_IsNumber(v)) return "number";
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsBool(v)) return "bool";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "array";
    if (cJSON_IsObject(v)) return "object";
    return "invalid";
}

/* Reads a JSON array of integers into a malloc'd int32 array. */
static int json_int_list(const cJSON *a, int32_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!cJSON_IsArray(a))
        return 0;
    size_t len = (size_t)cJSON_GetArraySize(a);
    int32_t *v = malloc((len ? len : 1) * sizeof *v);
    if (!v)
        return 0;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!cJSON_IsNumber(e)) {
            free(v);
            return 0;
        }
        v[i++] = (int32_t)e->valuedouble;
    }
    *out = v;
    *n = len;
    return 1;
}

/* Reads a rectangular JSON matrix of integers ([[...], ...]) row-major. */
static int json_int_matrix(const cJSON *a, int32_t **out, int *rows, int *cols)
{
    *out = NULL;
    *rows = *cols = 0;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) == 0)
        return 0;
    int r = cJSON_GetArraySize(a);
    int c = cJSON_GetArraySize(cJSON_GetArrayItem(a, 0));
    if (c <= 0)
        return 0;
    int32_t *v = malloc((size_t)r * (size_t)c * sizeof *v);
    if (!v)
        return 0;
    int i = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, a) {
        int32_t *vals;
        size_t n;
        if (!json_int_list(row, &vals, &n) || (int)n != c) {
            free(vals);
            free(v);
            return 0;
        }
        memcpy(v + (size_t)i * (size_t)c, vals, n * sizeof *vals);
        free(vals);
        i++;
    }
    *out = v;
    *rows = r;
    *cols = c;
    return 1;
}

/* ------------------------------------------------------------ JSON comparison */

/* The recursive comparison shared by pipeline and heldout cases. Objects compare by
 * key set (order free), arrays by length and element, strings/bools/null exactly,
 * numbers exactly when both are integral and within `tol` otherwise. Stops at the
 * first difference and writes it as "<path>: got X, want Y"; `worst` is the largest
 * float difference met on the way. */
typedef struct jcmp {
    double tol;
    double worst;   /* -1 until a float is compared */
    char path[512];
    char msg[MSG_MAX];
} jcmp;

static void jcmp_fail(jcmp *c, const char *fmt, ...)
{
    char what[MSG_MAX - 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(c->msg, sizeof c->msg, "%.300s: %.700s", c->path[0] ? c->path : "output", what);
}

static void path_push_index(jcmp *c, size_t len, int i)
{
    snprintf(c->path + len, sizeof c->path - len, "[%d]", i);
}

static void path_push_key(jcmp *c, size_t len, const char *key)
{
    snprintf(c->path + len, sizeof c->path - len, "%s%s", len ? "." : "", key);
}

static int jcmp_value(jcmp *c, const cJSON *got, const cJSON *want)
{
    char g[96], w[96];
    size_t len = strlen(c->path);

    if (cJSON_IsNumber(want) && cJSON_IsNumber(got)) {
        double gv = got->valuedouble, wv = want->valuedouble;
        int ints = is_integral(gv) && is_integral(wv);
        double d = fabs(gv - wv);
        if (isnan(d))
            d = (isnan(gv) && isnan(wv)) ? 0.0 : INFINITY;
        if (!ints && d > c->worst)
            c->worst = d;
        if (ints ? gv != wv : !(d <= c->tol)) {
            describe(got, g, sizeof g);
            describe(want, w, sizeof w);
            if (ints)
                jcmp_fail(c, "got %s, want %s", g, w);
            else
                jcmp_fail(c, "got %s, want %s (|diff| %.1e > %.0e)", g, w, d, c->tol);
            return 0;
        }
        return 1;
    }
    if (cJSON_IsBool(want) && cJSON_IsBool(got)) {
        if (cJSON_IsTrue(want) != cJSON_IsTrue(got)) {
            jcmp_fail(c, "got %s, want %s", cJSON_IsTrue(got) ? "true" : "false",
                      cJSON_IsTrue(want) ? "true" : "false");
            return 0;
        }
        return 1;
    }
    if (cJSON_IsNull(want) && cJSON_IsNull(got))
        return 1;
    if (cJSON_IsString(want) && cJSON_IsString(got)) {
        const char *gs = got->valuestring, *ws = want->valuestring;
        if (strcmp(gs, ws) == 0)
            return 1;
        describe(got, g, sizeof g);
        describe(want, w, sizeof w);
        size_t at = 0;
        while (gs[at] && gs[at] == ws[at])
            at++;
        if (strlen(gs) <= 57 && strlen(ws) <= 57)
            jcmp_fail(c, "got %s, want %s", g, w);
        else
            jcmp_fail(c, "strings differ at byte %zu: got \"...%.30s\", want \"...%.30s\"", at,
                      gs + at, ws + at);
        return 0;
    }
    if (cJSON_IsArray(want) && cJSON_IsArray(got)) {
        int gn = cJSON_GetArraySize(got), wn = cJSON_GetArraySize(want);
        if (gn != wn) {
            jcmp_fail(c, "got an array of %d, want %d", gn, wn);
            return 0;
        }
        const cJSON *ge = got->child, *we = want->child;
        for (int i = 0; we; i++, ge = ge->next, we = we->next) {
            path_push_index(c, len, i);
            if (!jcmp_value(c, ge, we))
                return 0;
            c->path[len] = '\0';
        }
        return 1;
    }
    if (cJSON_IsObject(want) && cJSON_IsObject(got)) {
        const cJSON *we, *ge;
        cJSON_ArrayForEach(we, want) {
            path_push_key(c, len, we->string);
            ge = cJSON_GetObjectItemCaseSensitive(got, we->string);
            if (!ge) {
                describe(we, w, sizeof w);
                jcmp_fail(c, "missing, want %s", w);
                return 0;
            }
            if (!jcmp_value(c, ge, we))
                return 0;
            c->path[len] = '\0';
        }
        cJSON_ArrayForEach(ge, got) {
            if (!cJSON_GetObjectItemCaseSensitive(want, ge->string)) {
                path_push_key(c, len, ge->string);
                describe(ge, g, sizeof g);
                jcmp_fail(c, "unexpected key (got %s)", g);
                return 0;
            }
        }
        return 1;
    }
    describe(got, g, sizeof g);
    describe(want, w, sizeof w);
    jcmp_fail(c, "got %s %s, want %s %s", json_type_name(got), g, json_type_name(want), w);
    return 0;
}

/* Returns 1 when equal; else fills `msg`. `*worst` gets the worst float difference
 * (-1 when no float was compared). */
static int json_compare(const cJSON *got, const cJSON *want, double tol, double *worst,
                        char *msg, size_t msg_size)
{
    jcmp c = {.tol = tol, .worst = -1.0};
    int ok = jcmp_value(&c, got, want);
    *worst = c.worst;
    if (!ok)
        snprintf(msg, msg_size, "%s", c.msg);
    return ok;
}

/* ------------------------------------------------------------ tokenizer cases */

/* Compares an int sequence; on the first difference writes "name[i]: got X, want Y". */
static int compare_ints(const char *name, const int32_t *got, size_t gn, const int32_t *want,
                        size_t wn, char *msg, size_t size)
{
    size_t n = gn < wn ? gn : wn;
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            snprintf(msg, size, "%s[%zu]: got %d, want %d", name, i, got[i], want[i]);
            return 0;
        }
    }
    if (gn != wn) {
        snprintf(msg, size, "%s: got %zu values, want %zu", name, gn, wn);
        return 0;
    }
    return 1;
}

static int compare_str(const char *name, const char *got, const char *want, char *msg,
                       size_t size)
{
    if (strcmp(got, want) == 0)
        return 1;
    size_t at = 0;
    while (got[at] && got[at] == want[at])
        at++;
    if (strlen(got) <= 60 && strlen(want) <= 60)
        snprintf(msg, size, "%s: got \"%s\", want \"%s\"", name, got, want);
    else
        snprintf(msg, size, "%s: differs at byte %zu: got \"...%.30s\", want \"...%.30s\"", name,
                 at, got + at, want + at);
    return 0;
}

/* Notes a failed check: the first one is the message, later ones are listed after it
 * so that one line says everything that differs in the case. */
typedef struct checks {
    int failed;
    char first[MSG_MAX];
    char others[256];
} checks;

static void check_note(checks *k, int ok, const char *name, const char *msg)
{
    if (ok)
        return;
    if (k->failed++ == 0) {
        snprintf(k->first, sizeof k->first, "%s", msg);
    } else {
        size_t len = strlen(k->others);
        snprintf(k->others + len, sizeof k->others - len, "%s%s", len ? ", " : "", name);
    }
}

/* Encodes one text (and pair) and checks the encoding has one row. */
static tp_encoding *encode_one(tp_tokenizer *tok, const char *text, const char *pair,
                               int add_special, char *msg, size_t size)
{
    tp_encode_options opts;
    tp_encode_options_init(&opts);
    opts.add_special_tokens = add_special;
    tp_encoding *enc = NULL;
    tp_error err = {0};
    const char *texts[1] = {text}, *pairs[1] = {pair};
    if (tp_tokenizer_encode(tok, texts, pair ? pairs : NULL, 1, &opts, &enc, &err) != TP_OK) {
        snprintf(msg, size, "encode%s: %s", add_special ? "" : " (no special tokens)",
                 err.message);
        return NULL;
    }
    if (tp_encoding_rows(enc) != 1) {
        snprintf(msg, size, "encode: got %zu rows, want 1", tp_encoding_rows(enc));
        tp_encoding_free(enc);
        return NULL;
    }
    return enc;
}

static void check_type_ids(checks *k, const tp_encoding *enc, const cJSON *want_json)
{
    char msg[MSG_MAX];
    int32_t *want;
    size_t wn;
    if (!want_json || cJSON_GetArraySize(want_json) == 0)
        return;
    if (!json_int_list(want_json, &want, &wn)) {
        check_note(k, 0, "token_type_ids", "reference: token_type_ids is not a list of ints");
        return;
    }
    const int32_t *got = tp_encoding_type_ids(enc, 0);
    size_t gn = tp_encoding_length(enc, 0);
    if (!got) {
        check_note(k, 0, "token_type_ids", "token_type_ids: none returned");
    } else {
        int ok = compare_ints("token_type_ids", got, gn, want, wn, msg, sizeof msg);
        check_note(k, ok, "token_type_ids", msg);
    }
    free(want);
}

/* Offsets are [[start, end], ...] in the reference and start,end pairs in tpipe. */
static void check_offsets(checks *k, const tp_encoding *enc, const cJSON *want_json)
{
    char msg[MSG_MAX];
    const int32_t *got = tp_encoding_offsets(enc, 0);
    size_t gn = tp_encoding_length(enc, 0);
    size_t wn = (size_t)cJSON_GetArraySize(want_json);
    if (!got) {
        check_note(k, 0, "offsets", "offsets: none returned");
        return;
    }
    if (gn != wn) {
        snprintf(msg, sizeof msg, "offsets: got %zu pairs, want %zu", gn, wn);
        check_note(k, 0, "offsets", msg);
        return;
    }
    size_t i = 0;
    const cJSON *pair;
    cJSON_ArrayForEach(pair, want_json) {
        int ws = (int)cJSON_GetArrayItem(pair, 0)->valuedouble;
        int we = (int)cJSON_GetArrayItem(pair, 1)->valuedouble;
        if (got[2 * i] != ws || got[2 * i + 1] != we) {
            snprintf(msg, sizeof msg, "offsets[%zu]: got (%d, %d), want (%d, %d)", i, got[2 * i],
                     got[2 * i + 1], ws, we);
            check_note(k, 0, "offsets", msg);
            return;
        }
        i++;
    }
}

static void check_decode(checks *k, tp_tokenizer *tok, const int32_t *ids, size_t n, int skip,
                         const char *name, const cJSON *want)
{
    char msg[MSG_MAX];
    if (!cJSON_IsString(want))
        return;
    char *text = NULL;
    tp_error err = {0};
    if (tp_tokenizer_decode(tok, ids, n, skip, -1, &text, &err) != TP_OK) {
        snprintf(msg, sizeof msg, "%s: decode: %s", name, err.message);
        check_note(k, 0, name, msg);
        return;
    }
    check_note(k, compare_str(name, text, want->valuestring, msg, sizeof msg), name, msg);
    tp_free(text);
}

/* `tokens` is convert_ids_to_tokens(ids): mapped from the reference ids, so that the
 * vocabulary is checked even where encoding differs. */
static void check_tokens(checks *k, tp_tokenizer *tok, const int32_t *ids, size_t n,
                         const cJSON *want)
{
    char msg[MSG_MAX];
    if (!cJSON_IsArray(want))
        return;
    if ((size_t)cJSON_GetArraySize(want) != n) {
        check_note(k, 0, "tokens", "reference: tokens and ids differ in length");
        return;
    }
    size_t i = 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, want) {
        const char *got = tp_tokenizer_id_to_token(tok, ids[i]);
        const char *ws = cJSON_IsString(w) ? w->valuestring : "";
        if (!got || strcmp(got, ws) != 0) {
            snprintf(msg, sizeof msg, "tokens[%zu] (id %d): got %s%s%s, want \"%s\"", i, ids[i],
                     got ? "\"" : "", got ? got : "nothing", got ? "\"" : "", ws);
            check_note(k, 0, "tokens", msg);
            return;
        }
        i++;
    }
}

/* Checks one tokenizer case; returns 1 when everything matches, else fills `msg`. */
static int tokenizer_case(tp_tokenizer *tok, const cJSON *c, char *msg, size_t size)
{
    checks k = {0};
    char m[MSG_MAX];
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(c, "text");
    const cJSON *pair = cJSON_GetObjectItemCaseSensitive(c, "text_pair");
    int32_t *want_ids = NULL;
    size_t want_n = 0;
    if (!cJSON_IsString(text) || (pair && !cJSON_IsString(pair)) ||
        !json_int_list(cJSON_GetObjectItemCaseSensitive(c, "ids"), &want_ids, &want_n)) {
        snprintf(msg, size, "reference: a case needs string text (and text_pair) and int ids");
        return 0;
    }

    tp_encoding *enc = encode_one(tok, text->valuestring, pair ? pair->valuestring : NULL, 1, m,
                                  sizeof m);
    if (!enc) {
        check_note(&k, 0, "ids", m);
    } else {
        int ok = compare_ints("ids", tp_encoding_ids(enc, 0), tp_encoding_length(enc, 0),
                              want_ids, want_n, m, sizeof m);
        check_note(&k, ok, "ids", m);
        check_type_ids(&k, enc, cJSON_GetObjectItemCaseSensitive(c, "token_type_ids"));
        const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(c, "offsets");
        if (cJSON_IsArray(offsets))
            check_offsets(&k, enc, offsets);
        tp_encoding_free(enc);
    }

    if (!pair) {
        check_tokens(&k, tok, want_ids, want_n, cJSON_GetObjectItemCaseSensitive(c, "tokens"));
        const cJSON *no_special = cJSON_GetObjectItemCaseSensitive(c, "ids_no_special");
        int32_t *ns_ids;
        size_t ns_n;
        if (json_int_list(no_special, &ns_ids, &ns_n)) {
            enc = encode_one(tok, text->valuestring, NULL, 0, m, sizeof m);
            if (!enc) {
                check_note(&k, 0, "ids_no_special", m);
            } else {
                int ok = compare_ints("ids_no_special", tp_encoding_ids(enc, 0),
                                      tp_encoding_length(enc, 0), ns_ids, ns_n, m, sizeof m);
                check_note(&k, ok, "ids_no_special", m);
                tp_encoding_free(enc);
            }
            free(ns_ids);
        }
        check_decode(&k, tok, want_ids, want_n, 1, "decoded",
                     cJSON_GetObjectItemCaseSensitive(c, "decoded"));
        check_decode(&k, tok, want_ids, want_n, 0, "decoded_with_special",
                     cJSON_GetObjectItemCaseSensitive(c, "decoded_with_special"));
    }
    free(want_ids);

    if (k.failed == 0)
        return 1;
    if (k.others[0])
        snprintf(msg, size, "%.700s (also differ: %.255s)", k.first, k.others);
    else
        snprintf(msg, size, "%s", k.first);
    return 0;
}

/* One pass over the tokenizer cases with one tokenizer source. */
static void tokenizer_pass(run *r, const cJSON *cases, tp_tokenizer_source source,
                           const char *source_name)
{
    tp_tokenizer *tok = NULL;
    tp_error err = {0};
    tp_status st = tp_tokenizer_new(r->fx->dir, source, &tok, &err);
    long i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        char msg[MSG_MAX];
        if (st != TP_OK) {
            report(r, "tokenizer", i++, source_name, 0, -1, "tokenizer: %s", err.message);
            continue;
        }
        int ok = tokenizer_case(tok, c, msg, sizeof msg);
        report(r, "tokenizer", i++, source_name, ok, -1, "%s", msg);
    }
    tp_tokenizer_free(tok);
}

static void run_tokenizer_cases(run *r, const cJSON *cases)
{
    const char *dir = r->fx->dir;
    int json = file_exists(dir, "tokenizer.json");
    int legacy = has_legacy_vocab(dir);
    if (json)
        tokenizer_pass(r, cases, TP_TOKENIZER_JSON, "json");
    if (legacy)
        tokenizer_pass(r, cases, TP_TOKENIZER_LEGACY, "legacy");
    if (!json && !legacy)
        tokenizer_pass(r, cases, TP_TOKENIZER_AUTO, "auto");
}

/* ------------------------------------------------------------ per-backend objects */

static tp_model *backend_model(run *r, const char **error)
{
    if (!r->model_tried) {
        tp_error err = {0};
        r->model_tried = 1;
        if (tp_model_new(r->rt, r->fx->dir, &r->model, &err) != TP_OK) {
            r->model = NULL;
            r->model_error = strdup(err.message);
        }
    }
    *error = r->model_error ? r->model_error : "model not loaded";
    return r->model;
}

static tp_pipeline *backend_pipeline(run *r, const char *task, const char **error)
{
    for (size_t i = 0; i < r->n_pipes; i++) {
        if (strcmp(r->pipes[i].task, task) == 0) {
            *error = r->pipes[i].error;
            return r->pipes[i].p;
        }
    }
    cached_pipeline *grown = realloc(r->pipes, (r->n_pipes + 1) * sizeof *grown);
    if (!grown) {
        *error = "out of memory";
        return NULL;
    }
    r->pipes = grown;
    cached_pipeline *cp = &r->pipes[r->n_pipes++];
    tp_error err = {0};
    cp->task = strdup(task);
    cp->p = NULL;
    cp->error = NULL;
    if (tp_pipeline_new(r->rt, task, r->fx->dir, &cp->p, &err) != TP_OK) {
        cp->p = NULL;
        cp->error = strdup(err.message[0] ? err.message : tp_strerror(err.status));
    }
    *error = cp->error;
    return cp->p;
}

static void backend_objects_free(run *r)
{
    tp_model_free(r->model);
    free(r->model_error);
    r->model = NULL;
    r->model_error = NULL;
    r->model_tried = 0;
    for (size_t i = 0; i < r->n_pipes; i++) {
        tp_pipeline_free(r->pipes[i].p);
        free(r->pipes[i].task);
        free(r->pipes[i].error);
    }
    free(r->pipes);
    r->pipes = NULL;
    r->n_pipes = 0;
}

/* ------------------------------------------------------------ forward cases */

/* The reference's {shape, data} next to the tensor tpipe returned. Element i of the
 * reference is got[i * stride + offset] (stride 2 picks a column of the QA head). */
typedef struct tensor_view {
    const float *got;
    size_t stride, offset;
} tensor_view;

static void format_index(const int64_t *shape, int ndim, size_t flat, char *buf, size_t size)
{
    int64_t idx[8] = {0};
    for (int d = ndim - 1; d >= 0; d--) {
        idx[d] = (int64_t)(flat % (size_t)shape[d]);
        flat /= (size_t)shape[d];
    }
    size_t len = snprintf(buf, size, "[");
    for (int d = 0; d < ndim && len < size; d++)
        len += snprintf(buf + len, size - len, "%s%lld", d ? "," : "", (long long)idx[d]);
    if (len < size)
        snprintf(buf + len, size - len, "]");
}

static void format_shape(const int64_t *shape, int ndim, char *buf, size_t size)
{
    size_t len = snprintf(buf, size, "[");
    for (int d = 0; d < ndim && len < size; d++)
        len += snprintf(buf + len, size - len, "%s%lld", d ? "," : "", (long long)shape[d]);
    if (len < size)
        snprintf(buf + len, size - len, "]");
}

/* Compares one output. Token-level outputs (every one but rank-2 `logits`) are
 * compared only where attention_mask[b, t] is 1. */
static int compare_output(const char *name, const cJSON *want, const tp_tensor *out,
                          const int32_t *mask, int batch, int seq, double *worst, char *msg,
                          size_t size)
{
    const cJSON *shape_j = cJSON_GetObjectItemCaseSensitive(want, "shape");
    const cJSON *data_j = cJSON_GetObjectItemCaseSensitive(want, "data");
    int64_t shape[8];
    int ndim = cJSON_GetArraySize(shape_j);
    if (!cJSON_IsArray(shape_j) || !cJSON_IsArray(data_j) || ndim < 1 || ndim > 7) {
        snprintf(msg, size, "reference: %s needs shape and data", name);
        return 0;
    }
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        shape[d] = (int64_t)cJSON_GetArrayItem(shape_j, d)->valuedouble;
        numel *= (size_t)shape[d];
    }
    if ((size_t)cJSON_GetArraySize(data_j) != numel) {
        snprintf(msg, size, "reference: %s data does not fill its shape", name);
        return 0;
    }

    /* the tensor must have the reference's shape, plus a trailing 2 for the QA columns */
    int qa = strcmp(name, "start_logits") == 0 || strcmp(name, "end_logits") == 0;
    int got_ndim = tp_tensor_ndim(out);
    int64_t got_shape[8] = {0};
    int shape_ok = got_ndim == ndim + qa && got_ndim <= 8;
    for (int d = 0; d < got_ndim && d < 8; d++)
        got_shape[d] = tp_tensor_dim(out, d);
    for (int d = 0; shape_ok && d < ndim; d++)
        shape_ok = got_shape[d] == shape[d];
    if (shape_ok && qa)
        shape_ok = got_shape[ndim] == 2;
    if (!shape_ok) {
        char gs[128], ws[128];
        format_shape(got_shape, got_ndim < 8 ? got_ndim : 8, gs, sizeof gs);
        format_shape(shape, ndim, ws, sizeof ws);
        snprintf(msg, size, "%s: shape %s, want %s%s", name, gs, ws, qa ? " with 2 columns" : "");
        return 0;
    }
    tensor_view v = {tp_tensor_f32(out), qa ? 2 : 1, strcmp(name, "end_logits") == 0 ? 1 : 0};
    if (!v.got) {
        snprintf(msg, size, "%s: tensor is not fp32", name);
        return 0;
    }

    int token_level = !(strcmp(name, "logits") == 0 && ndim == 2);
    if (token_level && (ndim < 2 || shape[0] != batch || shape[1] != seq)) {
        snprintf(msg, size, "reference: %s is not [batch, seq, ...]", name);
        return 0;
    }
    size_t per_token = 1;
    for (int d = 2; d < ndim; d++)
        per_token *= (size_t)shape[d];

    double max_diff = 0.0;
    size_t max_at = 0;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, data_j) {
        size_t bt = i / per_token; /* b * seq + t for token-level outputs */
        if (!token_level || !mask || mask[bt]) {
            double d = fabs((double)v.got[i * v.stride + v.offset] - e->valuedouble);
            if (isnan(d))
                d = INFINITY;
            if (d > max_diff) {
                max_diff = d;
                max_at = i;
            }
        }
        i++;
    }
    if (max_diff > *worst)
        *worst = max_diff;
    if (max_diff > TOLERANCE) {
        char at[128];
        format_index(shape, ndim, max_at, at, sizeof at);
        snprintf(msg, size, "%s: max |diff| %.1e > %.0e at %s (got %.7g, want %.7g)", name,
                 max_diff, TOLERANCE, at, v.got[max_at * v.stride + v.offset],
                 cJSON_GetArrayItem(data_j, (int)max_at)->valuedouble);
        return 0;
    }
    return 1;
}

static const char *const FORWARD_OUTPUTS[] = {"logits", "start_logits", "end_logits",
                                              "last_hidden_state"};

/* Encoder-decoder cases carry decoder_input_ids: the decoder `logits`
 * [batch, decoder_seq, vocab] are compared at every position (the decoder input is
 * unpadded), and `encoder_last_hidden_state` through a second forward with
 * output_hidden_states = 1, which for an encoder-decoder model returns the encoder's
 * last hidden state. Their attention_mask may be absent (all ones). */
static void forward_case(run *r, long index, const char *backend, const cJSON *c)
{
    char msg[MSG_MAX] = "";
    const char *why;
    tp_model *m = backend_model(r, &why);
    if (!m) {
        report(r, "forward", index, backend, 0, -1, "model: %s", why);
        return;
    }

    int32_t *ids = NULL, *mask = NULL, *types = NULL, *dec = NULL;
    int b, t, mb, mt, tb, tt, db = 0, dt = 0;
    const cJSON *types_j = cJSON_GetObjectItemCaseSensitive(c, "token_type_ids");
    const cJSON *mask_j = cJSON_GetObjectItemCaseSensitive(c, "attention_mask");
    const cJSON *dec_j = cJSON_GetObjectItemCaseSensitive(c, "decoder_input_ids");
    if (!json_int_matrix(cJSON_GetObjectItemCaseSensitive(c, "input_ids"), &ids, &b, &t)) {
        report(r, "forward", index, backend, 0, -1, "reference: input_ids is not an int matrix");
        return;
    }
    if (((mask_j || !dec_j) &&
         (!json_int_matrix(mask_j, &mask, &mb, &mt) || mb != b || mt != t)) ||
        (types_j && (!json_int_matrix(types_j, &types, &tb, &tt) || tb != b || tt != t)) ||
        (dec_j && (!json_int_matrix(dec_j, &dec, &db, &dt) || db != b))) {
        report(r, "forward", index, backend, 0, -1,
               "reference: attention_mask/token_type_ids/decoder_input_ids do not match "
               "input_ids");
        free(ids);
        free(mask);
        free(types);
        free(dec);
        return;
    }

    tp_model_input in = {.struct_size = sizeof in, .batch = b, .seq_len = t, .input_ids = ids,
                         .attention_mask = mask, .token_type_ids = types,
                         .decoder_input_ids = dec, .decoder_seq_len = dt};
    tp_tensor *out = NULL, *enc_out = NULL;
    tp_error err = {0};
    if (tp_model_forward(m, &in, &out, &err) != TP_OK) {
        report(r, "forward", index, backend, 0, -1, "forward: %s", err.message);
    } else {
        double worst = 0.0;
        int ok = 1, compared = 0;
        for (size_t o = 0; ok && o < sizeof FORWARD_OUTPUTS / sizeof *FORWARD_OUTPUTS; o++) {
            const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, FORWARD_OUTPUTS[o]);
            if (!want)
                continue;
            compared++;
            ok = compare_output(FORWARD_OUTPUTS[o], want, out, dec ? NULL : mask, b,
                                dec ? dt : t, &worst, msg, sizeof msg);
        }
        const cJSON *want_enc = cJSON_GetObjectItemCaseSensitive(c, "encoder_last_hidden_state");
        if (ok && dec && want_enc) {
            in.output_hidden_states = 1;
            compared++;
            if (tp_model_forward(m, &in, &enc_out, &err) != TP_OK) {
                ok = 0;
                snprintf(msg, sizeof msg, "forward (output_hidden_states): %s", err.message);
            } else {
                ok = compare_output("encoder_last_hidden_state", want_enc, enc_out, mask, b, t,
                                    &worst, msg, sizeof msg);
            }
        }
        if (ok && !compared) {
            ok = 0;
            snprintf(msg, sizeof msg, "reference: no output to compare");
        }
        report(r, "forward", index, backend, ok, worst, "%s", msg);
    }
    tp_tensor_free(out);
    tp_tensor_free(enc_out);
    free(ids);
    free(mask);
    free(types);
    free(dec);
}

/* `forward` is one case (an object) in today's fixtures; a list is accepted too. */
static void run_forward_cases(run *r, const cJSON *forward, const char *backend)
{
    if (cJSON_IsObject(forward)) {
        forward_case(r, 0, backend, forward);
        return;
    }
    long i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, forward)
        forward_case(r, i++, backend, c);
}

/* ------------------------------------------------------------ pipeline cases */

/* Builds {"inputs": ..., "parameters": ...} from transformers' call
 * pipeline(task)(*args, **kwargs). args[0] is the input; a second positional
 * argument is mapped the way that task's __call__ maps it:
 *   zero-shot-classification  args[1] -> parameters.candidate_labels
 *   question-answering        (args[0], args[1]) -> inputs {question, context}
 * Returns NULL (and the reason in `msg`) for anything else. */
static char *build_request(const char *task, const cJSON *args, const cJSON *kwargs, char *msg,
                           size_t size)
{
    int n = cJSON_GetArraySize(args);
    if (!cJSON_IsArray(args) || n < 1) {
        snprintf(msg, size, "reference: args must be a non-empty list");
        return NULL;
    }
    if (kwargs && !cJSON_IsObject(kwargs)) {
        snprintf(msg, size, "reference: kwargs must be an object");
        return NULL;
    }
    cJSON *req = cJSON_CreateObject();
    cJSON *params = kwargs ? cJSON_Duplicate(kwargs, 1) : cJSON_CreateObject();
    cJSON *inputs = cJSON_Duplicate(cJSON_GetArrayItem(args, 0), 1);
    const char *bad = NULL;
    if (n == 2 && strcmp(task, "zero-shot-classification") == 0) {
        if (cJSON_GetObjectItemCaseSensitive(params, "candidate_labels"))
            bad = "candidate_labels given both positionally and by keyword";
        else
            cJSON_AddItemToObject(params, "candidate_labels",
                                  cJSON_Duplicate(cJSON_GetArrayItem(args, 1), 1));
    } else if (n == 2 && strcmp(task, "question-answering") == 0) {
        cJSON *qa = cJSON_CreateObject();
        cJSON_AddItemToObject(qa, "question", inputs);
        cJSON_AddItemToObject(qa, "context", cJSON_Duplicate(cJSON_GetArrayItem(args, 1), 1));
        inputs = qa;
    } else if (n > 1) {
        bad = "positional arguments after the first have no mapping for this task";
    }
    cJSON_AddItemToObject(req, "inputs", inputs);
    cJSON_AddItemToObject(req, "parameters", params);
    char *text = bad ? NULL : cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (bad)
        snprintf(msg, size, "reference: %s (%s, %d args)", bad, task, n);
    else if (!text)
        snprintf(msg, size, "out of memory");
    return text;
}

/* Runs one request on the (cached) pipeline for `task` and compares the response with
 * `want`. `args`/`kwargs` are transformers' call; the result is reported under
 * kind[index]. */
static void pipeline_request(run *r, const char *kind, long index, const char *backend,
                             const char *task, const cJSON *args, const cJSON *kwargs,
                             const cJSON *want, const char *case_id)
{
    char msg[MSG_MAX];
    char id_note[160] = "";
    if (case_id)
        snprintf(id_note, sizeof id_note, " (id %s)", case_id);
    const char *why;
    tp_pipeline *p = backend_pipeline(r, task, &why);
    if (!p) {
        report(r, kind, index, backend, 0, -1, "pipeline '%s': %s%s", task, why, id_note);
        return;
    }
    char *request = build_request(tp_pipeline_task(p), args, kwargs, msg, sizeof msg);
    if (!request) {
        report(r, kind, index, backend, 0, -1, "%s%s", msg, id_note);
        return;
    }
    char *response = NULL;
    tp_error err = {0};
    if (tp_pipeline_run(p, request, &response, &err) != TP_OK) {
        report(r, kind, index, backend, 0, -1, "run: %s%s", err.message, id_note);
    } else {
        cJSON *got = cJSON_Parse(response);
        if (!got) {
            report(r, kind, index, backend, 0, -1, "response is not JSON: %.80s%s", response,
                   id_note);
        } else {
            double worst;
            int ok = json_compare(got, want, TOLERANCE, &worst, msg, sizeof msg);
            report(r, kind, index, backend, ok, worst, "%s%s", msg, id_note);
            cJSON_Delete(got);
        }
    }
    tp_free(response);
    cJSON_free(request);
}

static void run_pipeline_cases(run *r, const cJSON *cases, const char *backend)
{
    long i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const cJSON *task = cJSON_GetObjectItemCaseSensitive(c, "task");
        const cJSON *output = cJSON_GetObjectItemCaseSensitive(c, "output");
        if (!cJSON_IsString(task) || !output) {
            report(r, "pipeline", i++, backend, 0, -1, "reference: a case needs task and output");
            continue;
        }
        pipeline_request(r, "pipeline", i++, backend, task->valuestring,
                         cJSON_GetObjectItemCaseSensitive(c, "args"),
                         cJSON_GetObjectItemCaseSensitive(c, "kwargs"), output, NULL);
    }
}

/* ------------------------------------------------------------ qa cases */

/* One window of a qa case's `spans` (what transformers 4 fed its model) against
 * row `w` of tpipe's encoding: input_ids, offsets and p_mask exactly, and the start
 * and end logits of tp_model_forward on that window alone within TOLERANCE. */
static int qa_window_check(tp_model *m, tp_tokenizer *tok, const tp_encoding *enc, size_t w,
                           const cJSON *sp, double *worst, char *msg, size_t size)
{
    size_t n = tp_encoding_length(enc, w);
    const int32_t *ids = tp_encoding_ids(enc, w), *seq = tp_encoding_sequence_ids(enc, w);
    const int32_t *offs = tp_encoding_offsets(enc, w);
    int32_t *want_ids = NULL, *want_offs = NULL, *want_pm = NULL, *pm = NULL;
    size_t wn = 0, pn = 0;
    int orows = 0, ocols = 0, ok = 0;
    const cJSON *sl = cJSON_GetObjectItemCaseSensitive(sp, "start_logits");
    const cJSON *el = cJSON_GetObjectItemCaseSensitive(sp, "end_logits");
    char name[64];
    tp_tensor *out = NULL;
    if (!json_int_list(cJSON_GetObjectItemCaseSensitive(sp, "input_ids"), &want_ids, &wn) ||
        !json_int_list(cJSON_GetObjectItemCaseSensitive(sp, "p_mask"), &want_pm, &pn) ||
        !json_int_matrix(cJSON_GetObjectItemCaseSensitive(sp, "offsets"), &want_offs, &orows,
                         &ocols) || ocols != 2 || (size_t)orows != wn || pn != wn ||
        cJSON_GetArraySize(sl) != (int)wn || cJSON_GetArraySize(el) != (int)wn) {
        snprintf(msg, size, "reference: spans[%zu] is not {input_ids, offsets, p_mask, "
                 "start_logits, end_logits} of one length", w);
        goto done;
    }
    snprintf(name, sizeof name, "spans[%zu].input_ids", w);
    if (!compare_ints(name, ids, n, want_ids, wn, msg, size))
        goto done;
    snprintf(name, sizeof name, "spans[%zu].offsets", w);
    if (!compare_ints(name, offs, 2 * n, want_offs, 2 * wn, msg, size))
        goto done;
    /* transformers 4's p_mask: everything but the context, the CLS token kept */
    int32_t cls = tp_tokenizer_special_id(tok, "cls");
    pm = malloc((n ? n : 1) * sizeof *pm);
    if (!pm) {
        snprintf(msg, size, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        pm[i] = seq[i] != 1 && !(cls >= 0 && ids[i] == cls);
    snprintf(name, sizeof name, "spans[%zu].p_mask", w);
    if (!compare_ints(name, pm, n, want_pm, wn, msg, size))
        goto done;

    tp_model_input in = {.struct_size = sizeof in, .batch = 1, .seq_len = (int)n,
                         .input_ids = ids, .token_type_ids = tp_encoding_type_ids(enc, w)};
    tp_error err = {0};
    if (tp_model_forward(m, &in, &out, &err) != TP_OK) {
        snprintf(msg, size, "spans[%zu]: forward: %s", w, err.message);
        goto done;
    }
    const float *got = tp_tensor_f32(out);
    if (!got || tp_tensor_ndim(out) != 3 || tp_tensor_dim(out, 1) != (int64_t)n ||
        tp_tensor_dim(out, 2) != 2) {
        snprintf(msg, size, "spans[%zu]: the model gave no [1, %zu, 2] fp32 logits", w, n);
        goto done;
    }
    for (int col = 0; col < 2; col++) {
        const cJSON *want = col ? el : sl;
        for (size_t i = 0; i < n; i++) {
            const cJSON *x = cJSON_GetArrayItem(want, (int)i);
            double d = cJSON_IsNumber(x) ? fabs((double)got[2 * i + col] - x->valuedouble) : INFINITY;
            if (d > *worst)
                *worst = d;
            if (!(d <= TOLERANCE)) {
                snprintf(msg, size, "spans[%zu].%s[%zu]: got %.6g, want %.6g", w,
                         col ? "end_logits" : "start_logits", i, (double)got[2 * i + col],
                         cJSON_IsNumber(x) ? x->valuedouble : NAN);
                goto done;
            }
        }
    }
    ok = 1;
done:
    tp_tensor_free(out);
    free(want_ids);
    free(want_offs);
    free(want_pm);
    free(pm);
    return ok;
}

/* The windows of a qa case with `spans`: the question and context cut the way
 * transformers 4 cuts them (only_second, max_seq_len, doc_stride, with its
 * defaults), each window checked by qa_window_check. */
static int qa_spans_check(run *r, const cJSON *c, const cJSON *spans, double *worst, char *msg,
                          size_t size)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(c, "question");
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(c, "context");
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(c, "kwargs");
    if (!cJSON_IsString(q) || !cJSON_IsString(ctx) || !cJSON_IsArray(spans)) {
        snprintf(msg, size, "reference: spans need one question and one context");
        return 0;
    }
    const char *why;
    tp_model *m = backend_model(r, &why);
    if (!m) {
        snprintf(msg, size, "spans: model: %s", why);
        return 0;
    }
    tp_tokenizer *tok = NULL;
    tp_encoding *enc = NULL;
    tp_error err = {0};
    int ok = 0;
    if (tp_tokenizer_new(r->fx->dir, TP_TOKENIZER_AUTO, &tok, &err) != TP_OK) {
        snprintf(msg, size, "spans: tokenizer: %s", err.message);
        return 0;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(kw, "max_seq_len");
    int mml = tp_tokenizer_model_max_length(tok);
    int max_seq_len = cJSON_IsNumber(v) ? v->valueint : mml > 0 && mml < 384 ? mml : 384;
    v = cJSON_GetObjectItemCaseSensitive(kw, "doc_stride");
    int stride = cJSON_IsNumber(v) ? v->valueint : max_seq_len / 2 < 128 ? max_seq_len / 2 : 128;
    tp_encode_options o;
    tp_encode_options_init(&o);
    o.truncation = TP_TRUNCATE_ONLY_SECOND;
    o.max_length = max_seq_len;
    o.stride = stride;
    o.return_overflowing = 1;
    const char *texts[1] = {q->valuestring}, *pairs[1] = {ctx->valuestring};
    if (tp_tokenizer_encode(tok, texts, pairs, 1, &o, &enc, &err) != TP_OK) {
        snprintf(msg, size, "spans: encode: %s", err.message);
        goto done;
    }
    size_t rows = tp_encoding_rows(enc);
    if (rows != (size_t)cJSON_GetArraySize(spans)) {
        snprintf(msg, size, "spans: %zu windows, want %d", rows, cJSON_GetArraySize(spans));
        goto done;
    }
    for (size_t w = 0; w < rows; w++)
        if (!qa_window_check(m, tok, enc, w, cJSON_GetArrayItem(spans, (int)w), worst, msg, size))
            goto done;
    ok = 1;
done:
    tp_encoding_free(enc);
    tp_tokenizer_free(tok);
    return ok;
}

/* Extractive QA with transformers 4's semantics: {question, context, kwargs, output,
 * spans} = pipeline("question-answering")(question=..., context=..., **kwargs). The
 * request is {"inputs": {"question", "context"}, "parameters": kwargs} (question may
 * be a list); the answer must equal `output`, and where `spans` is given each window
 * must too (one case either way). */
static void run_qa_cases(run *r, const cJSON *cases, const char *backend)
{
    long i = -1;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        i++;
        char msg[MSG_MAX] = "";
        const cJSON *output = cJSON_GetObjectItemCaseSensitive(c, "output");
        const cJSON *spans = cJSON_GetObjectItemCaseSensitive(c, "spans");
        cJSON *args = cJSON_CreateArray();
        cJSON_AddItemToArray(args, cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(c, "question"), 1));
        cJSON_AddItemToArray(args, cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(c, "context"), 1));
        if (!output || cJSON_GetArraySize(args) != 2) {
            report(r, "qa", i, backend, 0, -1, "reference: a case needs question, context and output");
            cJSON_Delete(args);
            continue;
        }
        const char *why;
        tp_pipeline *p = backend_pipeline(r, "question-answering", &why);
        char *request = p ? build_request("question-answering", args, cJSON_GetObjectItemCaseSensitive(c, "kwargs"),
                                          msg, sizeof msg)
                          : NULL;
        cJSON_Delete(args);
        if (!p) {
            report(r, "qa", i, backend, 0, -1, "pipeline 'question-answering': %s", why);
            continue;
        }
        if (!request) {
            report(r, "qa", i, backend, 0, -1, "%s", msg);
            continue;
        }
        char *response = NULL;
        tp_error err = {0};
        double worst = -1;
        int ok = 0;
        if (tp_pipeline_run(p, request, &response, &err) != TP_OK) {
            snprintf(msg, sizeof msg, "run: %s", err.message);
        } else {
            cJSON *got = cJSON_Parse(response);
            if (!got)
                snprintf(msg, sizeof msg, "response is not JSON: %.80s", response);
            else
                ok = json_compare(got, output, TOLERANCE, &worst, msg, sizeof msg);
            cJSON_Delete(got);
        }
        /* the windows are checked even when the answer differs: they say why */
        if (cJSON_IsArray(spans)) {
            char smsg[MSG_MAX];
            double sworst = worst > 0 ? worst : 0.0;
            int sok = qa_spans_check(r, c, spans, &sworst, smsg, sizeof smsg);
            worst = sworst;
            if (ok && !sok)
                snprintf(msg, sizeof msg, "%s", smsg);
            else if (!ok && !sok && strlen(msg) + 8 < sizeof msg) {
                /* append what fits: the answer's difference comes first */
                size_t used = strlen(msg), room = sizeof msg - used - 1;
                size_t add = strlen(smsg) + 2 < room ? strlen(smsg) + 2 : room;
                memcpy(msg + used, "; ", add < 2 ? add : 2);
                if (add > 2) memcpy(msg + used + 2, smsg, add - 2);
                msg[used + add] = '\0';
            }
            ok = ok && sok;
        }
        report(r, "qa", i, backend, ok, worst, "%s", msg);
        tp_free(response);
        cJSON_free(request);
    }
}

/* ------------------------------------------------------------ heldout cases */

/* The demo's held-out set: pipeline(task)(text, **heldout.kwargs) per case. The
 * case's `output` is one prediction {label, score}; for a single string (and no
 * top_k) transformers returns it inside a one-element list, so that is the answer
 * expected from tpipe. */
static void run_heldout_cases(run *r, const cJSON *heldout, const char *backend)
{
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(r->fx->ref, "task");
    const cJSON *kwargs = cJSON_GetObjectItemCaseSensitive(heldout, "kwargs");
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(heldout, "cases");
    int top_k = kwargs && cJSON_GetObjectItemCaseSensitive(kwargs, "top_k") != NULL;
    long i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(c, "text");
        const cJSON *output = cJSON_GetObjectItemCaseSensitive(c, "output");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        if (!cJSON_IsString(task) || !cJSON_IsString(text) || !output) {
            report(r, "heldout", i++, backend, 0, -1,
                   "reference: a heldout case needs text and output, the file a task");
            continue;
        }
        cJSON *args = cJSON_CreateArray();
        cJSON_AddItemToArray(args, cJSON_CreateString(text->valuestring));
        cJSON *want = NULL;
        if (cJSON_IsObject(output) && !top_k) {
            want = cJSON_CreateArray();
            cJSON_AddItemToArray(want, cJSON_Duplicate(output, 1));
        }
        pipeline_request(r, "heldout", i++, backend, task->valuestring, args, kwargs,
                         want ? want : output, cJSON_IsString(id) ? id->valuestring : NULL);
        cJSON_Delete(want);
        cJSON_Delete(args);
    }
}

/* ------------------------------------------------------------ fixtures */

/* Top-level keys that describe the fixture rather than hold cases. */
/* ------------------------------------------------------------ generate cases */

/* `generate`: {params, input_ids, attention_mask, sequences, search, padding_side?}
 * through tp_model_generate; token ids must match exactly. Sampled cases cannot
 * match (tpipe draws from its own PRNG, not torch's), so they fail with that
 * reason rather than being skipped. */
static void generate_case(run *r, long index, const char *backend, const cJSON *c)
{
    const cJSON *search = cJSON_GetObjectItemCaseSensitive(c, "search");
    if (cJSON_IsString(search) && strcmp(search->valuestring, "sample") == 0) {
        report(r, "generate", index, backend, 0, -1,
               "sampling uses tpipe's own PRNG: token ids differ from torch's");
        return;
    }
    const char *why;
    tp_model *m = backend_model(r, &why);
    if (!m) {
        report(r, "generate", index, backend, 0, -1, "model: %s", why);
        return;
    }
    int32_t *ids = NULL, *mask = NULL, *want = NULL, *got = NULL;
    int b, t, mb, mt, wb, wt, gb = 0, gt = 0;
    const cJSON *mask_j = cJSON_GetObjectItemCaseSensitive(c, "attention_mask");
    if (!json_int_matrix(cJSON_GetObjectItemCaseSensitive(c, "input_ids"), &ids, &b, &t) ||
        (mask_j && (!json_int_matrix(mask_j, &mask, &mb, &mt) || mb != b || mt != t)) ||
        !json_int_matrix(cJSON_GetObjectItemCaseSensitive(c, "sequences"), &want, &wb, &wt)) {
        report(r, "generate", index, backend, 0, -1,
               "reference: input_ids/attention_mask/sequences are not int matrices");
        free(ids);
        free(mask);
        free(want);
        return;
    }
    char *params = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "params"));
    tp_model_input in = {.struct_size = sizeof in, .batch = b, .seq_len = t, .input_ids = ids,
                         .attention_mask = mask};
    tp_error err = {0};
    if (tp_model_generate(m, &in, params, &got, &gb, &gt, &err) != TP_OK) {
        report(r, "generate", index, backend, 0, -1, "generate: %s", err.message);
    } else if (gb != wb || gt != wt) {
        report(r, "generate", index, backend, 0, -1, "sequences are %d x %d, expected %d x %d",
               gb, gt, wb, wt);
    } else {
        long at = -1;
        for (long i = 0; i < (long)wb * wt && at < 0; i++)
            if (got[i] != want[i]) at = i;
        if (at < 0)
            report(r, "generate", index, backend, 1, -1, "");
        else
            report(r, "generate", index, backend, 0, -1,
                   "sequences[%ld][%ld] = %d, expected %d", at / wt, at % wt, (int)got[at],
                   (int)want[at]);
    }
    cJSON_free(params);
    tp_free(got);
    free(ids);
    free(mask);
    free(want);
}

static void run_generate_cases(run *r, const cJSON *cases, const char *backend)
{
    long i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases)
        generate_case(r, i++, backend, c);
}

/* chat: {messages, add_generation_prompt, text}: the fixture's chat_template
 * rendered by the tokenizer; counted once, not per backend. */
static void run_chat_cases(run *r, const cJSON *cases)
{
    tp_tokenizer *tok = NULL;
    tp_error err = {0};
    tp_status st = tp_tokenizer_new(r->fx->dir, TP_TOKENIZER_AUTO, &tok, &err);
    long i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        char msg[MSG_MAX] = "";
        const cJSON *messages = cJSON_GetObjectItemCaseSensitive(c, "messages");
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(c, "text");
        const cJSON *agp = cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt");
        if (st != TP_OK) {
            report(r, "chat", i++, "-", 0, -1, "tokenizer: %s", err.message);
            continue;
        }
        if (!cJSON_IsArray(messages) || !cJSON_IsString(want)) {
            report(r, "chat", i++, "-", 0, -1, "case needs 'messages' (list) and 'text' (string)");
            continue;
        }
        char *json = cJSON_PrintUnformatted(messages);
        char *text = NULL;
        tp_error cerr = {0};
        tp_status cst = json ? tp_tokenizer_apply_chat_template(tok, json, cJSON_IsTrue(agp), &text,
                                                                 &cerr)
                             : TP_ERR_NOMEM;
        int ok = cst == TP_OK && compare_str("text", text, want->valuestring, msg, sizeof msg);
        if (cst != TP_OK)
            snprintf(msg, sizeof msg, "apply_chat_template: %s", json ? cerr.message : "out of memory");
        report(r, "chat", i++, "-", ok, -1, "%s", msg);
        tp_free(text);
        cJSON_free(json);
    }
    tp_tokenizer_free(tok);
}

static int is_metadata_key(const char *key)
{
    static const char *const keys[] = {"name", "task", "architecture", "seed", "transformers",
                                       "torch", "tokenizers", "semantics", "head", "loaded_with",
                                       "pipeline_task", "data", "train_emails", "test_emails",
                                       "test_accuracy"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (strcmp(key, keys[i]) == 0)
            return 1;
    return 0;
}

/* generate, qa, chat and any list of cases this tool does not know yet: each case
 * fails, so that nothing is silently skipped. */
static int kind_selected(const run *r, const char *kind)
{
    if (!r->kinds)
        return 1;
    size_t n = strlen(kind);
    for (const char *p = r->kinds; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncmp(p, kind, n) == 0)
            return 1;
        p += len + (comma ? 1 : 0);
    }
    return 0;
}

static void run_unsupported_cases(run *r, const char *kind, const cJSON *cases)
{
    long n = cJSON_IsArray(cases) ? cJSON_GetArraySize(cases) : 1;
    for (long i = 0; i < n; i++)
        report(r, kind, i, "-", 0, -1, "case kind '%s' not supported yet", kind);
}

static void run_fixture(run *r, const fixture *fx)
{
    r->fx = fx;
    r->fx_counts = (counts){0, 0};
    const cJSON *ref = fx->ref;
    const cJSON *tokenizer =
        kind_selected(r, "tokenizer") ? cJSON_GetObjectItemCaseSensitive(ref, "tokenizer") : NULL;
    const cJSON *forward =
        kind_selected(r, "forward") ? cJSON_GetObjectItemCaseSensitive(ref, "forward") : NULL;
    const cJSON *pipeline =
        kind_selected(r, "pipeline") ? cJSON_GetObjectItemCaseSensitive(ref, "pipeline") : NULL;
    const cJSON *heldout =
        kind_selected(r, "heldout") ? cJSON_GetObjectItemCaseSensitive(ref, "heldout") : NULL;
    const cJSON *qa = kind_selected(r, "qa") ? cJSON_GetObjectItemCaseSensitive(ref, "qa") : NULL;
    const cJSON *generate =
        kind_selected(r, "generate") ? cJSON_GetObjectItemCaseSensitive(ref, "generate") : NULL;

    if (cJSON_IsArray(tokenizer))
        run_tokenizer_cases(r, tokenizer);
    if (kind_selected(r, "chat") && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(ref, "chat")))
        run_chat_cases(r, cJSON_GetObjectItemCaseSensitive(ref, "chat"));

    if (forward || cJSON_IsArray(pipeline) || cJSON_IsObject(heldout) || cJSON_IsArray(qa) ||
        cJSON_IsArray(generate)) {
        for (size_t b = 0; b < r->n_backends; b++) {
            const char *backend = r->backends[b];
            tp_error err = {0};
            /* Backends were checked at start-up; a failure here is still reported per
             * case rather than lost. */
            if (tp_runtime_set_backend(r->rt, backend, &err) != TP_OK) {
                report(r, "backend", (long)b, backend, 0, -1, "set_backend: %s", err.message);
                continue;
            }
            if (forward)
                run_forward_cases(r, forward, backend);
            if (cJSON_IsArray(pipeline))
                run_pipeline_cases(r, pipeline, backend);
            if (cJSON_IsObject(heldout))
                run_heldout_cases(r, heldout, backend);
            if (cJSON_IsArray(qa))
                run_qa_cases(r, qa, backend);
            if (cJSON_IsArray(generate))
                run_generate_cases(r, generate, backend);
            backend_objects_free(r);
        }
    }

    const cJSON *item;
    cJSON_ArrayForEach(item, ref) {
        const char *key = item->string;
        if (strcmp(key, "tokenizer") == 0 || strcmp(key, "forward") == 0 ||
            strcmp(key, "pipeline") == 0 || strcmp(key, "heldout") == 0 ||
            strcmp(key, "qa") == 0 || strcmp(key, "generate") == 0 || strcmp(key, "chat") == 0 || is_metadata_key(key) || !kind_selected(r, key))
            continue;
        if (cJSON_IsArray(item))
            run_unsupported_cases(r, key, item);
    }

    printf("%s: %ld passed, %ld failed\n", fx->name, r->fx_counts.passed, r->fx_counts.failed);
    fflush(stdout);
}

static int load_fixture(fixture *fx, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/reference.json", dir);
    fx->dir = dir;
    fx->ref = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tpipe-conformance: cannot open %s\n", path);
        return 0;
    }
    char *buf = NULL;
    size_t len = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)size + 1)) != NULL) {
            len = fread(buf, 1, (size_t)size, f);
            buf[len] = '\0';
            if (len != (size_t)size) {
                free(buf);
                buf = NULL;
            }
        }
    }
    fclose(f);
    if (!buf) {
        fprintf(stderr, "tpipe-conformance: cannot read %s\n", path);
        return 0;
    }
    const char *end = NULL;
    fx->ref = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!fx->ref || !cJSON_IsObject(fx->ref)) {
        size_t at = (fx->ref || !end) ? 0 : (size_t)(end - buf);
        int line = 1;
        for (size_t i = 0; i < at; i++)
            line += buf[i] == '\n';
        fprintf(stderr, "tpipe-conformance: %s: not a JSON object (error near line %d)\n", path,
                line);
        cJSON_Delete(fx->ref);
        fx->ref = NULL;
        free(buf);
        return 0;
    }
    free(buf);
    return 1;
}

/* The directory's base name; the last two components when two DIRs share it
 * (models/gpt2 and tokenizers/gpt2). */
static void fixture_names(fixture *fxs, int n)
{
    for (int i = 0; i < n; i++) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s", fxs[i].dir);
        size_t len = strlen(tmp);
        while (len > 1 && tmp[len - 1] == '/')
            tmp[--len] = '\0';
        char *base = strrchr(tmp, '/');
        snprintf(fxs[i].name, sizeof fxs[i].name, "%.255s", base ? base + 1 : tmp);
    }
    /* decide every clash before renaming anything */
    int *clash = calloc((size_t)n, sizeof *clash);
    if (!clash)
        return;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            clash[i] |= j != i && strcmp(fxs[i].name, fxs[j].name) == 0;
    for (int i = 0; i < n; i++) {
        if (!clash[i])
            continue;
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s", fxs[i].dir);
        size_t len = strlen(tmp);
        while (len > 1 && tmp[len - 1] == '/')
            tmp[--len] = '\0';
        char *base = strrchr(tmp, '/');
        if (base && base != tmp) {
            *base = '\0';
            char *parent = strrchr(tmp, '/');
            snprintf(fxs[i].name, sizeof fxs[i].name, "%.120s/%.120s", parent ? parent + 1 : tmp,
                     base + 1);
        }
    }
    free(clash);
}

/* ------------------------------------------------------------ backends */

/* Why a backend is not usable: the loader's reason when it found the module. */
static void backend_reason(tp_runtime *rt, const char *name, const char *fallback, char *buf,
                           size_t size)
{
    size_t n = tp_runtime_module_count(rt);
    for (size_t i = 0; i < n; i++) {
        tp_module_info info;
        if (tp_runtime_module_info(rt, i, &info) != TP_OK || info.kind != TP_MODULE_BACKEND)
            continue;
        /* a refused module is listed under its file name */
        const char *base = info.name ? strrchr(info.name, '/') : NULL;
        base = base ? base + 1 : (info.name ? info.name : "");
        size_t len = strlen(name);
        if (strncmp(base, name, len) == 0 && (base[len] == '\0' || base[len] == '.')) {
            snprintf(buf, size, "%s: %s", info.path ? info.path : base,
                     info.loaded ? fallback : (info.reason ? info.reason : "refused"));
            return;
        }
    }
    snprintf(buf, size, "not found in the backend directories (%s)", fallback);
}

/* Picks the backends to run; reports each one that did not load as a failure. */
static void select_backends(run *r, const char *only)
{
    const char *wanted[N_ALL_BACKENDS];
    size_t n_wanted = 0;
    if (only)
        wanted[n_wanted++] = only;
    else
        for (size_t i = 0; i < N_ALL_BACKENDS; i++)
            wanted[n_wanted++] = ALL_BACKENDS[i];

    char missing[N_ALL_BACKENDS][MSG_MAX];
    const char *missing_name[N_ALL_BACKENDS];
    size_t n_missing = 0;
    for (size_t i = 0; i < n_wanted; i++) {
        tp_error err = {0};
        if (tp_runtime_set_backend(r->rt, wanted[i], &err) == TP_OK) {
            r->backends[r->n_backends++] = wanted[i];
        } else {
            missing_name[n_missing] = wanted[i];
            backend_reason(r->rt, wanted[i], err.message, missing[n_missing],
                           sizeof missing[n_missing]);
            n_missing++;
        }
    }

    printf("backends:");
    for (size_t i = 0; i < r->n_backends; i++)
        printf("%s %s", i ? "," : "", r->backends[i]);
    printf("%s\n", r->n_backends ? "" : " none");
    for (size_t i = 0; i < n_missing; i++) {
        printf("FAIL runtime backend %s: did not load: %s\n", missing_name[i], missing[i]);
        r->total.failed++;
    }
}

/* ------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: tpipe-conformance [--backend NAME] [--kinds LIST] [--verbose] DIR...\n"
            "  Replays DIR/reference.json (tokenizer, forward, pipeline and heldout cases)\n"
            "  on the ref, openblas and onednn backends, or only on NAME.\n"
            "  --kinds tokenizer,forward,...: only those case kinds.\n"
            "  Exit: 0 all passed, 1 something failed, 2 usage or unreadable reference.json.\n");
}

int main(int argc, char **argv)
{
    const char *only = NULL, *kinds = NULL;
    int verbose = 0;
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    int n_dirs = 0;
    if (!dirs)
        return 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) {
            verbose = 1;
        } else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else if (strncmp(argv[i], "--backend=", 10) == 0) {
            only = argv[i] + 10;
        } else if (strcmp(argv[i], "--kinds") == 0 && i + 1 < argc) {
            kinds = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            free(dirs);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "tpipe-conformance: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            free(dirs);
            return 2;
        } else {
            dirs[n_dirs++] = argv[i];
        }
    }
    if (n_dirs == 0 || (only && !only[0])) {
        usage(stderr);
        free(dirs);
        return 2;
    }

    /* Read every reference first: a bad one is a usage error before anything runs. */
    fixture *fxs = calloc((size_t)n_dirs, sizeof *fxs);
    int loaded = fxs != NULL;
    for (int i = 0; loaded && i < n_dirs; i++)
        loaded = load_fixture(&fxs[i], dirs[i]);
    if (!loaded) {
        for (int i = 0; fxs && i < n_dirs; i++)
            cJSON_Delete(fxs[i].ref);
        free(fxs);
        free(dirs);
        return 2;
    }
    fixture_names(fxs, n_dirs);

    run r = {.verbose = verbose, .kinds = kinds};
    tp_runtime_options opts;
    tp_runtime_options_init(&opts);
    tp_error err = {0};
    if (tp_runtime_new(&opts, &r.rt, &err) != TP_OK) {
        printf("backends: none\n");
        printf("FAIL runtime: %s\n", err.message);
        r.total.failed++;
    } else {
        select_backends(&r, only);
        if (kinds)
            printf("kinds: %s\n", kinds);
        fflush(stdout);
        for (int i = 0; i < n_dirs; i++)
            run_fixture(&r, &fxs[i]);
        tp_runtime_free(r.rt);
    }

    printf("%ld passed, %ld failed\n", r.total.passed, r.total.failed);
    for (int i = 0; i < n_dirs; i++)
        cJSON_Delete(fxs[i].ref);
    free(fxs);
    free(dirs);
    return r.total.failed == 0 ? 0 : 1;
}
