/* encoder.h: the one encoder-only transformer graph shared by BERT, RoBERTa and
 * DistilBERT (post-LayerNorm, absolute position embeddings), its heads, and the
 * helpers their loaders share. The families differ only in config keys, tensor
 * names and a few switches recorded in tp__enc_config; bert.c and distilbert.c
 * fill a tp__encoder, encoder.c runs it. Read-only once loaded (but for the spare
 * block of run state, which is atomic): thread-safe. */
#ifndef TP_CORE_MODELS_ENCODER_H
#define TP_CORE_MODELS_ENCODER_H

#include "model.h"
#include "spare.h"

/* RoBERTa is the BERT graph with other positions; it lives in bert.c. */
extern const tp__model_family tp__family_roberta;

typedef enum tp__position_style {
    TP_POS_ABSOLUTE = 0, /* position t of every row is t (BERT, DistilBERT) */
    TP_POS_ROBERTA       /* counted over non-pad tokens from pad_id + 1; pads get pad_id */
} tp__position_style;

typedef struct tp__enc_config {
    int vocab_size;       /* V */
    int hidden;           /* H = n_heads * head_dim */
    int n_layers;
    int n_heads;
    int head_dim;         /* D */
    int intermediate;     /* I, the feed-forward width */
    int max_positions;    /* P */
    int type_vocab_size;  /* 0: no token type embeddings (DistilBERT) */
    float ln_eps;         /* every LayerNorm of the encoder */
    tp_activation act;    /* feed-forward activation */
    tp__position_style positions;
    int pad_id;           /* RoBERTa's padding_idx */
    /* heads */
    int num_labels;       /* L */
    tp_activation cls_act; /* sequence classification: tanh (pooler) or relu (DistilBERT) */
    tp_activation mlm_act; /* MLM transform */
    float mlm_ln_eps;
} tp__enc_config;

typedef struct tp__enc_layer {
    const float *wq, *bq;         /* [H, H], [H] */
    const float *wk, *bk;         /* [H, H], [H] */
    const float *wv, *bv;         /* [H, H], [H] */
    const float *wo, *bo;         /* [H, H], [H] attention output projection */
    const float *ln1_g, *ln1_b;   /* [H] after attention + residual */
    const float *w1, *b1;         /* [I, H], [I] */
    const float *w2, *b2;         /* [H, I], [H] */
    const float *ln2_g, *ln2_b;   /* [H] after feed-forward + residual */
} tp__enc_layer;

typedef struct tp__enc_weights {
    const float *word_emb;        /* [V, H] */
    const float *pos_emb;         /* [P, H] */
    const float *type_emb;        /* [type_vocab_size, H] or NULL */
    const float *emb_ln_g, *emb_ln_b; /* [H] */
    tp__enc_layer *layers;        /* [n_layers] */
    /* sequence classification: token 0 -> dense + cls_act -> out */
    const float *pre_w, *pre_b;   /* [H, H], [H] (pooler / pre_classifier / classifier.dense) */
    /* sequence classification, token classification (out [L, H]) and QA (out [2, H]) */
    const float *out_w, *out_b;   /* [L or 2, H], [L or 2] */
    /* masked LM: dense + mlm_act -> LayerNorm -> decoder (usually tied to word_emb) */
    const float *mlm_w, *mlm_b;   /* [H, H], [H] */
    const float *mlm_ln_g, *mlm_ln_b; /* [H] */
    const float *dec_w, *dec_b;   /* [V, H], [V] */
} tp__enc_weights;

typedef struct tp__encoder {
    tp__enc_config c;
    tp__enc_weights w;
    tp__spare spare; /* the run state's memory between forwards (spare.h) */
} tp__encoder;

/* Forward of any encoder family (the tp__model_family.forward of all three). */
tp_status tp__encoder_forward(const tp_model *m, const tp__backend *be, const tp_model_input *in,
                              tp_tensor **out, tp_error *err);
void tp__encoder_free(void *arch);

/* ---- loader helpers (encoder.c) */

/* Maps config.json architectures[0] to m->head: "<base>Model" is the bare encoder,
 * "<base>For{SequenceClassification,TokenClassification,QuestionAnswering,MaskedLM}"
 * a head. Anything else is TP_ERR_UNSUPPORTED naming it. */
tp_status tp__encoder_head(tp_model *m, const char *base, tp_error *err);

/* config.json integer `key` (transformers' default `def` when absent), >= `min`. */
tp_status tp__encoder_cfg_int(const tp_model *m, const char *key, int def, int min, int *out,
                              tp_error *err);
/* An activation name as transformers' ACT2FN knows it; `key` names it in errors. */
tp_status tp__encoder_cfg_act(const tp_model *m, const char *key, const char *def,
                              tp_activation *out, tp_error *err);

/* Binds fp32 tensor "<prefix><name>" of shape [d0] (d1 == 0) or [d0, d1]. */
tp_status tp__encoder_tensor(const tp_model *m, const char *prefix, const char *name, int d0,
                             int d1, const float **out, tp_error *err);
/* A LayerNorm's "<name>.weight"/"<name>.bias" (or the old ".gamma"/".beta"), [H]. */
tp_status tp__encoder_layer_norm(const tp_model *m, const char *prefix, const char *name,
                                 int h, const float **g, const float **b, tp_error *err);
/* A Linear's "<name>.weight" [out, in] and "<name>.bias" [out]. */
tp_status tp__encoder_linear(const tp_model *m, const char *prefix, const char *name, int out_f,
                             int in_f, const float **w, const float **b, tp_error *err);
/* "<with>" when model.safetensors has "<with>embeddings.word_embeddings.weight",
 * else "" when it has the bare name (a saved base model), else `with`. */
const char *tp__encoder_prefix(const tp_model *m, const char *with);
/* The masked-LM decoder: `weight_name` when present, else the word embeddings when
 * config.json tie_word_embeddings is true (its default), else the missing-tensor error. */
tp_status tp__encoder_decoder(const tp_model *m, tp__encoder *e, const char *weight_name,
                              const char *bias_name, const char *alt_bias_name, tp_error *err);

#endif
