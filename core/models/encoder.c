/* encoder.c: the encoder-only transformer forward (BERT, RoBERTa, DistilBERT) and
 * its heads, plus the config/weight binding helpers the family loaders share.
 *
 * The graph, as transformers computes it in fp32 (dropout is identity at inference):
 *   x = LayerNorm(word[id] + type[tt] + pos[p])
 *   per layer: a = softmax(q·kᵀ/√D + mask)·v per head
 *              x = LayerNorm(x + a·Woᵀ + bo)
 *              x = LayerNorm(x + act(x·W1ᵀ + b1)·W2ᵀ + b2)
 *   then the head. Every dense layer goes through tp__linear (bias and activation
 *   fused into the product), attention through tp__attention (no head split or
 *   merge copies: heads are column blocks of q/k/v and ctx; in bf16 and int8 models
 *   its products in bf16 where the backend has them), and each
 *   residual add rides in its LayerNorm's pass.
 * The run state is per call (its memory reused through the model's spare block):
 * forward is thread-safe on a shared model. */
#include "encoder.h"

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
#include "attention.h"

/* Scratch buffers of one forward call, carved from one block that the model keeps
 * between calls (spare.h: the pages stay mapped). */
typedef struct run_state {
    void *block;
    float *x;      /* [B*T, H] the hidden state */
    float *q, *k, *v; /* [B*T, H] */
    float *ctx;    /* [B*T, H] attention output before its projection */
    float *tmp;    /* [B*T, H] */
    float *ffn;    /* [B*T, I] */
    float *mask;   /* [B*T] 0 or the additive mask value per key */
    int *pos;      /* [B*T] position ids */
    float *scores; /* [NH, T, T] one row's attention scores in bf16 and int8 models
                      (attention.h), else NULL */
} run_state;

/* n floats (or ints) rounded up to whole cache lines, so every buffer starts on one */
static size_t lines(size_t n) { return (n + 15) / 16 * 16; }

static tp_status alloc_state(run_state *s, const tp__encoder *e, int B, int T, int bf16,
                             tp_error *err) {
    const tp__enc_config *c = &e->c;
    const size_t bt = (size_t)B * T, h = (size_t)c->hidden;
    const size_t scores = bf16 ? lines((size_t)c->n_heads * T * T) : 0;
    const size_t floats =
        6 * lines(bt * h) + lines(bt * (size_t)c->intermediate) + scores + 2 * lines(bt);
    memset(s, 0, sizeof *s);
    /* the spare is the one member a forward changes: atomic, see spare.h */
    s->block = tp__spare_take((tp__spare *)&e->spare, floats * sizeof(float));
    if (!s->block)
        return tp__error(err, TP_ERR_NOMEM, "out of memory for the run state of a %dx%d batch",
                         B, T);
    float *p = s->block;
    float **bufs[] = {&s->x, &s->q, &s->k, &s->v, &s->ctx, &s->tmp};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) *bufs[i] = p, p += lines(bt * h);
    s->ffn = p, p += lines(bt * (size_t)c->intermediate);
    if (scores) s->scores = p, p += scores;
    s->mask = p, p += lines(bt);
    s->pos = (int *)p;
    return TP_OK;
}

static void free_state(run_state *s, const tp__encoder *e) {
    tp__spare_give((tp__spare *)&e->spare, s->block);
}

