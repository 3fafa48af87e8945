/* gpt2.c: GPT-2 (model_type "gpt2", GPT2LMHeadModel / GPT2Model) as transformers
 * computes it in fp32 (dropout is identity at inference):
 *
 *   x = wte[id] + wpe[pos]
 *   per layer (pre-LN): x += c_proj(CausalSelfAttn(ln_1(x)))
 *                       x += mlp.c_proj(act(mlp.c_fc(ln_2(x))))
 *   x = ln_f(x); logits = x·wteᵀ (the head is tied to the token embeddings)
 *
 * GPT-2's Conv1D layers store weights [in, out], so they are a plain X·W product
 * (trans_b 0), used in place. Everything runs as a session over a KV cache
 * (kv_cache.h): forward is one step of all tokens, generation (core/generate)
 * steps one token at a time. Sessions are per call: thread-safe on a shared model.
 * session_step_many decodes one token for the rows of several sessions in one
 * pass (continuous batching, core/generate/batcher.h): the matmuls see every row,
 * attention stays per row over that row's own cache. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../generate/batcher.h"
#include "../generate/generate.h"
#include "../json_util.h"
#include "../kernels.h"
#include "attention.h"
#include "encoder.h"
#include "kv_cache.h"

typedef struct gpt2_config {
    int vocab_size;   /* V */
    int hidden;       /* H = n_embd */
    int n_layers, n_heads, head_dim;
    int inner;        /* I = n_inner (4H when null) */
    int max_positions;
    float ln_eps;
    tp_activation act;
    int scale_attn, scale_by_layer;
} gpt2_config;

typedef struct gpt2_layer {
    const float *ln1_g, *ln1_b;   /* [H] */
    const float *attn_w, *attn_b; /* [H, 3H], [3H] c_attn (Conv1D: [in, out]) */
    const float *proj_w, *proj_b; /* [H, H], [H] */
    const float *ln2_g, *ln2_b;   /* [H] */
    const float *fc_w, *fc_b;     /* [H, I], [I] */
    const float *out_w, *out_b;   /* [I, H], [H] */
} gpt2_layer;

typedef struct gpt2 {
    gpt2_config c;
    const float *wte;             /* [V, H] */
    const float *wpe;             /* [P, H] */
    gpt2_layer *layers;
    const float *lnf_g, *lnf_b;   /* [H] */
    const float *lm_w;            /* [V, H] (tied: wte) */
    struct tp__gen_engine *engine; /* continuous batching across generate calls */
} gpt2;

typedef struct gpt2_session {
    const gpt2 *g;
    const tp__backend *be;
    int head;                     /* TP_HEAD_CAUSAL_LM or TP_HEAD_NONE */
    int max_step;
    tp__kv_cache cache;
    float *x, *h, *qkv, *ctx, *ffn, *last; /* scratch for rows*max_step tokens */
    int *pos;
} gpt2_session;

/* Y[m, n] = act(X[m, k]·W[k, n] + b): a Conv1D layer. */
static tp_status conv1d(const tp__backend *be, const float *x, int m, int k, const float *w,
                        const float *b, int n, tp_activation act, float *y, tp_error *err) {
    tp_matmul_args a = {
        .struct_size = sizeof a, .m = m, .n = n, .k = k,
        .a = x, .lda = k, .b = w, .ldb = n, .trans_b = 0, .c = y, .ldc = n,
        .batch = 1, .alpha = 1.0f, .bias = b, .activation = act,
    };
    return tp__matmul(be, &a, err);
}

static void session_close(void *sp) {
    gpt2_session *s = sp;
    if (!s) return;
    tp__kv_cache_free(&s->cache);
    free(s->x);
    free(s->h);
    free(s->qkv);
    free(s->ctx);
    free(s->ffn);
    free(s->last);
    free(s->pos);
    free(s);
}

