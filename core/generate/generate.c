/* generate.c: generation over a decoder-only model's KV-cache session (see
 * generate.h): config, logits processors, greedy search, beam search (the
 * vectorised algorithm of transformers 5: beams_to_keep candidates per step,
 * finished hypotheses merged by length-penalised score, the early-stopping
 * heuristic) and multinomial sampling with tpipe's own seeded PRNG.
 * Reentrant: all state lives in the call, except that greedy and sampled decoding
 * of a decoder-only model steps through the model's batcher (batcher.h), which
 * decodes concurrent calls together without changing any call's result. */
#include "generate.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../json_util.h"
#include "../kernels.h"
#include "../runtime.h"
#include "batcher.h"

#define NEG_BIG (-1.0e9f) /* transformers' "not a beam" score */
#define MAX_BEAMS 64
#define MAX_KEEP ((1 + TP_GEN_MAX_EOS) * MAX_BEAMS)

/* ---------------------------------------------------------------- PRNG */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void tp__rng_seed(tp__rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t tp__rng_next(tp__rng *r) {
    uint64_t *s = r->s;
    const uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double tp__rng_uniform(tp__rng *r) { return (double)(tp__rng_next(r) >> 11) * 0x1.0p-53; }

/* ---------------------------------------------------------------- config */

void tp__gen_config_free(tp__gen_config *cfg) {
    if (!cfg) return;
    free(cfg->suppress);
    free(cfg->bad_words);
    free(cfg->bad_len);
    cfg->suppress = NULL, cfg->bad_words = NULL, cfg->bad_len = NULL;
    cfg->n_suppress = cfg->n_bad = 0;
}

static void defaults(tp__gen_config *c) {
    memset(c, 0, sizeof *c);
    c->max_length = 20;
    c->max_new_tokens = -1;
    c->num_beams = 1;
    c->num_return_sequences = 1;
    c->length_penalty = 1.0;
    c->temperature = 1.0;
    c->top_k = 50;
    c->top_p = 1.0;
    c->typical_p = 1.0;
    c->repetition_penalty = 1.0;
    c->pad_id = c->bos_id = c->forced_bos_id = c->forced_eos_id = -1;
    c->decoder_start_id = -1;
}

typedef struct parse_ctx {
    const char *where;  /* "parameter" or a file name */
    int lenient;        /* files: unknown keys and nulls are ignored */
    tp_error *err;
} parse_ctx;

static tp_status bad(parse_ctx *p, const char *key, const char *what) {
    return tp__error(p->err, TP_ERR_INVALID_ARGUMENT, "%s '%s' %s", p->where, key, what);
}

static tp_status get_int(parse_ctx *p, const cJSON *v, const char *key, int lo, int *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < lo || v->valuedouble > INT_MAX / 2) {
        char msg[64];
        snprintf(msg, sizeof msg, "must be an integer >= %d", lo);
        return bad(p, key, msg);
    }
    *out = (int)v->valuedouble;
    return TP_OK;
}

static tp_status get_num(parse_ctx *p, const cJSON *v, const char *key, double lo, int lo_open,
                         double hi, double *out) {
    if (!cJSON_IsNumber(v) || (lo_open ? v->valuedouble <= lo : v->valuedouble < lo) ||
        v->valuedouble > hi || !isfinite(v->valuedouble)) {
        char msg[96];
        if (hi < 1e300)
            snprintf(msg, sizeof msg, "must be a number in %s%g, %g]", lo_open ? "(" : "[", lo, hi);
        else
            snprintf(msg, sizeof msg, "must be a number %s %g", lo_open ? ">" : ">=", lo);
        return bad(p, key, msg);
    }
    *out = v->valuedouble;
    return TP_OK;
}

static tp_status get_id(parse_ctx *p, const cJSON *v, const char *key, int32_t *out) {
    if (cJSON_IsNull(v)) {
        *out = -1;
        return TP_OK;
    }
    int x = 0;
    TP_TRY(get_int(p, v, key, 0, &x));
    *out = x;
    return TP_OK;
}

static tp_status get_id_list(parse_ctx *p, const cJSON *v, const char *key, int32_t **out,
                             int *n) {
    free(*out);
    *out = NULL, *n = 0;
    if (cJSON_IsNull(v)) return TP_OK;
    const int cnt = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
    *out = malloc((size_t)(cnt ? cnt : 1) * sizeof **out);
    if (!*out) return tp__error(p->err, TP_ERR_NOMEM, "out of memory");
    if (!cJSON_IsArray(v)) {
        int x = 0;
        TP_TRY(get_int(p, v, key, 0, &x));
        (*out)[(*n)++] = x;
        return TP_OK;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        int x = 0;
        if (get_int(p, e, key, 0, &x) != TP_OK) return bad(p, key, "must be a list of token ids");
        (*out)[(*n)++] = x;
    }
    return TP_OK;
}

static tp_status set_key(tp__gen_config *c, parse_ctx *p, const char *k, const cJSON *v) {
    if (p->lenient && cJSON_IsNull(v) && strcmp(k, "pad_token_id") != 0) return TP_OK;
#define IS(name) (strcmp(k, name) == 0)
    if (IS("max_length")) return get_int(p, v, k, 1, &c->max_length);
    if (IS("max_new_tokens")) {
        if (cJSON_IsNull(v)) return c->max_new_tokens = -1, TP_OK;
        return get_int(p, v, k, 1, &c->max_new_tokens);
    }
    if (IS("min_length")) return get_int(p, v, k, 0, &c->min_length);
    if (IS("min_new_tokens")) return get_int(p, v, k, 0, &c->min_new_tokens);
    if (IS("num_beams")) return get_int(p, v, k, 1, &c->num_beams);
    if (IS("num_return_sequences")) return get_int(p, v, k, 1, &c->num_return_sequences);
    if (IS("top_k")) return get_int(p, v, k, 0, &c->top_k);
    if (IS("no_repeat_ngram_size")) return get_int(p, v, k, 0, &c->no_repeat_ngram_size);
    if (IS("encoder_no_repeat_ngram_size"))
        return get_int(p, v, k, 0, &c->encoder_no_repeat_ngram_size);
    if (IS("temperature")) return get_num(p, v, k, 0, 1, 1e308, &c->temperature);
    if (IS("top_p")) return get_num(p, v, k, 0, 0, 1, &c->top_p);
    if (IS("typical_p")) return get_num(p, v, k, 0, 1, 1, &c->typical_p);
    if (IS("min_p")) {
        if (cJSON_IsNull(v)) return c->min_p = 0, TP_OK;
        return get_num(p, v, k, 0, 0, 1, &c->min_p);
    }
    if (IS("repetition_penalty")) return get_num(p, v, k, 0, 1, 1e308, &c->repetition_penalty);
    if (IS("length_penalty")) return get_num(p, v, k, -1e308, 0, 1e308, &c->length_penalty);
    if (IS("do_sample")) {
        if (!cJSON_IsBool(v)) return bad(p, k, "must be true or false");
        c->do_sample = cJSON_IsTrue(v);
        return TP_OK;
    }
    if (IS("early_stopping")) {
        if (cJSON_IsBool(v)) c->early_stopping = cJSON_IsTrue(v) ? TP_EARLY_TRUE : TP_EARLY_FALSE;
        else if (cJSON_IsString(v) && strcmp(v->valuestring, "never") == 0)
            c->early_stopping = TP_EARLY_NEVER;
        else return bad(p, k, "must be true, false or \"never\"");
        return TP_OK;
    }
    if (IS("eos_token_id")) {
        int32_t *ids = NULL;
        int n = 0;
        tp_status st = get_id_list(p, v, k, &ids, &n);
        if (st == TP_OK && n > TP_GEN_MAX_EOS) st = bad(p, k, "has too many ids (at most 8)");
        if (st == TP_OK) {
            memcpy(c->eos, ids, (size_t)n * sizeof *ids);
            c->n_eos = n;
        }
        free(ids);
        return st;
    }
    if (IS("pad_token_id")) return get_id(p, v, k, &c->pad_id);
    if (IS("bos_token_id")) return get_id(p, v, k, &c->bos_id);
    if (IS("forced_bos_token_id")) return get_id(p, v, k, &c->forced_bos_id);
    if (IS("forced_eos_token_id")) return get_id(p, v, k, &c->forced_eos_id);
    if (IS("decoder_start_token_id")) return get_id(p, v, k, &c->decoder_start_id);
    if (IS("suppress_tokens")) return get_id_list(p, v, k, &c->suppress, &c->n_suppress);
    if (IS("bad_words_ids")) {
        free(c->bad_words), free(c->bad_len);
        c->bad_words = NULL, c->bad_len = NULL, c->n_bad = 0;
        if (cJSON_IsNull(v)) return TP_OK;
        if (!cJSON_IsArray(v)) return bad(p, k, "must be a list of lists of token ids");
        int total = 0, n = cJSON_GetArraySize(v);
        const cJSON *w, *e;
        cJSON_ArrayForEach(w, v) {
            if (!cJSON_IsArray(w) || cJSON_GetArraySize(w) == 0)
                return bad(p, k, "must be a list of non-empty lists of token ids");
            total += cJSON_GetArraySize(w);
        }
        c->bad_words = malloc((size_t)(total ? total : 1) * sizeof *c->bad_words);
        c->bad_len = malloc((size_t)(n ? n : 1) * sizeof *c->bad_len);
        if (!c->bad_words || !c->bad_len) return tp__error(p->err, TP_ERR_NOMEM, "out of memory");
        int at = 0;
        cJSON_ArrayForEach(w, v) {
            c->bad_len[c->n_bad++] = cJSON_GetArraySize(w);
            cJSON_ArrayForEach(e, w) {
                int x = 0;
                if (get_int(p, e, k, 0, &x) != TP_OK)
                    return bad(p, k, "must be a list of lists of token ids");
                c->bad_words[at++] = x;
            }
        }
        return TP_OK;
    }
    if (IS("seed")) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble) ||
            v->valuedouble > 9007199254740992.0)
            return bad(p, k, "must be a non-negative integer");
        c->seed = (uint64_t)v->valuedouble;
        return TP_OK;
    }
    if (IS("use_cache")) return TP_OK; /* always cached */