/* Checks the ids against the tables and fills positions and the additive mask. */
static tp_status prepare_inputs(const tp_model *m, const tp__encoder *e, const tp_model_input *in,
                                run_state *s, tp_error *err) {
    const tp__enc_config *c = &e->c;
    const int B = in->batch, T = in->seq_len;
    /* transformers' additive mask: finfo(float32).min on keys that are padding */
    const float masked = -FLT_MAX;
    for (int b = 0; b < B; b++) {
        int seen = 0; /* RoBERTa: non-pad tokens so far */
        for (int t = 0; t < T; t++) {
            const size_t i = (size_t)b * T + t;
            const int32_t id = in->input_ids[i];
            if (id < 0 || id >= c->vocab_size)
                return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                 "input_ids[%d][%d] = %d is outside the vocabulary of %s (0..%d)",
                                 b, t, (int)id, m->dir, c->vocab_size - 1);
            if (in->token_type_ids && c->type_vocab_size > 0) {
                const int32_t tt = in->token_type_ids[i];
                if (tt < 0 || tt >= c->type_vocab_size)
                    return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                     "token_type_ids[%d][%d] = %d is outside 0..%d "
                                     "(config.json type_vocab_size)",
                                     b, t, (int)tt, c->type_vocab_size - 1);
            }
            if (c->positions == TP_POS_ROBERTA) {
                seen += id != c->pad_id;
                s->pos[i] = id != c->pad_id ? c->pad_id + seen : c->pad_id;
            } else {
                s->pos[i] = t;
            }
            if (s->pos[i] >= c->max_positions)
                return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                 "sequence of %d tokens needs position %d, past "
                                 "config.json max_position_embeddings %d",
                                 T, s->pos[i], c->max_positions);
            s->mask[i] = (in->attention_mask && in->attention_mask[i] == 0) ? masked : 0.0f;
        }
    }
    return TP_OK;
}

static void embed(const tp__encoder *e, const tp_model_input *in, run_state *s) {
    const tp__enc_config *c = &e->c;
    const tp__enc_weights *w = &e->w;
    const size_t bt = (size_t)in->batch * in->seq_len, H = (size_t)c->hidden;
    for (size_t i = 0; i < bt; i++) {
        float *x = s->x + i * H;
        memcpy(x, w->word_emb + (size_t)in->input_ids[i] * H, H * sizeof(float));
        /* the order transformers adds them in: (word + type) + position */
        if (w->type_emb) {
            const int tt = in->token_type_ids ? in->token_type_ids[i] : 0;
            tp__add(x, w->type_emb + (size_t)tt * H, H);
        }
        tp__add(x, w->pos_emb + (size_t)s->pos[i] * H, H);
    }
}

/* Multi-head self-attention of layer `l` on s->x, into s->ctx [B*T, H]. */
static tp_status attention(const tp__backend *be, const tp__encoder *e, const tp__enc_layer *l,
                           int B, int T, run_state *s, tp_error *err) {
    const tp__enc_config *c = &e->c;
    const int H = c->hidden, NH = c->n_heads, D = c->head_dim, BT = B * T;
    TP_TRY(tp__linear(be, s->x, BT, H, l->wq, l->bq, H, TP_ACT_NONE, s->q, err));
    TP_TRY(tp__linear(be, s->x, BT, H, l->wk, l->bk, H, TP_ACT_NONE, s->k, err));
    TP_TRY(tp__linear(be, s->x, BT, H, l->wv, l->bv, H, TP_ACT_NONE, s->v, err));
    const float scale = (float)(1.0 / sqrt((double)D));
    for (int b = 0; b < B; b++) {
        const size_t row0 = (size_t)b * T * H;
        tp__attn_args a = {
            .n_heads = NH, .head_dim = D, .tq = T, .tk = T,
            .q = s->q + row0, .ldq = H, .k = s->k + row0, .ldk = H, .v = s->v + row0, .ldv = H,
            .key_mask = s->mask + (size_t)b * T, .causal_past = -1, .scale = scale,
            .out = s->ctx + row0, .ldo = H,
            .bf16 = s->scores != NULL, .scores = s->scores,
        };
        TP_TRY(tp__attention(be, &a, err));
    }
    return TP_OK;
}

