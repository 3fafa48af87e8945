/* legacy_spm.c: tokenizers from SentencePiece files when there is no
 * tokenizer.json, built as transformers 5 builds them:
 *  - T5 (spiece.model): what the T5 converter writes to tokenizer.json: the
 *    Precompiled normalizer of the model's charsmap, WhitespaceSplit + Metaspace
 *    (always, split), a tokenizers-flavour Unigram over the pieces plus extra_ids
 *    sentinels <extra_id_N> (id = pieces + extra_ids - 1 - N, score 0), the
 *    template "$A </s>" / "$A </s> $B </s>", the Metaspace decoder.
 *  - Marian (source.spm + target.spm + vocab.json, the slow MarianTokenizer):
 *    each text segment goes through sentencepiece itself (its normalizer and
 *    Unigram on source.spm), pieces map to ids through vocab.json (unknown ones to
 *    vocab.json's unk id), "</s>" is appended; decoding follows the tokenizer's
 *    convert_tokens_to_string: runs of ordinary tokens are decoded by
 *    sentencepiece's Decode (source.spm, as transformers 5 does when the vocabs
 *    are shared), special tokens are copied followed by a
 *    space, U+2581 becomes a space and the result is stripped.
 * Thread-safety: fills a tokenizer that is not yet shared; the Marian decoder is
 * immutable after construction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/spm_internal.h"

static int file_exists(const char *dir, const char *name)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static tp_status load_spm(const char *dir, const char *name, tp__spm_model *m, tp_error *err)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "%s: path too long", dir);
    TP_TRY(tp__spm_model_load(path, m, err));
    if (m->model_type != TP__SPM_UNIGRAM) {
        int t = m->model_type;
        tp__spm_model_free(m);
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: trainer_spec.model_type %d is not supported (only UNIGRAM = 1)",
                         path, t);
    }
    return TP_OK;
}

/* added_tokens_decoder: {"<id>": {"content": ..., flags}}; raises *next_id past them. */
static tp_status config_added_tokens(tp_tokenizer *tok, const cJSON *config, int32_t *next_id,
                                     tp_error *err)
{
    const char *cfg = "tokenizer_config.json";
    const cJSON *atd = cJSON_GetObjectItemCaseSensitive(config, "added_tokens_decoder");
    if (!cJSON_IsObject(atd)) return TP_OK;
    const cJSON *it;
    cJSON_ArrayForEach(it, atd)
    {
        const char *content = tp__config_token_string(it);
        char *end = NULL;
        long id = strtol(it->string ? it->string : "", &end, 10);
        if (!content || !end || *end || !it->string[0] || id < 0 || id > INT32_MAX - 1)
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: key 'added_tokens_decoder.%s' must map an id to a token", cfg,
                             it->string ? it->string : "");
        int special, single_word, lstrip, rstrip, normalized;
        TP_TRY(tp__json_bool(it, "special", 0, &special, cfg, err));
        TP_TRY(tp__json_bool(it, "single_word", 0, &single_word, cfg, err));
        TP_TRY(tp__json_bool(it, "lstrip", 0, &lstrip, cfg, err));
        TP_TRY(tp__json_bool(it, "rstrip", 0, &rstrip, cfg, err));
        TP_TRY(tp__json_bool(it, "normalized", !special, &normalized, cfg, err));
        TP_TRY(tp__added_add(&tok->added, content, (int32_t)id, special, single_word, lstrip,
                             rstrip, normalized, err));
        if ((int32_t)id >= *next_id) *next_id = (int32_t)id + 1;
    }
    return TP_OK;
}

/* A special token not yet added: its vocabulary id, else the next free one. */
static tp_status add_special(tp_tokenizer *tok, const char *content, int32_t vocab_id,
                             int32_t *next_id, tp_error *err)
{
    if (!content || tp__added_by_content(&tok->added, content, strlen(content))) return TP_OK;
    int32_t id = vocab_id >= 0 ? vocab_id : (*next_id)++;
    return tp__added_add(&tok->added, content, id, 1, 0, 0, 0, 0, err);
}

