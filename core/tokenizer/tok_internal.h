/* tok_internal.h: the tokenizer subsystem's internal types. Internal to libtpipe.
 *
 * Design
 * ------
 * The pipeline is the one of Hugging Face `tokenizers`:
 *
 *   raw text -> added tokens split off (non-normalized ones, on the raw text)
 *            -> normalizer (per remaining segment) -> added tokens split off
 *               (normalized ones, on the normalized text)
 *            -> pre-tokenizer (splits into words) -> model (words into tokens)
 *            -> truncation -> post-processor (special tokens, type ids)
 *            -> padding
 *   ids      -> decoder (tokens into text)
 *
 * Each stage is a component with a tiny vtable (`ops`): a kind lives in its own
 * file, registers its JSON parser in the stage's table (normalizer.c,
 * pre_tokenizer.c, post_processor.c, decoder.c, model kinds in tokenizer_json.c),
 * and never touches the others. Adding BPE, Unigram, ByteLevel, Metaspace, Split,
 * Precompiled... means adding a struct, its ops and one table line.
 *
 * Offsets. Normalization changes lengths (accent stripping, NFD, CJK spacing,
 * lowercasing of U+0130), so the normalized text is a `tp__nstr`: bytes plus, per
 * normalized byte, the span [start, end) of original bytes it came from (exactly
 * the alignment model of tokenizers' NormalizedString: a replaced char keeps the
 * span of the char it replaces, an inserted char the span of the char before it,
 * a removed char disappears). A token covering normalized bytes [a, b) maps to
 * original bytes [span[a].start, span[b-1].end), then to Unicode code points of
 * the original text, which is what transformers reports.
 *
 * Working memory. One encode call owns a `tp__work` (arena of normalized bytes and
 * spans, split list, token list, scratch): no allocation per token or per word,
 * buffers grow geometrically and are reused across the texts of a batch. The
 * tokenizer itself is read-only after load, so encode/decode may run concurrently
 * on one handle.
 *
 * Vocabulary lookups use an open-addressing hash (`tp__vocab`) over byte slices,
 * so WordPiece greedy matching never builds strings.
 *
 * Thread-safety: everything here is either immutable after load (components,
 * vocab) or owned by one call (tp__work, tp__nstr).
 */
#ifndef TP_TOKENIZER_INTERNAL_H
#define TP_TOKENIZER_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <tpipe/tpipe.h>

/* ------------------------------------------------------------ unicode.c */

/* Index of the first byte that starts an invalid UTF-8 sequence, or len. Rejects
 * overlong forms, surrogates and code points past U+10FFFF (what Python rejects). */
size_t tp__utf8_invalid_at(const char *s, size_t len);
/* Decodes the code point at s[0..len); returns its byte length (>= 1). Invalid
 * bytes decode as U+FFFD of length 1. */
int tp__utf8_decode(const char *s, size_t len, uint32_t *cp);
/* Writes cp as UTF-8 (1-4 bytes); returns the length. */
int tp__utf8_encode(uint32_t cp, char *out);
/* Code points in s[0..len). */
size_t tp__utf8_count(const char *s, size_t len);

int tp__uc_is_whitespace(uint32_t cp);     /* Unicode White_Space (Rust char::is_whitespace) */
int tp__uc_is_bert_control(uint32_t cp);   /* Cc, Cf, Co except \t \n \r */
int tp__uc_is_bert_punct(uint32_t cp);     /* ASCII punctuation or category P* */
int tp__uc_is_cjk(uint32_t cp);            /* the CJK ideograph blocks BERT pads */
int tp__uc_is_mn(uint32_t cp);             /* category Mn */
int tp__uc_is_word(uint32_t cp);           /* regex \w: letters, marks, Nd, Nl, Pc, ZWJ/ZWNJ */
/* Full lowercase mapping of one code point (1 or 2 code points); returns the count. */
int tp__uc_lower(uint32_t cp, uint32_t out[3]);
/* Canonical combining class. */
int tp__uc_ccc(uint32_t cp);
/* Canonical decomposition (recursive); returns the count, at most `cap`. */
int tp__uc_nfd(uint32_t cp, uint32_t *out, int cap);

/* ------------------------------------------------------------ buffers */

typedef struct tp__span {
    uint32_t start, end; /* original bytes */
} tp__span;

/* A normalized string: bytes and, per byte, its original span. */
typedef struct tp__nstr {
    char *s;
    tp__span *al;
    size_t len, cap;
} tp__nstr;

