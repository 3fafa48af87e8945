/* bert.c: the BERT and RoBERTa families: config.json keys and tensor names bound
 * onto the shared encoder graph (encoder.c). RoBERTa is BERT with positions counted
 * from padding_idx + 1, no pooler and its own head names. Loading only reads the
 * mapped file; the loaded model is read-only: thread-safe. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../json_util.h"
#include "encoder.h"

static tp_status read_config(tp_model *m, int roberta, tp__enc_config *c, tp_error *err) {
    /* transformers' BertConfig / RobertaConfig defaults for absent keys */
    TP_TRY(tp__encoder_cfg_int(m, "vocab_size", roberta ? 50265 : 30522, 1, &c->vocab_size, err));
    TP_TRY(tp__encoder_cfg_int(m, "hidden_size", 768, 1, &c->hidden, err));
    TP_TRY(tp__encoder_cfg_int(m, "num_hidden_layers", 12, 0, &c->n_layers, err));
    TP_TRY(tp__encoder_cfg_int(m, "num_attention_heads", 12, 1, &c->n_heads, err));
    TP_TRY(tp__encoder_cfg_int(m, "intermediate_size", 3072, 1, &c->intermediate, err));
    TP_TRY(tp__encoder_cfg_int(m, "max_position_embeddings", 512, 1, &c->max_positions, err));
    TP_TRY(tp__encoder_cfg_int(m, "type_vocab_size", 2, 0, &c->type_vocab_size, err));
    TP_TRY(tp__encoder_cfg_int(m, "pad_token_id", roberta ? 1 : 0, 0, &c->pad_id, err));
    TP_TRY(tp__encoder_cfg_act(m, "hidden_act", "gelu", &c->act, err));
    double eps;
    TP_TRY(tp__json_double(m->config, "layer_norm_eps", 1e-12, &eps, m->config_path, err));
    if (!(eps > 0))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'layer_norm_eps' must be positive",
                         m->config_path);
    c->ln_eps = (float)eps;
    if (c->hidden % c->n_heads)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                         m->config_path, c->hidden, c->n_heads);
    c->head_dim = c->hidden / c->n_heads;

    const char *pet;
    TP_TRY(tp__json_string(m->config, "position_embedding_type", "absolute", &pet,
                           m->config_path, err));
    if (strcmp(pet, "absolute") != 0)
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: position_embedding_type '%s' is not supported (supported: absolute)",
                         m->config_path, pet);
    int is_decoder;
    TP_TRY(tp__json_bool(m->config, "is_decoder", 0, &is_decoder, m->config_path, err));
    if (is_decoder)
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: is_decoder true (a causal BERT) is not supported", m->config_path);

    c->positions = roberta ? TP_POS_ROBERTA : TP_POS_ABSOLUTE;
    c->num_labels = m->num_labels;
    c->cls_act = TP_ACT_TANH;
    /* BERT's MLM transform uses hidden_act; RoBERTa's lm_head always uses gelu */
    c->mlm_act = roberta ? TP_ACT_GELU : c->act;
    c->mlm_ln_eps = c->ln_eps;
    return TP_OK;
}