static tp_status default_role(tp_tokenizer *tok, int role, const char *s, tp_error *err)
{
    if (tok->role_token[role]) return TP_OK;
    if (!(tok->role_token[role] = strdup(s)))
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    return TP_OK;
}

static int32_t added_id(const tp_tokenizer *tok, const char *s)
{
    if (!s) return -1;
    const tp__added_token *t = tp__added_by_content(&tok->added, s, strlen(s));
    return t ? t->id : -1;
}

static tp_status pre_from_literal(const char *json, tp__pre_tokenizer **out, tp_error *err)
{
    cJSON *j = cJSON_Parse(json);
    if (!j) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    tp_status st = tp__pre_tokenizer_from_json(j, "built-in pre-tokenizer", out, err);
    cJSON_Delete(j);
    return st;
}

/* ------------------------------------------------------------ T5 */

static tp_status load_t5(tp_tokenizer *tok, const char *dir, const cJSON *config, tp_error *err)
{
    const char *cfg = "tokenizer_config.json";
    int64_t extra;
    TP_TRY(tp__json_int(config, "extra_ids", 100, &extra, cfg, err));
    if (extra < 0 || extra > 1000000)
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'extra_ids' is out of range", cfg);
    TP_TRY(default_role(tok, TP__ROLE_EOS, "</s>", err));
    TP_TRY(default_role(tok, TP__ROLE_UNK, "<unk>", err));
    TP_TRY(default_role(tok, TP__ROLE_PAD, "<pad>", err));

    tp__spm_model spm;
    TP_TRY(load_spm(dir, "spiece.model", &spm, err));
    size_t n = spm.n_pieces, total = n + (size_t)extra;
    tp__unigram_piece *p = calloc(total ? total : 1, sizeof *p);
    char *names = calloc((size_t)extra + 1, 32);
    tp_status st = (!p || !names) ? tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory") : TP_OK;
    for (size_t i = 0; i < n && st == TP_OK; i++) {
        p[i].s = tp__spm_piece_str(&spm, i);
        p[i].len = spm.pieces[i].len;
        p[i].score = spm.pieces[i].score;
        p[i].type = TP__SPM_NORMAL;
    }
    for (int64_t k = 0; k < extra && st == TP_OK; k++) {
        /* <extra_id_{extra-1}> first, <extra_id_0> last */
        char *nm = names + 32 * (size_t)k;
        snprintf(nm, 32, "<extra_id_%lld>", (long long)(extra - 1 - k));
        p[n + (size_t)k].s = nm;
        p[n + (size_t)k].len = strlen(nm);
        p[n + (size_t)k].score = 0.0;
        p[n + (size_t)k].type = TP__SPM_NORMAL;
    }
    if (st == TP_OK) st = tp__unigram_new(p, total, spm.unk_id, spm.byte_fallback, &tok->model, err);
    int32_t next_id = (int32_t)total;
    if (st == TP_OK) st = config_added_tokens(tok, config, &next_id, err);
    /* the converter's added tokens: pad, eos, unk, then the sentinels */
    static const int roles[] = {TP__ROLE_PAD, TP__ROLE_EOS, TP__ROLE_UNK};
    for (size_t r = 0; r < 3 && st == TP_OK; r++) {
        const char *t = tok->role_token[roles[r]];
        st = add_special(tok, t, tok->model->ops->token_to_id(tok->model, t, strlen(t)), &next_id,
                         err);
    }
    for (int64_t k = 0; k < extra && st == TP_OK; k++)
        st = add_special(tok, p[n + (size_t)k].s, (int32_t)(n + (size_t)k), &next_id, err);
    if (st == TP_OK && spm.charsmap_len)
        st = tp__precompiled_new(spm.charsmap, spm.charsmap_len, "spiece.model", &tok->normalizer,
                                 err);
    if (st == TP_OK)
        st = pre_from_literal("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":"
                              "\"WhitespaceSplit\"},{\"type\":\"Metaspace\",\"replacement\":"
                              "\"\xE2\x96\x81\",\"prepend_scheme\":\"always\",\"split\":true}]}",
                              &tok->pre_tokenizer, err);
    int32_t eos = added_id(tok, tok->role_token[TP__ROLE_EOS]);
    if (st == TP_OK && eos >= 0) {
        tp__piece single[2] = {{1, 0, 0, NULL, 0}, {0, 0, 0, &eos, 1}};
        tp__piece pair[4] = {{1, 0, 0, NULL, 0}, {0, 0, 0, &eos, 1}, {1, 1, 0, NULL, 0},
                             {0, 0, 0, &eos, 1}};
        st = tp__template_processing_new(single, 2, pair, 4, &tok->post_processor, err);
    }
    if (st == TP_OK)
        st = tp__metaspace_dec_new("\xE2\x96\x81", TP__PREPEND_ALWAYS, &tok->decoder, err);
    if (st == TP_OK) st = tp__added_finish(&tok->added, tok->normalizer, err);
    free(p);
    free(names);
    tp__spm_model_free(&spm);
    return st;
}