tp_status tp__nstr_reserve(tp__nstr *n, size_t cap, tp_error *err);
/* Appends one code point with the given original span. */
tp_status tp__nstr_push(tp__nstr *n, uint32_t cp, tp__span sp, tp_error *err);
/* Appends bytes, each with span sp (or, when `al` is not NULL, their own spans). */
tp_status tp__nstr_append(tp__nstr *n, const char *s, size_t len, const tp__span *al,
                          tp__span sp, tp_error *err);
void tp__nstr_free(tp__nstr *n);

/* A growable array of POD elements. */
typedef struct tp__vec {
    void *data;
    size_t len, cap, elem;
} tp__vec;
tp_status tp__vec_reserve(tp__vec *v, size_t n, tp_error *err);
void *tp__vec_push(tp__vec *v, tp_error *err); /* NULL: out of memory (err filled) */
void tp__vec_free(tp__vec *v);

/* ------------------------------------------------------------ vocab */

/* Open-addressing hash of byte strings -> id, plus the reverse table. Tokens live
 * in one arena. Duplicates: the last insert wins (like a Python dict), and the
 * earlier id then maps to no token. */
typedef struct tp__vocab {
    char *arena;
    size_t arena_len, arena_cap;
    uint32_t *tok_off;     /* per id: offset in arena, UINT32_MAX for a hole */
    uint32_t *tok_len;     /* per id */
    size_t n_ids;          /* ids are 0..n_ids-1 */
    size_t max_tok_len;    /* longest token, bytes */
    uint32_t *slots;       /* id+1 per slot, 0 empty */
    uint32_t *slot_hash;
    size_t n_slots;        /* power of two */
    size_t count;          /* distinct tokens */
} tp__vocab;

tp_status tp__vocab_init(tp__vocab *v, size_t expected, tp_error *err);
/* Maps tok -> id (id may be anything >= 0; the reverse table grows). */
tp_status tp__vocab_add(tp__vocab *v, const char *tok, size_t len, int32_t id, tp_error *err);
int32_t tp__vocab_find(const tp__vocab *v, const char *tok, size_t len); /* -1 absent */
/* out[k] = the hash of s[0..k) for k = 0..len (len + 1 entries). */
void tp__vocab_prefix_hashes(const char *s, size_t len, uint32_t *out);
int32_t tp__vocab_find_hashed(const tp__vocab *v, const char *tok, size_t len, uint32_t hash);
/* The token of an id, NUL-terminated in the arena; NULL when none. */
const char *tp__vocab_token(const tp__vocab *v, int32_t id, size_t *len);
void tp__vocab_free(tp__vocab *v);

/* ------------------------------------------------------------ work area */

/* A split of the pre-tokenized string: bytes [off, off+len) of the work arena. */
typedef struct tp__split {
    uint32_t off, len;
    int32_t added; /* id of the added token this split is, or -1 */
} tp__split;

/* A token produced by the model: normalized bytes [start, end) of the arena. */
typedef struct tp__tok {
    int32_t id;
    uint32_t start, end;
    int32_t word;
} tp__tok;

/* The tokens of one sequence after the model, before post-processing. */
typedef struct tp__seq {
    tp__vec ids;     /* int32_t */
    tp__vec offs;    /* int32_t pairs, code points */
    tp__vec words;   /* int32_t */
} tp__seq;

typedef struct tp__work {
    tp__nstr arena;      /* normalized text of all splits of the current sequence */
    tp__nstr n1, n2;     /* normalizer scratch */
    tp__vec splits;      /* tp__split */
    tp__vec splits2;     /* tp__split, pre-tokenizer output */
    tp__vec toks;        /* tp__tok */
    tp__vec char_at;     /* uint32_t: code point index of each original byte (+1 entry) */
    char *scratch;       /* model scratch (prefix + word) */
    size_t scratch_cap;
    tp__seq seq[2];
} tp__work;

void tp__work_free(tp__work *w);
tp_status tp__work_scratch(tp__work *w, size_t need, tp_error *err);

/* ------------------------------------------------------------ components */

typedef struct tp__normalizer tp__normalizer;
typedef struct tp__normalizer_ops {
    const char *name;
    /* Normalizes `n` in place; `tmp` is scratch it may swap with `n`. */
    tp_status (*normalize)(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                           tp_error *err);
    void (*free)(tp__normalizer *self);
} tp__normalizer_ops;
struct tp__normalizer {
    const tp__normalizer_ops *ops;
};

