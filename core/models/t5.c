/* t5.c: the T5 encoder-decoder (model_type "t5") as transformers computes it in fp32
 * (dropout is identity at inference):
 *
 *   RMS(x) = g · x / sqrt(mean(x²) + eps)   (T5LayerNorm: no mean, no bias)
 *   encoder: x = emb[id]
 *            per layer (pre-LN): x += SelfAttn(RMS(x); bias = rel_bidir, padding mask)
 *                                x += FFN(RMS(x))
 *            x = RMS_final(x)
 *   decoder: y = emb[id]
 *            per layer: y += CausalSelfAttn(RMS(y); bias = rel_causal)
 *                       y += CrossAttn(RMS(y), encoder output, source padding mask)
 *                       y += FFN(RMS(y))
 *            y = RMS_final(y)
 *   head:    logits = (y · d_model^-0.5 when the config asks) · lm_headᵀ
 *
 * Attention has no biases and no 1/sqrt(d) scaling; the relative position bias is a
 * learned [num_buckets, heads] table of each stack's first layer, looked up by the
 * bucket of (key position - query position) and shared by every layer of that stack.
 * FFN is wo(relu(wi·x)) or, gated (flan-t5), wo(act(wi_0·x) * wi_1·x).
 *
 * The decoder has bart.c's shape for incremental decoding: encode() fills a t5_cache
 * once (encoder output, padding mask, every layer's cross-attention K/V), and
 * decoder_step() runs n new tokens per row at positions cache->len ... against the
 * cached self-attention K/V, appending its own. The full forward is one step of all
 * decoder tokens; generation keeps the cache and steps one token at a time.
 *
 * Run state and cache are allocated per call: forward is thread-safe on a shared
 * model. */
#include "t5.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../generate/generate.h"
#include "../json_util.h"
#include "../kernels.h"
#include "attention.h"
#include "encoder.h"

typedef struct t5_config {
    int vocab_size;        /* V */
    int hidden;            /* H = d_model */
    int n_heads, d_kv;     /* NH, D */
    int inner;             /* I = NH * D, the width of q, k, v */
    int d_ff;              /* F */
    int enc_layers, dec_layers;
    int num_buckets, max_distance;
    float eps;             /* layer_norm_epsilon */
    tp_activation act;     /* dense_act_fn */
    int gated;             /* is_gated_act: wi_0 / wi_1 */
    int pad_id, eos_id, decoder_start_id;
    int scale_output;      /* scale the decoder output by d_model^-0.5 before the head */
} t5_config;

typedef struct t5_attn {
    const float *wq, *wk, *wv; /* [I, H] */
    const float *wo;           /* [H, I] */
} t5_attn;

typedef struct t5_ffn {
    const float *wi0, *wi1;    /* [F, H]; wi1 NULL unless gated (wi0 is "wi" then) */
    const float *wo;           /* [H, F] */
} t5_ffn;

typedef struct t5_enc_layer {
    const float *ln1;          /* [H] layer.0.layer_norm */
    t5_attn self;
    const float *ln2;          /* [H] layer.1.layer_norm */
    t5_ffn ffn;
} t5_enc_layer;

typedef struct t5_dec_layer {
    const float *ln1;          /* [H] layer.0.layer_norm */
    t5_attn self;
    const float *ln2;          /* [H] layer.1.layer_norm */
    t5_attn cross;
    const float *ln3;          /* [H] layer.2.layer_norm */
    t5_ffn ffn;
} t5_dec_layer;

typedef struct t5_weights {
    const float *enc_emb, *dec_emb;    /* [V, H] (both "shared" unless the stacks have their own) */
    const float *enc_rel, *dec_rel;    /* [num_buckets, NH] block.0 relative_attention_bias */
    t5_enc_layer *enc;                 /* [enc_layers] */
    t5_dec_layer *dec;                 /* [dec_layers] */
    const float *enc_ln, *dec_ln;      /* [H] final_layer_norm */
    const float *lm_w;                 /* [V, H] lm_head (tied: shared) */
} t5_weights;

typedef struct t5 {
    t5_config c;
    t5_weights w;
} t5;

/* What the decoder keeps between steps. Row b of a [B*X, W] block starts at b*X*W. */
typedef struct t5_cache {
    int B, S, cap, len;   /* rows, source tokens, decoder capacity, tokens cached */
    int nsrc;             /* N: encoded sources (B in a forward; fewer under beams) */
    int *src;             /* [B] the source row r decodes (NULL: r itself) */
    float *enc;           /* [N*S, H] the encoder's last hidden state */
    float *enc_mask;      /* [N*S] additive padding mask of the source */
    float *ck, *cv;       /* [dec_layers][N*S, I] cross-attention K/V, computed once */
    float *sk, *sv;       /* [dec_layers][B*cap, I] self-attention K/V, appended per step */
} t5_cache;

/* Scratch of one encoder pass or decoder step, sized for `rows` tokens. */
typedef struct t5_work {
    float *x, *h, *tmp;        /* [rows, H] state, its norm, a sublayer's output */
    float *q, *k, *v, *ctx;    /* [rows, I] */
    float *ff0, *ff1;          /* [rows, F] */
    float *bias;               /* [NH * tq * tk] position bias of one batch row */
    tp__attn_args *attn;       /* [rows]: a step's attention, one per batch row */
} t5_work;

/* ---------------------------------------------------------------- state */

static void work_free(t5_work *w) {
    free(w->x);
    free(w->h);
    free(w->tmp);
    free(w->q);
    free(w->k);
    free(w->v);
    free(w->ctx);
    free(w->ff0);
    free(w->ff1);
    free(w->bias);
    free(w->attn);
}

