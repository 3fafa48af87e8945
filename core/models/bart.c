/* bart.c: the BART-style encoder-decoders and their heads, as transformers computes
 * them in fp32 (dropout is identity at inference): BART (model_type "bart") and
 * Marian (model_type "marian", opus-mt), one graph with the differences recorded in a
 * seq2seq_variant:
 *
 *   encoder: x = LN_emb(shared[id]·embed_scale + pos[t + 2])
 *            per layer (post-LN): x = LN(x + SelfAttn(x)·Woᵀ + bo)
 *                                 x = LN(x + act(x·W1ᵀ + b1)·W2ᵀ + b2)
 *   decoder: y = LN_emb(shared[id]·embed_scale + pos[t + 2])
 *            per layer: y = LN(y + CausalSelfAttn(y))
 *                       y = LN(y + CrossAttn(y, encoder output, encoder padding mask))
 *                       y = LN(y + FFN(y))
 *   heads:   sequence classification: the decoder state at the LAST eos token of each
 *            row -> dense + tanh -> out_proj (bart-large-mnli);
 *            conditional generation: y·sharedᵀ + final_logits_bias;
 *            BartModel: the decoder's last hidden state.
 *   Marian:  the same post-LN layers, but fixed sinusoidal positions pos[t] (no
 *            offset; sin in the first half of each row, cos in the second), no
 *            layernorm_embedding, separate encoder/decoder token tables when
 *            share_encoder_decoder_embeddings is false, and a decoder vocabulary of
 *            its own (decoder_vocab_size) for the head and final_logits_bias.
 *
 * The decoder is written in the shape incremental decoding needs: the encoder runs
 * once into a bart_cache, which also holds each decoder layer's cross-attention K/V
 * (computed once from the encoder output) and its self-attention K/V (appended by
 * every decoder step). decoder_step() runs n new tokens per row at positions
 * cache->len ... cache->len + n - 1 against everything already cached. The full
 * forward below is one step of all T_dec tokens; generation (core/generate/) plugs
 * in by keeping the cache between calls and stepping one token at a time (after
 * reordering the cache rows between beam steps).
 *
 * Every dense layer goes through tp__linear and attention through tp__attention
 * (attention.c, shared with encoder.c), so a backend accelerates them. The run state
 * and the cache are allocated per call: forward is thread-safe on a shared model. */
#include "bart.h"

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

/* What tells BART and Marian apart (the graph is the same). */
typedef struct seq2seq_variant {
    const char *base;             /* class-name prefix, "Bart" */
    const char *lm_arch;          /* the conditional-generation class */
    int sinusoidal;               /* Marian: fixed sinusoidal positions computed at load,
                                     no layernorm_embedding; else learned positions
                                     stored at row t + 2 and a layernorm_embedding */
    int vocab, pad, eos, start;   /* the config class's defaults for absent keys */
} seq2seq_variant;

static const seq2seq_variant BART = {
    .base = "Bart", .lm_arch = "BartForConditionalGeneration", .sinusoidal = 0,
    .vocab = 50265, .pad = 1, .eos = 2, .start = 2,
};
static const seq2seq_variant MARIAN = {
    .base = "Marian", .lm_arch = "MarianMTModel", .sinusoidal = 1,
    .vocab = 58101, .pad = 58100, .eos = 0, .start = 58100,
};

typedef struct bart_config {
    int vocab_size;       /* V: the encoder's token table (and the decoder's when shared) */
    int dec_vocab;        /* V_dec: the decoder's tokens, the LM head's rows */
    int hidden;           /* H = d_model */
    int max_positions;    /* P; BART's learned tables have P + 2 rows */
    int pos_offset;       /* 2 for BART's learned positions, 0 for Marian's */
    int enc_layers, dec_layers;
    int enc_heads, dec_heads;
    int enc_ffn, dec_ffn; /* feed-forward widths */
    tp_activation act;
    float embed_scale;    /* sqrt(d_model) with scale_embedding, else 1 */
    float ln_eps;         /* nn.LayerNorm's default, 1e-5 */
    int pad_id, eos_id, decoder_start_id;
    int num_labels;       /* L */
} bart_config;

typedef struct bart_attn {
    const float *wq, *bq; /* [H, H], [H] */
    const float *wk, *bk; /* [H, H], [H] */
    const float *wv, *bv; /* [H, H], [H] */
    const float *wo, *bo; /* [H, H], [H] out_proj */
} bart_attn;

typedef struct bart_enc_layer {
    bart_attn self;
    const float *ln1_g, *ln1_b; /* [H] self_attn_layer_norm */
    const float *w1, *b1;       /* [F, H], [F] fc1 */
    const float *w2, *b2;       /* [H, F], [H] fc2 */
    const float *ln2_g, *ln2_b; /* [H] final_layer_norm */
} bart_enc_layer;

typedef struct bart_dec_layer {
    bart_attn self;
    const float *ln1_g, *ln1_b; /* [H] self_attn_layer_norm */
    bart_attn cross;
    const float *ln2_g, *ln2_b; /* [H] encoder_attn_layer_norm */
    const float *w1, *b1;       /* [F, H], [F] */
    const float *w2, *b2;       /* [H, F], [H] */
    const float *ln3_g, *ln3_b; /* [H] final_layer_norm */
} bart_dec_layer;

typedef struct bart_weights {
    const float *enc_emb;                 /* [V, H] encoder tokens (shared) */
    const float *dec_emb;                 /* [V_dec, H] decoder tokens (shared) */
    const float *enc_pos, *dec_pos;       /* [P + pos_offset, H] */
    float *sinusoid;                      /* [P, H] Marian's table, owned (both stacks) */
    const float *enc_ln_g, *enc_ln_b;     /* [H] encoder layernorm_embedding, or NULL */
    const float *dec_ln_g, *dec_ln_b;     /* [H] decoder layernorm_embedding, or NULL */
    bart_enc_layer *enc;                  /* [enc_layers] */
    bart_dec_layer *dec;                  /* [dec_layers] */
    const float *cls_w, *cls_b;           /* [H, H], [H] classification_head.dense */
    const float *out_w, *out_b;           /* [L, H], [L] classification_head.out_proj */
    const float *lm_w;                    /* [V_dec, H] lm_head (tied: dec_emb) */
    const float *lm_bias;                 /* [V_dec] final_logits_bias, or NULL (zeros) */
} bart_weights;