static tp_status encode(const tp__backend *be, const tp__encoder *e, int B, int T, run_state *s,
                        tp_error *err) {
    const tp__enc_config *c = &e->c;
    const int H = c->hidden, I = c->intermediate, BT = B * T;
    TP_TRY(tp__residual_layer_norm(be, s->x, NULL, BT, H, e->w.emb_ln_g, e->w.emb_ln_b,
                                   c->ln_eps, err));
    for (int li = 0; li < c->n_layers; li++) {
        const tp__enc_layer *l = &e->w.layers[li];
        float *t;
        TP_TRY(attention(be, e, l, B, T, s, err));
        TP_TRY(tp__linear(be, s->ctx, BT, H, l->wo, l->bo, H, TP_ACT_NONE, s->tmp, err));
        /* the residual add rides in the norm's pass */
        TP_TRY(tp__residual_layer_norm(be, s->tmp, s->x, BT, H, l->ln1_g, l->ln1_b, c->ln_eps,
                                       err));
        t = s->x, s->x = s->tmp, s->tmp = t;

        TP_TRY(tp__linear(be, s->x, BT, H, l->w1, l->b1, I, c->act, s->ffn, err));
        TP_TRY(tp__linear(be, s->ffn, BT, I, l->w2, l->b2, H, TP_ACT_NONE, s->tmp, err));
        TP_TRY(tp__residual_layer_norm(be, s->tmp, s->x, BT, H, l->ln2_g, l->ln2_b, c->ln_eps,
                                       err));
        t = s->x, s->x = s->tmp, s->tmp = t;
    }
    return TP_OK;
}

/* The head `which` (the model's own, or TP_HEAD_NONE when the caller asked for the
 * hidden states) on the final hidden state s->x, into a new tensor. */
static tp_status head(const tp_model *m, tp_head which, const tp__backend *be,
                      const tp__encoder *e, int B, int T, run_state *s, tp_tensor **out,
                      tp_error *err) {
    const tp__enc_config *c = &e->c;
    const tp__enc_weights *w = &e->w;
    const int H = c->hidden, BT = B * T;
    tp_tensor *t = NULL;
    tp_status st = TP_OK;
    switch (which) {
    case TP_HEAD_SEQUENCE_CLASSIFICATION: {
        int64_t shape[2] = {B, c->num_labels};
        TP_TRY(tp__tensor_new(TP_F32, 2, shape, &t, err));
        /* token 0 of each row ([CLS] / <s>), gathered into q as scratch */
        for (int b = 0; b < B; b++)
            memcpy(s->q + (size_t)b * H, s->x + (size_t)b * T * H, (size_t)H * sizeof(float));
        st = tp__linear(be, s->q, B, H, w->pre_w, w->pre_b, H, c->cls_act, s->k, err);
        if (st == TP_OK)
            st = tp__linear(be, s->k, B, H, w->out_w, w->out_b, c->num_labels, TP_ACT_NONE,
                            t->data, err);
        break;
    }
    case TP_HEAD_TOKEN_CLASSIFICATION:
    case TP_HEAD_QUESTION_ANSWERING: {
        const int n = which == TP_HEAD_QUESTION_ANSWERING ? 2 : c->num_labels;
        int64_t shape[3] = {B, T, n};
        TP_TRY(tp__tensor_new(TP_F32, 3, shape, &t, err));
        st = tp__linear(be, s->x, BT, H, w->out_w, w->out_b, n, TP_ACT_NONE, t->data, err);
        break;
    }
    case TP_HEAD_MASKED_LM: {
        int64_t shape[3] = {B, T, c->vocab_size};
        TP_TRY(tp__tensor_new(TP_F32, 3, shape, &t, err));
        st = tp__linear(be, s->x, BT, H, w->mlm_w, w->mlm_b, H, c->mlm_act, s->tmp, err);
        if (st == TP_OK)
            st = tp__layer_norm(be, s->tmp, BT, H, w->mlm_ln_g, w->mlm_ln_b, c->mlm_ln_eps, err);
        if (st == TP_OK)
            st = tp__linear(be, s->tmp, BT, H, w->dec_w, w->dec_b, c->vocab_size, TP_ACT_NONE,
                            t->data, err);
        break;
    }
    case TP_HEAD_NONE: {
        int64_t shape[3] = {B, T, H};
        TP_TRY(tp__tensor_new(TP_F32, 3, shape, &t, err));
        memcpy(t->data, s->x, (size_t)BT * H * sizeof(float));
        break;
    }
    default:
        return tp__error(err, TP_ERR_INTERNAL, "%s: head %d has no encoder forward", m->dir,
                         (int)which);
    }
    if (st != TP_OK) {
        tp_tensor_free(t);
        return st;
    }
    *out = t;
    return TP_OK;
}