typedef struct tp__pre_tokenizer tp__pre_tokenizer;
typedef struct tp__pre_tokenizer_ops {
    const char *name;
    /* Rewrites w->splits (splits with added >= 0 stay as they are). */
    tp_status (*pre_tokenize)(const tp__pre_tokenizer *self, tp__work *w, tp_error *err);
    void (*free)(tp__pre_tokenizer *self);
} tp__pre_tokenizer_ops;
struct tp__pre_tokenizer {
    const tp__pre_tokenizer_ops *ops;
};

typedef struct tp__model tp__model;
typedef struct tp__model_ops {
    const char *name;
    /* Appends the tokens of w->arena bytes [off, off+len) to w->toks (word `word`). */
    tp_status (*tokenize)(const tp__model *self, tp__work *w, uint32_t off, uint32_t len,
                          int32_t word, tp_error *err);
    int32_t (*token_to_id)(const tp__model *self, const char *tok, size_t len);
    const char *(*id_to_token)(const tp__model *self, int32_t id, size_t *len);
    size_t (*vocab_size)(const tp__model *self);
    void (*free)(tp__model *self);
} tp__model_ops;
struct tp__model {
    const tp__model_ops *ops;
};

/* A template piece: a sequence (A = 0, B = 1) or special token ids. */
typedef struct tp__piece {
    int is_seq;
    int seq;            /* 0 A, 1 B */
    int type_id;
    int32_t *ids;       /* special: its ids */
    size_t n_ids;
} tp__piece;

typedef struct tp__post_processor tp__post_processor;
typedef struct tp__post_processor_ops {
    const char *name;
    /* The template for one sequence or a pair; NULL pieces means "no template"
     * (sequences concatenated, type id 0 for A and 1 for B). */
    void (*layout)(const tp__post_processor *self, int pair, const tp__piece **pieces,
                   size_t *n);
    void (*free)(tp__post_processor *self);
} tp__post_processor_ops;
struct tp__post_processor {
    const tp__post_processor_ops *ops;
    /* Optional (NULL: none), appended for byte-level BPE: adjusts the code point
     * offsets of one sequence (seq->offs) in place from its tokens (w->toks over the
     * arena text), as tokenizers' trim_offsets does. Called once per sequence at
     * the end of encoding it, before truncation. */
    void (*process_offsets)(const tp__post_processor *self, const tp__work *w, tp__seq *seq);
};

/* Decoders work on a token list held as one buffer + (offset, length) pairs. */
typedef struct tp__toklist {
    tp__vec buf;   /* char */
    tp__vec items; /* uint32_t pairs: offset, length */
} tp__toklist;
tp_status tp__toklist_add(tp__toklist *l, const char *s, size_t len, tp_error *err);
void tp__toklist_free(tp__toklist *l);

typedef struct tp__decoder tp__decoder;
typedef struct tp__decoder_ops {
    const char *name;
    /* tokenizers' decode_chain: rewrites `in` into `out` (both token lists). */
    tp_status (*decode_chain)(const tp__decoder *self, const tp__toklist *in,
                              tp__toklist *out, tp_error *err);
    void (*free)(tp__decoder *self);
} tp__decoder_ops;
struct tp__decoder {
    const tp__decoder_ops *ops;
};

/* ------------------------------------------------------------ added tokens */

typedef struct tp__added_token {
    char *content;
    size_t len;
    char *norm;        /* content after the normalizer (normalized tokens only) */
    size_t norm_len;
    int32_t id;
    int special, single_word, lstrip, rstrip, normalized;
} tp__added_token;

typedef struct tp__added_vocab {
    tp__added_token *tokens;
    size_t n, cap;
    tp__vocab by_content; /* content -> index in tokens */
    /* first-byte index of the raw and normalized matchers: token indices with
     * that first byte, longest first */
    uint32_t *raw_idx, *norm_idx;
    uint32_t raw_start[257], norm_start[257];
} tp__added_vocab;

/* ------------------------------------------------------------ tokenizer */

enum { TP__ROLE_PAD, TP__ROLE_UNK, TP__ROLE_CLS, TP__ROLE_SEP, TP__ROLE_MASK, TP__ROLE_BOS,
       TP__ROLE_EOS, TP__ROLE_COUNT };

struct tp_tokenizer {
    tp__normalizer *normalizer;         /* may be NULL */
    tp__pre_tokenizer *pre_tokenizer;   /* may be NULL */
    tp__model *model;
    tp__post_processor *post_processor; /* may be NULL */
    tp__decoder *decoder;               /* may be NULL */
    tp__added_vocab added;
    int model_max_length;               /* 0 unbounded */
    int pad_left;
    int truncate_left;
    int clean_up_spaces;                /* transformers-level cleanup in decode */
    char *role_token[TP__ROLE_COUNT];   /* configured special tokens (NULL: none) */
    char *chat_template;                /* chat_template.c renders it (NULL: none) */
};