typedef struct bart {
    const seq2seq_variant *v;
    bart_config c;
    bart_weights w;
} bart;

/* What the decoder keeps between steps. Row b of a [B*X, H] block starts at b*X*H. */
typedef struct bart_cache {
    int B, S, cap, len;   /* rows, source tokens, decoder capacity, tokens cached */
    int nsrc;             /* N: encoded sources (B in a forward; fewer under beams) */
    int *src;             /* [B] the source row r decodes (NULL: r itself) */
    float *enc;           /* [N*S, H] the encoder's last hidden state */
    float *enc_mask;      /* [N*S] additive padding mask of the source */
    float *ck, *cv;       /* [dec_layers][N*S, H] cross-attention K/V, computed once */
    float *sk, *sv;       /* [dec_layers][B*cap, H] self-attention K/V, appended per step */
} bart_cache;

/* Scratch of one encoder pass or decoder step, sized for `rows` tokens. */
typedef struct bart_work {
    float *x, *q, *k, *v, *ctx, *tmp; /* [rows, H] */
    float *ffn;                       /* [rows, F] */
    tp__attn_args *attn;              /* [rows]: a step's attention, one per batch row */
} bart_work;

/* ---------------------------------------------------------------- state */

static void work_free(bart_work *w) {
    free(w->x);
    free(w->q);
    free(w->k);
    free(w->v);
    free(w->ctx);
    free(w->tmp);
    free(w->ffn);
    free(w->attn);
}

static tp_status work_alloc(bart_work *w, size_t rows, size_t H, size_t F, tp_error *err) {
    memset(w, 0, sizeof *w);
    w->x = malloc(rows * H * sizeof(float));
    w->q = malloc(rows * H * sizeof(float));
    w->k = malloc(rows * H * sizeof(float));
    w->v = malloc(rows * H * sizeof(float));
    w->ctx = malloc(rows * H * sizeof(float));
    w->tmp = malloc(rows * H * sizeof(float));
    w->ffn = malloc(rows * F * sizeof(float));
    w->attn = malloc(rows * sizeof *w->attn);
    if (!w->x || !w->q || !w->k || !w->v || !w->ctx || !w->tmp || !w->ffn || !w->attn) {
        work_free(w);
        return tp__error(err, TP_ERR_NOMEM, "out of memory for the run state of %zu tokens",
                         rows);
    }
    return TP_OK;
}

static void cache_free(bart_cache *c) {
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
static tp_status cache_alloc(bart_cache *c, const bart_config *cfg, int B, int N, int S, int cap,
                             tp_error *err) {
    const size_t H = (size_t)cfg->hidden, L = (size_t)cfg->dec_layers ? cfg->dec_layers : 1;
    memset(c, 0, sizeof *c);
    c->B = B, c->nsrc = N, c->S = S, c->cap = cap, c->len = 0;
    c->enc = malloc((size_t)N * S * H * sizeof(float));
    c->enc_mask = malloc((size_t)N * S * sizeof(float));
    c->ck = malloc(L * N * S * H * sizeof(float));
    c->cv = malloc(L * N * S * H * sizeof(float));
    c->sk = malloc(L * B * cap * H * sizeof(float));
    c->sv = malloc(L * B * cap * H * sizeof(float));
    if (!c->enc || !c->enc_mask || !c->ck || !c->cv || !c->sk || !c->sv) {
        cache_free(c);
        return tp__error(err, TP_ERR_NOMEM, "out of memory for the decoder cache of a %dx%d batch",
                         B, S);
    }
    return TP_OK;
}

/* ---------------------------------------------------------------- graph */

/* x[rows, H] = emb[ids]·scale + pos[first + t + pos_offset] (t restarting every
 * `per_row` tokens), then layernorm_embedding where the model has one. */
static tp_status embed(const tp__backend *be, const bart *mdl, const int32_t *ids, int B,
                       int per_row, int first, const float *emb, const float *pos,
                       const float *ln_g, const float *ln_b, float *x, tp_error *err) {
    const bart_config *c = &mdl->c;
    const size_t H = (size_t)c->hidden;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < per_row; t++) {
            const size_t i = (size_t)b * per_row + t;
            float *xi = x + i * H;
            const float *tok = emb + (size_t)ids[i] * H;
            const float *p = pos + (size_t)(first + t + c->pos_offset) * H;
            for (size_t h = 0; h < H; h++) xi[h] = tok[h] * c->embed_scale + p[h];
        }
    if (!ln_g) return TP_OK;
    return tp__layer_norm(be, x, B * per_row, (int)H, ln_g, ln_b, c->ln_eps, err);
}

/* x = LN(x + a·Woᵀ + bo), where a = w->ctx is the attention output of `rows` tokens. */
static tp_status attn_out(const tp__backend *be, const bart_config *c, const bart_attn *a,
                          const float *ln_g, const float *ln_b, int rows, bart_work *w,
                          tp_error *err) {
    const int H = c->hidden;
    TP_TRY(tp__linear(be, w->ctx, rows, H, a->wo, a->bo, H, TP_ACT_NONE, w->tmp, err));
    tp__add(w->tmp, w->x, (size_t)rows * H);
    TP_TRY(tp__layer_norm(be, w->tmp, rows, H, ln_g, ln_b, c->ln_eps, err));
    float *t = w->x;
    w->x = w->tmp, w->tmp = t;
    return TP_OK;
}

/* x = LN(x + act(x·W1ᵀ + b1)·W2ᵀ + b2) */
static tp_status ffn(const tp__backend *be, const bart_config *c, int F, const float *w1,
                     const float *b1, const float *w2, const float *b2, const float *ln_g,
                     const float *ln_b, int rows, bart_work *w, tp_error *err) {
    const int H = c->hidden;
    TP_TRY(tp__linear(be, w->x, rows, H, w1, b1, F, c->act, w->ffn, err));
    TP_TRY(tp__linear(be, w->ffn, rows, F, w2, b2, H, TP_ACT_NONE, w->tmp, err));
    tp__add(w->tmp, w->x, (size_t)rows * H);
    TP_TRY(tp__layer_norm(be, w->tmp, rows, H, ln_g, ln_b, c->ln_eps, err));
    float *t = w->x;
    w->x = w->tmp, w->tmp = t;
    return TP_OK;
}