#undef IS
    if (p->lenient) return TP_OK;
    return tp__error(p->err, TP_ERR_INVALID_ARGUMENT, "unknown generation parameter '%s'", k);
}

static tp_status apply(tp__gen_config *c, const cJSON *obj, parse_ctx *p,
                       const char *const *skip) {
    const cJSON *v;
    cJSON_ArrayForEach(v, obj) {
        int skipped = 0;
        for (const char *const *s = skip; s && *s && !skipped; s++) skipped = !strcmp(*s, v->string);
        if (!skipped) TP_TRY(set_key(c, p, v->string, v));
    }
    return TP_OK;
}

tp_status tp__gen_config_init(const tp_model *m, tp__gen_config *cfg, tp_error *err) {
    defaults(cfg);
    /* config.json first (older checkpoints keep generation settings there) */
    parse_ctx p = {m->config_path, 1, err};
    tp_status st = apply(cfg, m->config, &p, NULL);
    if (st != TP_OK) goto fail;
    size_t n = strlen(m->dir) + 32;
    char *path = malloc(n);
    if (!path) {
        st = tp__error(err, TP_ERR_NOMEM, "out of memory");
        goto fail;
    }
    snprintf(path, n, "%s/generation_config.json", m->dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        cJSON *gc = NULL;
        st = tp__json_load(path, &gc, err);
        if (st == TP_OK && !cJSON_IsObject(gc))
            st = tp__error(err, TP_ERR_FORMAT, "%s: expected a JSON object", path);
        p.where = path;
        if (st == TP_OK) st = apply(cfg, gc, &p, NULL);
        cJSON_Delete(gc);
    }
    free(path);
    if (st == TP_OK) return TP_OK;
fail:
    tp__gen_config_free(cfg);
    return st;
}

