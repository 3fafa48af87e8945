/* llama.c: the Llama family (model_type "llama": Llama 2/3, SmolLM2, TinyLlama...;
 * LlamaForCausalLM / LlamaModel) as transformers computes it in fp32:
 *
 *   x = embed[id]
 *   per layer: h = RMSNorm(x)
 *              q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ; RoPE on q and k at each token's position
 *              x += o_proj(softmax(q·kᵀ/√D + causal & padding mask)·v)
 *                   (grouped-query: query head h reads key/value head h / (NH / NKV))
 *              x += down(silu(gate(RMSNorm(x))) * up(RMSNorm(x)))
 *   x = RMSNorm(x); logits = x·lm_headᵀ (tied to embed when the config says so)
 *
 * RoPE's inverse frequencies come from rope_theta and the rope type ("default",
 * "linear", "llama3" as Llama 3.x and SmolLM2 variants use), read from
 * rope_parameters (transformers 5) or rope_theta + rope_scaling (older configs).
 * Like gpt2.c, everything runs as a KV-cache session; sessions are per call, so
 * the model is thread-safe. session_step_many decodes one token for the rows of
 * several sessions in one pass (continuous batching, core/generate/batcher.h). */
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

typedef struct llama_config {
    int vocab_size, hidden, n_layers, n_heads, n_kv_heads, head_dim, inter, max_positions;
    float rms_eps;
    tp_activation act;
    float *inv_freq;   /* [head_dim / 2] */
} llama_config;

typedef struct llama_layer {
    const float *attn_norm;                 /* [H] input_layernorm */
    const float *wq, *bq;                   /* [NH*D, H] (+ bias with attention_bias) */
    const float *wk, *bk, *wv, *bv;         /* [NKV*D, H] */
    const float *wo, *bo;                   /* [H, NH*D] */
    const float *ffn_norm;                  /* [H] post_attention_layernorm */
    const float *w_gate, *b_gate, *w_up, *b_up; /* [I, H] */
    const float *w_down, *b_down;           /* [H, I] */
} llama_layer;

typedef struct llama {
    llama_config c;
    const float *embed;      /* [V, H] */
    llama_layer *layers;
    const float *norm;       /* [H] */
    const float *lm_w;       /* [V, H] */
    struct tp__gen_engine *engine; /* continuous batching across generate calls */
} llama;

typedef struct llama_session {
    const llama *l;
    const tp__backend *be;
    int head, max_step;
    tp__kv_cache cache;
    float *x, *h, *q, *k, *v, *ctx, *gate, *up, *last;
    int *pos;
} llama_session;

static void rms_norm(const float *x, const float *w, int rows, int H, float eps, float *y) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * H;
        float *yr = y + (size_t)r * H;
        double ss = 0;
        for (int i = 0; i < H; i++) ss += (double)xr[i] * xr[i];
        const float inv = 1.0f / sqrtf((float)(ss / H) + eps);
        for (int i = 0; i < H; i++) yr[i] = w[i] * (xr[i] * inv);
    }
}

/* rotate_half RoPE on `heads` heads of D floats at x, for position pos. */
static void rope(float *x, int heads, int D, const float *inv_freq, int pos) {
    const int half = D / 2;
    for (int i = 0; i < half; i++) {
        const float f = (float)pos * inv_freq[i];
        const float c = cosf(f), s = sinf(f);
        for (int h = 0; h < heads; h++) {
            float *xh = x + (size_t)h * D;
            const float a = xh[i], b = xh[i + half];
            xh[i] = a * c - b * s;
            xh[i + half] = b * c + a * s;
        }
    }
}

static void session_close(void *sp) {
    llama_session *s = sp;
    if (!s) return;
    tp__kv_cache_free(&s->cache);
    free(s->x);
    free(s->h);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->ctx);
    free(s->gate);
    free(s->up);
    free(s->last);
    free(s->pos);
    free(s);
}