static tp_status session_open(const tp_model *m, const tp__backend *be, int rows, int cap,
                              int max_step, void **out, tp_error *err) {
    const gpt2 *g = m->arch;
    const gpt2_config *c = &g->c;
    *out = NULL;
    if (rows < 1 || cap < 1 || max_step < 1 || max_step > cap)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "gpt2 session: %d rows x %d tokens",
                         rows, cap);
    if (cap > c->max_positions)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "%d tokens are more than config.json n_positions %d", cap,
                         c->max_positions);
    const int64_t bt = (int64_t)rows * max_step;
    if (bt * (c->inner > 3 * c->hidden ? c->inner : 3 * c->hidden) > INT_MAX ||
        (int64_t)c->n_heads * max_step * cap > INT_MAX)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "batch of %d x %d tokens is too large",
                         rows, cap);
    gpt2_session *s = calloc(1, sizeof *s);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "out of memory");
    s->g = g, s->be = be, s->head = m->head, s->max_step = max_step;
    const size_t H = (size_t)c->hidden;
    s->x = malloc((size_t)bt * H * sizeof(float));
    s->h = malloc((size_t)bt * H * sizeof(float));
    s->qkv = malloc((size_t)bt * 3 * H * sizeof(float));
    s->ctx = malloc((size_t)bt * H * sizeof(float));
    s->ffn = malloc((size_t)bt * c->inner * sizeof(float));
    s->last = malloc((size_t)rows * H * sizeof(float));
    s->pos = malloc((size_t)bt * sizeof(int));
    tp_status st = TP_OK;
    if (!s->x || !s->h || !s->qkv || !s->ctx || !s->ffn || !s->last || !s->pos)
        st = tp__error(err, TP_ERR_NOMEM, "out of memory for a %d x %d gpt2 session", rows, cap);
    if (st == TP_OK) st = tp__kv_cache_new(&s->cache, c->n_layers, rows, cap, c->hidden, err);
    if (st != TP_OK) {
        session_close(s);
        return st;
    }
    *out = s;
    return TP_OK;
}

static tp_status session_step(void *sp, const int32_t *ids, const int32_t *mask, int n, int all,
                              float *logits, tp_error *err) {
    gpt2_session *s = sp;
    const gpt2 *g = s->g;
    const gpt2_config *c = &g->c;
    const tp__backend *be = s->be;
    tp__kv_cache *kv = &s->cache;
    const int B = kv->rows, H = c->hidden, NH = c->n_heads, D = c->head_dim, Bn = B * n;
    if (n < 1 || n > s->max_step)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "gpt2 step of %d tokens (at most %d)", n,
                         s->max_step);
    for (int i = 0; i < Bn; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "input_ids[%d][%d] = %d is outside the vocabulary (0..%d)", i / n,
                             i % n, (int)ids[i], c->vocab_size - 1);
    TP_TRY(tp__kv_cache_positions(kv, mask, n, s->pos, err));
    const int past = kv->len, total = past + n;
    for (int i = 0; i < Bn; i++) {
        float *x = s->x + (size_t)i * H;
        const float *te = g->wte + (size_t)ids[i] * H, *pe = g->wpe + (size_t)s->pos[i] * H;
        for (int h = 0; h < H; h++) x[h] = te[h] + pe[h];
    }
    for (int li = 0; li < c->n_layers; li++) {
        const gpt2_layer *l = &g->layers[li];
        memcpy(s->h, s->x, (size_t)Bn * H * sizeof(float));
        TP_TRY(tp__layer_norm(be, s->h, Bn, H, l->ln1_g, l->ln1_b, c->ln_eps, err));
        TP_TRY(conv1d(be, s->h, Bn, H, l->attn_w, l->attn_b, 3 * H, TP_ACT_NONE, s->qkv, err));
        float scale = c->scale_attn ? (float)(1.0 / sqrt((double)D)) : 1.0f;
        if (c->scale_by_layer) scale /= (float)(li + 1);
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < n; t++) {
                const float *row = s->qkv + ((size_t)b * n + t) * 3 * H;
                memcpy(tp__kv_k(kv, li, b, past + t), row + H, (size_t)H * sizeof(float));
                memcpy(tp__kv_v(kv, li, b, past + t), row + 2 * H, (size_t)H * sizeof(float));
            }
            tp__attn_args a = {
                .n_heads = NH, .head_dim = D, .tq = n, .tk = total,
                .q = s->qkv + (size_t)b * n * 3 * H, .ldq = 3 * H,
                .k = tp__kv_k(kv, li, b, 0), .ldk = H, .v = tp__kv_v(kv, li, b, 0), .ldv = H,
                .key_mask = kv->mask + (size_t)b * kv->cap, .causal_past = past, .scale = scale, .out = s->ctx + (size_t)b * n * H, .ldo = H,
            };
            TP_TRY(tp__attention(be, &a, err));
        }
        TP_TRY(conv1d(be, s->ctx, Bn, H, l->proj_w, l->proj_b, H, TP_ACT_NONE, s->h, err));
        tp__add(s->x, s->h, (size_t)Bn * H);
        memcpy(s->h, s->x, (size_t)Bn * H * sizeof(float));
        TP_TRY(tp__layer_norm(be, s->h, Bn, H, l->ln2_g, l->ln2_b, c->ln_eps, err));
        TP_TRY(conv1d(be, s->h, Bn, H, l->fc_w, l->fc_b, c->inner, c->act, s->ffn, err));
        TP_TRY(conv1d(be, s->ffn, Bn, c->inner, l->out_w, l->out_b, H, TP_ACT_NONE, s->h, err));
        tp__add(s->x, s->h, (size_t)Bn * H);
    }
    tp__kv_cache_commit(kv, n);
    const float *fin = s->x;
    int rows = Bn;
    if (!all) { /* only each row's last token feeds the head */
        for (int b = 0; b < B; b++)
            memcpy(s->last + (size_t)b * H, s->x + ((size_t)b * n + n - 1) * H,
                   (size_t)H * sizeof(float));
        fin = s->last, rows = B;
    }
    float *y = s->head == TP_HEAD_NONE ? logits : (all ? s->x : s->last);
    if (y != fin) memcpy(y, fin, (size_t)rows * H * sizeof(float));
    TP_TRY(tp__layer_norm(be, y, rows, H, g->lnf_g, g->lnf_b, c->ln_eps, err));
    if (s->head == TP_HEAD_NONE) return TP_OK;
    return tp__linear(be, y, rows, H, g->lm_w, NULL, c->vocab_size, TP_ACT_NONE, logits, err);
}