tp_status tp__gen_config_apply(tp__gen_config *cfg, const cJSON *params,
                               const char *const *skip, tp_error *err) {
    if (!params || cJSON_IsNull(params)) return TP_OK;
    if (!cJSON_IsObject(params))
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "generation parameters must be an object");
    parse_ctx p = {"parameter", 0, err};
    return apply(cfg, params, &p, skip);
}

/* ---------------------------------------------------------------- processors */

static int is_eos(const tp__gen_config *c, int32_t t) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos[i] == t) return 1;
    return 0;
}

static void ban(float *s, int V, int32_t t) {
    if (t >= 0 && t < V) s[t] = -INFINITY;
}

/* Bans the token that followed every earlier occurrence of the last n-1 tokens of
 * seq[0..len) inside src[0..src_n). */
static void ban_ngrams(const int32_t *seq, int len, const int32_t *src, int src_n, int n,
                       float *s, int V) {
    if (n < 1 || len + 1 < n) return;
    const int32_t *prefix = seq + len - (n - 1);
    for (int i = 0; i + n <= src_n; i++)
        if (memcmp(src + i, prefix, (size_t)(n - 1) * sizeof *src) == 0) ban(s, V, src[i + n - 1]);
}

typedef struct ix { float v; int i; } ix;

static int by_value_desc(const void *a, const void *b) {
    const ix *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->i - y->i;
}

static void softmax_into(const float *s, int V, double *p) {
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) mx = s[i] > mx ? s[i] : mx;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += p[i] = isinf(s[i]) && s[i] < 0 ? 0.0 : exp((double)s[i] - mx);
    for (int i = 0; i < V; i++) p[i] /= sum;
}

/* The sampling warpers, with the scratch they need. */
static void warp(const tp__gen_config *c, int min_keep, float *s, int V, ix *o, double *p) {
    if (c->temperature != 1.0)
        for (int i = 0; i < V; i++) s[i] = (float)(s[i] / c->temperature);
    if (c->top_k > 0) {
        int k = c->top_k > min_keep ? c->top_k : min_keep;
        if (k < V) {
            for (int i = 0; i < V; i++) o[i] = (ix){s[i], i};
            qsort(o, (size_t)V, sizeof *o, by_value_desc);
            const float thr = o[k - 1].v;
            for (int i = 0; i < V; i++)
                if (s[i] < thr) s[i] = -INFINITY;
        }
    }
    if (c->top_p < 1.0) {
        /* ascending order: drop the low tail whose mass is at most 1 - top_p */
        for (int i = 0; i < V; i++) o[i] = (ix){s[i], i};
        qsort(o, (size_t)V, sizeof *o, by_value_desc);
        softmax_into(s, V, p);
        double cum = 0;
        for (int r = V - 1; r >= 0; r--) {
            cum += p[o[r].i];
            if (cum <= 1.0 - c->top_p && r >= min_keep) s[o[r].i] = -INFINITY;
        }
    }
    if (c->min_p > 0) {
        softmax_into(s, V, p);
        double top = 0;
        for (int i = 0; i < V; i++) top = p[i] > top ? p[i] : top;
        for (int i = 0; i < V; i++) o[i] = (ix){s[i], i};
        qsort(o, (size_t)V, sizeof *o, by_value_desc);
        for (int r = min_keep; r < V; r++)
            if (p[o[r].i] < c->min_p * top) s[o[r].i] = -INFINITY;
    }
    if (c->typical_p < 1.0) {
        /* keep the tokens whose surprise is closest to the entropy, up to typical_p mass */
        softmax_into(s, V, p);
        double ent = 0;
        for (int i = 0; i < V; i++)
            if (p[i] > 0) ent -= p[i] * log(p[i]);
        for (int i = 0; i < V; i++)
            o[i] = (ix){p[i] > 0 ? -(float)fabs(-log(p[i]) - ent) : -INFINITY, i};
        qsort(o, (size_t)V, sizeof *o, by_value_desc); /* ascending distance */
        double cum = 0;
        int last = 0;
        for (int r = 0; r < V; r++) {
            cum += p[o[r].i];
            if (cum < c->typical_p) last = r + 1;
        }
        if (last > V - 1) last = V - 1;
        const float cut = o[last].v;
        for (int r = 0; r < V; r++)
            if (o[r].v < cut && r >= min_keep) s[o[r].i] = -INFINITY;
    }
}