tp_status tp__encoder_forward(const tp_model *m, const tp__backend *be, const tp_model_input *in,
                              tp_tensor **out, tp_error *err) {
    const tp__encoder *e = m->arch;
    const int B = in->batch, T = in->seq_len;
    const int wide = e->c.intermediate > e->c.hidden ? e->c.intermediate : e->c.hidden;
    if ((int64_t)B * T * wide > INT_MAX || (int64_t)e->c.n_heads * T * T > INT_MAX)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "batch of %d x %d tokens is too large",
                         B, T);
    run_state s;
    /* int8 models too: their products' own error is ten times bf16 attention's, and fp32
     * attention had been 17-18% of their forwards */
    TP_TRY(alloc_state(&s, e, B, T, m->dtype == TP_BF16 || m->dtype == TP_I8, err));
    tp_status st = prepare_inputs(m, e, in, &s, err);
    if (st == TP_OK) {
        embed(e, in, &s);
        st = encode(be, e, B, T, &s, err);
    }
    /* output_hidden_states (a member newer than the first layout): the last hidden
     * state whatever the head, as AutoModel would give for the same checkpoint */
    const int hidden_only =
        in->struct_size >= offsetof(tp_model_input, output_hidden_states) +
                               sizeof in->output_hidden_states &&
        in->output_hidden_states == 1;
    if (st == TP_OK)
        st = head(m, hidden_only ? TP_HEAD_NONE : m->head, be, e, B, T, &s, out, err);
    free_state(&s, e);
    return st;
}

void tp__encoder_free(void *arch) {
    tp__encoder *e = arch;
    if (!e) return;
    tp__spare_clear(&e->spare);
    free(e->w.layers);
    free(e);
}

/* ---------------------------------------------------------------- loader helpers */

tp_status tp__encoder_head(tp_model *m, const char *base, tp_error *err) {
    static const struct { const char *suffix; tp_head head; } heads[] = {
        {"Model", TP_HEAD_NONE},
        {"ForSequenceClassification", TP_HEAD_SEQUENCE_CLASSIFICATION},
        {"ForTokenClassification", TP_HEAD_TOKEN_CLASSIFICATION},
        {"ForQuestionAnswering", TP_HEAD_QUESTION_ANSWERING},
        {"ForMaskedLM", TP_HEAD_MASKED_LM},
    };
    const char *a = m->architecture;
    const size_t nb = strlen(base);
    if (!a[0]) { /* no architectures: what AutoModel would build, the bare encoder */
        m->head = TP_HEAD_NONE;
        return TP_OK;
    }
    if (strncmp(a, base, nb) == 0)
        for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++)
            if (strcmp(a + nb, heads[i].suffix) == 0) {
                m->head = heads[i].head;
                return TP_OK;
            }
    return tp__error(err, TP_ERR_UNSUPPORTED,
                     "%s: architecture '%s' is not supported (supported: %sModel, "
                     "%sForSequenceClassification, %sForTokenClassification, "
                     "%sForQuestionAnswering, %sForMaskedLM)",
                     m->config_path, a, base, base, base, base, base);
}

tp_status tp__encoder_cfg_int(const tp_model *m, const char *key, int def, int min, int *out,
                              tp_error *err) {
    int64_t v;
    TP_TRY(tp__json_int(m->config, key, def, &v, m->config_path, err));
    if (v < min || v > INT_MAX / 4)
        return tp__error(err, TP_ERR_FORMAT, "%s: key '%s' is %lld, expected %d or more",
                         m->config_path, key, (long long)v, min);
    *out = (int)v;
    return TP_OK;
}