static tp_status session_reorder(void *sp, const int *src, tp_error *err) {
    (void)err;
    tp__kv_cache_reorder(&((gpt2_session *)sp)->cache, src);
    return TP_OK;
}

/* ---------------------------------------------------------------- batched step */

typedef struct gpt2_batch {
    int rows;                     /* what the buffers hold */
    float *x, *h, *qkv, *ctx, *ffn, *logits;
    tp__kv_slot *slot;
    tp__attn_args *attn;          /* one per row: a layer's attention in one call */
} gpt2_batch;

static void batch_free(void *bp) {
    gpt2_batch *w = bp;
    if (!w) return;
    free(w->x);
    free(w->h);
    free(w->qkv);
    free(w->ctx);
    free(w->ffn);
    free(w->logits);
    free(w->slot);
    free(w->attn);
    free(w);
}

/* *bp holds at least `rows` rows (grown, never shrunk: a batch's size settles after
 * its first steps). */
static tp_status batch_reserve(void **bp, const gpt2_config *c, int rows, tp_error *err) {
    gpt2_batch *w = *bp;
    if (w && w->rows >= rows) return TP_OK;
    batch_free(w);
    *bp = NULL;
    w = calloc(1, sizeof *w);
    if (!w) return tp__error(err, TP_ERR_NOMEM, "out of memory");
    const size_t N = (size_t)rows, H = (size_t)c->hidden;
    w->rows = rows;
    w->x = malloc(N * H * sizeof(float));
    w->h = malloc(N * H * sizeof(float));
    w->qkv = malloc(N * 3 * H * sizeof(float));
    w->ctx = malloc(N * H * sizeof(float));
    w->ffn = malloc(N * c->inner * sizeof(float));
    w->logits = malloc(N * c->vocab_size * sizeof(float));
    w->slot = malloc(N * sizeof *w->slot);
    w->attn = malloc(N * sizeof *w->attn);
    if (!w->x || !w->h || !w->qkv || !w->ctx || !w->ffn || !w->logits || !w->slot || !w->attn) {
        batch_free(w);
        return tp__error(err, TP_ERR_NOMEM, "out of memory for a batch of %d gpt2 rows", rows);
    }
    *bp = w;
    return TP_OK;
}

/* session_step of one token, for every row of n sessions at once; each row's
 * arithmetic is exactly that of its own session_step. */