/* ------------------------------------------------------------ Marian decoder */

typedef struct marian_dec {
    tp__decoder base;
    tp__vocab pieces;     /* decoding spm: piece -> id (reserved pieces win) */
    uint8_t *type;        /* per spm id */
    int32_t unk_id;
    char *unk_piece, *unk_surface;
    int bos_ws_rule;      /* add_dummy_prefix || remove_extra_whitespaces */
    int remove_extra_ws;
    tp__vocab specials;   /* all_special_tokens */
} marian_dec;

typedef struct sbuf {
    char *s;
    size_t len, cap;
} sbuf;

static tp_status sb_add(sbuf *b, const char *s, size_t n, tp_error *err)
{
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->len + n + 1) nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        b->s = ns;
        b->cap = nc;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    return TP_OK;
}

/* Appends s with every U+2581 replaced by a space. */
static tp_status sb_add_unescaped(sbuf *b, const char *s, size_t n, tp_error *err)
{
    size_t i = 0;
    while (i < n) {
        const char *m = NULL;
        for (size_t k = i; k + 3 <= n; k++)
            if (memcmp(s + k, "\xE2\x96\x81", 3) == 0) {
                m = s + k;
                break;
            }
        if (!m) return sb_add(b, s + i, n - i, err);
        TP_TRY(sb_add(b, s + i, (size_t)(m - (s + i)), err));
        TP_TRY(sb_add(b, " ", 1, err));
        i = (size_t)(m - s) + 3;
    }
    return TP_OK;
}

static int byte_of_piece(const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>' || !s[3] || !s[4]) return -1;
    const char *a = memchr(hex, s[3], 16), *b = memchr(hex, s[4], 16);
    return a && b ? (int)((a - hex) * 16 + (b - hex)) : -1;
}

/* Flushes pending byte pieces as sentencepiece does: valid UTF-8 sequences as they
 * are, each invalid byte as U+FFFD. */
static tp_status flush_bytes(sbuf *out, sbuf *bytes, tp_error *err)
{
    size_t i = 0;
    while (i < bytes->len) {
        size_t bad = tp__utf8_invalid_at(bytes->s + i, bytes->len - i);
        if (bad > 0) {
            /* take whole characters up to the first invalid one */
            TP_TRY(sb_add(out, bytes->s + i, bad, err));
            i += bad;
            continue;
        }
        TP_TRY(sb_add(out, "\xEF\xBF\xBD", 3, err));
        i++;
    }
    bytes->len = 0;
    return TP_OK;
}