static tp_status work_alloc(t5_work *w, const t5_config *c, size_t rows, size_t att,
                            tp_error *err) {
    const size_t H = (size_t)c->hidden, I = (size_t)c->inner, F = (size_t)c->d_ff;
    memset(w, 0, sizeof *w);
    w->x = malloc(rows * H * sizeof(float));
    w->h = malloc(rows * H * sizeof(float));
    w->tmp = malloc(rows * H * sizeof(float));
    w->q = malloc(rows * I * sizeof(float));
    w->k = malloc(rows * I * sizeof(float));
    w->v = malloc(rows * I * sizeof(float));
    w->ctx = malloc(rows * I * sizeof(float));
    w->ff0 = malloc(rows * F * sizeof(float));
    w->ff1 = malloc(rows * F * sizeof(float));
    w->bias = malloc(att * sizeof(float));
    w->attn = malloc(rows * sizeof *w->attn);
    if (!w->x || !w->h || !w->tmp || !w->q || !w->k || !w->v || !w->ctx || !w->ff0 ||
        !w->ff1 || !w->bias || !w->attn) {
        work_free(w);
        return tp__error(err, TP_ERR_NOMEM, "out of memory for the run state of %zu tokens",
                         rows);
    }
    return TP_OK;
}

static void cache_free(t5_cache *c) {
    free(c->src);
    free(c->enc);
    free(c->enc_mask);
    free(c->ck);
    free(c->cv);
    free(c->sk);
    free(c->sv);
    memset(c, 0, sizeof *c);
}

/* B decoder rows over N encoded sources of S tokens (N = B for a forward). */
static tp_status cache_alloc(t5_cache *c, const t5_config *cfg, int B, int N, int S, int cap,
                             tp_error *err) {
    const size_t H = (size_t)cfg->hidden, I = (size_t)cfg->inner;
    const size_t L = cfg->dec_layers ? (size_t)cfg->dec_layers : 1;
    memset(c, 0, sizeof *c);
    c->B = B, c->nsrc = N, c->S = S, c->cap = cap, c->len = 0;
    c->enc = malloc((size_t)N * S * H * sizeof(float));
    c->enc_mask = malloc((size_t)N * S * sizeof(float));
    c->ck = malloc(L * N * S * I * sizeof(float));
    c->cv = malloc(L * N * S * I * sizeof(float));
    c->sk = malloc(L * B * cap * I * sizeof(float));
    c->sv = malloc(L * B * cap * I * sizeof(float));
    if (!c->enc || !c->enc_mask || !c->ck || !c->cv || !c->sk || !c->sv) {
        cache_free(c);
        return tp__error(err, TP_ERR_NOMEM, "out of memory for the decoder cache of a %dx%d batch",
                         B, S);
    }
    return TP_OK;
}

/* ---------------------------------------------------------------- graph */

int tp__t5_relative_bucket(int rel, int bidirectional, int num_buckets, int max_distance) {
    int bucket = 0;
    if (bidirectional) {
        num_buckets /= 2;
        if (rel > 0) bucket += num_buckets;
        rel = rel < 0 ? -rel : rel;
    } else {
        rel = rel < 0 ? -rel : 0; /* keys in the future all share bucket 0 */
    }
    const int max_exact = num_buckets / 2;
    if (rel < max_exact) return bucket + rel;
    /* the log-spaced buckets, in float32 as torch computes them: the quotient of two
     * float logs, truncated toward zero; rounding the same way keeps exact powers of
     * two on the bucket they land on in transformers */
    const float span = (float)log((double)max_distance / max_exact);
    float f = logf((float)rel / (float)max_exact) / span * (float)(num_buckets - max_exact);
    int large = max_exact + (int)f;
    if (large > num_buckets - 1) large = num_buckets - 1;
    return bucket + large;
}

/* out[h, i, j] = table[bucket(j - (q0 + i)), h]: the bias of queries q0 ... q0+tq-1
 * over keys 0 ... tk-1 (T5Attention.compute_bias, laid out for tp__attention). */
static void position_bias(const t5_config *c, const float *table, int bidirectional, int q0,
                          int tq, int tk, float *out) {
    const int NH = c->n_heads;
    for (int i = 0; i < tq; i++)
        for (int j = 0; j < tk; j++) {
            const int b = tp__t5_relative_bucket(j - (q0 + i), bidirectional, c->num_buckets,
                                                 c->max_distance);
            for (int h = 0; h < NH; h++)
                out[((size_t)h * tq + i) * tk + j] = table[(size_t)b * NH + h];
        }
}

/* out = g · x / sqrt(mean(x²) + eps), per row of H (T5LayerNorm, fp32 variance). */
static void rms_norm(const float *x, int rows, int H, const float *g, float eps, float *out) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * H;
        float *o = out + (size_t)r * H;
        double ss = 0;
        for (int i = 0; i < H; i++) ss += (double)xr[i] * xr[i];
        const float inv = 1.0f / sqrtf((float)(ss / H) + eps);
        for (int i = 0; i < H; i++) o[i] = g[i] * (xr[i] * inv);
    }
}

static void embed(const float *emb, const int32_t *ids, size_t n, int H, float *x) {
    for (size_t i = 0; i < n; i++)
        memcpy(x + i * H, emb + (size_t)ids[i] * H, (size_t)H * sizeof(float));
}

/* x += w->ctx · Woᵀ, the attention output of `rows` tokens. */
static tp_status attn_out(const tp__backend *be, const t5_config *c, const t5_attn *a, int rows,
                          t5_work *w, tp_error *err) {
    TP_TRY(tp__linear(be, w->ctx, rows, c->inner, a->wo, NULL, c->hidden, TP_ACT_NONE, w->tmp,
                      err));
    tp__add(w->x, w->tmp, (size_t)rows * c->hidden);
    return TP_OK;
}