/* The encoder on in->input_ids into cache->enc, with the source padding mask. */
static tp_status encode(const tp__backend *be, const bart *mdl, const tp_model_input *in,
                        bart_cache *cache, bart_work *w, tp_error *err) {
    const bart_config *c = &mdl->c;
    const int B = in->batch, S = in->seq_len, H = c->hidden, BS = B * S;
    const int NH = c->enc_heads, D = H / NH;
    for (int i = 0; i < BS; i++)
        cache->enc_mask[i] = (in->attention_mask && in->attention_mask[i] == 0) ? -FLT_MAX : 0.0f;
    TP_TRY(embed(be, mdl, in->input_ids, B, S, 0, mdl->w.enc_emb, mdl->w.enc_pos,
                 mdl->w.enc_ln_g, mdl->w.enc_ln_b, w->x, err));
    for (int li = 0; li < c->enc_layers; li++) {
        const bart_enc_layer *l = &mdl->w.enc[li];
        TP_TRY(tp__linear(be, w->x, BS, H, l->self.wq, l->self.bq, H, TP_ACT_NONE, w->q, err));
        TP_TRY(tp__linear(be, w->x, BS, H, l->self.wk, l->self.bk, H, TP_ACT_NONE, w->k, err));
        TP_TRY(tp__linear(be, w->x, BS, H, l->self.wv, l->self.bv, H, TP_ACT_NONE, w->v, err));
        for (int b = 0; b < B; b++) {
            const size_t r0 = (size_t)b * S * H;
            tp__attn_args a = {
                .n_heads = NH, .head_dim = D, .tq = S, .tk = S,
                .q = w->q + r0, .ldq = H, .k = w->k + r0, .ldk = H, .v = w->v + r0, .ldv = H,
                .key_mask = cache->enc_mask + (size_t)b * S, .causal_past = -1,
                .scale = (float)(1.0 / sqrt((double)D)), .out = w->ctx + r0, .ldo = H,
            };
            TP_TRY(tp__attention(be, &a, err));
        }
        TP_TRY(attn_out(be, c, &l->self, l->ln1_g, l->ln1_b, BS, w, err));
        TP_TRY(ffn(be, c, c->enc_ffn, l->w1, l->b1, l->w2, l->b2, l->ln2_g, l->ln2_b, BS, w,
                   err));
    }
    memcpy(cache->enc, w->x, (size_t)BS * H * sizeof(float));
    return TP_OK;
}

/* Every decoder layer's cross-attention K and V of the encoder output: once per
 * source, whatever the number of decoder steps; stored head-major (one contiguous
 * block per head, tp__heads_major), so that each step streams them. scratch: the
 * encoder's rows × hidden. */
static tp_status cross_kv(const tp__backend *be, const bart *mdl, bart_cache *cache,
                          float *scratch, tp_error *err) {
    const int H = mdl->c.hidden, S = cache->S, BS = cache->nsrc * S, NH = mdl->c.dec_heads;
    for (int li = 0; li < mdl->c.dec_layers; li++) {
        const bart_attn *a = &mdl->w.dec[li].cross;
        const size_t off = (size_t)li * BS * H;
        TP_TRY(tp__project_heads_major(be, cache->enc, cache->nsrc, S, H, a->wk, a->bk, NH, H / NH,
                                       scratch, cache->ck + off, err));
        TP_TRY(tp__project_heads_major(be, cache->enc, cache->nsrc, S, H, a->wv, a->bv, NH, H / NH,
                                       scratch, cache->cv + off, err));
    }
    return TP_OK;
}

/* One decoder step: n new tokens per row (ids [B*n]) at positions cache->len ...,
 * their self-attention K/V appended to the cache; the last hidden state of the new
 * tokens is left in w->x [B*n, H]. The caller checked ids and that len + n <= cap. */
static tp_status decoder_step(const tp__backend *be, const bart *mdl, bart_cache *cache,
                              const int32_t *ids, int n, bart_work *w, tp_error *err) {
    const bart_config *c = &mdl->c;
    const int B = cache->B, S = cache->S, H = c->hidden, Bn = B * n;
    const int NH = c->dec_heads, D = H / NH, past = cache->len, total = past + n;
    const float scale = (float)(1.0 / sqrt((double)D));
    TP_TRY(embed(be, mdl, ids, B, n, past, mdl->w.dec_emb, mdl->w.dec_pos, mdl->w.dec_ln_g,
                 mdl->w.dec_ln_b, w->x, err));
    for (int li = 0; li < c->dec_layers; li++) {
        const bart_dec_layer *l = &mdl->w.dec[li];
        float *sk = cache->sk + (size_t)li * B * cache->cap * H;
        float *sv = cache->sv + (size_t)li * B * cache->cap * H;

        /* causal self-attention over the cached tokens and the new ones */
        TP_TRY(tp__linear(be, w->x, Bn, H, l->self.wq, l->self.bq, H, TP_ACT_NONE, w->q, err));
        TP_TRY(tp__linear(be, w->x, Bn, H, l->self.wk, l->self.bk, H, TP_ACT_NONE, w->k, err));
        TP_TRY(tp__linear(be, w->x, Bn, H, l->self.wv, l->self.bv, H, TP_ACT_NONE, w->v, err));
        for (int b = 0; b < B; b++) {
            const size_t row = (size_t)b * cache->cap * H, at = row + (size_t)past * H;
            memcpy(sk + at, w->k + (size_t)b * n * H, (size_t)n * H * sizeof(float));
            memcpy(sv + at, w->v + (size_t)b * n * H, (size_t)n * H * sizeof(float));
            w->attn[b] = (tp__attn_args){
                .n_heads = NH, .head_dim = D, .tq = n, .tk = total,
                .q = w->q + (size_t)b * n * H, .ldq = H,
                .k = sk + row, .ldk = H, .v = sv + row, .ldv = H,
                .key_mask = NULL, .causal_past = past, .scale = scale, .out = w->ctx + (size_t)b * n * H, .ldo = H,
            };
        }
        TP_TRY(tp__attention_rows(be, w->attn, B, err));
        TP_TRY(attn_out(be, c, &l->self, l->ln1_g, l->ln1_b, Bn, w, err));

        /* cross-attention over the encoder output, source padding masked */
        TP_TRY(tp__linear(be, w->x, Bn, H, l->cross.wq, l->cross.bq, H, TP_ACT_NONE, w->q, err));
        const float *ck = cache->ck + (size_t)li * cache->nsrc * S * H;
        const float *cv = cache->cv + (size_t)li * cache->nsrc * S * H;
        const tp__attn_args first = {
            .n_heads = NH, .head_dim = D, .tk = S, .q = w->q, .ldq = H,
            .k = ck, .ldk = D, .v = cv, .ldv = D, .head_stride = (size_t)S * D,
            .key_mask = cache->enc_mask, .causal_past = -1, .scale = scale, .out = w->ctx, .ldo = H,
        };
        TP_TRY(tp__cross_attention(be, &first, cache->src, B, n, w->attn, err));
        TP_TRY(attn_out(be, c, &l->cross, l->ln2_g, l->ln2_b, Bn, w, err));

        TP_TRY(ffn(be, c, c->dec_ffn, l->w1, l->b1, l->w2, l->b2, l->ln3_g, l->ln3_b, Bn, w,
                   err));
    }
    cache->len = total;
    return TP_OK;
}