static tp_status session_step_many(void *const *sessions, int n, const int32_t *const *ids,
                                   float *const *logits, void **scratch, tp_error *err) {
    gpt2_session *const *ss = (gpt2_session *const *)sessions;
    const gpt2 *g = ss[0]->g;
    const gpt2_config *c = &g->c;
    const tp__backend *be = ss[0]->be;
    const int H = c->hidden, NH = c->n_heads, D = c->head_dim, V = c->vocab_size;
    int N = 0;
    for (int i = 0; i < n; i++) {
        const tp__kv_cache *kv = &ss[i]->cache;
        if (ss[i]->g != g || ss[i]->head != TP_HEAD_CAUSAL_LM)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "gpt2 batched step: session %d is not of this language model", i);
        if (kv->len >= kv->cap)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "decoder step past the cache's %d tokens (session %d)", kv->cap, i);
        for (int b = 0; b < kv->rows; b++)
            if (ids[i][b] < 0 || ids[i][b] >= V)
                return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                 "input_ids[%d] = %d is outside the vocabulary (0..%d)", b,
                                 (int)ids[i][b], V - 1);
        N += kv->rows;
    }
    TP_TRY(batch_reserve(scratch, c, N, err));
    gpt2_batch *w = *scratch;
    for (int i = 0, r = 0; i < n; r += ss[i]->cache.rows, i++) {
        tp__kv_cache_slots(&ss[i]->cache, w->slot + r);
        for (int b = 0; b < ss[i]->cache.rows; b++) {
            float *x = w->x + (size_t)(r + b) * H;
            const float *te = g->wte + (size_t)ids[i][b] * H;
            const float *pe = g->wpe + (size_t)w->slot[r + b].pos * H;
            for (int h = 0; h < H; h++) x[h] = te[h] + pe[h];
        }
    }
    tp_status st = TP_OK;
    for (int li = 0; li < c->n_layers && st == TP_OK; li++) {
        const gpt2_layer *l = &g->layers[li];
        memcpy(w->h, w->x, (size_t)N * H * sizeof(float));
        st = tp__layer_norm(be, w->h, N, H, l->ln1_g, l->ln1_b, c->ln_eps, err);
        if (st == TP_OK)
            st = conv1d(be, w->h, N, H, l->attn_w, l->attn_b, 3 * H, TP_ACT_NONE, w->qkv, err);
        float scale = c->scale_attn ? (float)(1.0 / sqrt((double)D)) : 1.0f;
        if (c->scale_by_layer) scale /= (float)(li + 1);
        for (int r = 0; r < N && st == TP_OK; r++) {
            const tp__kv_slot *sl = &w->slot[r];
            const float *row = w->qkv + (size_t)r * 3 * H;
            memcpy(tp__kv_k(sl->cache, li, sl->row, sl->past), row + H, (size_t)H * sizeof(float));
            memcpy(tp__kv_v(sl->cache, li, sl->row, sl->past), row + 2 * H,
                   (size_t)H * sizeof(float));
            w->attn[r] = (tp__attn_args){
                .n_heads = NH, .head_dim = D, .tq = 1, .tk = sl->past + 1,
                .q = row, .ldq = 3 * H,
                .k = tp__kv_k(sl->cache, li, sl->row, 0), .ldk = H,
                .v = tp__kv_v(sl->cache, li, sl->row, 0), .ldv = H,
                .key_mask = sl->cache->mask + (size_t)sl->row * sl->cache->cap,
                .causal_past = sl->past, .scale = scale, .out = w->ctx + (size_t)r * H, .ldo = H,
            };
        }
        if (st == TP_OK) st = tp__attention_rows(be, w->attn, N, err);
        if (st == TP_OK)
            st = conv1d(be, w->ctx, N, H, l->proj_w, l->proj_b, H, TP_ACT_NONE, w->h, err);
        if (st != TP_OK) break;
        tp__add(w->x, w->h, (size_t)N * H);
        memcpy(w->h, w->x, (size_t)N * H * sizeof(float));
        st = tp__layer_norm(be, w->h, N, H, l->ln2_g, l->ln2_b, c->ln_eps, err);
        if (st == TP_OK)
            st = conv1d(be, w->h, N, H, l->fc_w, l->fc_b, c->inner, c->act, w->ffn, err);
        if (st == TP_OK)
            st = conv1d(be, w->ffn, N, c->inner, l->out_w, l->out_b, H, TP_ACT_NONE, w->h, err);
        if (st == TP_OK) tp__add(w->x, w->h, (size_t)N * H);
    }
    /* committed even after an error: the callers' requests fail with it anyway */
    for (int i = 0; i < n; i++) tp__kv_cache_commit(&ss[i]->cache, 1);
    if (st == TP_OK) st = tp__layer_norm(be, w->x, N, H, g->lnf_g, g->lnf_b, c->ln_eps, err);
    if (st == TP_OK)
        st = tp__linear(be, w->x, N, H, g->lm_w, NULL, V, TP_ACT_NONE, w->logits, err);
    for (int i = 0, r = 0; st == TP_OK && i < n; r += ss[i]->cache.rows, i++)
        memcpy(logits[i], w->logits + (size_t)r * V,
               (size_t)ss[i]->cache.rows * V * sizeof(float));
    return st;
}

