/* spm_internal.h: the SentencePiece family: the .model (ModelProto) reader, the
 * Unigram model, the Precompiled / NFC / NFKC / NFKD / Strip normalizers, the
 * Metaspace / Whitespace / Digits / Punctuation pre-tokenizers, the Metaspace /
 * BPEDecoder / CTC decoders and the legacy T5 (spiece.model) and Marian (source.spm +
 * target.spm + vocab.json) loaders. Internal to libtpipe.
 *
 * Two Unigram flavours exist because the references come from two libraries:
 * tokenizers (tokenizer.json, T5's converted spiece.model) keeps scores as f64, puts
 * every piece in its trie and computes the unk score over all pieces; sentencepiece
 * (Marian's slow tokenizer) keeps f32 scores, only NORMAL / USER_DEFINED / UNUSED
 * pieces in its trie, skips UNUSED ones, boosts USER_DEFINED ones and takes the unk
 * score over NORMAL pieces. Likewise the Precompiled charsmap is applied per grapheme
 * by tokenizers (the first, shortest, rule matching a grapheme of < 6 bytes, else
 * per character) and by longest match by sentencepiece's normalizer.
 *
 * Thread-safety: everything is immutable after construction. */
#ifndef TP_TOKENIZER_SPM_INTERNAL_H
#define TP_TOKENIZER_SPM_INTERNAL_H

#include "tokenizer/tok_internal.h"

/* ------------------------------------------------------------ sentencepiece_model.c */

enum { TP__SPM_NORMAL = 1, TP__SPM_UNKNOWN = 2, TP__SPM_CONTROL = 3, TP__SPM_USER_DEFINED = 4,
       TP__SPM_UNUSED = 5, TP__SPM_BYTE = 6 };
enum { TP__SPM_UNIGRAM = 1, TP__SPM_BPE = 2, TP__SPM_WORD = 3, TP__SPM_CHAR = 4 };

typedef struct tp__spm_piece {
    uint32_t off, len; /* bytes in tp__spm_model.arena (NUL-terminated there) */
    float score;
    int type;
} tp__spm_piece;

typedef struct tp__spm_model {
    tp__spm_piece *pieces;
    size_t n_pieces;
    char *arena; /* piece strings, NUL-separated */
    size_t arena_len;
    /* trainer_spec */
    int model_type;
    int32_t unk_id, bos_id, eos_id, pad_id;
    int byte_fallback, treat_whitespace_as_suffix;
    char *unk_surface; /* decode surface of <unk> (" \u2047 " by default) */
    /* normalizer_spec */
    char *norm_name;
    unsigned char *charsmap; /* precompiled_charsmap, may be NULL */
    size_t charsmap_len;
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
} tp__spm_model;

/* Parses a serialized ModelProto. Every length and tag is checked: a malformed
 * file is TP_ERR_FORMAT naming `what`, the byte offset and the field. */
tp_status tp__spm_model_parse(const unsigned char *data, size_t len, const char *what,
                              tp__spm_model *out, tp_error *err);
tp_status tp__spm_model_load(const char *path, tp__spm_model *out, tp_error *err);
void tp__spm_model_free(tp__spm_model *m);
static inline const char *tp__spm_piece_str(const tp__spm_model *m, size_t i)
{
    return m->arena + m->pieces[i].off;
}

/* ------------------------------------------------------------ unigram.c */

typedef struct tp__unigram_piece {
    const char *s;
    size_t len;
    double score;
    int type; /* TP__SPM_* (tokenizers flavour: TP__SPM_NORMAL for all) */
} tp__unigram_piece;

/* tokenizers' Unigram: piece i has id i. unk_id < 0: none. */
tp_status tp__unigram_new(const tp__unigram_piece *pieces, size_t n, int32_t unk_id,
                          int byte_fallback, tp__model **out, tp_error *err);
tp_status tp__unigram_from_json(const cJSON *j, const char *what, tp__model **out,
                                tp_error *err);
/* sentencepiece's Unigram over `spm`'s pieces. With `out_vocab` (taken over, zeroed
 * on success) the ids are those of out_vocab, looked up by piece string (unknown
 * strings -> out_unk), as Marian's vocab.json maps them; without, the spm ids. */
tp_status tp__unigram_spm_new(const tp__spm_model *spm, tp__vocab *out_vocab, int32_t out_unk,
                              tp__model **out, tp_error *err);

/* ------------------------------------------------------------ precompiled.c */

/* Standard base64 (padding optional); *out is malloc'ed. */
tp_status tp__base64_decode(const char *s, size_t len, unsigned char **out, size_t *out_len,
                            const char *what, tp_error *err);
/* tokenizers' Precompiled normalizer over a raw charsmap (copied). An empty charsmap
 * gives an identity normalizer. */
tp_status tp__precompiled_new(const unsigned char *charsmap, size_t len, const char *what,
                              tp__normalizer **out, tp_error *err);
tp_status tp__precompiled_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                    tp_error *err);
/* sentencepiece's whole normalizer (charsmap by longest match, user-defined symbols
 * kept, extra whitespace removed, dummy prefix, whitespace escaped to U+2581). */
tp_status tp__spm_normalizer_new(const tp__spm_model *spm, const char *what,
                                 tp__normalizer **out, tp_error *err);
/* NFC / NFKC / NFKD and Strip (left, right). */
tp_status tp__unicode_norm_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                     tp_error *err);
tp_status tp__strip_norm_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                   tp_error *err);

/* ------------------------------------------------------------ metaspace.c */

enum { TP__PREPEND_ALWAYS, TP__PREPEND_FIRST, TP__PREPEND_NEVER };
tp_status tp__metaspace_pre_new(const char *replacement, int prepend_scheme, int split,
                                tp__pre_tokenizer **out, tp_error *err);
tp_status tp__metaspace_pre_from_json(const cJSON *j, const char *what,
                                      tp__pre_tokenizer **out, tp_error *err);
tp_status tp__metaspace_dec_new(const char *replacement, int prepend_scheme, tp__decoder **out,
                                tp_error *err);
tp_status tp__metaspace_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                      tp_error *err);
tp_status tp__bpe_decoder_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                    tp_error *err);
tp_status tp__ctc_decoder_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                    tp_error *err);

/* ------------------------------------------------------------ char_split.c */

tp_status tp__whitespace_pre_from_json(const cJSON *j, const char *what,
                                       tp__pre_tokenizer **out, tp_error *err);
tp_status tp__digits_pre_from_json(const cJSON *j, const char *what, tp__pre_tokenizer **out,
                                   tp_error *err);
tp_status tp__punctuation_pre_from_json(const cJSON *j, const char *what,
                                        tp__pre_tokenizer **out, tp_error *err);

/* ------------------------------------------------------------ legacy_spm.c */

/* spiece.model (T5), or source.spm + vocab.json (Marian): returns TP_ERR_NOT_FOUND
 * when `dir` has neither. */
tp_status tp__spm_load_legacy(tp_tokenizer *tok, const char *dir, const cJSON *config,
                              tp_error *err);

#endif