/* ---------------------------------------------------------------- heads */

/* BartForSequenceClassification: the decoder state at the last eos of each row
 * (eos positions read from input_ids, as transformers does), dense + tanh, out_proj. */
static tp_status classify(const tp_model *m, const tp__backend *be, const bart *mdl,
                          const tp_model_input *in, bart_work *w, tp_tensor **out,
                          tp_error *err) {
    const bart_config *c = &mdl->c;
    const int B = in->batch, T = in->seq_len, H = c->hidden;
    int count0 = -1;
    for (int b = 0; b < B; b++) {
        int count = 0, last = -1;
        for (int t = 0; t < T; t++)
            if (in->input_ids[(size_t)b * T + t] == c->eos_id) count++, last = t;
        if (count == 0)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "input_ids[%d] has no eos token (id %d, config.json eos_token_id): "
                             "%s pools the hidden state of the last eos",
                             b, c->eos_id, m->architecture);
        if (b == 0) count0 = count;
        else if (count != count0)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "All examples must have the same number of <eos> tokens: "
                             "input_ids[0] has %d, input_ids[%d] has %d (eos_token_id %d)",
                             count0, b, count, c->eos_id);
        memcpy(w->q + (size_t)b * H, w->x + ((size_t)b * T + last) * H, (size_t)H * sizeof(float));
    }
    int64_t shape[2] = {B, c->num_labels};
    tp_tensor *t;
    TP_TRY(tp__tensor_new(TP_F32, 2, shape, &t, err));
    tp_status st = tp__linear(be, w->q, B, H, mdl->w.cls_w, mdl->w.cls_b, H, TP_ACT_TANH, w->k, err);
    if (st == TP_OK)
        st = tp__linear(be, w->k, B, H, mdl->w.out_w, mdl->w.out_b, c->num_labels, TP_ACT_NONE,
                        t->data, err);
    if (st != TP_OK) {
        tp_tensor_free(t);
        return st;
    }
    *out = t;
    return TP_OK;
}

/* A copy of rows x [B*T, H] (or their projection on the vocabulary) as [B, T, N]. */
static tp_status hidden_or_logits(const tp__backend *be, const bart *mdl, const float *x, int B,
                                  int T, int lm, tp_tensor **out, tp_error *err) {
    const int H = mdl->c.hidden, V = mdl->c.dec_vocab;
    int64_t shape[3] = {B, T, lm ? V : H};
    tp_tensor *t;
    TP_TRY(tp__tensor_new(TP_F32, 3, shape, &t, err));
    tp_status st = TP_OK;
    if (lm)
        st = tp__linear(be, x, B * T, H, mdl->w.lm_w, mdl->w.lm_bias, V, TP_ACT_NONE, t->data,
                        err);
    else
        memcpy(t->data, x, (size_t)B * T * H * sizeof(float));
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

static tp_status check_ids(const tp_model *m, const bart_config *c, const char *name,
                           const int32_t *ids, int B, int T, int vocab, tp_error *err) {
    if (T > c->max_positions)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "%s of %d tokens is longer than config.json max_position_embeddings %d",
                         name, T, c->max_positions);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const int32_t id = ids[(size_t)b * T + t];
            if (id < 0 || id >= vocab)
                return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                 "%s[%d][%d] = %d is outside the vocabulary of %s (0..%d)", name,
                                 b, t, (int)id, m->dir, vocab - 1);
        }
    return TP_OK;
}