static void process(const tp__gen_config *c, const int32_t *seq, int len, int prompt_len,
                    const int32_t *prompt, int prompt_n, int max_length, int min_keep, float *s,
                    int V, ix *o, double *p) {
    if (c->repetition_penalty != 1.0)
        for (int i = 0; i < len; i++) {
            const int32_t t = seq[i];
            int seen = 0;
            for (int j = 0; j < i && !seen; j++) seen = seq[j] == t;
            if (seen || t < 0 || t >= V) continue;
            s[t] = s[t] < 0 ? (float)(s[t] * c->repetition_penalty)
                            : (float)(s[t] / c->repetition_penalty);
        }
    if (c->no_repeat_ngram_size > 0)
        ban_ngrams(seq, len, seq, len, c->no_repeat_ngram_size, s, V);
    if (c->encoder_no_repeat_ngram_size > 0)
        ban_ngrams(seq, len, prompt, prompt_n, c->encoder_no_repeat_ngram_size, s, V);
    for (int w = 0, at = 0; w < c->n_bad; at += c->bad_len[w++]) {
        const int n = c->bad_len[w];
        const int32_t *bw = c->bad_words + at;
        if (n == 1 || (len >= n - 1 &&
                       memcmp(seq + len - (n - 1), bw, (size_t)(n - 1) * sizeof *bw) == 0))
            ban(s, V, bw[n - 1]);
    }
    if (c->min_length > 0 && len < c->min_length)
        for (int i = 0; i < c->n_eos; i++) ban(s, V, c->eos[i]);
    if (c->min_new_tokens > 0 && len - prompt_len < c->min_new_tokens)
        for (int i = 0; i < c->n_eos; i++) ban(s, V, c->eos[i]);
    if (c->forced_bos_id >= 0 && c->forced_bos_id < V && len == 1) {
        for (int i = 0; i < V; i++) s[i] = -INFINITY;
        s[c->forced_bos_id] = 0;
    }
    if (c->forced_eos_id >= 0 && c->forced_eos_id < V && len == max_length - 1) {
        for (int i = 0; i < V; i++) s[i] = -INFINITY;
        s[c->forced_eos_id] = 0;
    }
    for (int i = 0; i < c->n_suppress; i++) ban(s, V, c->suppress[i]);
    if (c->do_sample) warp(c, min_keep, s, V, o, p);
}

void tp__gen_process(const tp__gen_config *cfg, const int32_t *seq, int len, int prompt_len,
                     const int32_t *prompt, int prompt_n, int max_length, int min_keep,
                     float *scores, int V) {
    ix *o = malloc((size_t)V * sizeof *o);
    double *p = malloc((size_t)V * sizeof *p);
    if (o && p)
        process(cfg, seq, len, prompt_len, prompt, prompt_n, max_length, min_keep, scores, V, o,
                p);
    free(o);
    free(p);
}

static int sample_p(const double *p, int V, tp__rng *rng) {
    const double u = tp__rng_uniform(rng);
    double cum = 0;
    int last = -1;
    for (int i = 0; i < V; i++) {
        if (p[i] <= 0) continue;
        cum += p[i];
        last = i;
        if (u < cum) return i;
    }
    return last < 0 ? 0 : last; /* rounding left u past the total */
}

int tp__gen_sample(const float *scores, int V, tp__rng *rng) {
    double *p = malloc((size_t)V * sizeof *p);
    if (!p) return 0;
    softmax_into(scores, V, p);
    const int t = sample_p(p, V, rng);
    free(p);
    return t;
}

static int argmax(const float *s, int V) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (s[i] > s[best]) best = i;
    return best;
}

/* ---------------------------------------------------------------- searches */

typedef struct gen {
    const tp__lm_ops *ops;
    void *sess;
    const tp__gen_config *c;
    int V, T, max_len, rows;  /* T: the decoder's prompt (1 for an encoder-decoder) */
    const int32_t *prompt;  /* [rows, pn] what encoder_no_repeat_ngram_size reads */
    int pn;
    int32_t *seq;           /* [rows, max_len] */
    float *logits;          /* [rows, V] */
    int32_t *next;          /* [rows] */
    ix *o; double *p;       /* processor scratch [V] */
    tp__gen_callback cb; void *user;
    uint8_t *stop;          /* [rows] */
    tp__gen_engine *eng;    /* continuous batching: steps go through the model's */
    tp__gen_member *mb;     /* batcher as this member; NULL: the session alone */
} gen;