static tp_status session_open(const tp_model *m, const tp__backend *be, int rows, int cap,
                              int max_step, void **out, tp_error *err) {
    const llama *L = m->arch;
    const llama_config *c = &L->c;
    *out = NULL;
    if (rows < 1 || cap < 1 || max_step < 1 || max_step > cap)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "llama session: %d rows x %d tokens",
                         rows, cap);
    const int QW = c->n_heads * c->head_dim, KW = c->n_kv_heads * c->head_dim;
    const int64_t bt = (int64_t)rows * max_step;
    int wide = c->inter > QW ? c->inter : QW;
    if (c->hidden > wide) wide = c->hidden;
    if (bt * wide > INT_MAX || (int64_t)max_step * cap > INT_MAX)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "batch of %d x %d tokens is too large",
                         rows, cap);
    llama_session *s = calloc(1, sizeof *s);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "out of memory");
    s->l = L, s->be = be, s->head = m->head, s->max_step = max_step;
    const size_t H = (size_t)c->hidden;
    s->x = malloc((size_t)bt * H * sizeof(float));
    s->h = malloc((size_t)bt * H * sizeof(float));
    s->q = malloc((size_t)bt * QW * sizeof(float));
    s->k = malloc((size_t)bt * KW * sizeof(float));
    s->v = malloc((size_t)bt * KW * sizeof(float));
    s->ctx = malloc((size_t)bt * QW * sizeof(float));
    s->gate = malloc((size_t)bt * c->inter * sizeof(float));
    s->up = malloc((size_t)bt * c->inter * sizeof(float));
    s->last = malloc((size_t)rows * H * sizeof(float));
    s->pos = malloc((size_t)bt * sizeof(int));
    tp_status st = TP_OK;
    if (!s->x || !s->h || !s->q || !s->k || !s->v || !s->ctx || !s->gate || !s->up ||
        !s->last || !s->pos)
        st = tp__error(err, TP_ERR_NOMEM, "out of memory for a %d x %d llama session", rows, cap);
    if (st == TP_OK) st = tp__kv_cache_new(&s->cache, c->n_layers, rows, cap, KW, err);
    if (st != TP_OK) {
        session_close(s);
        return st;
    }
    *out = s;
    return TP_OK;
}

