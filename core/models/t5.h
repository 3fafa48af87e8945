/* t5.h: the T5 encoder-decoder family (model_type "t5": t5-*, flan-t5-*): T5Model
 * and T5ForConditionalGeneration (decoder logits over the vocabulary). The graph and
 * its KV-cache-shaped decoder are in t5.c; the two rules below are exposed for the
 * tests. Read-only once loaded: thread-safe. */
#ifndef TP_CORE_MODELS_T5_H
#define TP_CORE_MODELS_T5_H

#include "model.h"

extern const tp__model_family tp__family_t5;

/* T5Attention._relative_position_bucket for one relative position (key position
 * minus query position), in transformers' fp32 arithmetic: bidirectional for the
 * encoder, causal (only the past counts) for the decoder. */
int tp__t5_relative_bucket(int relative_position, int bidirectional, int num_buckets,
                           int max_distance);

/* Whether the decoder output is scaled by d_model^-0.5 before the LM head:
 * config.json scale_decoder_outputs where present, else tie_word_embeddings (true
 * when absent). `path` names the config in errors. */
tp_status tp__t5_scale_decoder_outputs(const cJSON *config, const char *path, int *scale,
                                       tp_error *err);

#endif
