/* model.h: what every model family implements, and the tp_model the public API and
 * the plugins see. Each family lives in its own file (bert.c: BERT, DistilBERT and
 * later RoBERTa) in the llama2.c shape: a Config struct read from config.json, a
 * Weights struct of pointers into the mmapped safetensors with shape comments, a
 * RunState of scratch buffers, and one forward built from small kernels.
 *
 * A loaded model is read-only but for atomic caches (the encoder's spare run-state
 * block, spare.h): forward has its own run state per call, so several threads may run
 * forward on one model at once. */
#ifndef TP_CORE_MODEL_H
#define TP_CORE_MODEL_H

#include <cjson/cJSON.h>
#include "../backend.h"
#include "../safetensors.h"
#include "../tensor.h"

typedef struct tp__model_family {
    const char *model_type;      /* config.json model_type it serves ("bert") */
    /* Reads the config and binds every weight the architecture needs; sets *arch
     * and m->head. Errors name config.json keys or safetensors tensors. */
    tp_status (*load)(tp_model *m, void **arch, tp_error *err);
    void (*free)(void *arch);
    tp_status (*forward)(const tp_model *m, const tp__backend *be, const tp_model_input *in,
                         tp_tensor **out, tp_error *err);
    /* Language models (decoder-only, and encoder-decoders through the lm ops'
     * encode member): the incremental-decoding session generation drives
     * (core/generate/generate.h); NULL for every other family. */
    const struct tp__lm_ops *lm;
} tp__model_family;

struct tp_model {
    tp_runtime *rt;
    char *dir;
    char *config_path;           /* "<dir>/config.json", for messages */
    cJSON *config;               /* the whole config.json */
    const char *model_type;      /* inside config */
    const char *architecture;    /* inside config; "" when absent */
    const char *problem_type;    /* inside config; NULL when absent */
    tp_head head;
    int num_labels;
    char **labels;               /* id2label, num_labels entries ("LABEL_i" when absent) */
    tp__safetensors *weights;
    const tp__model_family *family;
    void *arch;                  /* the family's Config + Weights */
    /* tp_model_options.dtype; != TP_F32: the weights' range is registered with these
     * backends (tp__backend_register_weights) and the runtime is referenced */
    tp_dtype dtype;
    tp__backend **dtype_backends;
    int n_dtype_backends;
};

/* Families, one per file. */
extern const tp__model_family tp__family_bert;
extern const tp__model_family tp__family_distilbert;
extern const tp__model_family tp__family_gpt2;
extern const tp__model_family tp__family_llama;

/* Forward on an explicit backend (the request path pins one). */
tp_status tp__model_forward(const tp_model *m, const tp__backend *be, const tp_model_input *in,
                            tp_tensor **out, tp_error *err);

#endif