/* Stage registries (each parses a JSON object whose "type" it recognises). `what`
 * names the file in errors. NULL JSON (absent or null) gives NULL and TP_OK. */
tp_status tp__normalizer_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                   tp_error *err);
tp_status tp__pre_tokenizer_from_json(const cJSON *j, const char *what,
                                      tp__pre_tokenizer **out, tp_error *err);
tp_status tp__post_processor_from_json(const cJSON *j, const char *what,
                                       const tp_tokenizer *tok, tp__post_processor **out,
                                       tp_error *err);
tp_status tp__decoder_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                tp_error *err);
void tp__normalizer_free(tp__normalizer *n);
void tp__pre_tokenizer_free(tp__pre_tokenizer *p);
void tp__post_processor_free(tp__post_processor *p);
void tp__decoder_free(tp__decoder *d);
void tp__model_free(tp__model *m);

/* Direct constructors (the legacy loader builds the same pipeline as transformers'
 * converters). strip_accents: -1 null (follows lowercase), 0, 1. */
tp_status tp__bert_normalizer_new(int clean_text, int handle_chinese, int strip_accents,
                                  int lowercase, tp__normalizer **out, tp_error *err);
tp_status tp__bert_pre_tokenizer_new(tp__pre_tokenizer **out, tp_error *err);
/* Takes ownership of *vocab (zeroed on success). */
tp_status tp__wordpiece_new(tp__vocab *vocab, const char *unk, const char *prefix,
                            int max_chars, tp__model **out, tp_error *err);
tp_status tp__wordpiece_from_json(const cJSON *j, const char *what, tp__model **out,
                                  tp_error *err);
tp_status tp__template_processing_new(const tp__piece *single, size_t n_single,
                                      const tp__piece *pair, size_t n_pair,
                                      tp__post_processor **out, tp_error *err);
/* The replacements of " ." " ?" " !" " ," " ' " " n't" " 'm" (" do not" for the
 * tokenizers variant) " 's" " 've" " 're", in place; returns the new length. */
size_t tp__cleanup_spaces(char *s, size_t len, int with_do_not);
tp_status tp__wordpiece_decoder_new(const char *prefix, int cleanup, tp__decoder **out,
                                    tp_error *err);

/* Added tokens. */
tp_status tp__added_add(tp__added_vocab *av, const char *content, int32_t id, int special,
                        int single_word, int lstrip, int rstrip, int normalized,
                        tp_error *err);
/* Builds the matchers; normalizes the content of normalized tokens with `norm`. */
tp_status tp__added_finish(tp__added_vocab *av, const tp__normalizer *norm, tp_error *err);
const tp__added_token *tp__added_by_id(const tp__added_vocab *av, int32_t id);
const tp__added_token *tp__added_by_content(const tp__added_vocab *av, const char *s,
                                            size_t len);
/* Splits w->splits[i] (bytes of w->arena) around matches of the raw (normalized = 0)
 * or normalized (1) tokens; rewrites w->splits. */
tp_status tp__added_split(const tp__added_vocab *av, int normalized, tp__work *w,
                          tp_error *err);
void tp__added_free(tp__added_vocab *av);

/* Runs the normalizer over `n` (NULL normalizer: unchanged). */
tp_status tp__normalize(const tp__normalizer *norm, tp__nstr *n, tp__nstr *tmp,
                        tp_error *err);

/* tokenizer_json.c / legacy_vocab.c: fill a zeroed tokenizer's pipeline. */
tp_status tp__tokenizer_load_json(tp_tokenizer *tok, const char *text, size_t len,
                                  const char *what, tp_error *err);
tp_status tp__tokenizer_load_legacy(tp_tokenizer *tok, const char *dir, const cJSON *config,
                                    tp_error *err);
/* The config value of a special token: a string or {"content": ...}; NULL if neither. */
const char *tp__config_token_string(const cJSON *v);

/* tokenizer.c */
int32_t tp__token_to_id(const tp_tokenizer *tok, const char *s, size_t len);
/* For fuzzing and tests: a tokenizer from tokenizer.json content alone. */
tp_status tp__tokenizer_from_json_buffer(const char *json, size_t len, tp_tokenizer **out,
                                         tp_error *err);

#endif