/* x += FFN(RMS(x)) */
static tp_status ffn(const tp__backend *be, const t5_config *c, const float *ln,
                     const t5_ffn *f, int rows, t5_work *w, tp_error *err) {
    const int H = c->hidden, F = c->d_ff;
    rms_norm(w->x, rows, H, ln, c->eps, w->h);
    TP_TRY(tp__linear(be, w->h, rows, H, f->wi0, NULL, F, c->act, w->ff0, err));
    if (f->wi1) {
        TP_TRY(tp__linear(be, w->h, rows, H, f->wi1, NULL, F, TP_ACT_NONE, w->ff1, err));
        const size_t n = (size_t)rows * F;
        for (size_t i = 0; i < n; i++) w->ff0[i] *= w->ff1[i];
    }
    TP_TRY(tp__linear(be, w->ff0, rows, F, f->wo, NULL, H, TP_ACT_NONE, w->tmp, err));
    tp__add(w->x, w->tmp, (size_t)rows * H);
    return TP_OK;
}

/* The encoder on in->input_ids into cache->enc, with the source padding mask. */
static tp_status encode(const tp__backend *be, const t5 *mdl, const tp_model_input *in,
                        t5_cache *cache, t5_work *w, tp_error *err) {
    const t5_config *c = &mdl->c;
    const int B = in->batch, S = in->seq_len, H = c->hidden, I = c->inner, BS = B * S;
    for (int i = 0; i < BS; i++)
        cache->enc_mask[i] = (in->attention_mask && in->attention_mask[i] == 0) ? -FLT_MAX : 0.0f;
    embed(mdl->w.enc_emb, in->input_ids, (size_t)BS, H, w->x);
    if (c->enc_layers > 0) position_bias(c, mdl->w.enc_rel, 1, 0, S, S, w->bias);
    for (int li = 0; li < c->enc_layers; li++) {
        const t5_enc_layer *l = &mdl->w.enc[li];
        rms_norm(w->x, BS, H, l->ln1, c->eps, w->h);
        TP_TRY(tp__linear(be, w->h, BS, H, l->self.wq, NULL, I, TP_ACT_NONE, w->q, err));
        TP_TRY(tp__linear(be, w->h, BS, H, l->self.wk, NULL, I, TP_ACT_NONE, w->k, err));
        TP_TRY(tp__linear(be, w->h, BS, H, l->self.wv, NULL, I, TP_ACT_NONE, w->v, err));
        for (int b = 0; b < B; b++) {
            const size_t r0 = (size_t)b * S * I;
            tp__attn_args a = {
                .n_heads = c->n_heads, .head_dim = c->d_kv, .tq = S, .tk = S,
                .q = w->q + r0, .ldq = I, .k = w->k + r0, .ldk = I, .v = w->v + r0, .ldv = I,
                .key_mask = cache->enc_mask + (size_t)b * S, .causal_past = -1, .scale = 1.0f, .out = w->ctx + r0, .ldo = I, .bias = w->bias,
            };
            TP_TRY(tp__attention(be, &a, err));
        }
        TP_TRY(attn_out(be, c, &l->self, BS, w, err));
        TP_TRY(ffn(be, c, l->ln2, &l->ffn, BS, w, err));
    }
    rms_norm(w->x, BS, H, mdl->w.enc_ln, c->eps, cache->enc);
    return TP_OK;
}

/* Every decoder layer's cross-attention K and V of the encoder output: once per
 * source, whatever the number of decoder steps; stored head-major (one contiguous
 * block per head, tp__heads_major), so that each step streams them. scratch: the
 * encoder's rows × inner. */
static tp_status cross_kv(const tp__backend *be, const t5 *mdl, t5_cache *cache, float *scratch,
                          tp_error *err) {
    const int H = mdl->c.hidden, I = mdl->c.inner, S = cache->S, BS = cache->nsrc * S;
    for (int li = 0; li < mdl->c.dec_layers; li++) {
        const t5_attn *a = &mdl->w.dec[li].cross;
        const size_t off = (size_t)li * BS * I;
        TP_TRY(tp__project_heads_major(be, cache->enc, cache->nsrc, S, H, a->wk, NULL,
                                       mdl->c.n_heads, mdl->c.d_kv, scratch, cache->ck + off, err));
        TP_TRY(tp__project_heads_major(be, cache->enc, cache->nsrc, S, H, a->wv, NULL,
                                       mdl->c.n_heads, mdl->c.d_kv, scratch, cache->cv + off, err));
    }
    return TP_OK;
}

/* One decoder step: n new tokens per row (ids [B*n]) at positions cache->len ...,
 * their self-attention K/V appended to the cache; the final-normed hidden state of
 * the new tokens is left in w->h [B*n, H]. The caller checked ids and that
 * len + n <= cap. */