static tp_status step_next(gen *g, tp_error *err) {
    if (g->mb) return tp__gen_engine_step(g->eng, g->mb, err);
    return g->ops->step(g->sess, g->next, NULL, 1, 0, g->logits, err);
}

static tp_status greedy_or_sample(gen *g, int *out_len, tp_error *err) {
    const tp__gen_config *c = g->c;
    const int V = g->V, T = g->T;
    const int32_t pad = c->pad_id >= 0 ? c->pad_id : (c->n_eos ? c->eos[0] : 0);
    uint8_t *unfinished = g->stop; /* reused: 1 while a row runs */
    for (int r = 0; r < g->rows; r++) unfinished[r] = 1;
    tp__rng rng;
    tp__rng_seed(&rng, c->seed);
    int cur = T;
    for (;;) {
        for (int r = 0; r < g->rows; r++) {
            float *s = g->logits + (size_t)r * V;
            const int32_t *row = g->seq + (size_t)r * g->max_len;
            process(c, row, cur, T, g->prompt + (size_t)r * g->pn, g->pn, g->max_len, 1, s, V,
                    g->o, g->p);
            int32_t t;
            if (c->do_sample) {
                softmax_into(s, V, g->p);
                t = sample_p(g->p, V, &rng);
            } else {
                t = argmax(s, V);
            }
            if (!unfinished[r]) t = pad;
            g->seq[(size_t)r * g->max_len + cur] = g->next[r] = t;
        }
        cur++;
        int running = 0;
        for (int r = 0; r < g->rows; r++) {
            if (unfinished[r] && is_eos(c, g->next[r])) unfinished[r] = 0;
        }
        if (g->cb) {
            /* the callback sees every row; a 1 in stop finishes that row */
            uint8_t *stop = calloc((size_t)g->rows, 1);
            if (!stop) return tp__error(err, TP_ERR_NOMEM, "out of memory");
            int32_t *view = malloc((size_t)g->rows * cur * sizeof *view);
            if (!view) {
                free(stop);
                return tp__error(err, TP_ERR_NOMEM, "out of memory");
            }
            for (int r = 0; r < g->rows; r++)
                memcpy(view + (size_t)r * cur, g->seq + (size_t)r * g->max_len,
                       (size_t)cur * sizeof *view);
            g->cb(g->user, view, g->rows, cur, stop);
            for (int r = 0; r < g->rows; r++)
                if (stop[r]) unfinished[r] = 0;
            free(view);
            free(stop);
        }
        for (int r = 0; r < g->rows; r++) running |= unfinished[r];
        if (!running || cur >= g->max_len) break;
        TP_TRY(step_next(g, err));
    }
    *out_len = cur;
    return TP_OK;
}

typedef struct cand { float score; int beam; int32_t tok; } cand;

/* Beam search over B batch rows of K beams each. Writes the num_return_sequences
 * best finished hypotheses of each batch row into out [B*R, max_len] and their
 * generated lengths into glen. */
