/* distilbert.c: the DistilBERT family: its config.json keys (dim, n_heads, ...) and
 * tensor names bound onto the shared encoder graph (encoder.c). DistilBERT is BERT
 * without token types or pooler, every LayerNorm at eps 1e-12, and a pre_classifier
 * + ReLU in front of its sequence classifier. Read-only once loaded: thread-safe. */
#include <stdio.h>
#include <stdlib.h>

#include "../error.h"
#include "../json_util.h"
#include "encoder.h"

static tp_status read_config(tp_model *m, tp__enc_config *c, tp_error *err) {
    /* transformers' DistilBertConfig defaults for absent keys */
    TP_TRY(tp__encoder_cfg_int(m, "vocab_size", 30522, 1, &c->vocab_size, err));
    TP_TRY(tp__encoder_cfg_int(m, "dim", 768, 1, &c->hidden, err));
    TP_TRY(tp__encoder_cfg_int(m, "n_layers", 6, 0, &c->n_layers, err));
    TP_TRY(tp__encoder_cfg_int(m, "n_heads", 12, 1, &c->n_heads, err));
    TP_TRY(tp__encoder_cfg_int(m, "hidden_dim", 3072, 1, &c->intermediate, err));
    TP_TRY(tp__encoder_cfg_int(m, "max_position_embeddings", 512, 1, &c->max_positions, err));
    TP_TRY(tp__encoder_cfg_act(m, "activation", "gelu", &c->act, err));
    if (c->hidden % c->n_heads)
        return tp__error(err, TP_ERR_FORMAT, "%s: dim %d is not a multiple of n_heads %d",
                         m->config_path, c->hidden, c->n_heads);
    c->head_dim = c->hidden / c->n_heads;
    c->type_vocab_size = 0;
    c->ln_eps = 1e-12f; /* hard-coded in transformers' DistilBERT */
    c->positions = TP_POS_ABSOLUTE;
    c->num_labels = m->num_labels;
    c->cls_act = TP_ACT_RELU;
    c->mlm_act = c->act;
    c->mlm_ln_eps = 1e-12f;
    return TP_OK;
}

static tp_status bind_weights(tp_model *m, tp__encoder *e, tp_error *err) {
    const tp__enc_config *c = &e->c;
    tp__enc_weights *w = &e->w;
    const int H = c->hidden, I = c->intermediate;
    const char *p = tp__encoder_prefix(m, "distilbert.");

    /* embeddings (sinusoidal ones are stored in position_embeddings too) */
    TP_TRY(tp__encoder_tensor(m, p, "embeddings.word_embeddings.weight", c->vocab_size, H,
                              &w->word_emb, err));
    TP_TRY(tp__encoder_tensor(m, p, "embeddings.position_embeddings.weight", c->max_positions,
                              H, &w->pos_emb, err));
    TP_TRY(tp__encoder_layer_norm(m, p, "embeddings.LayerNorm", H, &w->emb_ln_g, &w->emb_ln_b,
                                  err));

    /* transformer layers */
    w->layers = calloc(c->n_layers ? (size_t)c->n_layers : 1, sizeof *w->layers);
    if (!w->layers) return tp__error(err, TP_ERR_NOMEM, "out of memory for the layer table");
    for (int i = 0; i < c->n_layers; i++) {
        tp__enc_layer *l = &w->layers[i];
        char n[128];
#define LAYER(suffix) (snprintf(n, sizeof n, "transformer.layer.%d.%s", i, suffix), n)
        TP_TRY(tp__encoder_linear(m, p, LAYER("attention.q_lin"), H, H, &l->wq, &l->bq, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("attention.k_lin"), H, H, &l->wk, &l->bk, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("attention.v_lin"), H, H, &l->wv, &l->bv, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("attention.out_lin"), H, H, &l->wo, &l->bo, err));
        TP_TRY(tp__encoder_layer_norm(m, p, LAYER("sa_layer_norm"), H, &l->ln1_g, &l->ln1_b, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("ffn.lin1"), I, H, &l->w1, &l->b1, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("ffn.lin2"), H, I, &l->w2, &l->b2, err));
        TP_TRY(tp__encoder_layer_norm(m, p, LAYER("output_layer_norm"), H, &l->ln2_g, &l->ln2_b,
                                      err));
#undef LAYER
    }

    /* heads */
    switch (m->head) {
    case TP_HEAD_SEQUENCE_CLASSIFICATION:
        TP_TRY(tp__encoder_linear(m, "", "pre_classifier", H, H, &w->pre_w, &w->pre_b, err));
        TP_TRY(tp__encoder_linear(m, "", "classifier", c->num_labels, H, &w->out_w, &w->out_b,
                                  err));
        break;
    case TP_HEAD_TOKEN_CLASSIFICATION:
        TP_TRY(tp__encoder_linear(m, "", "classifier", c->num_labels, H, &w->out_w, &w->out_b,
                                  err));
        break;
    case TP_HEAD_QUESTION_ANSWERING:
        TP_TRY(tp__encoder_linear(m, "", "qa_outputs", 2, H, &w->out_w, &w->out_b, err));
        break;
    case TP_HEAD_MASKED_LM:
        TP_TRY(tp__encoder_linear(m, "", "vocab_transform", H, H, &w->mlm_w, &w->mlm_b, err));
        TP_TRY(tp__encoder_layer_norm(m, "", "vocab_layer_norm", H, &w->mlm_ln_g, &w->mlm_ln_b,
                                      err));
        TP_TRY(tp__encoder_decoder(m, e, "vocab_projector.weight", "vocab_projector.bias", NULL,
                                   err));
        break;
    default:
        break;
    }
    return TP_OK;
}

static tp_status load_distilbert(tp_model *m, void **arch, tp_error *err) {
    *arch = NULL;
    TP_TRY(tp__encoder_head(m, "DistilBert", err));
    tp__encoder *e = calloc(1, sizeof *e);
    if (!e) return tp__error(err, TP_ERR_NOMEM, "out of memory loading %s", m->dir);
    tp_status st = read_config(m, &e->c, err);
    if (st == TP_OK) st = bind_weights(m, e, err);
    if (st != TP_OK) {
        tp__encoder_free(e);
        return st;
    }
    *arch = e;
    return TP_OK;
}

const tp__model_family tp__family_distilbert = {
    .model_type = "distilbert",
    .load = load_distilbert,
    .free = tp__encoder_free,
    .forward = tp__encoder_forward,
};