static tp_status decoder_step(const tp__backend *be, const t5 *mdl, t5_cache *cache,
                              const int32_t *ids, int n, t5_work *w, tp_error *err) {
    const t5_config *c = &mdl->c;
    const int B = cache->B, S = cache->S, H = c->hidden, I = c->inner, Bn = B * n;
    const int NH = c->n_heads, D = c->d_kv, past = cache->len, total = past + n;
    embed(mdl->w.dec_emb, ids, (size_t)Bn, H, w->x);
    if (c->dec_layers > 0) position_bias(c, mdl->w.dec_rel, 0, past, n, total, w->bias);
    for (int li = 0; li < c->dec_layers; li++) {
        const t5_dec_layer *l = &mdl->w.dec[li];
        float *sk = cache->sk + (size_t)li * B * cache->cap * I;
        float *sv = cache->sv + (size_t)li * B * cache->cap * I;

        /* causal self-attention over the cached tokens and the new ones */
        rms_norm(w->x, Bn, H, l->ln1, c->eps, w->h);
        TP_TRY(tp__linear(be, w->h, Bn, H, l->self.wq, NULL, I, TP_ACT_NONE, w->q, err));
        TP_TRY(tp__linear(be, w->h, Bn, H, l->self.wk, NULL, I, TP_ACT_NONE, w->k, err));
        TP_TRY(tp__linear(be, w->h, Bn, H, l->self.wv, NULL, I, TP_ACT_NONE, w->v, err));
        for (int b = 0; b < B; b++) {
            const size_t row = (size_t)b * cache->cap * I, at = row + (size_t)past * I;
            memcpy(sk + at, w->k + (size_t)b * n * I, (size_t)n * I * sizeof(float));
            memcpy(sv + at, w->v + (size_t)b * n * I, (size_t)n * I * sizeof(float));
            w->attn[b] = (tp__attn_args){
                .n_heads = NH, .head_dim = D, .tq = n, .tk = total,
                .q = w->q + (size_t)b * n * I, .ldq = I,
                .k = sk + row, .ldk = I, .v = sv + row, .ldv = I,
                .key_mask = NULL, .causal_past = past, .scale = 1.0f, .out = w->ctx + (size_t)b * n * I, .ldo = I, .bias = w->bias,
            };
        }
        TP_TRY(tp__attention_rows(be, w->attn, B, err));
        TP_TRY(attn_out(be, c, &l->self, Bn, w, err));

        /* cross-attention over the encoder output: no position bias, source padding
         * masked */
        rms_norm(w->x, Bn, H, l->ln2, c->eps, w->h);
        TP_TRY(tp__linear(be, w->h, Bn, H, l->cross.wq, NULL, I, TP_ACT_NONE, w->q, err));
        const float *ck = cache->ck + (size_t)li * cache->nsrc * S * I;
        const float *cv = cache->cv + (size_t)li * cache->nsrc * S * I;
        const tp__attn_args first = {
            .n_heads = NH, .head_dim = D, .tk = S, .q = w->q, .ldq = I,
            .k = ck, .ldk = D, .v = cv, .ldv = D, .head_stride = (size_t)S * D,
            .key_mask = cache->enc_mask, .causal_past = -1, .scale = 1.0f, .out = w->ctx, .ldo = I,
        };
        TP_TRY(tp__cross_attention(be, &first, cache->src, B, n, w->attn, err));
        TP_TRY(attn_out(be, c, &l->cross, Bn, w, err));

        TP_TRY(ffn(be, c, l->ln3, &l->ffn, Bn, w, err));
    }
    rms_norm(w->x, Bn, H, mdl->w.dec_ln, c->eps, w->h);
    cache->len = total;
    return TP_OK;
}

/* ---------------------------------------------------------------- head */

/* Rows x [B*T, H] as [B, T, H], or their logits [B, T, V] (scaled first when the
 * config asks; x is scratch then). */
static tp_status hidden_or_logits(const tp__backend *be, const t5 *mdl, float *x, int B, int T,
                                  int lm, tp_tensor **out, tp_error *err) {
    const t5_config *c = &mdl->c;
    const int H = c->hidden, V = c->vocab_size;
    int64_t shape[3] = {B, T, lm ? V : H};
    tp_tensor *t;
    TP_TRY(tp__tensor_new(TP_F32, 3, shape, &t, err));
    tp_status st = TP_OK;
    if (lm) {
        if (c->scale_output) {
            /* hidden * d_model ** -0.5: a Python float, applied in fp32 */
            const float s = (float)pow((double)H, -0.5);
            const size_t n = (size_t)B * T * H;
            for (size_t i = 0; i < n; i++) x[i] *= s;
        }
        st = tp__linear(be, x, B * T, H, mdl->w.lm_w, NULL, V, TP_ACT_NONE, t->data, err);
    } else {
        memcpy(t->data, x, (size_t)B * T * H * sizeof(float));
    }
    if (st != TP_OK) {
        tp_tensor_free(t);
        return st;
    }
    *out = t;
    return TP_OK;
}

/* ---------------------------------------------------------------- forward */

static int has_member(const tp_model_input *in, size_t end) { return in->struct_size >= end; }
#define HAS(in, member) \
    has_member(in, offsetof(tp_model_input, member) + sizeof((in)->member))

static tp_status check_ids(const tp_model *m, const t5_config *c, const char *name,
                           const int32_t *ids, int B, int T, tp_error *err) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const int32_t id = ids[(size_t)b * T + t];
            if (id < 0 || id >= c->vocab_size)
                return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                 "%s[%d][%d] = %d is outside the vocabulary of %s (0..%d)", name,
                                 b, t, (int)id, m->dir, c->vocab_size - 1);
        }
    return TP_OK;
}