static tp_status beam(gen *g, int B, int32_t *out, int *glen, tp_error *err) {
    const tp__gen_config *c = g->c;
    const int V = g->V, T = g->T, K = c->num_beams, L = g->max_len;
    const int keep = (1 + c->n_eos > 2 ? 1 + c->n_eos : 2) * K;
    const int32_t pad = c->pad_id >= 0 ? c->pad_id : (c->n_eos ? c->eos[0] : 0);
    const double lp = c->length_penalty;
    tp_status st = TP_OK;
    float *run_score = malloc((size_t)B * K * sizeof(float));
    float *fin_score = malloc((size_t)B * K * sizeof(float));
    uint8_t *fin_done = calloc((size_t)B * K, 1);
    int *fin_len = calloc((size_t)B * K, sizeof(int));
    int32_t *fin_seq = malloc((size_t)B * K * L * sizeof(int32_t));
    int32_t *new_fin = malloc((size_t)B * K * L * sizeof(int32_t));
    int32_t *new_seq = malloc((size_t)B * K * L * sizeof(int32_t));
    cand *cd = malloc((size_t)keep * sizeof *cd);
    uint8_t *hits = malloc((size_t)keep);
    uint8_t *heur = malloc((size_t)B);
    int *src = malloc((size_t)B * K * sizeof(int));
    if (!run_score || !fin_score || !fin_done || !fin_len || !fin_seq || !new_fin || !new_seq ||
        !cd || !hits || !heur || !src) {
        st = tp__error(err, TP_ERR_NOMEM, "out of memory for a beam search");
        goto done;
    }
    for (int i = 0; i < B * K; i++) {
        run_score[i] = i % K ? NEG_BIG : 0.0f;
        fin_score[i] = NEG_BIG;
    }
    for (size_t i = 0; i < (size_t)B * K * L; i++) fin_seq[i] = pad;
    memset(heur, 1, (size_t)B);
    int cur = T;
    for (;;) {
        int all_hit = 1;
        tp__log_softmax_rows(g->logits, B * K, V);
        for (int r = 0; r < B * K; r++) {
            float *s = g->logits + (size_t)r * V;
            process(c, g->seq + (size_t)r * L, cur, T, g->prompt + (size_t)r * g->pn, g->pn, L,
                    2, s, V, g->o, g->p);
            for (int v = 0; v < V; v++) s[v] += run_score[r];
        }
        for (int b = 0; b < B; b++) {
            /* the `keep` best (beam, token) continuations, best first */
            int n = 0;
            for (int j = 0; j < K; j++) {
                const float *s = g->logits + ((size_t)b * K + j) * V;
                for (int v = 0; v < V; v++) {
                    if (n == keep && !(s[v] > cd[n - 1].score)) continue;
                    int at = n < keep ? n++ : keep - 1;
                    while (at > 0 && s[v] > cd[at - 1].score) {
                        cd[at] = cd[at - 1];
                        at--;
                    }
                    cd[at] = (cand){s[v], j, v};
                }
            }
            for (int i = 0; i < keep; i++) {
                hits[i] = is_eos(c, cd[i].tok) || cur + 1 >= L;
                all_hit &= hits[i];
            }
            /* finished hypotheses: the old ones merged with the top-K candidates that
             * just ended, by length-penalised score */
            const int full = c->early_stopping == TP_EARLY_TRUE;
            int all_done = 1;
            for (int j = 0; j < K; j++) all_done &= fin_done[b * K + j];
            const float norm = (float)pow((double)(cur + 1 - T), lp);
            int taken_f[64] = {0}, taken_c[MAX_KEEP] = {0};
            int nsel = 0;
            float sel_score[64];
            int sel_from[64]; /* >= 0: finished slot; < 0: -(candidate + 1) */
            for (int pick = 0; pick < K && pick < 64; pick++) {
                float best = -INFINITY;
                int from = 0;
                for (int j = 0; j < K; j++)
                    if (!taken_f[j] && fin_score[b * K + j] > best)
                        best = fin_score[b * K + j], from = j;
                for (int i = 0; i < keep; i++) {
                    float sc = cd[i].score / norm;
                    if (full && all_done) sc += NEG_BIG;
                    if (!heur[b]) sc += NEG_BIG;
                    if (!(hits[i] && i < K)) sc += NEG_BIG;
                    if (!taken_c[i] && sc > best) best = sc, from = -(i + 1);
                }
                if (from >= 0) taken_f[from] = 1;
                else taken_c[-from - 1] = 1;
                sel_score[nsel] = best, sel_from[nsel++] = from;
            }
            uint8_t nd[64];
            int nl[64];
            for (int j = 0; j < nsel; j++) {
                int32_t *dst = new_fin + ((size_t)b * K + j) * L;
                const int from = sel_from[j];
                if (from >= 0) {
                    memcpy(dst, fin_seq + ((size_t)b * K + from) * L, (size_t)L * sizeof *dst);
                    nd[j] = fin_done[b * K + from], nl[j] = fin_len[b * K + from];
                } else {
                    const int i = -from - 1;
                    const int32_t *sr = g->seq + ((size_t)b * K + cd[i].beam) * L;
                    memcpy(dst, sr, (size_t)cur * sizeof *dst);
                    dst[cur] = cd[i].tok;
                    for (int t = cur + 1; t < L; t++) dst[t] = pad;
                    nd[j] = hits[i] && i < K, nl[j] = cur + 1 - T;
                }
            }
            for (int j = 0; j < nsel; j++) {
                fin_score[b * K + j] = sel_score[j];
                fin_done[b * K + j] = nd[j];
                fin_len[b * K + j] = nl[j];
            }
            /* the next running beams: the best K candidates that did not stop */
            int nr = 0;
            uint8_t used[MAX_KEEP] = {0};
            for (; nr < K; nr++) {
                int bi = -1;
                float bs = -INFINITY;
                for (int i = 0; i < keep; i++) {
                    const float sc = cd[i].score + (hits[i] ? NEG_BIG : 0.0f);
                    if (!used[i] && sc > bs) bs = sc, bi = i;
                }
                used[bi] = 1;
                const int r = b * K + nr;
                src[r] = b * K + cd[bi].beam;
                run_score[r] = bs;
                int32_t *dst = new_seq + (size_t)r * L;
                memcpy(dst, g->seq + (size_t)src[r] * L, (size_t)cur * sizeof *dst);
                dst[cur] = g->next[r] = cd[bi].tok;
            }
        }
        memcpy(fin_seq, new_fin, (size_t)B * K * L * sizeof *fin_seq);
        memcpy(g->seq, new_seq, (size_t)B * K * L * sizeof *g->seq);
        cur++;
        /* early-stop heuristic: can a running beam still beat the worst finished one? */
        int improvable = 0, open = 0;
        for (int b = 0; b < B; b++) {
            const double len = c->early_stopping == TP_EARLY_NEVER && lp > 0 ? L - T : cur - T;
            const float best = (float)(run_score[b * K] / pow(len, lp));
            float worst = INFINITY;
            int all_done = 1;
            for (int j = 0; j < K; j++) {
                worst = fin_score[b * K + j] < worst ? fin_score[b * K + j] : worst;
                all_done &= fin_done[b * K + j];
            }
            int any = 0;
            for (int j = 0; j < K; j++) any |= best > (fin_done[b * K + j] ? worst : NEG_BIG);
            heur[b] = heur[b] && any;
            improvable |= heur[b];
            open |= !(all_done && c->early_stopping == TP_EARLY_TRUE);
        }
        if (!improvable || !open || all_hit || cur >= L) break;
        st = g->ops->reorder(g->sess, src, err);
        if (st == TP_OK) st = step_next(g, err);
        if (st != TP_OK) goto done;
    }
    const int R = c->num_return_sequences;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < R; j++) {
            memcpy(out + ((size_t)b * R + j) * L, fin_seq + ((size_t)b * K + j) * L,
                   (size_t)L * sizeof *out);
            glen[b * R + j] = fin_len[b * K + j];
        }