static tp_status session_step(void *sp, const int32_t *ids, const int32_t *mask, int n, int all,
                              float *logits, tp_error *err) {
    llama_session *s = sp;
    const llama *L = s->l;
    const llama_config *c = &L->c;
    const tp__backend *be = s->be;
    tp__kv_cache *kv = &s->cache;
    const int B = kv->rows, H = c->hidden, NH = c->n_heads, NKV = c->n_kv_heads;
    const int D = c->head_dim, QW = NH * D, KW = NKV * D, I = c->inter, Bn = B * n;
    if (n < 1 || n > s->max_step)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "llama step of %d tokens (at most %d)", n,
                         s->max_step);
    for (int i = 0; i < Bn; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "input_ids[%d][%d] = %d is outside the vocabulary (0..%d)", i / n,
                             i % n, (int)ids[i], c->vocab_size - 1);
    TP_TRY(tp__kv_cache_positions(kv, mask, n, s->pos, err));
    const int past = kv->len, total = past + n;
    const float scale = (float)(1.0 / sqrt((double)D));
    for (int i = 0; i < Bn; i++)
        memcpy(s->x + (size_t)i * H, L->embed + (size_t)ids[i] * H, (size_t)H * sizeof(float));
    for (int li = 0; li < c->n_layers; li++) {
        const llama_layer *l = &L->layers[li];
        rms_norm(s->x, l->attn_norm, Bn, H, c->rms_eps, s->h);
        TP_TRY(tp__linear(be, s->h, Bn, H, l->wq, l->bq, QW, TP_ACT_NONE, s->q, err));
        TP_TRY(tp__linear(be, s->h, Bn, H, l->wk, l->bk, KW, TP_ACT_NONE, s->k, err));
        TP_TRY(tp__linear(be, s->h, Bn, H, l->wv, l->bv, KW, TP_ACT_NONE, s->v, err));
        for (int i = 0; i < Bn; i++) {
            rope(s->q + (size_t)i * QW, NH, D, c->inv_freq, s->pos[i]);
            rope(s->k + (size_t)i * KW, NKV, D, c->inv_freq, s->pos[i]);
        }
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < n; t++) {
                const size_t i = (size_t)b * n + t;
                memcpy(tp__kv_k(kv, li, b, past + t), s->k + i * KW, (size_t)KW * sizeof(float));
                memcpy(tp__kv_v(kv, li, b, past + t), s->v + i * KW, (size_t)KW * sizeof(float));
            }
            tp__attn_args a = {
                .n_heads = NH, .kv_heads = NKV, .head_dim = D, .tq = n, .tk = total,
                .q = s->q + (size_t)b * n * QW, .ldq = QW,
                .k = tp__kv_k(kv, li, b, 0), .ldk = KW, .v = tp__kv_v(kv, li, b, 0), .ldv = KW,
                .key_mask = kv->mask + (size_t)b * kv->cap, .causal_past = past,
                .scale = scale, .out = s->ctx + (size_t)b * n * QW, .ldo = QW,
            };
            TP_TRY(tp__attention(be, &a, err));
        }
        TP_TRY(tp__linear(be, s->ctx, Bn, QW, l->wo, l->bo, H, TP_ACT_NONE, s->h, err));
        tp__add(s->x, s->h, (size_t)Bn * H);
        rms_norm(s->x, l->ffn_norm, Bn, H, c->rms_eps, s->h);
        TP_TRY(tp__linear(be, s->h, Bn, H, l->w_gate, l->b_gate, I, c->act, s->gate, err));
        TP_TRY(tp__linear(be, s->h, Bn, H, l->w_up, l->b_up, I, TP_ACT_NONE, s->up, err));
        for (size_t i = 0; i < (size_t)Bn * I; i++) s->gate[i] *= s->up[i];
        TP_TRY(tp__linear(be, s->gate, Bn, I, l->w_down, l->b_down, H, TP_ACT_NONE, s->h, err));
        tp__add(s->x, s->h, (size_t)Bn * H);
    }
    tp__kv_cache_commit(kv, n);
    const float *fin = s->x;
    int rows = Bn;
    if (!all) {
        for (int b = 0; b < B; b++)
            memcpy(s->last + (size_t)b * H, s->x + ((size_t)b * n + n - 1) * H,
                   (size_t)H * sizeof(float));
        fin = s->last, rows = B;
    }
    if (s->head == TP_HEAD_NONE) {
        rms_norm(fin, L->norm, rows, H, c->rms_eps, logits);
        return TP_OK;
    }
    rms_norm(fin, L->norm, rows, H, c->rms_eps, s->h);
    return tp__linear(be, s->h, rows, H, L->lm_w, NULL, c->vocab_size, TP_ACT_NONE, logits, err);
}

static tp_status session_reorder(void *sp, const int *src, tp_error *err) {
    (void)err;
    tp__kv_cache_reorder(&((llama_session *)sp)->cache, src);
    return TP_OK;
}

/* ---------------------------------------------------------------- batched step */

typedef struct llama_batch {
    int rows;                     /* what the buffers hold */
    float *x, *h, *q, *k, *v, *ctx, *gate, *up, *logits;
    tp__kv_slot *slot;
    tp__attn_args *attn;          /* one per row: a layer's attention in one call */
} llama_batch;

static void batch_free(void *bp) {
    llama_batch *w = bp;
    if (!w) return;
    free(w->x);
    free(w->h);
    free(w->q);
    free(w->k);
    free(w->v);
    free(w->ctx);
    free(w->gate);
    free(w->up);
    free(w->logits);
    free(w->slot);
    free(w->attn);
    free(w);
}