static tp_status bind_weights(tp_model *m, int roberta, tp__encoder *e, tp_error *err) {
    const tp__enc_config *c = &e->c;
    tp__enc_weights *w = &e->w;
    const int H = c->hidden, I = c->intermediate;
    const char *p = tp__encoder_prefix(m, roberta ? "roberta." : "bert.");

    /* embeddings */
    TP_TRY(tp__encoder_tensor(m, p, "embeddings.word_embeddings.weight", c->vocab_size, H,
                              &w->word_emb, err));
    TP_TRY(tp__encoder_tensor(m, p, "embeddings.position_embeddings.weight", c->max_positions,
                              H, &w->pos_emb, err));
    if (c->type_vocab_size > 0)
        TP_TRY(tp__encoder_tensor(m, p, "embeddings.token_type_embeddings.weight",
                                  c->type_vocab_size, H, &w->type_emb, err));
    TP_TRY(tp__encoder_layer_norm(m, p, "embeddings.LayerNorm", H, &w->emb_ln_g, &w->emb_ln_b,
                                  err));

    /* encoder layers */
    w->layers = calloc(c->n_layers ? (size_t)c->n_layers : 1, sizeof *w->layers);
    if (!w->layers) return tp__error(err, TP_ERR_NOMEM, "out of memory for the layer table");
    for (int i = 0; i < c->n_layers; i++) {
        tp__enc_layer *l = &w->layers[i];
        char n[128];
#define LAYER(suffix) (snprintf(n, sizeof n, "encoder.layer.%d.%s", i, suffix), n)
        TP_TRY(tp__encoder_linear(m, p, LAYER("attention.self.query"), H, H, &l->wq, &l->bq, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("attention.self.key"), H, H, &l->wk, &l->bk, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("attention.self.value"), H, H, &l->wv, &l->bv, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("attention.output.dense"), H, H, &l->wo, &l->bo,
                                  err));
        TP_TRY(tp__encoder_layer_norm(m, p, LAYER("attention.output.LayerNorm"), H, &l->ln1_g,
                                      &l->ln1_b, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("intermediate.dense"), I, H, &l->w1, &l->b1, err));
        TP_TRY(tp__encoder_linear(m, p, LAYER("output.dense"), H, I, &l->w2, &l->b2, err));
        TP_TRY(tp__encoder_layer_norm(m, p, LAYER("output.LayerNorm"), H, &l->ln2_g, &l->ln2_b,
                                      err));
#undef LAYER
    }

    /* heads */
    switch (m->head) {
    case TP_HEAD_SEQUENCE_CLASSIFICATION:
        if (roberta) {
            /* RobertaClassificationHead: dense + tanh on <s>, then out_proj */
            TP_TRY(tp__encoder_linear(m, "", "classifier.dense", H, H, &w->pre_w, &w->pre_b, err));
            TP_TRY(tp__encoder_linear(m, "", "classifier.out_proj", c->num_labels, H, &w->out_w,
                                      &w->out_b, err));
        } else {
            /* pooler (dense + tanh on [CLS]) then the classifier */
            TP_TRY(tp__encoder_linear(m, p, "pooler.dense", H, H, &w->pre_w, &w->pre_b, err));
            TP_TRY(tp__encoder_linear(m, "", "classifier", c->num_labels, H, &w->out_w,
                                      &w->out_b, err));
        }
        break;
    case TP_HEAD_TOKEN_CLASSIFICATION:
        TP_TRY(tp__encoder_linear(m, "", "classifier", c->num_labels, H, &w->out_w, &w->out_b,
                                  err));
        break;
    case TP_HEAD_QUESTION_ANSWERING:
        TP_TRY(tp__encoder_linear(m, "", "qa_outputs", 2, H, &w->out_w, &w->out_b, err));
        break;
    case TP_HEAD_MASKED_LM:
        if (roberta) {
            TP_TRY(tp__encoder_linear(m, "", "lm_head.dense", H, H, &w->mlm_w, &w->mlm_b, err));
            TP_TRY(tp__encoder_layer_norm(m, "", "lm_head.layer_norm", H, &w->mlm_ln_g,
                                          &w->mlm_ln_b, err));
            TP_TRY(tp__encoder_decoder(m, e, "lm_head.decoder.weight", "lm_head.bias",
                                       "lm_head.decoder.bias", err));
        } else {
            TP_TRY(tp__encoder_linear(m, "", "cls.predictions.transform.dense", H, H, &w->mlm_w,
                                      &w->mlm_b, err));
            TP_TRY(tp__encoder_layer_norm(m, "", "cls.predictions.transform.LayerNorm", H,
                                          &w->mlm_ln_g, &w->mlm_ln_b, err));
            TP_TRY(tp__encoder_decoder(m, e, "cls.predictions.decoder.weight",
                                       "cls.predictions.bias", "cls.predictions.decoder.bias",
                                       err));
        }
        break;
    default:
        break;
    }
    return TP_OK;
}

static tp_status load(tp_model *m, int roberta, void **arch, tp_error *err) {
    *arch = NULL;
    TP_TRY(tp__encoder_head(m, roberta ? "Roberta" : "Bert", err));
    tp__encoder *e = calloc(1, sizeof *e);
    if (!e) return tp__error(err, TP_ERR_NOMEM, "out of memory loading %s", m->dir);
    tp_status st = read_config(m, roberta, &e->c, err);
    if (st == TP_OK) st = bind_weights(m, roberta, e, err);
    if (st != TP_OK) {
        tp__encoder_free(e);
        return st;
    }
    *arch = e;
    return TP_OK;
}

static tp_status load_bert(tp_model *m, void **arch, tp_error *err) {
    return load(m, 0, arch, err);
}

static tp_status load_roberta(tp_model *m, void **arch, tp_error *err) {
    return load(m, 1, arch, err);
}

const tp__model_family tp__family_bert = {
    .model_type = "bert",
    .load = load_bert,
    .free = tp__encoder_free,
    .forward = tp__encoder_forward,
};

const tp__model_family tp__family_roberta = {
    .model_type = "roberta",
    .load = load_roberta,
    .free = tp__encoder_free,
    .forward = tp__encoder_forward,
};
