/* bart.h: the BART encoder-decoder family (model_type "bart"): BartModel,
 * BartForSequenceClassification (eos pooling, bart-large-mnli) and
 * BartForConditionalGeneration (decoder logits over the vocabulary); and Marian
 * (model_type "marian", opus-mt): MarianModel, MarianMTModel, the same graph with
 * sinusoidal positions. Both and their KV-cache-shaped decoder are in bart.c.
 * Read-only once loaded: thread-safe. */
#ifndef TP_CORE_MODELS_BART_H
#define TP_CORE_MODELS_BART_H

#include "model.h"

extern const tp__model_family tp__family_bart;
extern const tp__model_family tp__family_marian;

#endif