done:
    free(run_score);
    free(fin_score);
    free(fin_done);
    free(fin_len);
    free(fin_seq);
    free(new_fin);
    free(new_seq);
    free(cd);
    free(hits);
    free(heur);
    free(src);
    return st;
}

tp_status tp__generate(const tp_model *m, const tp__backend *be, const tp__gen_config *c,
                       const int32_t *ids, const int32_t *mask, int B, int T,
                       tp__gen_callback cb, void *user, int32_t **seqs, int *rows, int *cols,
                       tp_error *err) {
    *seqs = NULL, *rows = *cols = 0;
    const tp__lm_ops *ops = m->family->lm;
    const int s2s = ops && ops->encode && m->head == TP_HEAD_SEQ2SEQ_LM;
    if (!ops || (m->head != TP_HEAD_CAUSAL_LM && !s2s))
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: generation needs a language model (*ForCausalLM, *LMHeadModel, "
                         "*ForConditionalGeneration, MarianMTModel); architecture is '%s'",
                         m->dir, m->architecture);
    if (B < 1 || T < 1 || !ids)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "generate: empty input (%d x %d)", B, T);
    /* an encoder-decoder's decoder starts from one token; the source is the prompt the
     * processors see (encoder_no_repeat_ngram_size) */
    const int S = T;
    int32_t start = -1;
    if (s2s) {
        start = c->decoder_start_id >= 0 ? c->decoder_start_id : ops->decoder_start(m);
        if (start < 0 || start >= ops->vocab_size(m))
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "decoder_start_token_id %d is outside the decoder vocabulary (%d)",
                             (int)start, ops->vocab_size(m));
        T = 1;
    }
    const int K = c->num_beams, NRS = c->num_return_sequences;
    if (K == 1 && !c->do_sample && NRS > 1)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "parameter 'num_return_sequences' is %d: greedy search returns one "
                         "sequence (use num_beams or do_sample)",
                         NRS);
    if (K > 1 && NRS > K)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "parameter 'num_return_sequences' (%d) is larger than num_beams (%d)",
                         NRS, K);
    if (K > 1 && c->do_sample)
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "parameter 'do_sample' with num_beams %d: beam sampling is not "
                         "supported",
                         K);
    if (K > 64)
        return tp__error(err, TP_ERR_UNSUPPORTED, "parameter 'num_beams' %d: at most 64", K);
    int max_len = c->max_new_tokens > 0 ? T + c->max_new_tokens : c->max_length;
    if (max_len <= T) max_len = T + 1; /* transformers still makes one token */
    const int per = K > 1 ? K : NRS;
    if ((int64_t)B * per > 4096)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "generate: %d rows x %d beams/samples is too many",
                         B, per);
    gen g = {.ops = ops, .c = c, .V = ops->vocab_size(m), .T = T, .max_len = max_len,
             .rows = B * per, .cb = cb, .user = user, .pn = S};
    /* continuous batching: greedy and sampled decoder-only requests whose rows fit a
     * batch decode together with the others running on this model (batcher.h) */
    const int max_batch = m->rt ? tp__runtime_options(m->rt)->max_generate_batch : 1;
    tp__gen_member member = {0};
    if (!s2s && K == 1 && max_batch > 1 && g.rows <= max_batch && ops->step_many &&
        ops->engine)
        g.eng = ops->engine(m);
    const int V = g.V, R = g.rows;
    int32_t *prompt = malloc((size_t)R * S * sizeof *prompt);
    int32_t *pmask = malloc((size_t)R * S * sizeof *pmask);
    g.seq = malloc((size_t)R * max_len * sizeof *g.seq);
    g.logits = malloc((size_t)R * V * sizeof *g.logits);
    g.next = malloc((size_t)R * sizeof *g.next);
    g.o = malloc((size_t)V * sizeof *g.o);
    g.p = malloc((size_t)V * sizeof *g.p);
    g.stop = malloc((size_t)R);
    int32_t *out = K > 1 ? malloc((size_t)B * NRS * max_len * sizeof *out) : NULL;
    int *glen = K > 1 ? malloc((size_t)B * NRS * sizeof *glen) : NULL;
    tp_status st = TP_OK;
    if (!prompt || !pmask || !g.seq || !g.logits || !g.next || !g.o || !g.p || !g.stop ||
        (K > 1 && (!out || !glen))) {
        st = tp__error(err, TP_ERR_NOMEM, "out of memory for generation");
        goto done;
    }
    for (int r = 0; r < R; r++) {
        const int b = r / per;
        memcpy(prompt + (size_t)r * S, ids + (size_t)b * S, (size_t)S * sizeof *prompt);
        for (int t = 0; t < S; t++) pmask[(size_t)r * S + t] = mask ? mask[(size_t)b * S + t] : 1;
        if (s2s) g.seq[(size_t)r * max_len] = g.next[r] = start;
        else memcpy(g.seq + (size_t)r * max_len, prompt + (size_t)r * S, (size_t)S * sizeof *prompt);
    }
    g.prompt = prompt;
    st = ops->open(m, be, R, max_len, T, &g.sess, err);
    if (st == TP_OK && s2s) {
        /* the encoder runs once per source row, not per beam or sample */
        st = ops->encode(g.sess, ids, mask, B, S, err);
        if (st == TP_OK) st = ops->step(g.sess, g.next, NULL, 1, 0, g.logits, err);
    } else if (st == TP_OK) {
        st = ops->step(g.sess, prompt, pmask, T, 0, g.logits, err);
    }
    if (st != TP_OK) goto done;
    if (K == 1) {
        int len = 0;
        if (g.eng && !tp__gen_engine_exact(g.eng, m, be, max_batch)) g.eng = NULL;
        if (g.eng) {
            /* the prompt was prefilled alone; from here on steps are shared */
            member = (tp__gen_member){.sess = g.sess, .be = be, .rows = R,
                                      .max_rows = max_batch, .ids = g.next,
                                      .logits = g.logits};
            tp__gen_engine_join(g.eng, &member);
            g.mb = &member;
        }
        st = greedy_or_sample(&g, &len, err);
        if (g.mb) tp__gen_engine_leave(g.eng, g.mb);
        g.mb = NULL;
        if (st != TP_OK) goto done;
        int32_t *res = malloc((size_t)R * len * sizeof *res);
        if (!res) {
            st = tp__error(err, TP_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int r = 0; r < R; r++)
            memcpy(res + (size_t)r * len, g.seq + (size_t)r * max_len, (size_t)len * sizeof *res);
        *seqs = res, *rows = R, *cols = len;
    } else {
        st = beam(&g, B, out, glen, err);
        if (st != TP_OK) goto done;
        int gl = 0;
        for (int i = 0; i < B * NRS; i++) gl = glen[i] > gl ? glen[i] : gl;
        const int len = T + gl;
        int32_t *res = malloc((size_t)B * NRS * len * sizeof *res);
        if (!res) {
            st = tp__error(err, TP_ERR_NOMEM, "out of memory");
            goto done;
        }
        for (int r = 0; r < B * NRS; r++)
            memcpy(res + (size_t)r * len, out + (size_t)r * max_len, (size_t)len * sizeof *res);
        *seqs = res, *rows = B * NRS, *cols = len;
    }
done:
    if (g.sess) ops->close(g.sess);
    free(prompt);
    free(pmask);
    free(g.seq);
    free(g.logits);
    free(g.next);
    free(g.o);
    free(g.p);
    free(g.stop);
    free(out);
    free(glen);
    return st;
}