static int vocab_size(const tp_model *m) { return ((const gpt2 *)m->arch)->c.vocab_size; }

static struct tp__gen_engine *engine(const tp_model *m) { return ((const gpt2 *)m->arch)->engine; }

static const tp__lm_ops gpt2_lm = {
    .open = session_open, .step = session_step, .reorder = session_reorder,
    .close = session_close, .vocab_size = vocab_size,
    .step_many = session_step_many, .scratch_free = batch_free, .engine = engine,
};

/* ---------------------------------------------------------------- forward */

static tp_status gpt2_forward(const tp_model *m, const tp__backend *be, const tp_model_input *in,
                              tp_tensor **out, tp_error *err) {
    const gpt2 *g = m->arch;
    const int B = in->batch, T = in->seq_len;
    const int width = m->head == TP_HEAD_NONE ? g->c.hidden : g->c.vocab_size;
    void *s;
    TP_TRY(session_open(m, be, B, T, T, &s, err));
    int64_t shape[3] = {B, T, width};
    tp_tensor *t = NULL;
    tp_status st = tp__tensor_new(TP_F32, 3, shape, &t, err);
    if (st == TP_OK) st = session_step(s, in->input_ids, in->attention_mask, T, 1, t->data, err);
    session_close(s);
    if (st != TP_OK) {
        tp_tensor_free(t);
        return st;
    }
    *out = t;
    return TP_OK;
}

/* ---------------------------------------------------------------- loading */

static tp_status read_config(tp_model *m, gpt2_config *c, tp_error *err) {
    /* GPT2Config defaults for absent keys */
    TP_TRY(tp__encoder_cfg_int(m, "vocab_size", 50257, 1, &c->vocab_size, err));
    TP_TRY(tp__encoder_cfg_int(m, "n_embd", 768, 1, &c->hidden, err));
    TP_TRY(tp__encoder_cfg_int(m, "n_layer", 12, 0, &c->n_layers, err));
    TP_TRY(tp__encoder_cfg_int(m, "n_head", 12, 1, &c->n_heads, err));
    TP_TRY(tp__encoder_cfg_int(m, "n_positions", 1024, 1, &c->max_positions, err));
    const cJSON *inner = cJSON_GetObjectItemCaseSensitive(m->config, "n_inner");
    if (!inner || cJSON_IsNull(inner)) c->inner = 4 * c->hidden;
    else TP_TRY(tp__encoder_cfg_int(m, "n_inner", 0, 1, &c->inner, err));
    TP_TRY(tp__encoder_cfg_act(m, "activation_function", "gelu_new", &c->act, err));
    double eps;
    TP_TRY(tp__json_double(m->config, "layer_norm_epsilon", 1e-5, &eps, m->config_path, err));
    c->ln_eps = (float)eps;
    TP_TRY(tp__json_bool(m->config, "scale_attn_weights", 1, &c->scale_attn, m->config_path,
                         err));
    TP_TRY(tp__json_bool(m->config, "scale_attn_by_inverse_layer_idx", 0, &c->scale_by_layer,
                         m->config_path, err));
    int upcast;
    TP_TRY(tp__json_bool(m->config, "reorder_and_upcast_attn", 0, &upcast, m->config_path, err));
    (void)upcast; /* only changes the precision of fp16 runs; fp32 here */
    if (c->hidden % c->n_heads)
        return tp__error(err, TP_ERR_FORMAT, "%s: n_embd %d is not a multiple of n_head %d",
                         m->config_path, c->hidden, c->n_heads);
    c->head_dim = c->hidden / c->n_heads;
    return TP_OK;
}

static int has(const tp_model *m, const char *name) {
    return tp__safetensors_find(m->weights, name) != NULL;
}