tp_status tp__encoder_cfg_act(const tp_model *m, const char *key, const char *def,
                              tp_activation *out, tp_error *err) {
    static const struct { const char *name; tp_activation act; } acts[] = {
        {"gelu", TP_ACT_GELU},
        {"gelu_new", TP_ACT_GELU_TANH},
        {"gelu_pytorch_tanh", TP_ACT_GELU_TANH},
        {"gelu_fast", TP_ACT_GELU_TANH}, /* the same tanh formula, factored */
        {"relu", TP_ACT_RELU},
        {"silu", TP_ACT_SILU},
        {"swish", TP_ACT_SILU},
        {"tanh", TP_ACT_TANH},
    };
    const char *name;
    TP_TRY(tp__json_string(m->config, key, def, &name, m->config_path, err));
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (strcmp(name, acts[i].name) == 0) {
            *out = acts[i].act;
            return TP_OK;
        }
    return tp__error(err, TP_ERR_UNSUPPORTED,
                     "%s: %s '%s' is not supported (supported: gelu, gelu_new, "
                     "gelu_pytorch_tanh, gelu_fast, relu, silu, swish, tanh)",
                     m->config_path, key, name);
}

tp_status tp__encoder_tensor(const tp_model *m, const char *prefix, const char *name, int d0,
                             int d1, const float **out, tp_error *err) {
    char full[256];
    int n = snprintf(full, sizeof full, "%s%s", prefix, name);
    if (n < 0 || (size_t)n >= sizeof full)
        return tp__error(err, TP_ERR_INTERNAL, "tensor name '%s%s' too long", prefix, name);
    int64_t shape[2] = {d0, d1};
    return tp__safetensors_f32(m->weights, full, d1 ? 2 : 1, shape, out, err);
}

static int has_tensor(const tp_model *m, const char *prefix, const char *name) {
    char full[256];
    int n = snprintf(full, sizeof full, "%s%s", prefix, name);
    return n > 0 && (size_t)n < sizeof full && tp__safetensors_find(m->weights, full) != NULL;
}

tp_status tp__encoder_layer_norm(const tp_model *m, const char *prefix, const char *name,
                                 int h, const float **g, const float **b, tp_error *err) {
    char wn[192], bn[192];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    if (!has_tensor(m, prefix, wn)) {
        /* checkpoints from the TensorFlow era name them gamma/beta; transformers
         * renames them on load */
        char gn[192];
        snprintf(gn, sizeof gn, "%s.gamma", name);
        if (has_tensor(m, prefix, gn)) {
            snprintf(wn, sizeof wn, "%s.gamma", name);
            snprintf(bn, sizeof bn, "%s.beta", name);
        }
    }
    TP_TRY(tp__encoder_tensor(m, prefix, wn, h, 0, g, err));
    return tp__encoder_tensor(m, prefix, bn, h, 0, b, err);
}

tp_status tp__encoder_linear(const tp_model *m, const char *prefix, const char *name, int out_f,
                             int in_f, const float **w, const float **b, tp_error *err) {
    char wn[192], bn[192];
    snprintf(wn, sizeof wn, "%s.weight", name);
    snprintf(bn, sizeof bn, "%s.bias", name);
    TP_TRY(tp__encoder_tensor(m, prefix, wn, out_f, in_f, w, err));
    return tp__encoder_tensor(m, prefix, bn, out_f, 0, b, err);
}

const char *tp__encoder_prefix(const tp_model *m, const char *with) {
    if (has_tensor(m, with, "embeddings.word_embeddings.weight")) return with;
    if (has_tensor(m, "", "embeddings.word_embeddings.weight")) return "";
    return with;
}

tp_status tp__encoder_decoder(const tp_model *m, tp__encoder *e, const char *weight_name,
                              const char *bias_name, const char *alt_bias_name, tp_error *err) {
    const int V = e->c.vocab_size, H = e->c.hidden;
    int tied;
    TP_TRY(tp__json_bool(m->config, "tie_word_embeddings", 1, &tied, m->config_path, err));
    if (has_tensor(m, "", weight_name) || !tied)
        TP_TRY(tp__encoder_tensor(m, "", weight_name, V, H, &e->w.dec_w, err));
    else
        e->w.dec_w = e->w.word_emb; /* tied: the checkpoint omits the copy */
    const char *bn = (!has_tensor(m, "", bias_name) && alt_bias_name &&
                      has_tensor(m, "", alt_bias_name)) ? alt_bias_name : bias_name;
    return tp__encoder_tensor(m, "", bn, V, 0, &e->w.dec_b, err);
}