/* *bp holds at least `rows` rows (grown, never shrunk). */
static tp_status batch_reserve(void **bp, const llama_config *c, int rows, tp_error *err) {
    llama_batch *w = *bp;
    if (w && w->rows >= rows) return TP_OK;
    batch_free(w);
    *bp = NULL;
    w = calloc(1, sizeof *w);
    if (!w) return tp__error(err, TP_ERR_NOMEM, "out of memory");
    const size_t N = (size_t)rows, H = (size_t)c->hidden;
    const size_t QW = (size_t)c->n_heads * c->head_dim, KW = (size_t)c->n_kv_heads * c->head_dim;
    w->rows = rows;
    w->x = malloc(N * H * sizeof(float));
    w->h = malloc(N * H * sizeof(float));
    w->q = malloc(N * QW * sizeof(float));
    w->k = malloc(N * KW * sizeof(float));
    w->v = malloc(N * KW * sizeof(float));
    w->ctx = malloc(N * QW * sizeof(float));
    w->gate = malloc(N * c->inter * sizeof(float));
    w->up = malloc(N * c->inter * sizeof(float));
    w->logits = malloc(N * c->vocab_size * sizeof(float));
    w->slot = malloc(N * sizeof *w->slot);
    w->attn = malloc(N * sizeof *w->attn);
    if (!w->x || !w->h || !w->q || !w->k || !w->v || !w->ctx || !w->gate || !w->up ||
        !w->logits || !w->slot || !w->attn) {
        batch_free(w);
        return tp__error(err, TP_ERR_NOMEM, "out of memory for a batch of %d llama rows", rows);
    }
    *bp = w;
    return TP_OK;
}

/* session_step of one token, for every row of n sessions at once; each row's
 * arithmetic is exactly that of its own session_step. */
static tp_status session_step_many(void *const *sessions, int n, const int32_t *const *ids,
                                   float *const *logits, void **scratch, tp_error *err) {
    llama_session *const *ss = (llama_session *const *)sessions;
    const llama *L = ss[0]->l;
    const llama_config *c = &L->c;
    const tp__backend *be = ss[0]->be;
    const int H = c->hidden, NH = c->n_heads, NKV = c->n_kv_heads, D = c->head_dim;
    const int QW = NH * D, KW = NKV * D, I = c->inter, V = c->vocab_size;
    int N = 0;
    for (int i = 0; i < n; i++) {
        const tp__kv_cache *kv = &ss[i]->cache;
        if (ss[i]->l != L || ss[i]->head != TP_HEAD_CAUSAL_LM)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "llama batched step: session %d is not of this language model", i);
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
    llama_batch *w = *scratch;
    for (int i = 0, r = 0; i < n; r += ss[i]->cache.rows, i++) {
        tp__kv_cache_slots(&ss[i]->cache, w->slot + r);
        for (int b = 0; b < ss[i]->cache.rows; b++)
            memcpy(w->x + (size_t)(r + b) * H, L->embed + (size_t)ids[i][b] * H,
                   (size_t)H * sizeof(float));
    }
    const float scale = (float)(1.0 / sqrt((double)D));
    tp_status st = TP_OK;
    for (int li = 0; li < c->n_layers && st == TP_OK; li++) {
        const llama_layer *l = &L->layers[li];
        rms_norm(w->x, l->attn_norm, N, H, c->rms_eps, w->h);
        st = tp__linear(be, w->h, N, H, l->wq, l->bq, QW, TP_ACT_NONE, w->q, err);
        if (st == TP_OK) st = tp__linear(be, w->h, N, H, l->wk, l->bk, KW, TP_ACT_NONE, w->k, err);
        if (st == TP_OK) st = tp__linear(be, w->h, N, H, l->wv, l->bv, KW, TP_ACT_NONE, w->v, err);
        for (int r = 0; r < N && st == TP_OK; r++) {
            const tp__kv_slot *sl = &w->slot[r];
            rope(w->q + (size_t)r * QW, NH, D, c->inv_freq, sl->pos);
            rope(w->k + (size_t)r * KW, NKV, D, c->inv_freq, sl->pos);
            memcpy(tp__kv_k(sl->cache, li, sl->row, sl->past), w->k + (size_t)r * KW,
                   (size_t)KW * sizeof(float));
            memcpy(tp__kv_v(sl->cache, li, sl->row, sl->past), w->v + (size_t)r * KW,
                   (size_t)KW * sizeof(float));
            w->attn[r] = (tp__attn_args){
                .n_heads = NH, .kv_heads = NKV, .head_dim = D, .tq = 1, .tk = sl->past + 1,
                .q = w->q + (size_t)r * QW, .ldq = QW,
                .k = tp__kv_k(sl->cache, li, sl->row, 0), .ldk = KW,
                .v = tp__kv_v(sl->cache, li, sl->row, 0), .ldv = KW,
                .key_mask = sl->cache->mask + (size_t)sl->row * sl->cache->cap,
                .causal_past = sl->past, .scale = scale,
                .out = w->ctx + (size_t)r * QW, .ldo = QW,
            };
        }
        if (st == TP_OK) st = tp__attention_rows(be, w->attn, N, err);
        if (st == TP_OK)
            st = tp__linear(be, w->ctx, N, QW, l->wo, l->bo, H, TP_ACT_NONE, w->h, err);
        if (st != TP_OK) break;
        tp__add(w->x, w->h, (size_t)N * H);
        rms_norm(w->x, l->ffn_norm, N, H, c->rms_eps, w->h);
        st = tp__linear(be, w->h, N, H, l->w_gate, l->b_gate, I, c->act, w->gate, err);
        if (st == TP_OK)
            st = tp__linear(be, w->h, N, H, l->w_up, l->b_up, I, TP_ACT_NONE, w->up, err);
        if (st != TP_OK) break;
        for (size_t i = 0; i < (size_t)N * I; i++) w->gate[i] *= w->up[i];
        st = tp__linear(be, w->gate, N, I, l->w_down, l->b_down, H, TP_ACT_NONE, w->h, err);
        if (st == TP_OK) tp__add(w->x, w->h, (size_t)N * H);
    }
    /* committed even after an error: the callers' requests fail with it anyway */
    for (int i = 0; i < n; i++) tp__kv_cache_commit(&ss[i]->cache, 1);
    if (st != TP_OK) return st;
    rms_norm(w->x, L->norm, N, H, c->rms_eps, w->h);
    TP_TRY(tp__linear(be, w->h, N, H, L->lm_w, NULL, V, TP_ACT_NONE, w->logits, err));
    for (int i = 0, r = 0; i < n; r += ss[i]->cache.rows, i++)
        memcpy(logits[i], w->logits + (size_t)r * V,
               (size_t)ss[i]->cache.rows * V * sizeof(float));
    return TP_OK;
}