/* sentencepiece's Decode of pieces t[0..n) (toklist items) appended to out. */
static tp_status spm_decode(const marian_dec *d, const char *buf, const uint32_t *it, size_t a,
                            size_t b, sbuf *out, tp_error *err)
{
    size_t text_start = out->len;
    sbuf bytes = {0};
    int is_bos_ws = 1, bos_ws_seen = 0;
    tp_status st = TP_OK;
    for (size_t i = a; i < b && st == TP_OK; i++) {
        const char *p = buf + it[2 * i];
        size_t len = it[2 * i + 1];
        int32_t id = tp__vocab_find(&d->pieces, p, len);
        if (id < 0) id = d->unk_id;
        int type = d->type[id];
        if (type == TP__SPM_BYTE) {
            int v = byte_of_piece(p, len);
            char c = (char)(v < 0 ? 0 : v);
            st = sb_add(&bytes, &c, 1, err);
            continue;
        }
        st = flush_bytes(out, &bytes, err);
        if (st != TP_OK) break;
        if (bos_ws_seen || out->len > text_start) is_bos_ws = 0;
        bos_ws_seen = 0;
        if (type == TP__SPM_CONTROL) continue;
        if (type == TP__SPM_UNKNOWN) {
            if (strlen(d->unk_piece) == len && memcmp(d->unk_piece, p, len) == 0)
                st = sb_add(out, d->unk_surface, strlen(d->unk_surface), err);
            else
                st = sb_add(out, p, len, err);
            continue;
        }
        if (is_bos_ws && d->bos_ws_rule && len >= 3 && memcmp(p, "\xE2\x96\x81", 3) == 0) {
            p += 3;
            len -= 3;
            bos_ws_seen = !d->remove_extra_ws;
        }
        st = sb_add_unescaped(out, p, len, err);
    }
    if (st == TP_OK) st = flush_bytes(out, &bytes, err);
    free(bytes.s);
    return st;
}

static int py_space(uint32_t c)
{
    return tp__uc_is_whitespace(c) || (c >= 0x1C && c <= 0x1F);
}

static tp_status marian_decode_chain(const tp__decoder *self, const tp__toklist *in,
                                     tp__toklist *out, tp_error *err)
{
    const marian_dec *d = (const marian_dec *)self;
    const uint32_t *it = in->items.data;
    const char *buf = in->buf.data;
    sbuf s = {0};
    tp_status st = TP_OK;
    size_t run = 0, n = in->items.len;
    for (size_t i = 0; i < n && st == TP_OK; i++) {
        if (tp__vocab_find(&d->specials, buf + it[2 * i], it[2 * i + 1]) < 0) continue;
        st = spm_decode(d, buf, it, run, i, &s, err);
        if (st == TP_OK) st = sb_add(&s, buf + it[2 * i], it[2 * i + 1], err);
        if (st == TP_OK) st = sb_add(&s, " ", 1, err);
        run = i + 1;
    }
    if (st == TP_OK) st = spm_decode(d, buf, it, run, n, &s, err);
    if (st == TP_OK) {
        /* U+2581 left in special tokens becomes a space too; then str.strip() */
        sbuf o = {0};
        st = sb_add_unescaped(&o, s.s ? s.s : "", s.len, err);
        if (st == TP_OK) {
            size_t a = 0, b = o.len;
            while (a < b) {
                uint32_t c;
                int k = tp__utf8_decode(o.s + a, b - a, &c);
                if (!py_space(c)) break;
                a += (size_t)k;
            }
            while (b > a) {
                size_t k = b - 1;
                while (k > a && ((unsigned char)o.s[k] & 0xC0) == 0x80) k--;
                uint32_t c;
                tp__utf8_decode(o.s + k, b - k, &c);
                if (!py_space(c)) break;
                b = k;
            }
            st = tp__toklist_add(out, o.s ? o.s + a : "", b - a, err);
        }
        free(o.s);
    }
    free(s.s);
    return st;
}

static void marian_dec_free(tp__decoder *self)
{
    marian_dec *d = (marian_dec *)self;
    tp__vocab_free(&d->pieces);
    tp__vocab_free(&d->specials);
    free(d->type);
    free(d->unk_piece);
    free(d->unk_surface);
    free(d);
}