static tp_status bart_forward(const tp_model *m, const tp__backend *be, const tp_model_input *in,
                              tp_tensor **out, tp_error *err) {
    const bart *mdl = m->arch;
    const bart_config *c = &mdl->c;
    const int B = in->batch, S = in->seq_len;
    const int hidden_states = HAS(in, output_hidden_states) && in->output_hidden_states;
    const int32_t *dec_ids = HAS(in, decoder_seq_len) ? in->decoder_input_ids : NULL;
    int T = dec_ids ? in->decoder_seq_len : S;

    if (dec_ids && T < 1)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "model forward: decoder_seq_len is %d with decoder_input_ids given",
                         T);
    if (!dec_ids && !hidden_states && m->head == TP_HEAD_SEQ2SEQ_LM)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "model forward: %s needs decoder_input_ids (the decoder's tokens, "
                         "starting with decoder_start_token_id %d)",
                         m->architecture, c->decoder_start_id);
    if (dec_ids && !hidden_states && m->head == TP_HEAD_SEQUENCE_CLASSIFICATION && T != S)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "model forward: decoder_seq_len %d differs from seq_len %d: %s pools "
                         "the decoder state at the eos positions of input_ids",
                         T, S, m->architecture);
    if (hidden_states) T = 1; /* the encoder alone runs */
    const int wide = c->enc_ffn > c->dec_ffn ? c->enc_ffn : c->dec_ffn;
    const int64_t rows = (int64_t)B * (S > T ? S : T);
    if (rows * (wide > c->hidden ? wide : c->hidden) > INT_MAX || (int64_t)B * T > INT_MAX / 2)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "batch of %d x %d tokens (decoder %d) is too large", B, S, T);
    TP_TRY(check_ids(m, c, "input_ids", in->input_ids, B, S, c->vocab_size, err));
    if (dec_ids && !hidden_states)
        TP_TRY(check_ids(m, c, "decoder_input_ids", dec_ids, B, T, c->dec_vocab, err));

    int32_t *shifted = NULL;
    bart_cache cache;
    bart_work w;
    TP_TRY(cache_alloc(&cache, c, B, B, S, T, err));
    tp_status st = work_alloc(&w, (size_t)rows, (size_t)c->hidden, (size_t)wide, err);
    if (st != TP_OK) {
        cache_free(&cache);
        return st;
    }
    st = encode(be, mdl, in, &cache, &w, err);
    if (st == TP_OK && hidden_states) {
        st = hidden_or_logits(be, mdl, cache.enc, B, S, 0, out, err);
        goto done;
    }
    if (st == TP_OK && !dec_ids) {
        /* shift_tokens_right(input_ids, pad_token_id, decoder_start_token_id) */
        shifted = malloc((size_t)B * S * sizeof *shifted);
        if (!shifted) {
            st = tp__error(err, TP_ERR_NOMEM, "out of memory for decoder_input_ids");
            goto done;
        }
        for (int b = 0; b < B; b++) {
            const int32_t *src = in->input_ids + (size_t)b * S;
            int32_t *dst = shifted + (size_t)b * S;
            dst[0] = c->decoder_start_id;
            memcpy(dst + 1, src, (size_t)(S - 1) * sizeof *dst);
        }
        dec_ids = shifted;
        st = check_ids(m, c, "decoder_input_ids", dec_ids, B, T, c->dec_vocab, err);
    }
    if (st == TP_OK) st = cross_kv(be, mdl, &cache, w.q, err);
    /* incremental decoding: keep `cache` and call decoder_step with n = 1 per token */
    if (st == TP_OK) st = decoder_step(be, mdl, &cache, dec_ids, T, &w, err);
    if (st == TP_OK) {
        switch (m->head) {
        case TP_HEAD_SEQUENCE_CLASSIFICATION:
            st = classify(m, be, mdl, in, &w, out, err);
            break;
        case TP_HEAD_SEQ2SEQ_LM:
            st = hidden_or_logits(be, mdl, w.x, B, T, 1, out, err);
            break;
        case TP_HEAD_NONE:
            st = hidden_or_logits(be, mdl, w.x, B, T, 0, out, err);
            break;
        default:
            st = tp__error(err, TP_ERR_INTERNAL, "%s: head %d has no %s forward", m->dir,
                           (int)m->head, m->model_type);
        }
    }
done:
    free(shifted);
    work_free(&w);
    cache_free(&cache);
    return st;
}

/* ---------------------------------------------------------------- generation */

/* An incremental-decoding session (tp__lm_ops, core/generate): the encoder runs once
 * per source in encode(), every step feeds one token per row through decoder_step
 * and projects it on the vocabulary, and reorder() moves the self-attention rows of
 * a beam search (the cross-attention rows follow through cache.src). */
typedef struct bart_session {
    const bart *mdl;
    const tp__backend *be;
    int rows, cap, max_step;
    bart_cache cache;     /* allocated by encode(), once the source length is known */
    bart_work w;
    float *spare;         /* [rows * cap * H] for reorder */
    int *spare_src;       /* [rows] */
    int encoded;
} bart_session;

static void session_close(void *sp) {
    bart_session *s = sp;
    if (!s) return;
    cache_free(&s->cache);
    work_free(&s->w);
    free(s->spare);
    free(s->spare_src);
    free(s);
}

static tp_status session_open(const tp_model *m, const tp__backend *be, int rows, int cap,
                              int max_step, void **out, tp_error *err) {
    const bart *mdl = m->arch;
    *out = NULL;
    if (m->head != TP_HEAD_SEQ2SEQ_LM)
        return tp__error(err, TP_ERR_UNSUPPORTED, "%s: generation needs %s; architecture is '%s'",
                         m->dir, mdl->v->lm_arch, m->architecture);
    if (rows < 1 || cap < 1 || max_step < 1 || max_step > cap)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "%s session: %d rows x %d tokens",
                         m->model_type, rows, cap);
    if (cap > mdl->c.max_positions)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "%d decoder tokens are more than config.json max_position_embeddings %d",
                         cap, mdl->c.max_positions);
    if ((int64_t)rows * cap * mdl->c.hidden > INT_MAX)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "batch of %d x %d tokens is too large",
                         rows, cap);
    bart_session *s = calloc(1, sizeof *s);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "out of memory");
    s->mdl = mdl, s->be = be, s->rows = rows, s->cap = cap, s->max_step = max_step;
    s->spare = malloc((size_t)rows * cap * mdl->c.hidden * sizeof(float));
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
    bart_session *s = sp;
    const bart *mdl = s->mdl;
    const bart_config *c = &mdl->c;
    if (s->encoded || batch < 1 || S < 1 || s->rows % batch)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "encode: %d sources of %d tokens for %d decoder rows", batch, S, s->rows);
    tp_model_input in = {.struct_size = sizeof in, .batch = batch, .seq_len = S,
                         .input_ids = ids, .attention_mask = mask};
    const int wide = c->enc_ffn > c->dec_ffn ? c->enc_ffn : c->dec_ffn;
    const int64_t enc_rows = (int64_t)batch * S, dec_rows = (int64_t)s->rows * s->max_step;
    const int64_t rows = enc_rows > dec_rows ? enc_rows : dec_rows;
    if (rows * (wide > c->hidden ? wide : c->hidden) > INT_MAX)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "batch of %d x %d tokens is too large",
                         batch, S);
    /* check_ids' message names the model directory; the source must fit the positions */
    if (S > c->max_positions)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "input_ids of %d tokens is longer than config.json "
                         "max_position_embeddings %d",
                         S, c->max_positions);
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
    TP_TRY(work_alloc(&s->w, (size_t)rows, (size_t)c->hidden, (size_t)wide, err));
    TP_TRY(encode(s->be, mdl, &in, &s->cache, &s->w, err));
    TP_TRY(cross_kv(s->be, mdl, &s->cache, s->w.q, err));
    s->encoded = 1;
    return TP_OK;
}