static int vocab_size(const tp_model *m) { return ((const llama *)m->arch)->c.vocab_size; }

static struct tp__gen_engine *engine(const tp_model *m) {
    return ((const llama *)m->arch)->engine;
}

static const tp__lm_ops llama_lm = {
    .open = session_open, .step = session_step, .reorder = session_reorder,
    .close = session_close, .vocab_size = vocab_size,
    .step_many = session_step_many, .scratch_free = batch_free, .engine = engine,
};

static tp_status llama_forward(const tp_model *m, const tp__backend *be, const tp_model_input *in,
                               tp_tensor **out, tp_error *err) {
    const llama *L = m->arch;
    const int B = in->batch, T = in->seq_len;
    if (T > L->c.max_positions)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "%d tokens are more than config.json max_position_embeddings %d", T,
                         L->c.max_positions);
    const int width = m->head == TP_HEAD_NONE ? L->c.hidden : L->c.vocab_size;
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

/* inv_freq[i] = 1 / theta^(2i/D), then the rope type's rescaling. */
static tp_status read_rope(tp_model *m, llama_config *c, tp_error *err) {
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(m->config, "rope_parameters");
    const char *where = "rope_parameters";
    if (!cJSON_IsObject(rp)) {
        rp = cJSON_GetObjectItemCaseSensitive(m->config, "rope_scaling");
        where = "rope_scaling";
        if (!cJSON_IsObject(rp)) rp = NULL;
    }
    double theta;
    TP_TRY(tp__json_double(m->config, "rope_theta", 10000.0, &theta, m->config_path, err));
    if (rp) TP_TRY(tp__json_double(rp, "rope_theta", theta, &theta, m->config_path, err));
    const char *type = "default";
    if (rp) {
        TP_TRY(tp__json_string(rp, "type", "default", &type, m->config_path, err));
        TP_TRY(tp__json_string(rp, "rope_type", type, &type, m->config_path, err));
    }
    const int half = c->head_dim / 2;
    c->inv_freq = malloc((size_t)(half ? half : 1) * sizeof(float));
    if (!c->inv_freq) return tp__error(err, TP_ERR_NOMEM, "out of memory");
    for (int i = 0; i < half; i++)
        c->inv_freq[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)c->head_dim);
    if (strcmp(type, "default") == 0) return TP_OK;
    double factor;
    TP_TRY(tp__json_double(rp, "factor", 1.0, &factor, m->config_path, err));
    if (factor <= 0)
        return tp__error(err, TP_ERR_FORMAT, "%s: %s.factor must be positive", m->config_path,
                         where);
    if (strcmp(type, "linear") == 0) {
        for (int i = 0; i < half; i++) c->inv_freq[i] = (float)(c->inv_freq[i] / factor);
        return TP_OK;
    }
    if (strcmp(type, "llama3") == 0) {
        double lo, hi, old;
        TP_TRY(tp__json_double(rp, "low_freq_factor", 1.0, &lo, m->config_path, err));
        TP_TRY(tp__json_double(rp, "high_freq_factor", 4.0, &hi, m->config_path, err));
        TP_TRY(tp__json_double(rp, "original_max_position_embeddings", 8192, &old,
                               m->config_path, err));
        if (hi <= lo)
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: %s.high_freq_factor must exceed low_freq_factor",
                             m->config_path, where);
        const double lo_wave = old / lo, hi_wave = old / hi;
        for (int i = 0; i < half; i++) {
            const double f = c->inv_freq[i], wave = 2 * M_PI / f;
            double out = wave > lo_wave ? f / factor : f;
            if (!(wave < hi_wave) && !(wave > lo_wave)) {
                const double smooth = (old / wave - lo) / (hi - lo);
                out = (1 - smooth) * out / factor + smooth * out;
            }
            c->inv_freq[i] = (float)out;
        }
        return TP_OK;
    }
    return tp__error(err, TP_ERR_UNSUPPORTED,
                     "%s: %s type '%s' is not supported (supported: default, linear, llama3)",
                     m->config_path, where, type);
}