/* ---------------------------------------------------------------- public API */

tp_status tp_model_generate(tp_model *m, const tp_model_input *in, const char *params_json,
                            int32_t **sequences, int *rows, int *cols, tp_error *err) {
    if (!m || !in || !sequences || !rows || !cols)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "tp_model_generate: NULL argument");
    *sequences = NULL, *rows = *cols = 0;
    if (in->batch < 1 || in->seq_len < 1 || !in->input_ids)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "tp_model_generate: batch %d x seq_len %d with input_ids %s", in->batch,
                         in->seq_len, in->input_ids ? "set" : "NULL");
    cJSON *params = NULL;
    if (params_json && params_json[0])
        TP_TRY(tp__json_parse(params_json, strlen(params_json), "generation parameters", &params,
                              err));
    tp__gen_config cfg;
    tp_status st = tp__gen_config_init(m, &cfg, err);
    if (st == TP_OK) {
        st = tp__gen_config_apply(&cfg, params, NULL, err);
        if (st == TP_OK) {
            tp__backend *be = NULL, ref = {0};
            if (m->rt) {
                be = tp__runtime_acquire_backend(m->rt);
            } else {
                const tp_module_descriptor *d = tp__ref_backend_descriptor();
                ref.vt = d->vtable, ref.name = d->name;
            }
            st = tp__generate(m, be ? be : &ref, &cfg, in->input_ids, in->attention_mask,
                              in->batch, in->seq_len, NULL, NULL, sequences, rows, cols, err);
            if (be) tp__backend_release(be);
        }
        tp__gen_config_free(&cfg);
    }
    cJSON_Delete(params);
    return st;
}