static tp_status t5_forward(const tp_model *m, const tp__backend *be, const tp_model_input *in,
                            tp_tensor **out, tp_error *err) {
    const t5 *mdl = m->arch;
    const t5_config *c = &mdl->c;
    const int B = in->batch, S = in->seq_len;
    const int hidden_states = HAS(in, output_hidden_states) && in->output_hidden_states;
    const int32_t *dec_ids = HAS(in, decoder_seq_len) ? in->decoder_input_ids : NULL;
    int T = dec_ids ? in->decoder_seq_len : 1;

    if (dec_ids && T < 1)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "model forward: decoder_seq_len is %d with decoder_input_ids given",
                         T);
    /* transformers too: T5 builds no decoder input of its own outside training */
    if (!dec_ids && !hidden_states)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "model forward: %s needs decoder_input_ids (the decoder's tokens, "
                         "starting with decoder_start_token_id %d)",
                         m->architecture[0] ? m->architecture : "T5Model",
                         c->decoder_start_id);
    if (hidden_states) T = 1; /* the encoder alone runs */
    const int wide = c->d_ff > c->hidden ? (c->d_ff > c->inner ? c->d_ff : c->inner)
                                         : (c->hidden > c->inner ? c->hidden : c->inner);
    const int64_t rows = (int64_t)B * (S > T ? S : T);
    const int64_t att_e = (int64_t)c->n_heads * S * S;
    const int64_t att_d = (int64_t)c->n_heads * T * (T > S ? T : S);
    if (rows * wide > INT_MAX || att_e > INT_MAX || att_d > INT_MAX ||
        (int64_t)B * T * c->inner > INT_MAX)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "batch of %d x %d tokens (decoder %d) is too large", B, S, T);
    TP_TRY(check_ids(m, c, "input_ids", in->input_ids, B, S, err));
    if (!hidden_states) TP_TRY(check_ids(m, c, "decoder_input_ids", dec_ids, B, T, err));

    t5_cache cache;
    t5_work w;
    TP_TRY(cache_alloc(&cache, c, B, B, S, T, err));
    tp_status st = work_alloc(&w, c, (size_t)rows, (size_t)(att_e > att_d ? att_e : att_d), err);
    if (st != TP_OK) {
        cache_free(&cache);
        return st;
    }
    st = encode(be, mdl, in, &cache, &w, err);
    if (st == TP_OK && hidden_states) {
        st = hidden_or_logits(be, mdl, cache.enc, B, S, 0, out, err);
    } else if (st == TP_OK) {
        st = cross_kv(be, mdl, &cache, w.q, err);
        /* incremental decoding: keep `cache` and call decoder_step with n = 1 per token */
        if (st == TP_OK) st = decoder_step(be, mdl, &cache, dec_ids, T, &w, err);
        if (st == TP_OK)
            st = hidden_or_logits(be, mdl, w.h, B, T, m->head == TP_HEAD_SEQ2SEQ_LM, out, err);
    }
    work_free(&w);
    cache_free(&cache);
    return st;
}

/* ---------------------------------------------------------------- generation */

/* An incremental-decoding session (tp__lm_ops, core/generate), as in bart.c: the
 * encoder runs once per source in encode(), every step feeds one token per row
 * through decoder_step and projects it on the vocabulary, and reorder() moves the
 * self-attention rows of a beam search (cross-attention follows through cache.src). */
typedef struct t5_session {
    const t5 *mdl;
    const tp__backend *be;
    int rows, cap, max_step;
    t5_cache cache;       /* allocated by encode(), once the source length is known */
    t5_work w;
    float *spare;         /* [rows * cap * I] for reorder */
    int *spare_src;       /* [rows] */
    int encoded;
} t5_session;

static void session_close(void *sp) {
    t5_session *s = sp;
    if (!s) return;
    cache_free(&s->cache);
    work_free(&s->w);
    free(s->spare);
    free(s->spare_src);
    free(s);
}

static tp_status session_open(const tp_model *m, const tp__backend *be, int rows, int cap,
                              int max_step, void **out, tp_error *err) {
    const t5 *mdl = m->arch;
    *out = NULL;
    if (m->head != TP_HEAD_SEQ2SEQ_LM)
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: generation needs T5ForConditionalGeneration; architecture is '%s'",
                         m->dir, m->architecture);
    if (rows < 1 || cap < 1 || max_step < 1 || max_step > cap ||
        (int64_t)rows * cap * mdl->c.inner > INT_MAX)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "t5 session: %d rows x %d tokens", rows,
                         cap);
    t5_session *s = calloc(1, sizeof *s);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "out of memory");
    s->mdl = mdl, s->be = be, s->rows = rows, s->cap = cap, s->max_step = max_step;
    s->spare = malloc((size_t)rows * cap * mdl->c.inner * sizeof(float));
    s->spare_src = malloc((size_t)rows * sizeof(int));
    if (!s->spare || !s->spare_src) {
        session_close(s);
        return tp__error(err, TP_ERR_NOMEM, "out of memory for a %d x %d decoder session", rows,
                         cap);
    }
    *out = s;
    return TP_OK;
}

/* Runs the encoder on `batch` sources [batch, S]; row r decodes source r / (rows / batch). */
static tp_status session_encode(void *sp, const int32_t *ids, const int32_t *mask, int batch,
                                int S, tp_error *err) {
    t5_session *s = sp;
    const t5 *mdl = s->mdl;
    const t5_config *c = &mdl->c;
    if (s->encoded || batch < 1 || S < 1 || s->rows % batch)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "encode: %d sources of %d tokens for %d decoder rows", batch, S, s->rows);
    tp_model_input in = {.struct_size = sizeof in, .batch = batch, .seq_len = S,
                         .input_ids = ids, .attention_mask = mask};
    const int wide = c->d_ff > c->hidden ? (c->d_ff > c->inner ? c->d_ff : c->inner)
                                         : (c->hidden > c->inner ? c->hidden : c->inner);
    const int64_t enc_rows = (int64_t)batch * S, dec_rows = (int64_t)s->rows * s->max_step;
    const int64_t rows = enc_rows > dec_rows ? enc_rows : dec_rows;
    const int64_t att_e = (int64_t)c->n_heads * S * S;
    const int64_t att_d = (int64_t)c->n_heads * s->max_step * (s->cap > S ? s->cap : S);
    if (rows * wide > INT_MAX || att_e > INT_MAX || att_d > INT_MAX)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "batch of %d x %d tokens is too large",
                         batch, S);
    for (int64_t i = 0; i < enc_rows; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "input_ids[%d][%d] = %d is outside the vocabulary (0..%d)",
                             (int)(i / S), (int)(i % S), (int)ids[i], c->vocab_size - 1);
    TP_TRY(cache_alloc(&s->cache, c, s->rows, batch, S, s->cap, err));
    s->cache.src = malloc((size_t)s->rows * sizeof(int));
    if (!s->cache.src) return tp__error(err, TP_ERR_NOMEM, "out of memory");
    const int per = s->rows / batch;
    for (int r = 0; r < s->rows; r++) s->cache.src[r] = r / per;
    TP_TRY(work_alloc(&s->w, c, (size_t)rows, (size_t)(att_e > att_d ? att_e : att_d), err));
    TP_TRY(encode(s->be, mdl, &in, &s->cache, &s->w, err));
    TP_TRY(cross_kv(s->be, mdl, &s->cache, s->w.q, err));
    s->encoded = 1;
    return TP_OK;
}

