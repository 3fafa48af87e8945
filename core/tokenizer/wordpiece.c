/* wordpiece.c: the WordPiece model (greedy longest-match-first over byte slices,
 * continuing pieces looked up with their "##" prefix), as tokenizers implements
 * it: a word longer than max_input_chars_per_word characters, or one that cannot
 * be fully split, becomes a single unk token spanning the whole word.
 * Thread-safety: immutable after construction. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/tok_internal.h"

typedef struct wordpiece {
    tp__model base;
    tp__vocab vocab;
    char *unk;
    char *prefix;
    size_t prefix_len;
    int max_chars;
} wordpiece;

static tp_status push_tok(tp__work *w, int32_t id, uint32_t start, uint32_t end, int32_t word,
                          tp_error *err)
{
    tp__tok *t = tp__vec_push(&w->toks, err);
    if (!t) return err ? err->status : TP_ERR_NOMEM;
    t->id = id;
    t->start = start;
    t->end = end;
    t->word = word;
    return TP_OK;
}

static tp_status wp_tokenize(const tp__model *self, tp__work *w, uint32_t off, uint32_t len,
                             int32_t word, tp_error *err)
{
    const wordpiece *m = (const wordpiece *)self;
    const char *s = w->arena.s + off;
    size_t first = w->toks.len;
    int bad = 0;

    if (tp__utf8_count(s, len) > (size_t)m->max_chars) {
        bad = 1;
    } else {
        size_t pl = m->prefix_len;
        TP_TRY(tp__work_scratch(w, pl + len + 1, err));
        char *buf = w->scratch;
        memcpy(buf, m->prefix, pl);
        size_t maxlen = m->vocab.max_tok_len;
        uint32_t start = 0;
        while (start < len) {
            /* candidate bytes: buf[cand .. cand + (end - start)) */
            const char *cand;
            size_t extra;
            if (start > 0) {
                memcpy(buf + pl, s + start, len - start);
                cand = buf;
                extra = pl;
            } else {
                cand = s;
                extra = 0;
            }
            uint32_t end = len;
            if (maxlen >= extra && (size_t)(end - start) > maxlen - extra) {
                end = start + (uint32_t)(maxlen - extra);
                while (end > start && ((unsigned char)s[end] & 0xC0) == 0x80) end--;
            } else if (maxlen < extra) {
                end = start;
            }
            /* hashes of every candidate length in one pass (short words: all of them) */
            uint32_t hs[130];
            size_t clen = extra + (end - start);
            int hashed = clen < 129;
            if (hashed) tp__vocab_prefix_hashes(cand, clen, hs);
            int32_t id = -1;
            while (end > start) {
                size_t l = extra + (end - start);
                id = hashed ? tp__vocab_find_hashed(&m->vocab, cand, l, hs[l])
                            : tp__vocab_find(&m->vocab, cand, l);
                if (id >= 0) break;
                end--;
                while (end > start && ((unsigned char)s[end] & 0xC0) == 0x80) end--;
            }
            if (id < 0) {
                bad = 1;
                break;
            }
            TP_TRY(push_tok(w, id, off + start, off + end, word, err));
            start = end;
        }
    }
    if (bad) {
        w->toks.len = first;
        int32_t unk = tp__vocab_find(&m->vocab, m->unk, strlen(m->unk));
        if (unk < 0)
            return tp__error(err, TP_ERR_FORMAT,
                             "WordPiece: unk_token '%s' is not in the vocabulary", m->unk);
        TP_TRY(push_tok(w, unk, off, off + len, word, err));
    }
    return TP_OK;
}

static int32_t wp_token_to_id(const tp__model *self, const char *tok, size_t len)
{
    return tp__vocab_find(&((const wordpiece *)self)->vocab, tok, len);
}

static const char *wp_id_to_token(const tp__model *self, int32_t id, size_t *len)
{
    return tp__vocab_token(&((const wordpiece *)self)->vocab, id, len);
}

static size_t wp_vocab_size(const tp__model *self)
{
    return ((const wordpiece *)self)->vocab.count;
}

static void wp_free(tp__model *self)
{
    wordpiece *m = (wordpiece *)self;
    tp__vocab_free(&m->vocab);
    free(m->unk);
    free(m->prefix);
    free(m);
}

static const tp__model_ops wp_ops = {"WordPiece", wp_tokenize, wp_token_to_id, wp_id_to_token,
                                     wp_vocab_size, wp_free};

tp_status tp__wordpiece_new(tp__vocab *vocab, const char *unk, const char *prefix,
                            int max_chars, tp__model **out, tp_error *err)
{
    wordpiece *m = calloc(1, sizeof *m);
    if (!m) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    m->base.ops = &wp_ops;
    m->unk = strdup(unk);
    m->prefix = strdup(prefix);
    if (!m->unk || !m->prefix) {
        free(m->unk);
        free(m->prefix);
        free(m);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    m->prefix_len = strlen(prefix);
    m->max_chars = max_chars;
    m->vocab = *vocab;
    memset(vocab, 0, sizeof *vocab);
    *out = &m->base;
    return TP_OK;
}

tp_status tp__wordpiece_from_json(const cJSON *j, const char *what, tp__model **out,
                                  tp_error *err)
{
    const char *unk, *prefix;
    int64_t max_chars;
    TP_TRY(tp__json_string(j, "unk_token", "[UNK]", &unk, what, err));
    TP_TRY(tp__json_string(j, "continuing_subword_prefix", "##", &prefix, what, err));
    TP_TRY(tp__json_int(j, "max_input_chars_per_word", 100, &max_chars, what, err));
    if (max_chars < 0 || max_chars > 1 << 30)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: key 'model.max_input_chars_per_word' is out of range", what);
    const cJSON *vj = cJSON_GetObjectItemCaseSensitive(j, "vocab");
    if (!vj) return tp__error(err, TP_ERR_FORMAT, "%s: missing key 'model.vocab'", what);
    if (!cJSON_IsObject(vj))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'model.vocab' must be an object, got %s",
                         what, tp__json_type_name(vj));
    tp__vocab v;
    TP_TRY(tp__vocab_init(&v, (size_t)cJSON_GetArraySize(vj), err));
    const cJSON *it;
    cJSON_ArrayForEach(it, vj)
    {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e8 ||
            it->valuedouble != (double)(int32_t)it->valuedouble) {
            tp__vocab_free(&v);
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: key 'model.vocab' entry '%.64s' must be a non-negative integer id",
                             what, it->string ? it->string : "");
        }
        const char *key = it->string ? it->string : "";
        tp_status st = tp__vocab_add(&v, key, strlen(key), (int32_t)it->valuedouble, err);
        if (st != TP_OK) {
            tp__vocab_free(&v);
            return st;
        }
    }
    tp_status st = tp__wordpiece_new(&v, unk, prefix, (int)max_chars, out, err);
    tp__vocab_free(&v);
    return st;
}