/* n decoder tokens per row (no padding: `mask` must be NULL or all ones); the logits
 * of every new token (all) or of each row's last one. */
static tp_status session_step(void *sp, const int32_t *ids, const int32_t *mask, int n, int all,
                              float *logits, tp_error *err) {
    bart_session *s = sp;
    const bart *mdl = s->mdl;
    const bart_config *c = &mdl->c;
    const int B = s->rows, H = c->hidden;
    if (!s->encoded)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "decoder step before the encoder ran");
    if (n < 1 || n > s->max_step || s->cache.len + n > s->cap)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "decoder step of %d tokens after %d (capacity %d, at most %d a step)", n,
                         s->cache.len, s->cap, s->max_step);
    for (int i = 0; i < B * n; i++) {
        if (ids[i] < 0 || ids[i] >= c->dec_vocab)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "decoder_input_ids[%d][%d] = %d is outside the vocabulary (0..%d)",
                             i / n, i % n, (int)ids[i], c->dec_vocab - 1);
        if (mask && !mask[i])
            return tp__error(err, TP_ERR_UNSUPPORTED,
                             "decoder_input_ids[%d][%d]: the decoder takes no padding", i / n,
                             i % n);
    }
    TP_TRY(decoder_step(s->be, mdl, &s->cache, ids, n, &s->w, err));
    const float *x = s->w.x;
    int m = B * n;
    if (!all && n > 1) {
        for (int b = 0; b < B; b++)
            memcpy(s->w.tmp + (size_t)b * H, s->w.x + ((size_t)b * n + n - 1) * H,
                   (size_t)H * sizeof(float));
        x = s->w.tmp, m = B;
    }
    return tp__linear(s->be, x, m, H, mdl->w.lm_w, mdl->w.lm_bias, c->dec_vocab, TP_ACT_NONE,
                      logits, err);
}

static tp_status session_reorder(void *sp, const int *src, tp_error *err) {
    bart_session *s = sp;
    bart_cache *k = &s->cache;
    const size_t H = (size_t)s->mdl->c.hidden, row = (size_t)k->cap * H;
    const size_t used = (size_t)k->len * H * sizeof(float);
    for (int r = 0; r < k->B; r++)
        if (src[r] < 0 || src[r] >= k->B)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT, "reorder: row %d from %d of %d", r,
                             src[r], k->B);
    if (!s->encoded) return TP_OK;
    for (int li = 0; li < s->mdl->c.dec_layers; li++)
        for (float *blk = k->sk; blk; blk = blk == k->sk ? k->sv : NULL) {
            float *base = blk + (size_t)li * k->B * row;
            /* a beam that continues itself keeps its rows where they are */
            for (int r = 0; r < k->B; r++)
                if (src[r] != r) memcpy(s->spare + r * row, base + src[r] * row, used);
            for (int r = 0; r < k->B; r++)
                if (src[r] != r) memcpy(base + r * row, s->spare + r * row, used);
        }
    for (int r = 0; r < k->B; r++) s->spare_src[r] = k->src[src[r]];
    memcpy(k->src, s->spare_src, (size_t)k->B * sizeof(int));
    return TP_OK;
}

static int session_vocab(const tp_model *m) { return ((const bart *)m->arch)->c.dec_vocab; }

static int32_t session_start(const tp_model *m) {
    return ((const bart *)m->arch)->c.decoder_start_id;
}

static const tp__lm_ops bart_lm = {
    .open = session_open,
    .step = session_step,
    .reorder = session_reorder,
    .close = session_close,
    .vocab_size = session_vocab,
    .encode = session_encode,
    .decoder_start = session_start,
};

/* ---------------------------------------------------------------- loading */

static tp_status read_config(tp_model *m, const seq2seq_variant *v, bart_config *c,
                             tp_error *err) {
    /* transformers' BartConfig / MarianConfig defaults for absent keys */
    TP_TRY(tp__encoder_cfg_int(m, "vocab_size", v->vocab, 1, &c->vocab_size, err));
    TP_TRY(tp__encoder_cfg_int(m, "d_model", 1024, 1, &c->hidden, err));
    TP_TRY(tp__encoder_cfg_int(m, "max_position_embeddings", 1024, 1, &c->max_positions, err));
    TP_TRY(tp__encoder_cfg_int(m, "encoder_layers", 12, 0, &c->enc_layers, err));
    TP_TRY(tp__encoder_cfg_int(m, "decoder_layers", 12, 0, &c->dec_layers, err));
    TP_TRY(tp__encoder_cfg_int(m, "encoder_attention_heads", 16, 1, &c->enc_heads, err));
    TP_TRY(tp__encoder_cfg_int(m, "decoder_attention_heads", 16, 1, &c->dec_heads, err));
    TP_TRY(tp__encoder_cfg_int(m, "encoder_ffn_dim", 4096, 1, &c->enc_ffn, err));
    TP_TRY(tp__encoder_cfg_int(m, "decoder_ffn_dim", 4096, 1, &c->dec_ffn, err));
    TP_TRY(tp__encoder_cfg_int(m, "pad_token_id", v->pad, 0, &c->pad_id, err));
    TP_TRY(tp__encoder_cfg_int(m, "eos_token_id", v->eos, 0, &c->eos_id, err));
    TP_TRY(tp__encoder_cfg_int(m, "decoder_start_token_id", v->start, 0, &c->decoder_start_id,
                               err));
    TP_TRY(tp__encoder_cfg_act(m, "activation_function", "gelu", &c->act, err));
    c->dec_vocab = c->vocab_size;
    if (v->sinusoidal) {
        /* MarianConfig: decoder_vocab_size null or absent means vocab_size */
        const cJSON *dv = cJSON_GetObjectItemCaseSensitive(m->config, "decoder_vocab_size");
        if (dv && !cJSON_IsNull(dv))
            TP_TRY(tp__encoder_cfg_int(m, "decoder_vocab_size", c->vocab_size, 1, &c->dec_vocab,
                                       err));
        if (c->hidden % 2)
            return tp__error(err, TP_ERR_UNSUPPORTED,
                             "%s: d_model %d is odd; Marian's sinusoidal positions need an "
                             "even d_model", m->config_path, c->hidden);
    }
    if (c->hidden % c->enc_heads || c->hidden % c->dec_heads)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: d_model %d is not a multiple of encoder_attention_heads %d and "
                         "decoder_attention_heads %d",
                         m->config_path, c->hidden, c->enc_heads, c->dec_heads);
    if (c->decoder_start_id >= c->dec_vocab)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: decoder_start_token_id %d is outside the decoder vocabulary (%d)",
                         m->config_path, c->decoder_start_id, c->dec_vocab);
    int scale;
    TP_TRY(tp__json_bool(m->config, "scale_embedding", 0, &scale, m->config_path, err));
    c->embed_scale = scale ? sqrtf((float)c->hidden) : 1.0f;
    c->pos_offset = v->sinusoidal ? 0 : 2; /* BartLearnedPositionalEmbedding's offset */
    c->ln_eps = 1e-5f;
    c->num_labels = m->num_labels;
    return TP_OK;
}