/* n decoder tokens per row (no padding: `mask` must be NULL or all ones); the logits
 * of every new token (all) or of each row's last one. */
static tp_status session_step(void *sp, const int32_t *ids, const int32_t *mask, int n, int all,
                              float *logits, tp_error *err) {
    t5_session *s = sp;
    const t5 *mdl = s->mdl;
    const t5_config *c = &mdl->c;
    const int B = s->rows, H = c->hidden;
    if (!s->encoded)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "decoder step before the encoder ran");
    if (n < 1 || n > s->max_step || s->cache.len + n > s->cap)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "decoder step of %d tokens after %d (capacity %d, at most %d a step)", n,
                         s->cache.len, s->cap, s->max_step);
    for (int i = 0; i < B * n; i++) {
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "decoder_input_ids[%d][%d] = %d is outside the vocabulary (0..%d)",
                             i / n, i % n, (int)ids[i], c->vocab_size - 1);
        if (mask && !mask[i])
            return tp__error(err, TP_ERR_UNSUPPORTED,
                             "decoder_input_ids[%d][%d]: the decoder takes no padding", i / n,
                             i % n);
    }
    TP_TRY(decoder_step(s->be, mdl, &s->cache, ids, n, &s->w, err));
    float *x = s->w.h; /* final-normed; scratch from here on */
    int m = B * n;
    if (!all && n > 1) {
        for (int b = 0; b < B; b++)
            memcpy(s->w.tmp + (size_t)b * H, s->w.h + ((size_t)b * n + n - 1) * H,
                   (size_t)H * sizeof(float));
        x = s->w.tmp, m = B;
    }
    if (c->scale_output) {
        const float sc = (float)pow((double)H, -0.5); /* as hidden_or_logits */
        for (size_t i = 0; i < (size_t)m * H; i++) x[i] *= sc;
    }
    return tp__linear(s->be, x, m, H, mdl->w.lm_w, NULL, c->vocab_size, TP_ACT_NONE, logits,
                      err);
}

static tp_status session_reorder(void *sp, const int *src, tp_error *err) {
    t5_session *s = sp;
    t5_cache *k = &s->cache;
    const size_t I = (size_t)s->mdl->c.inner, row = (size_t)k->cap * I;
    const size_t used = (size_t)k->len * I * sizeof(float);
    for (int r = 0; r < s->rows; r++)
        if (src[r] < 0 || src[r] >= s->rows)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT, "reorder: row %d from %d of %d", r,
                             src[r], s->rows);
    if (!s->encoded) return TP_OK;
    for (int li = 0; li < s->mdl->c.dec_layers; li++)
        for (float *blk = k->sk; blk; blk = blk == k->sk ? k->sv : NULL) {
            float *base = blk + (size_t)li * k->B * row;
            for (int r = 0; r < k->B; r++) memcpy(s->spare + r * row, base + src[r] * row, used);
            for (int r = 0; r < k->B; r++) memcpy(base + r * row, s->spare + r * row, used);
        }
    for (int r = 0; r < k->B; r++) s->spare_src[r] = k->src[src[r]];
    memcpy(k->src, s->spare_src, (size_t)k->B * sizeof(int));
    return TP_OK;
}

static int session_vocab(const tp_model *m) { return ((const t5 *)m->arch)->c.vocab_size; }

static int32_t session_start(const tp_model *m) {
    return ((const t5 *)m->arch)->c.decoder_start_id;
}

static const tp__lm_ops t5_lm = {
    .open = session_open,
    .step = session_step,
    .reorder = session_reorder,
    .close = session_close,
    .vocab_size = session_vocab,
    .encode = session_encode,
    .decoder_start = session_start,
};

/* ---------------------------------------------------------------- loading */

tp_status tp__t5_scale_decoder_outputs(const cJSON *config, const char *path, int *scale,
                                       tp_error *err) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(config, "scale_decoder_outputs");
    if (s && !cJSON_IsNull(s))
        return tp__json_bool(config, "scale_decoder_outputs", 0, scale, path, err);
    /* configs older than the key: the rescale went with the tied head */
    return tp__json_bool(config, "tie_word_embeddings", 1, scale, path, err);
}

/* feed_forward_proj is "ACT" or "gated-ACT" ("gated-gelu" meaning gelu_new); a saved
 * dense_act_fn / is_gated_act overrides what it implies, as T5Config lets it. */