static const tp__decoder_ops marian_dec_ops = {"MarianSentencePiece", marian_decode_chain,
                                               marian_dec_free};

static tp_status marian_dec_new(const tp__spm_model *spm, const tp_tokenizer *tok,
                                tp__decoder **out, tp_error *err)
{
    marian_dec *d = calloc(1, sizeof *d);
    if (!d) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    d->base.ops = &marian_dec_ops;
    tp_status st = tp__vocab_init(&d->pieces, spm->n_pieces, err);
    if (st == TP_OK) st = tp__vocab_init(&d->specials, tok->added.n + 8, err);
    d->type = malloc(spm->n_pieces);
    d->unk_piece = strdup(tp__spm_piece_str(spm, (size_t)spm->unk_id));
    d->unk_surface = strdup(spm->unk_surface);
    if (st == TP_OK && (!d->type || !d->unk_piece || !d->unk_surface))
        st = tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    /* normal pieces first, reserved ones after: PieceToId looks at those first */
    for (int pass = 0; pass < 2 && st == TP_OK; pass++)
        for (size_t i = 0; i < spm->n_pieces && st == TP_OK; i++) {
            int t = spm->pieces[i].type;
            int normal = t == TP__SPM_NORMAL || t == TP__SPM_USER_DEFINED || t == TP__SPM_UNUSED;
            d->type[i] = (uint8_t)t;
            if (normal == (pass == 0))
                st = tp__vocab_add(&d->pieces, tp__spm_piece_str(spm, i), spm->pieces[i].len,
                                   (int32_t)i, err);
        }
    d->unk_id = spm->unk_id;
    d->bos_ws_rule = spm->add_dummy_prefix || spm->remove_extra_whitespaces;
    d->remove_extra_ws = spm->remove_extra_whitespaces;
    for (size_t i = 0; i < tok->added.n && st == TP_OK; i++)
        if (tok->added.tokens[i].special)
            st = tp__vocab_add(&d->specials, tok->added.tokens[i].content,
                               tok->added.tokens[i].len, (int32_t)i, err);
    for (int r = 0; r < TP__ROLE_COUNT && st == TP_OK; r++)
        if (tok->role_token[r])
            st = tp__vocab_add(&d->specials, tok->role_token[r], strlen(tok->role_token[r]), r, err);
    if (st != TP_OK) {
        marian_dec_free(&d->base);
        return st;
    }
    *out = &d->base;
    return TP_OK;
}

/* ------------------------------------------------------------ Marian */

static tp_status load_vocab_json(const char *dir, tp__vocab *v, tp_error *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    cJSON *j = NULL;
    TP_TRY(tp__json_load(path, &j, err));
    tp_status st = TP_OK;
    if (!cJSON_IsObject(j))
        st = tp__error(err, TP_ERR_FORMAT, "%s: must be an object mapping tokens to ids", path);
    if (st == TP_OK) st = tp__vocab_init(v, (size_t)cJSON_GetArraySize(j), err);
    const cJSON *it;
    if (st == TP_OK) {
        cJSON_ArrayForEach(it, j)
        {
            if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e8 ||
                it->valuedouble != (double)(int32_t)it->valuedouble) {
                st = tp__error(err, TP_ERR_FORMAT,
                               "%s: entry '%.64s' must be a non-negative integer id", path,
                               it->string ? it->string : "");
                break;
            }
            const char *k = it->string ? it->string : "";
            st = tp__vocab_add(v, k, strlen(k), (int32_t)it->valuedouble, err);
            if (st != TP_OK) break;
        }
        if (st != TP_OK) tp__vocab_free(v);
    }
    cJSON_Delete(j);
    return st;
}