static tp_status bind_weights(tp_model *m, gpt2 *g, tp_error *err) {
    const gpt2_config *c = &g->c;
    const int H = c->hidden, I = c->inner;
    /* GPT2LMHeadModel keeps the body under "transformer."; a saved GPT2Model has none */
    const char *p = has(m, "transformer.wte.weight") ? "transformer." : "";
    TP_TRY(tp__encoder_tensor(m, p, "wte.weight", c->vocab_size, H, &g->wte, err));
    TP_TRY(tp__encoder_tensor(m, p, "wpe.weight", c->max_positions, H, &g->wpe, err));
    TP_TRY(tp__encoder_layer_norm(m, p, "ln_f", H, &g->lnf_g, &g->lnf_b, err));
    g->layers = calloc(c->n_layers ? (size_t)c->n_layers : 1, sizeof *g->layers);
    if (!g->layers) return tp__error(err, TP_ERR_NOMEM, "out of memory for the layer table");
    char n[128];
    for (int i = 0; i < c->n_layers; i++) {
        gpt2_layer *l = &g->layers[i];
#define T(suffix) (snprintf(n, sizeof n, "h.%d.%s", i, suffix), n)
        TP_TRY(tp__encoder_layer_norm(m, p, T("ln_1"), H, &l->ln1_g, &l->ln1_b, err));
        TP_TRY(tp__encoder_tensor(m, p, T("attn.c_attn.weight"), H, 3 * H, &l->attn_w, err));
        TP_TRY(tp__encoder_tensor(m, p, T("attn.c_attn.bias"), 3 * H, 0, &l->attn_b, err));
        TP_TRY(tp__encoder_tensor(m, p, T("attn.c_proj.weight"), H, H, &l->proj_w, err));
        TP_TRY(tp__encoder_tensor(m, p, T("attn.c_proj.bias"), H, 0, &l->proj_b, err));
        TP_TRY(tp__encoder_layer_norm(m, p, T("ln_2"), H, &l->ln2_g, &l->ln2_b, err));
        TP_TRY(tp__encoder_tensor(m, p, T("mlp.c_fc.weight"), H, I, &l->fc_w, err));
        TP_TRY(tp__encoder_tensor(m, p, T("mlp.c_fc.bias"), I, 0, &l->fc_b, err));
        TP_TRY(tp__encoder_tensor(m, p, T("mlp.c_proj.weight"), I, H, &l->out_w, err));
        TP_TRY(tp__encoder_tensor(m, p, T("mlp.c_proj.bias"), H, 0, &l->out_b, err));
#undef T
    }
    if (m->head == TP_HEAD_CAUSAL_LM) {
        int tied;
        TP_TRY(tp__json_bool(m->config, "tie_word_embeddings", 1, &tied, m->config_path, err));
        if (has(m, "lm_head.weight") || !tied)
            TP_TRY(tp__encoder_tensor(m, "", "lm_head.weight", c->vocab_size, H, &g->lm_w, err));
        else
            g->lm_w = g->wte; /* tied: the checkpoint omits the copy */
    }
    return TP_OK;
}

static void gpt2_free(void *arch) {
    gpt2 *g = arch;
    if (!g) return;
    tp__gen_engine_free(g->engine);
    free(g->layers);
    free(g);
}

static tp_status gpt2_load(tp_model *m, void **arch, tp_error *err) {
    *arch = NULL;
    const char *a = m->architecture;
    if (!a[0] || strcmp(a, "GPT2Model") == 0) m->head = TP_HEAD_NONE;
    else if (strcmp(a, "GPT2LMHeadModel") == 0) m->head = TP_HEAD_CAUSAL_LM;
    else
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: architecture '%s' is not supported (supported: GPT2Model, "
                         "GPT2LMHeadModel)",
                         m->config_path, a);
    gpt2 *g = calloc(1, sizeof *g);
    if (!g) return tp__error(err, TP_ERR_NOMEM, "out of memory loading %s", m->dir);
    tp_status st = read_config(m, &g->c, err);
    if (st == TP_OK) st = bind_weights(m, g, err);
    if (st == TP_OK && m->head == TP_HEAD_CAUSAL_LM)
        st = tp__gen_engine_new(&gpt2_lm, &g->engine, err);
    if (st != TP_OK) {
        gpt2_free(g);
        return st;
    }
    *arch = g;
    return TP_OK;
}

const tp__model_family tp__family_gpt2 = {
    .model_type = "gpt2",
    .load = gpt2_load,
    .free = gpt2_free,
    .forward = gpt2_forward,
    .lm = &gpt2_lm,
};