static tp_status read_ffn_kind(tp_model *m, t5_config *c, tp_error *err) {
    const char *proj;
    TP_TRY(tp__json_string(m->config, "feed_forward_proj", "relu", &proj, m->config_path, err));
    const char *dash = strchr(proj, '-');
    int gated = 0;
    char act[64];
    if (dash) {
        if (dash - proj != 5 || strncmp(proj, "gated", 5) != 0 || strchr(dash + 1, '-') ||
            strlen(dash + 1) >= sizeof act)
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: feed_forward_proj '%s' is not a valid activation; expected "
                             "'ACT' or 'gated-ACT' (e.g. 'relu', 'gated-gelu')",
                             m->config_path, proj);
        gated = 1;
        snprintf(act, sizeof act, "%s", dash + 1);
    } else {
        snprintf(act, sizeof act, "%s", proj);
    }
    if (strcmp(proj, "gated-gelu") == 0) snprintf(act, sizeof act, "gelu_new");
    TP_TRY(tp__encoder_cfg_act(m, "dense_act_fn", act, &c->act, err));
    TP_TRY(tp__json_bool(m->config, "is_gated_act", gated, &c->gated, m->config_path, err));
    return TP_OK;
}

static tp_status read_config(tp_model *m, t5_config *c, tp_error *err) {
    /* transformers' T5Config defaults for absent keys */
    TP_TRY(tp__encoder_cfg_int(m, "vocab_size", 32128, 1, &c->vocab_size, err));
    TP_TRY(tp__encoder_cfg_int(m, "d_model", 512, 1, &c->hidden, err));
    TP_TRY(tp__encoder_cfg_int(m, "d_kv", 64, 1, &c->d_kv, err));
    TP_TRY(tp__encoder_cfg_int(m, "d_ff", 2048, 1, &c->d_ff, err));
    TP_TRY(tp__encoder_cfg_int(m, "num_layers", 6, 0, &c->enc_layers, err));
    const cJSON *nd = cJSON_GetObjectItemCaseSensitive(m->config, "num_decoder_layers");
    c->dec_layers = c->enc_layers; /* null or absent: as many as the encoder */
    if (nd && !cJSON_IsNull(nd))
        TP_TRY(tp__encoder_cfg_int(m, "num_decoder_layers", 6, 0, &c->dec_layers, err));
    TP_TRY(tp__encoder_cfg_int(m, "num_heads", 8, 1, &c->n_heads, err));
    /* at least 4: half of a bidirectional table must still hold an exact bucket */
    TP_TRY(tp__encoder_cfg_int(m, "relative_attention_num_buckets", 32, 4, &c->num_buckets, err));
    TP_TRY(tp__encoder_cfg_int(m, "relative_attention_max_distance", 128, 1, &c->max_distance,
                               err));
    TP_TRY(tp__encoder_cfg_int(m, "pad_token_id", 0, 0, &c->pad_id, err));
    TP_TRY(tp__encoder_cfg_int(m, "eos_token_id", 1, 0, &c->eos_id, err));
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(m->config, "decoder_start_token_id");
    c->decoder_start_id = c->pad_id; /* T5 starts decoding from the pad token */
    if (ds && !cJSON_IsNull(ds))
        TP_TRY(tp__encoder_cfg_int(m, "decoder_start_token_id", 0, 0, &c->decoder_start_id, err));
    if (c->decoder_start_id >= c->vocab_size)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: decoder_start_token_id %d is outside the vocabulary (vocab_size %d)",
                         m->config_path, c->decoder_start_id, c->vocab_size);
    if ((int64_t)c->n_heads * c->d_kv > INT_MAX / 4)
        return tp__error(err, TP_ERR_FORMAT, "%s: num_heads %d x d_kv %d is too large",
                         m->config_path, c->n_heads, c->d_kv);
    c->inner = c->n_heads * c->d_kv;
    double eps;
    TP_TRY(tp__json_double(m->config, "layer_norm_epsilon", 1e-6, &eps, m->config_path, err));
    if (!(eps >= 0))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'layer_norm_epsilon' is %g, expected >= 0",
                         m->config_path, eps);
    c->eps = (float)eps;
    TP_TRY(read_ffn_kind(m, c, err));
    return tp__t5_scale_decoder_outputs(m->config, m->config_path, &c->scale_output, err);
}

static int has(const tp_model *m, const char *name) {
    return tp__safetensors_find(m->weights, name) != NULL;
}

static tp_status bind_attn(const tp_model *m, const char *name, const t5_config *c, t5_attn *a,
                           tp_error *err) {
    char n[192];
    const int H = c->hidden, I = c->inner;
#define PROJ(x) (snprintf(n, sizeof n, "%s.%s.weight", name, x), n)
    TP_TRY(tp__encoder_tensor(m, "", PROJ("q"), I, H, &a->wq, err));
    TP_TRY(tp__encoder_tensor(m, "", PROJ("k"), I, H, &a->wk, err));
    TP_TRY(tp__encoder_tensor(m, "", PROJ("v"), I, H, &a->wv, err));
    TP_TRY(tp__encoder_tensor(m, "", PROJ("o"), H, I, &a->wo, err));
#undef PROJ
    return TP_OK;
}

static tp_status bind_ffn(const tp_model *m, const char *name, const t5_config *c, t5_ffn *f,
                          tp_error *err) {
    char n[192];
    const int H = c->hidden, F = c->d_ff;
#define PROJ(x) (snprintf(n, sizeof n, "%s.DenseReluDense.%s.weight", name, x), n)
    f->wi1 = NULL;
    if (c->gated) {
        TP_TRY(tp__encoder_tensor(m, "", PROJ("wi_0"), F, H, &f->wi0, err));
        TP_TRY(tp__encoder_tensor(m, "", PROJ("wi_1"), F, H, &f->wi1, err));
    } else {
        TP_TRY(tp__encoder_tensor(m, "", PROJ("wi"), F, H, &f->wi0, err));
    }
    TP_TRY(tp__encoder_tensor(m, "", PROJ("wo"), H, F, &f->wo, err));
#undef PROJ
    return TP_OK;
}

/* A stack's token table: its own embed_tokens when the checkpoint has one (an untied
 * T5 keeps separate tables), else "shared". */