static tp_status read_config(tp_model *m, llama_config *c, tp_error *err) {
    /* LlamaConfig defaults for absent keys */
    TP_TRY(tp__encoder_cfg_int(m, "vocab_size", 32000, 1, &c->vocab_size, err));
    TP_TRY(tp__encoder_cfg_int(m, "hidden_size", 4096, 1, &c->hidden, err));
    TP_TRY(tp__encoder_cfg_int(m, "intermediate_size", 11008, 1, &c->inter, err));
    TP_TRY(tp__encoder_cfg_int(m, "num_hidden_layers", 32, 0, &c->n_layers, err));
    TP_TRY(tp__encoder_cfg_int(m, "num_attention_heads", 32, 1, &c->n_heads, err));
    TP_TRY(tp__encoder_cfg_int(m, "num_key_value_heads", c->n_heads, 1, &c->n_kv_heads, err));
    TP_TRY(tp__encoder_cfg_int(m, "max_position_embeddings", 2048, 1, &c->max_positions, err));
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(m->config, "head_dim");
    if (!hd || cJSON_IsNull(hd)) {
        if (c->hidden % c->n_heads)
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                             m->config_path, c->hidden, c->n_heads);
        c->head_dim = c->hidden / c->n_heads;
    } else {
        TP_TRY(tp__encoder_cfg_int(m, "head_dim", 0, 2, &c->head_dim, err));
    }
    if (c->head_dim % 2 || c->n_heads % c->n_kv_heads)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: head_dim %d must be even and num_attention_heads %d a multiple "
                         "of num_key_value_heads %d",
                         m->config_path, c->head_dim, c->n_heads, c->n_kv_heads);
    double eps;
    TP_TRY(tp__json_double(m->config, "rms_norm_eps", 1e-6, &eps, m->config_path, err));
    c->rms_eps = (float)eps;
    TP_TRY(tp__encoder_cfg_act(m, "hidden_act", "silu", &c->act, err));
    return read_rope(m, c, err);
}

static int has(const tp_model *m, const char *name) {
    return tp__safetensors_find(m->weights, name) != NULL;
}

