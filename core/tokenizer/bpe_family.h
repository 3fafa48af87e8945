/* bpe_family.h: constructors and JSON parsers of the BPE-family components (the BPE
 * model, ByteLevel, Split, Prepend/Replace, RobertaProcessing, the SentencePiece-
 * style decoders) for the stage registries and the legacy vocab.json + merges.txt
 * loader. Internal to libtpipe. Thread-safety: every component is immutable after
 * construction; encode/decode keep their state in the caller's work area. */
#ifndef TP_TOKENIZER_BPE_FAMILY_H
#define TP_TOKENIZER_BPE_FAMILY_H

#include "tokenizer/tok_internal.h"

/* ------------------------------------------------------------ bpe.c */

typedef struct tp__bpe_options {
    const char *unk;      /* NULL: none (unknown characters are dropped) */
    const char *prefix;   /* continuing_subword_prefix, NULL: none */
    const char *suffix;   /* end_of_word_suffix, NULL: none */
    int byte_fallback, fuse_unk, ignore_merges;
} tp__bpe_options;

/* Takes ownership of *vocab (zeroed on success). Merges are added afterwards. */
tp_status tp__bpe_new(tp__vocab *vocab, const tp__bpe_options *o, size_t merges_hint,
                      tp__model **out, tp_error *err);
/* Adds the merge (a, b) with the next rank; `what`/`where` name it in errors. */
tp_status tp__bpe_add_merge(tp__model *m, const char *a, size_t alen, const char *b,
                            size_t blen, const char *what, size_t where, tp_error *err);
tp_status tp__bpe_from_json(const cJSON *j, const char *what, tp__model **out, tp_error *err);
int tp__is_bpe_model(const tp__model *m);

/* ------------------------------------------------------------ byte_level.c */

tp_status tp__byte_level_pre_tokenizer_new(int add_prefix_space, int use_regex,
                                           tp__pre_tokenizer **out, tp_error *err);
tp_status tp__byte_level_pre_from_json(const cJSON *j, const char *what,
                                       tp__pre_tokenizer **out, tp_error *err);
tp_status tp__byte_level_decoder_new(tp__decoder **out, tp_error *err);
tp_status tp__byte_level_decoder_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                           tp_error *err);
/* Python's bytes.decode("utf-8", errors="replace") (each maximal invalid subpart
 * becomes one U+FFFD), appended to `out` as one token. */
tp_status tp__utf8_lossy_add(tp__toklist *out, const unsigned char *b, size_t n, tp_error *err);

/* ------------------------------------------------------------ split.c */

/* The split behaviours of tokenizers' SplitDelimiterBehavior. */
enum { TP__SPLIT_REMOVED, TP__SPLIT_ISOLATED, TP__SPLIT_MERGED_PREV, TP__SPLIT_MERGED_NEXT,
       TP__SPLIT_CONTIGUOUS };
tp_status tp__split_from_json(const cJSON *j, const char *what, tp__pre_tokenizer **out,
                              tp_error *err);

/* A compiled pattern: a PCRE2 regex (UTF, UCP) or a literal string. Matching is
 * thread-safe (match data is per call). */
typedef struct tp__pattern tp__pattern;
tp_status tp__pattern_parse(const cJSON *j, const char *key, const char *what,
                            tp__pattern **out, tp_error *err);
void tp__pattern_free(tp__pattern *p);
/* Calls fn(ctx, start, end) for each non-overlapping match in s[0..len), left to
 * right; empty matches are reported too. */
typedef tp_status (*tp__match_fn)(void *ctx, size_t start, size_t end, tp_error *err);
tp_status tp__pattern_each(const tp__pattern *p, const char *s, size_t len, tp__match_fn fn,
                           void *ctx, tp_error *err);

/* ------------------------------------------------------------ norm_bpe.c */

tp_status tp__prepend_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                tp_error *err);
tp_status tp__replace_norm_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                     tp_error *err);

/* ------------------------------------------------------------ decoders_bpe.c */

tp_status tp__replace_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                    tp_error *err);
tp_status tp__byte_fallback_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                          tp_error *err);
tp_status tp__fuse_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                 tp_error *err);
tp_status tp__strip_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                  tp_error *err);
tp_status tp__sequence_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                     tp_error *err);

/* ------------------------------------------------------------ post_bpe.c */

tp_status tp__roberta_processing_new(int32_t cls, int32_t sep, int trim_offsets,
                                     int add_prefix_space, tp__post_processor **out,
                                     tp_error *err);
tp_status tp__roberta_from_json(const cJSON *j, const char *what, tp__post_processor **out,
                                tp_error *err);
tp_status tp__byte_level_pp_from_json(const cJSON *j, const char *what,
                                      tp__post_processor **out, tp_error *err);
tp_status tp__sequence_pp_from_json(const cJSON *j, const char *what, tp__post_processor **out,
                                    tp_error *err);

/* ------------------------------------------------------------ legacy_bpe.c */

/* vocab.json + merges.txt with tokenizer_config.json, built as transformers 5's
 * GPT2Tokenizer / RobertaTokenizer / BartTokenizer build them. */
tp_status tp__bpe_load_legacy(tp_tokenizer *tok, const char *dir, const cJSON *config,
                              tp_error *err);

#endif