static tp_status load_marian(tp_tokenizer *tok, const char *dir, const cJSON *config,
                             tp_error *err)
{
    const char *cfg = "tokenizer_config.json";
    int separate;
    TP_TRY(tp__json_bool(config, "separate_vocabs", 0, &separate, cfg, err));
    if (separate)
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: separate_vocabs (target_vocab.json) is not supported yet", dir);
    TP_TRY(default_role(tok, TP__ROLE_EOS, "</s>", err));
    TP_TRY(default_role(tok, TP__ROLE_UNK, "<unk>", err));
    TP_TRY(default_role(tok, TP__ROLE_PAD, "<pad>", err));
    if (!file_exists(dir, "vocab.json"))
        return tp__error(err, TP_ERR_NOT_FOUND, "%s: source.spm needs vocab.json beside it", dir);

    tp__vocab vocab;
    TP_TRY(load_vocab_json(dir, &vocab, err));
    const char *unk = tok->role_token[TP__ROLE_UNK];
    int32_t unk_id = tp__vocab_find(&vocab, unk, strlen(unk));
    if (unk_id < 0) {
        tp__vocab_free(&vocab);
        return tp__error(err, TP_ERR_FORMAT, "%s/vocab.json: the unk token '%s' must be in the vocab",
                         dir, unk);
    }
    /* specials keep their vocab.json ids; others go past the end */
    int32_t next_id = (int32_t)vocab.count;
    static const int order[] = {TP__ROLE_BOS, TP__ROLE_EOS, TP__ROLE_UNK, TP__ROLE_SEP,
                                TP__ROLE_PAD, TP__ROLE_CLS, TP__ROLE_MASK};
    tp_status st = config_added_tokens(tok, config, &next_id, err);
    if (next_id < (int32_t)vocab.count) next_id = (int32_t)vocab.count;
    for (size_t i = 0; i < sizeof order / sizeof order[0] && st == TP_OK; i++) {
        const char *t = tok->role_token[order[i]];
        st = add_special(tok, t, t ? tp__vocab_find(&vocab, t, strlen(t)) : -1, &next_id, err);
    }

    tp__spm_model src, tgt;
    memset(&src, 0, sizeof src);
    memset(&tgt, 0, sizeof tgt);
    if (st == TP_OK) st = load_spm(dir, "source.spm", &src, err);
    /* transformers 5 decodes with the source model unless separate_vocabs (its
     * _decode defaults use_source_tokenizer to not separate_vocabs); the pieces
     * known to it decide which leading U+2581 is dropped */
    if (st == TP_OK) st = load_spm(dir, "source.spm", &tgt, err);
    if (st == TP_OK) st = tp__spm_normalizer_new(&src, "source.spm", &tok->normalizer, err);
    if (st == TP_OK) st = tp__unigram_spm_new(&src, &vocab, unk_id, &tok->model, err);
    int32_t eos = added_id(tok, tok->role_token[TP__ROLE_EOS]);
    if (st == TP_OK && eos >= 0) {
        tp__piece single[2] = {{1, 0, 0, NULL, 0}, {0, 0, 0, &eos, 1}};
        tp__piece pair[3] = {{1, 0, 0, NULL, 0}, {1, 1, 0, NULL, 0}, {0, 0, 0, &eos, 1}};
        st = tp__template_processing_new(single, 2, pair, 3, &tok->post_processor, err);
    }
    /* added tokens are matched on the raw text (none is normalized here) */
    if (st == TP_OK) st = tp__added_finish(&tok->added, NULL, err);
    if (st == TP_OK) st = marian_dec_new(&tgt, tok, &tok->decoder, err);
    tp__spm_model_free(&src);
    tp__spm_model_free(&tgt);
    tp__vocab_free(&vocab);
    return st;
}

tp_status tp__spm_load_legacy(tp_tokenizer *tok, const char *dir, const cJSON *config,
                              tp_error *err)
{
    if (file_exists(dir, "source.spm")) return load_marian(tok, dir, config, err);
    if (file_exists(dir, "spiece.model")) return load_t5(tok, dir, config, err);
    return tp__error(err, TP_ERR_NOT_FOUND, "%s: no spiece.model or source.spm", dir);
}