static tp_status bind_embedding(const tp_model *m, const char *stack, const t5_config *c,
                                const float **out, tp_error *err) {
    char n[64];
    snprintf(n, sizeof n, "%s.embed_tokens.weight", stack);
    return tp__encoder_tensor(m, "", has(m, n) ? n : "shared.weight", c->vocab_size, c->hidden,
                              out, err);
}

static tp_status bind_weights(tp_model *m, t5 *mdl, tp_error *err) {
    const t5_config *c = &mdl->c;
    t5_weights *w = &mdl->w;
    const int H = c->hidden;
    TP_TRY(bind_embedding(m, "encoder", c, &w->enc_emb, err));
    TP_TRY(bind_embedding(m, "decoder", c, &w->dec_emb, err));
    w->enc = calloc(c->enc_layers ? (size_t)c->enc_layers : 1, sizeof *w->enc);
    w->dec = calloc(c->dec_layers ? (size_t)c->dec_layers : 1, sizeof *w->dec);
    if (!w->enc || !w->dec)
        return tp__error(err, TP_ERR_NOMEM, "out of memory for the layer tables");
    char n[128];
    if (c->enc_layers > 0)
        TP_TRY(tp__encoder_tensor(m, "",
                                  "encoder.block.0.layer.0.SelfAttention.relative_attention_bias."
                                  "weight", c->num_buckets, c->n_heads, &w->enc_rel, err));
    if (c->dec_layers > 0)
        TP_TRY(tp__encoder_tensor(m, "",
                                  "decoder.block.0.layer.0.SelfAttention.relative_attention_bias."
                                  "weight", c->num_buckets, c->n_heads, &w->dec_rel, err));
    for (int i = 0; i < c->enc_layers; i++) {
        t5_enc_layer *l = &w->enc[i];
#define LAYER(suffix) (snprintf(n, sizeof n, "encoder.block.%d.layer.%s", i, suffix), n)
        TP_TRY(tp__encoder_tensor(m, "", LAYER("0.layer_norm.weight"), H, 0, &l->ln1, err));
        TP_TRY(bind_attn(m, LAYER("0.SelfAttention"), c, &l->self, err));
        TP_TRY(tp__encoder_tensor(m, "", LAYER("1.layer_norm.weight"), H, 0, &l->ln2, err));
        TP_TRY(bind_ffn(m, LAYER("1"), c, &l->ffn, err));
#undef LAYER
    }
    for (int i = 0; i < c->dec_layers; i++) {
        t5_dec_layer *l = &w->dec[i];
#define LAYER(suffix) (snprintf(n, sizeof n, "decoder.block.%d.layer.%s", i, suffix), n)
        TP_TRY(tp__encoder_tensor(m, "", LAYER("0.layer_norm.weight"), H, 0, &l->ln1, err));
        TP_TRY(bind_attn(m, LAYER("0.SelfAttention"), c, &l->self, err));
        TP_TRY(tp__encoder_tensor(m, "", LAYER("1.layer_norm.weight"), H, 0, &l->ln2, err));
        TP_TRY(bind_attn(m, LAYER("1.EncDecAttention"), c, &l->cross, err));
        TP_TRY(tp__encoder_tensor(m, "", LAYER("2.layer_norm.weight"), H, 0, &l->ln3, err));
        TP_TRY(bind_ffn(m, LAYER("2"), c, &l->ffn, err));
#undef LAYER
    }
    TP_TRY(tp__encoder_tensor(m, "", "encoder.final_layer_norm.weight", H, 0, &w->enc_ln, err));
    TP_TRY(tp__encoder_tensor(m, "", "decoder.final_layer_norm.weight", H, 0, &w->dec_ln, err));
    if (m->head == TP_HEAD_SEQ2SEQ_LM) {
        int tied;
        TP_TRY(tp__json_bool(m->config, "tie_word_embeddings", 1, &tied, m->config_path, err));
        if (has(m, "lm_head.weight") || !tied)
            TP_TRY(tp__encoder_tensor(m, "", "lm_head.weight", c->vocab_size, H, &w->lm_w, err));
        else if (has(m, "shared.weight"))
            TP_TRY(tp__encoder_tensor(m, "", "shared.weight", c->vocab_size, H, &w->lm_w, err));
        else
            w->lm_w = w->dec_emb; /* tied: the checkpoint omits the copy */
    }
    return TP_OK;
}

static tp_status set_head(tp_model *m, tp_error *err) {
    const char *a = m->architecture;
    if (!a[0] || strcmp(a, "T5Model") == 0) m->head = TP_HEAD_NONE;
    else if (strcmp(a, "T5ForConditionalGeneration") == 0) m->head = TP_HEAD_SEQ2SEQ_LM;
    else
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: architecture '%s' is not supported (supported: T5Model, "
                         "T5ForConditionalGeneration)",
                         m->config_path, a);
    return TP_OK;
}

static void t5_free(void *arch) {
    t5 *mdl = arch;
    if (!mdl) return;
    free(mdl->w.enc);
    free(mdl->w.dec);
    free(mdl);
}

static tp_status t5_load(tp_model *m, void **arch, tp_error *err) {
    *arch = NULL;
    TP_TRY(set_head(m, err));
    t5 *mdl = calloc(1, sizeof *mdl);
    if (!mdl) return tp__error(err, TP_ERR_NOMEM, "out of memory loading %s", m->dir);
    tp_status st = read_config(m, &mdl->c, err);
    if (st == TP_OK) st = bind_weights(m, mdl, err);
    if (st != TP_OK) {
        t5_free(mdl);
        return st;
    }
    *arch = mdl;
    return TP_OK;
}

const tp__model_family tp__family_t5 = {
    .model_type = "t5",
    .load = t5_load,
    .free = t5_free,
    .forward = t5_forward,
    .lm = &t5_lm,
};