static tp_status bind_weights(tp_model *m, llama *L, tp_error *err) {
    const llama_config *c = &L->c;
    const int H = c->hidden, QW = c->n_heads * c->head_dim, KW = c->n_kv_heads * c->head_dim;
    const int I = c->inter;
    int abias, mbias;
    TP_TRY(tp__json_bool(m->config, "attention_bias", 0, &abias, m->config_path, err));
    TP_TRY(tp__json_bool(m->config, "mlp_bias", 0, &mbias, m->config_path, err));
    const char *p = has(m, "model.embed_tokens.weight") ? "model." : "";
    TP_TRY(tp__encoder_tensor(m, p, "embed_tokens.weight", c->vocab_size, H, &L->embed, err));
    TP_TRY(tp__encoder_tensor(m, p, "norm.weight", H, 0, &L->norm, err));
    L->layers = calloc(c->n_layers ? (size_t)c->n_layers : 1, sizeof *L->layers);
    if (!L->layers) return tp__error(err, TP_ERR_NOMEM, "out of memory for the layer table");
    char n[128];
#define T(suffix) (snprintf(n, sizeof n, "layers.%d.%s", i, suffix), n)
#define LIN(name, out_f, in_f, w, b, with_bias)                                        \
    do {                                                                               \
        TP_TRY(tp__encoder_tensor(m, p, T(name ".weight"), out_f, in_f, w, err));      \
        if (with_bias) TP_TRY(tp__encoder_tensor(m, p, T(name ".bias"), out_f, 0, b, err)); \
    } while (0)
    for (int i = 0; i < c->n_layers; i++) {
        llama_layer *l = &L->layers[i];
        TP_TRY(tp__encoder_tensor(m, p, T("input_layernorm.weight"), H, 0, &l->attn_norm, err));
        TP_TRY(tp__encoder_tensor(m, p, T("post_attention_layernorm.weight"), H, 0,
                                  &l->ffn_norm, err));
        LIN("self_attn.q_proj", QW, H, &l->wq, &l->bq, abias);
        LIN("self_attn.k_proj", KW, H, &l->wk, &l->bk, abias);
        LIN("self_attn.v_proj", KW, H, &l->wv, &l->bv, abias);
        LIN("self_attn.o_proj", H, QW, &l->wo, &l->bo, abias);
        LIN("mlp.gate_proj", I, H, &l->w_gate, &l->b_gate, mbias);
        LIN("mlp.up_proj", I, H, &l->w_up, &l->b_up, mbias);
        LIN("mlp.down_proj", H, I, &l->w_down, &l->b_down, mbias);
    }
#undef LIN
#undef T
    if (m->head == TP_HEAD_CAUSAL_LM) {
        int tied;
        TP_TRY(tp__json_bool(m->config, "tie_word_embeddings", 0, &tied, m->config_path, err));
        if (has(m, "lm_head.weight") || !tied)
            TP_TRY(tp__encoder_tensor(m, "", "lm_head.weight", c->vocab_size, H, &L->lm_w, err));
        else
            L->lm_w = L->embed;
    }
    return TP_OK;
}

static void llama_free(void *arch) {
    llama *L = arch;
    if (!L) return;
    tp__gen_engine_free(L->engine);
    free(L->layers);
    free(L->c.inv_freq);
    free(L);
}

static tp_status llama_load(tp_model *m, void **arch, tp_error *err) {
    *arch = NULL;
    const char *a = m->architecture;
    if (!a[0] || strcmp(a, "LlamaModel") == 0) m->head = TP_HEAD_NONE;
    else if (strcmp(a, "LlamaForCausalLM") == 0) m->head = TP_HEAD_CAUSAL_LM;
    else
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: architecture '%s' is not supported (supported: LlamaModel, "
                         "LlamaForCausalLM)",
                         m->config_path, a);
    llama *L = calloc(1, sizeof *L);
    if (!L) return tp__error(err, TP_ERR_NOMEM, "out of memory loading %s", m->dir);
    tp_status st = read_config(m, &L->c, err);
    if (st == TP_OK) st = bind_weights(m, L, err);
    if (st == TP_OK && m->head == TP_HEAD_CAUSAL_LM)
        st = tp__gen_engine_new(&llama_lm, &L->engine, err);
    if (st != TP_OK) {
        llama_free(L);
        return st;
    }
    *arch = L;
    return TP_OK;
}

const tp__model_family tp__family_llama = {
    .model_type = "llama",
    .load = llama_load,
    .free = llama_free,
    .forward = llama_forward,
    .lm = &llama_lm,
};