/* MarianSinusoidalPositionalEmbedding: row p, column j < H/2 is sin(p / 10000^(2j/H)),
 * column H/2 + j is cos of the same angle (not interleaved). Computed in double, as
 * transformers does with numpy, then rounded to fp32. */
static float *sinusoid_table(int P, int H) {
    float *t = malloc((size_t)P * H * sizeof *t);
    if (!t) return NULL;
    const int half = H / 2;
    for (int p = 0; p < P; p++)
        for (int j = 0; j < half; j++) {
            const double angle = p / pow(10000.0, 2.0 * j / H);
            t[(size_t)p * H + j] = (float)sin(angle);
            t[(size_t)p * H + half + j] = (float)cos(angle);
        }
    return t;
}

static int has(const tp_model *m, const char *prefix, const char *name) {
    char full[256];
    int n = snprintf(full, sizeof full, "%s%s", prefix, name);
    return n > 0 && (size_t)n < sizeof full && tp__safetensors_find(m->weights, full) != NULL;
}

static tp_status bind_attn(const tp_model *m, const char *p, const char *name, int H,
                           bart_attn *a, tp_error *err) {
    char n[160];
#define PROJ(x) (snprintf(n, sizeof n, "%s.%s", name, x), n)
    TP_TRY(tp__encoder_linear(m, p, PROJ("q_proj"), H, H, &a->wq, &a->bq, err));
    TP_TRY(tp__encoder_linear(m, p, PROJ("k_proj"), H, H, &a->wk, &a->bk, err));
    TP_TRY(tp__encoder_linear(m, p, PROJ("v_proj"), H, H, &a->wv, &a->bv, err));
    TP_TRY(tp__encoder_linear(m, p, PROJ("out_proj"), H, H, &a->wo, &a->bo, err));
#undef PROJ
    return TP_OK;
}

/* The token tables: "shared" (BART, Marian with share_encoder_decoder_embeddings),
 * else each stack's own embed_tokens. */
static tp_status bind_embeddings(tp_model *m, const char *p, bart *mdl, tp_error *err) {
    const bart_config *c = &mdl->c;
    bart_weights *w = &mdl->w;
    int shared = 1;
    if (mdl->v->sinusoidal)
        TP_TRY(tp__json_bool(m->config, "share_encoder_decoder_embeddings", 1, &shared,
                             m->config_path, err));
    if (shared) {
        if (c->dec_vocab != c->vocab_size)
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: decoder_vocab_size %d differs from vocab_size %d with "
                             "share_encoder_decoder_embeddings",
                             m->config_path, c->dec_vocab, c->vocab_size);
        const char *emb = has(m, p, "shared.weight") || !has(m, p, "encoder.embed_tokens.weight")
                              ? "shared.weight" : "encoder.embed_tokens.weight";
        TP_TRY(tp__encoder_tensor(m, p, emb, c->vocab_size, c->hidden, &w->enc_emb, err));
        w->dec_emb = w->enc_emb;
        return TP_OK;
    }
    TP_TRY(tp__encoder_tensor(m, p, "encoder.embed_tokens.weight", c->vocab_size, c->hidden,
                              &w->enc_emb, err));
    return tp__encoder_tensor(m, p, "decoder.embed_tokens.weight", c->dec_vocab, c->hidden,
                              &w->dec_emb, err);
}

static tp_status bind_weights(tp_model *m, bart *mdl, tp_error *err) {
    const bart_config *c = &mdl->c;
    bart_weights *w = &mdl->w;
    const int H = c->hidden, P2 = c->max_positions + c->pos_offset;
    /* BartFor* / MarianMTModel keep the base model under "model."; a saved base model
     * has no prefix */
    const char *p = has(m, "model.", "shared.weight") ||
                            has(m, "model.", "encoder.layers.0.fc1.weight") ||
                            has(m, "model.", "encoder.embed_tokens.weight")
                        ? "model." : "";
    TP_TRY(bind_embeddings(m, p, mdl, err));
    if (mdl->v->sinusoidal) {
        /* not trainable: checkpoints may omit the tables, transformers rebuilds them */
        if (!(w->sinusoid = sinusoid_table(c->max_positions, H)))
            return tp__error(err, TP_ERR_NOMEM, "out of memory for the position table");
        w->enc_pos = w->dec_pos = w->sinusoid;
    } else {
        TP_TRY(tp__encoder_tensor(m, p, "encoder.embed_positions.weight", P2, H, &w->enc_pos,
                                  err));
        TP_TRY(tp__encoder_tensor(m, p, "decoder.embed_positions.weight", P2, H, &w->dec_pos,
                                  err));
        TP_TRY(tp__encoder_layer_norm(m, p, "encoder.layernorm_embedding", H, &w->enc_ln_g,
                                      &w->enc_ln_b, err));
        TP_TRY(tp__encoder_layer_norm(m, p, "decoder.layernorm_embedding", H, &w->dec_ln_g,
                                      &w->dec_ln_b, err));
    }

    w->enc = calloc(c->enc_layers ? (size_t)c->enc_layers : 1, sizeof *w->enc);
    w->dec = calloc(c->dec_layers ? (size_t)c->dec_layers : 1, sizeof *w->dec);
    if (!w->enc || !w->dec)
        return tp__error(err, TP_ERR_NOMEM, "out of memory for the layer tables");
    char n[128];
    for (int i = 0; i < c->enc_layers; i++) {
        bart_enc_layer *l = &w->enc[i];
#define LAYER(suffix) (snprintf(n, sizeof n, "encoder.layers.%d.%s", i, suffix), n)
        TP_TRY(bind_attn(m, p, LAYER("self_attn"), H, &l->self, err));
        TP_TRY(tp__encoder_layer_norm(m, p, LAYER("self_attn_layer_norm"), H, &l->ln1_g,
                                      &l->ln1_b, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("fc1"), c->enc_ffn, H, &l->w1, &l->b1, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("fc2"), H, c->enc_ffn, &l->w2, &l->b2, err));
        TP_TRY(tp__encoder_layer_norm(m, p, LAYER("final_layer_norm"), H, &l->ln2_g, &l->ln2_b,
                                      err));
#undef LAYER
    }
    for (int i = 0; i < c->dec_layers; i++) {
        bart_dec_layer *l = &w->dec[i];
#define LAYER(suffix) (snprintf(n, sizeof n, "decoder.layers.%d.%s", i, suffix), n)
        TP_TRY(bind_attn(m, p, LAYER("self_attn"), H, &l->self, err));
        TP_TRY(tp__encoder_layer_norm(m, p, LAYER("self_attn_layer_norm"), H, &l->ln1_g,
                                      &l->ln1_b, err));
        TP_TRY(bind_attn(m, p, LAYER("encoder_attn"), H, &l->cross, err));
        TP_TRY(tp__encoder_layer_norm(m, p, LAYER("encoder_attn_layer_norm"), H, &l->ln2_g,
                                      &l->ln2_b, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("fc1"), c->dec_ffn, H, &l->w1, &l->b1, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("fc2"), H, c->dec_ffn, &l->w2, &l->b2, err));
        TP_TRY(tp__encoder_layer_norm(m, p, LAYER("final_layer_norm"), H, &l->ln3_g, &l->ln3_b,
                                      err));
#undef LAYER
    }

    switch (m->head) {
    case TP_HEAD_SEQUENCE_CLASSIFICATION:
        TP_TRY(tp__encoder_linear(m, "", "classification_head.dense", H, H, &w->cls_w, &w->cls_b,
                                  err));
        TP_TRY(tp__encoder_linear(m, "", "classification_head.out_proj", c->num_labels, H,
                                  &w->out_w, &w->out_b, err));
        break;
    case TP_HEAD_SEQ2SEQ_LM: {
        int tied;
        TP_TRY(tp__json_bool(m->config, "tie_word_embeddings", 1, &tied, m->config_path, err));
        if (has(m, "", "lm_head.weight") || !tied)
            TP_TRY(tp__encoder_tensor(m, "", "lm_head.weight", c->dec_vocab, H, &w->lm_w, err));
        else
            w->lm_w = w->dec_emb; /* tied: the checkpoint omits the copy */
        /* a registered buffer; transformers starts it at zeros when a file lacks it */
        if (has(m, "", "final_logits_bias"))
            TP_TRY(tp__encoder_tensor(m, "", "final_logits_bias", 1, c->dec_vocab, &w->lm_bias,
                                      err));
        break;
    }
    default:
        break;
    }
    return TP_OK;
}

static tp_status set_head(tp_model *m, const seq2seq_variant *v, tp_error *err) {
    const char *a = m->architecture;
    const size_t nb = strlen(v->base);
    const int ours = strncmp(a, v->base, nb) == 0;
    if (!a[0] || (ours && strcmp(a + nb, "Model") == 0)) m->head = TP_HEAD_NONE;
    else if (!v->sinusoidal && ours && strcmp(a + nb, "ForSequenceClassification") == 0)
        m->head = TP_HEAD_SEQUENCE_CLASSIFICATION;
    else if (strcmp(a, v->lm_arch) == 0) m->head = TP_HEAD_SEQ2SEQ_LM;
    else if (v->sinusoidal)
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: architecture '%s' is not supported (supported: MarianModel, "
                         "MarianMTModel)", m->config_path, a);
    else
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: architecture '%s' is not supported (supported: BartModel, "
                         "BartForSequenceClassification, BartForConditionalGeneration)",
                         m->config_path, a);
    return TP_OK;
}

static void bart_free(void *arch) {
    bart *mdl = arch;
    if (!mdl) return;
    free(mdl->w.enc);
    free(mdl->w.dec);
    free(mdl->w.sinusoid);
    free(mdl);
}

static tp_status load_variant(tp_model *m, const seq2seq_variant *v, void **arch,
                              tp_error *err) {
    *arch = NULL;
    TP_TRY(set_head(m, v, err));
    bart *mdl = calloc(1, sizeof *mdl);
    if (!mdl) return tp__error(err, TP_ERR_NOMEM, "out of memory loading %s", m->dir);
    mdl->v = v;
    tp_status st = read_config(m, v, &mdl->c, err);
    if (st == TP_OK) st = bind_weights(m, mdl, err);
    if (st != TP_OK) {
        bart_free(mdl);
        return st;
    }
    *arch = mdl;
    return TP_OK;
}

static tp_status bart_load(tp_model *m, void **arch, tp_error *err) {
    return load_variant(m, &BART, arch, err);
}

static tp_status marian_load(tp_model *m, void **arch, tp_error *err) {
    return load_variant(m, &MARIAN, arch, err);
}

const tp__model_family tp__family_bart = {
    .model_type = "bart",
    .load = bart_load,
    .free = bart_free,
    .forward = bart_forward,
    .lm = &bart_lm,
};

const tp__model_family tp__family_marian = {
    .model_type = "marian",
    .load = marian_load,
    .free = bart_free,
    .forward = bart_forward,
    .lm = &bart_lm,
};
