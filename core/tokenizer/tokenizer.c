/* tokenizer.c: the public tokenizer API: loading (tokenizer.json or the legacy
 * files, with tokenizer_config.json and special_tokens_map.json), the encode
 * pipeline (added tokens, normalizer, pre-tokenizer, model with tokenizers 0.23's
 * truncation early exit, truncation with overflowing windows, post-processor
 * template, padding), decode and the vocabulary queries. See tok_internal.h for
 * the design. Thread-safety: a loaded tokenizer is read-only; encode and decode
 * keep their state on the stack and in a per-call work area, so they may run
 * concurrently on one handle. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/encoding.h"
#include "tokenizer/tok_internal.h"

static const char *const role_names[TP__ROLE_COUNT] = {"pad", "unk", "cls", "sep",
                                                       "mask", "bos", "eos"};

/* ------------------------------------------------------------ lifetime */

void tp_tokenizer_free(tp_tokenizer *tok)
{
    if (!tok) return;
    tp__normalizer_free(tok->normalizer);
    tp__pre_tokenizer_free(tok->pre_tokenizer);
    tp__model_free(tok->model);
    tp__post_processor_free(tok->post_processor);
    tp__decoder_free(tok->decoder);
    tp__added_free(&tok->added);
    for (int r = 0; r < TP__ROLE_COUNT; r++) free(tok->role_token[r]);
    free(tok->chat_template);
    free(tok);
}

void tp__model_free(tp__model *m)
{
    if (m) m->ops->free(m);
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Reads an optional JSON file: absent -> *out NULL and TP_OK. */
static tp_status load_optional_json(const char *dir, const char *name, cJSON **out,
                                    tp_error *err)
{
    char path[4096];
    *out = NULL;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "%s: path too long", dir);
    if (!is_file(path)) return TP_OK;
    return tp__json_load(path, out, err);
}

static tp_status set_role(tp_tokenizer *tok, int role, const char *s, tp_error *err)
{
    free(tok->role_token[role]);
    tok->role_token[role] = NULL;
    if (!s) return TP_OK;
    tok->role_token[role] = strdup(s);
    if (!tok->role_token[role]) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    return TP_OK;
}

/* tokenizer_config.json, then special_tokens_map.json (which wins, as in
 * transformers' from_pretrained). */
static tp_status apply_configs(tp_tokenizer *tok, const cJSON *config, const cJSON *stmap,
                               tp_error *err)
{
    const char *cfg = "tokenizer_config.json";
    for (int r = 0; r < TP__ROLE_COUNT; r++) {
        char key[32];
        snprintf(key, sizeof key, "%s_token", role_names[r]);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(config, key);
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(stmap, key);
        if (tp__config_token_string(m)) v = m;
        if (v && !cJSON_IsNull(v) && !tp__config_token_string(v))
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: key '%s' must be a string or an object with 'content'",
                             v == m ? "special_tokens_map.json" : cfg, key);
        TP_TRY(set_role(tok, r, tp__config_token_string(v), err));
    }
    double mml;
    TP_TRY(tp__json_double(config, "model_max_length", 0, &mml, cfg, err));
    tok->model_max_length = (mml >= 1e29 || mml <= 0) ? 0 : mml > INT_MAX ? INT_MAX : (int)mml;
    const char *side;
    TP_TRY(tp__json_string(config, "padding_side", "right", &side, cfg, err));
    if (strcmp(side, "left") && strcmp(side, "right"))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'padding_side' must be \"left\" or \"right\"",
                         cfg);
    tok->pad_left = strcmp(side, "left") == 0;
    TP_TRY(tp__json_string(config, "truncation_side", "right", &side, cfg, err));
    if (strcmp(side, "left") && strcmp(side, "right"))
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: key 'truncation_side' must be \"left\" or \"right\"", cfg);
    tok->truncate_left = strcmp(side, "left") == 0;
    /* transformers 5 defaults to False */
    TP_TRY(tp__json_bool(config, "clean_up_tokenization_spaces", 0, &tok->clean_up_spaces, cfg,
                         err));
    return TP_OK;
}

static tp_status load_json_file(tp_tokenizer *tok, const char *path, tp_error *err)
{
    char *data = NULL;
    size_t size = 0;
    TP_TRY(tp__read_file(path, &data, &size, err));
    tp_status st = tp__tokenizer_load_json(tok, data, size, path, err);
    free(data);
    return st;
}

tp_status tp_tokenizer_new(const char *model_dir, tp_tokenizer_source source,
                           tp_tokenizer **out, tp_error *err)
{
    if (!out) return tp__error(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenizer_new: out is NULL");
    *out = NULL;
    if (!model_dir)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenizer_new: model_dir is NULL");
    if (source != TP_TOKENIZER_AUTO && source != TP_TOKENIZER_JSON &&
        source != TP_TOKENIZER_LEGACY)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenizer_new: unknown source %d",
                         (int)source);
    struct stat dst;
    if (stat(model_dir, &dst) != 0 || !S_ISDIR(dst.st_mode))
        return tp__error(err, TP_ERR_NOT_FOUND, "%s: no such directory (looking for tokenizer files)",
                         model_dir);
    char json_path[4096];
    if ((size_t)snprintf(json_path, sizeof json_path, "%s/tokenizer.json", model_dir) >=
        sizeof json_path)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "%s: path too long", model_dir);
    int have_json = is_file(json_path);
    if (source == TP_TOKENIZER_JSON && !have_json)
        return tp__error(err, TP_ERR_NOT_FOUND, "%s: no tokenizer.json", model_dir);

    tp_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    cJSON *config = NULL, *stmap = NULL;
    tp_status st = load_optional_json(model_dir, "tokenizer_config.json", &config, err);
    if (st == TP_OK) st = load_optional_json(model_dir, "special_tokens_map.json", &stmap, err);
    if (st == TP_OK) st = apply_configs(tok, config, stmap, err);
    if (st == TP_OK) st = tp__tokenizer_load_chat_template(tok, model_dir, config, err);
    if (st == TP_OK) {
        if (have_json && source != TP_TOKENIZER_LEGACY) {
            st = load_json_file(tok, json_path, err);
        } else {
            st = tp__tokenizer_load_legacy(tok, model_dir, config, err);
            if (st == TP_ERR_NOT_FOUND && source == TP_TOKENIZER_AUTO)
                st = tp__error(err, TP_ERR_NOT_FOUND,
                               "%s: no tokenizer files (looked for tokenizer.json, vocab.txt, "
                               "vocab.json + merges.txt, SentencePiece models)",
                               model_dir);
        }
    }
    cJSON_Delete(config);
    cJSON_Delete(stmap);
    if (st != TP_OK) {
        tp_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return TP_OK;
}

tp_status tp__tokenizer_from_json_buffer(const char *json, size_t len, tp_tokenizer **out,
                                         tp_error *err)
{
    *out = NULL;
    tp_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    tp_status st = tp__tokenizer_load_json(tok, json, len, "tokenizer.json", err);
    if (st != TP_OK) {
        tp_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return TP_OK;
}

/* ------------------------------------------------------------ vocabulary */

int32_t tp__token_to_id(const tp_tokenizer *tok, const char *s, size_t len)
{
    const tp__added_token *t = tp__added_by_content(&tok->added, s, len);
    if (t) return t->id;
    return tok->model ? tok->model->ops->token_to_id(tok->model, s, len) : -1;
}

int32_t tp_tokenizer_token_to_id(tp_tokenizer *tok, const char *token)
{
    if (!tok || !token) return -1;
    return tp__token_to_id(tok, token, strlen(token));
}

static const char *id_to_token(const tp_tokenizer *tok, int32_t id, size_t *len)
{
    const tp__added_token *t = tp__added_by_id(&tok->added, id);
    if (t) {
        *len = t->len;
        return t->content;
    }
    return tok->model->ops->id_to_token(tok->model, id, len);
}

const char *tp_tokenizer_id_to_token(tp_tokenizer *tok, int32_t id)
{
    size_t len;
    if (!tok || id < 0) return NULL;
    return id_to_token(tok, id, &len);
}

size_t tp_tokenizer_vocab_size(tp_tokenizer *tok)
{
    if (!tok) return 0;
    size_t n = tok->model->ops->vocab_size(tok->model);
    for (size_t i = 0; i < tok->added.n; i++) {
        size_t len;
        const tp__added_token *t = &tok->added.tokens[i];
        if (!tok->model->ops->id_to_token(tok->model, t->id, &len)) n++;
    }
    return n;
}

int tp_tokenizer_model_max_length(tp_tokenizer *tok) { return tok ? tok->model_max_length : 0; }

int32_t tp_tokenizer_special_id(tp_tokenizer *tok, const char *role)
{
    if (!tok || !role) return -1;
    for (int r = 0; r < TP__ROLE_COUNT; r++)
        if (strcmp(role, role_names[r]) == 0)
            return tok->role_token[r] ? tp_tokenizer_token_to_id(tok, tok->role_token[r]) : -1;
    return -1;
}

/* ------------------------------------------------------------ encode: one sequence */

static void seq_reset(tp__seq *s)
{
    s->ids.elem = s->offs.elem = s->words.elem = sizeof(int32_t);
    s->ids.len = s->offs.len = s->words.len = 0;
}

/* The truncation early exit of tokenizers 0.23 (which transformers 5.17 ships, and
 * which its reference outputs show). Source: huggingface/tokenizers PR #1990
 * (commit f5fde3db, first released in 0.23.1, unchanged in 0.23.2; issue #2091 and
 * the still-open PR #2098 discuss reverting it):
 *   tokenizers/src/tokenizer/mod.rs, Tokenizer::do_tokenize (called by
 *   encode_single_sequence once per sequence of the input): when truncation params
 *   are set, and unless the strategy is OnlySecond and this is the first sequence
 *   (type_id 0), the pre-tokenized string is tokenized with
 *   tokenizers/src/tokenizer/pre_tokenizer.rs,
 *   PreTokenizedString::tokenize_with_limit(model, max_length, direction).
 * The rule, per sequence (each sequence of a pair on its own, with its own count):
 *  - the limit is the truncation max_length itself, NOT max_length minus the
 *    special tokens the post-processor adds, and the count is of this sequence's
 *    tokens only;
 *  - direction right: walk the pre-tokenizer's splits (words) in order, adding
 *    their token counts; added-token splits (already tokenized) are counted but
 *    never stop the walk; after each split the model tokenized, stop once the
 *    count is >= max_length; every later split is dropped. So whole words are
 *    kept, the last kept word may overshoot, and the sequence keeps
 *    >= max_length tokens (or all of them);
 *  - direction left: the same from the last split backwards; the earlier splits
 *    are dropped and the word indices restart at 0 on the first kept split.
 * Truncation then runs as before (Encoding::truncate / truncate_encodings, with
 * max_length minus the special tokens, longest_first / only_first / only_second,
 * stride) on what is left, so the first window is what it always was but the
 * overflowing windows stop near max_length tokens into each sequence instead of
 * covering the whole text (tokenizers <= 0.22 tokenized everything). The early
 * exit is taken whenever truncation is on, whether or not it ends up cutting. */
typedef struct early_exit {
    size_t limit; /* 0: tokenize everything */
    int left;
} early_exit;

/* The left early exit on already tokenized splits: gives the same tokens as
 * tokenizing backwards, since a split's tokens do not depend on its neighbours. */
static void early_exit_left(tp__work *w, size_t limit)
{
    tp__tok *t = w->toks.data;
    const tp__split *sp = w->splits.data;
    size_t k = w->toks.len, total = 0, first = 0;
    for (size_t i = w->splits.len; i-- > 0;) {
        size_t end = k;
        while (k > 0 && t[k - 1].word == (int32_t)i) k--;
        total += end - k;
        if (sp[i].added < 0 && total >= limit) {
            first = i;
            break;
        }
    }
    if (!first) return;
    size_t kept = w->toks.len - k;
    memmove(t, t + k, kept * sizeof *t);
    w->toks.len = kept;
    for (size_t i = 0; i < kept; i++) t[i].word -= (int32_t)first;
}

/* Runs added-token splitting, normalizer, pre-tokenizer and model over `text`
 * and leaves ids, code point offsets and word indices in `seq`; `ex` is the
 * truncation early exit for this sequence. */
static tp_status encode_sequence(const tp_tokenizer *tok, tp__work *w, const char *text,
                                 size_t len, early_exit ex, tp__seq *seq, tp_error *err)
{
    seq_reset(seq);
    w->splits.elem = w->splits2.elem = sizeof(tp__split);
    w->toks.elem = sizeof(tp__tok);
    w->char_at.elem = sizeof(uint32_t);
    w->splits.len = w->toks.len = 0;
    if (len > UINT32_MAX / 4)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "text is too long (%zu bytes)", len);

    /* the raw text, each byte carrying the span of its character */
    w->arena.len = 0;
    TP_TRY(tp__nstr_reserve(&w->arena, len * 2 + 16, err));
    TP_TRY(tp__vec_reserve(&w->char_at, len + 1, err));
    uint32_t *char_at = w->char_at.data;
    memcpy(w->arena.s, text, len);
    uint32_t nchar = 0;
    for (size_t i = 0; i < len;) {
        size_t k = 1;
        unsigned char c = (unsigned char)text[i];
        if (c >= 0xF0) k = 4;
        else if (c >= 0xE0) k = 3;
        else if (c >= 0xC0) k = 2;
        tp__span sp = {(uint32_t)i, (uint32_t)(i + k)};
        for (size_t j = 0; j < k; j++) {
            w->arena.al[i + j] = sp;
            char_at[i + j] = nchar;
        }
        nchar++;
        i += k;
    }
    char_at[len] = nchar;
    w->arena.len = len;
    if (len) {
        tp__split *s = tp__vec_push(&w->splits, err);
        if (!s) return err ? err->status : TP_ERR_NOMEM;
        s->off = 0;
        s->len = (uint32_t)len;
        s->added = -1;
    }

    TP_TRY(tp__added_split(&tok->added, 0, w, err));

    if (tok->normalizer) {
        tp__split *sp = w->splits.data;
        size_t kept = 0;
        for (size_t i = 0; i < w->splits.len; i++) {
            tp__split s = sp[i];
            if (s.added < 0) {
                w->n1.len = 0;
                TP_TRY(tp__nstr_append(&w->n1, w->arena.s + s.off, s.len, w->arena.al + s.off,
                                       (tp__span){0, 0}, err));
                TP_TRY(tp__normalize(tok->normalizer, &w->n1, &w->n2, err));
                if (w->arena.len + w->n1.len > UINT32_MAX)
                    return tp__error(err, TP_ERR_INVALID_ARGUMENT, "text is too long");
                s.off = (uint32_t)w->arena.len;
                s.len = (uint32_t)w->n1.len;
                TP_TRY(tp__nstr_append(&w->arena, w->n1.s, w->n1.len, w->n1.al, (tp__span){0, 0},
                                       err));
                if (!s.len) continue; /* empty pieces vanish, as in tokenizers */
            }
            sp[kept++] = s;
        }
        w->splits.len = kept;
        TP_TRY(tp__added_split(&tok->added, 1, w, err));
    }

    if (tok->pre_tokenizer) TP_TRY(tok->pre_tokenizer->ops->pre_tokenize(tok->pre_tokenizer, w, err));

    for (size_t i = 0; i < w->splits.len; i++) {
        tp__split s = ((tp__split *)w->splits.data)[i];
        if (s.added >= 0) {
            tp__tok *t = tp__vec_push(&w->toks, err);
            if (!t) return err ? err->status : TP_ERR_NOMEM;
            t->id = s.added;
            t->start = s.off;
            t->end = s.off + s.len;
            t->word = (int32_t)i;
        } else {
            TP_TRY(tok->model->ops->tokenize(tok->model, w, s.off, s.len, (int32_t)i, err));
            if (ex.limit && !ex.left && w->toks.len >= ex.limit) break;
        }
    }
    if (ex.limit && ex.left) early_exit_left(w, ex.limit);

    size_t n = w->toks.len;
    TP_TRY(tp__vec_reserve(&seq->ids, n, err));
    TP_TRY(tp__vec_reserve(&seq->offs, 2 * n, err));
    TP_TRY(tp__vec_reserve(&seq->words, n, err));
    const tp__tok *t = w->toks.data;
    const tp__span *al = w->arena.al;
    int32_t *ids = seq->ids.data, *offs = seq->offs.data, *words = seq->words.data;
    char_at = w->char_at.data;
    for (size_t i = 0; i < n; i++) {
        uint32_t bs, be;
        if (t[i].end > t[i].start) {
            bs = al[t[i].start].start;
            be = al[t[i].end - 1].end;
        } else {
            bs = be = t[i].start < w->arena.len ? al[t[i].start].start : (uint32_t)len;
        }
        ids[i] = t[i].id;
        offs[2 * i] = (int32_t)char_at[bs];
        offs[2 * i + 1] = (int32_t)char_at[be];
        words[i] = t[i].word;
    }
    seq->ids.len = seq->words.len = n;
    seq->offs.len = 2 * n;
    if (tok->post_processor && tok->post_processor->process_offsets)
        tok->post_processor->process_offsets(tok->post_processor, w, seq);
    return TP_OK;
}

/* ------------------------------------------------------------ truncation */

typedef struct window {
    size_t start, len;
} window;

/* The windows tokenizers' Encoding::truncate cuts: the first is the kept part,
 * the others the overflowing ones. */
static tp_status make_windows(size_t n, size_t max_len, size_t stride, int left, tp__vec *out,
                              const char *which, tp_error *err)
{
    out->elem = sizeof(window);
    out->len = 0;
    window *wd;
    if (max_len >= n) {
        if (!(wd = tp__vec_push(out, err))) return err ? err->status : TP_ERR_NOMEM;
        wd->start = 0;
        wd->len = n;
        return TP_OK;
    }
    if (max_len == 0) {
        if (!(wd = tp__vec_push(out, err))) return err ? err->status : TP_ERR_NOMEM;
        wd->start = wd->len = 0;
        if (!(wd = tp__vec_push(out, err))) return err ? err->status : TP_ERR_NOMEM;
        wd->start = 0;
        wd->len = n;
        return TP_OK;
    }
    if (stride >= max_len)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "stride (%zu) must be less than the %zu tokens of the %s sequence left "
                         "after truncation (max_length minus special tokens)",
                         stride, max_len, which);
    size_t step = max_len - stride;
    if (!left) {
        for (size_t start = 0; start < n; start += step) {
            size_t stop = start + max_len < n ? start + max_len : n;
            if (!(wd = tp__vec_push(out, err))) return err ? err->status : TP_ERR_NOMEM;
            wd->start = start;
            wd->len = stop - start;
            if (stop == n) break;
        }
    } else {
        for (size_t k = 0; k < n; k += step) {
            size_t stop = n - k; /* exclusive */
            size_t start = stop > max_len ? stop - max_len : 0;
            if (!(wd = tp__vec_push(out, err))) return err ? err->status : TP_ERR_NOMEM;
            wd->start = start;
            wd->len = stop - start;
            if (start == 0) break;
        }
    }
    return TP_OK;
}

/* ------------------------------------------------------------ encode: rows */

typedef struct enc_ctx {
    const tp_tokenizer *tok;
    const tp_encode_options *o;
    int max_length; /* resolved; 0 none */
    tp__work w;
    tp__vec win[2];
    tp__rows rows;
} enc_ctx;

static tp_status emit_row(enc_ctx *c, size_t sample, const tp__piece *pieces, size_t np,
                          int pair, const window *wa, const window *wb, tp_error *err)
{
    const tp__seq *seq = c->w.seq;
    const window *win[2] = {wa, wb};
    size_t total = 0;
    for (size_t i = 0; i < np; i++)
        total += pieces[i].is_seq ? win[pieces[i].seq] ? win[pieces[i].seq]->len : 0
                                  : pieces[i].n_ids;
    TP_TRY(tp__rows_begin(&c->rows, sample, err));
    TP_TRY(tp__rows_reserve(&c->rows, total, err));
    for (size_t i = 0; i < np; i++) {
        const tp__piece *p = &pieces[i];
        if (!p->is_seq) {
            if (!c->o->add_special_tokens) continue;
            for (size_t k = 0; k < p->n_ids; k++)
                tp__rows_push(&c->rows, p->ids[k], p->type_id, 1, 0, 0, -1, -1);
            continue;
        }
        if (p->seq == 1 && !pair) continue;
        const window *wn = win[p->seq];
        const int32_t *ids = seq[p->seq].ids.data, *offs = seq[p->seq].offs.data,
                      *words = seq[p->seq].words.data;
        for (size_t k = wn->start; k < wn->start + wn->len; k++)
            tp__rows_push(&c->rows, ids[k], p->type_id, 0, offs[2 * k], offs[2 * k + 1], words[k],
                          p->seq);
    }
    return TP_OK;
}

static tp_status encode_one(enc_ctx *c, size_t sample, const char *text, const char *pair_text,
                            tp_error *err)
{
    const tp_tokenizer *tok = c->tok;
    int pair = pair_text != NULL;
    early_exit ex = {0, tok->truncate_left};
    if (c->o->truncation != TP_TRUNCATE_NONE && c->max_length > 0)
        ex.limit = (size_t)c->max_length;
    early_exit ex1 = ex;
    if (c->o->truncation == TP_TRUNCATE_ONLY_SECOND) ex1.limit = 0;
    TP_TRY(encode_sequence(tok, &c->w, text, strlen(text), ex1, &c->w.seq[0], err));
    if (pair)
        TP_TRY(encode_sequence(tok, &c->w, pair_text, strlen(pair_text), ex, &c->w.seq[1], err));
    size_t n1 = c->w.seq[0].ids.len, n2 = pair ? c->w.seq[1].ids.len : 0;

    /* the template (or the default: A type 0, B type 1, nothing added) */
    static const tp__piece def_single[1] = {{1, 0, 0, NULL, 0}};
    static const tp__piece def_pair[2] = {{1, 0, 0, NULL, 0}, {1, 1, 1, NULL, 0}};
    const tp__piece *pieces = pair ? def_pair : def_single;
    size_t np = pair ? 2 : 1;
    if (tok->post_processor) tok->post_processor->ops->layout(tok->post_processor, pair, &pieces, &np);
    size_t n_added = 0;
    for (size_t i = 0; i < np; i++)
        if (!pieces[i].is_seq) n_added += pieces[i].n_ids;

    /* truncation, as tokenizers' truncate_encodings */
    size_t t1 = n1, t2 = n2;
    int truncate = c->o->truncation != TP_TRUNCATE_NONE && c->max_length > 0;
    size_t max_len = 0;
    if (truncate) {
        size_t ml = (size_t)c->max_length;
        if (c->o->add_special_tokens && n_added) {
            if (ml < n_added)
                return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                 "max_length %zu is less than the %zu special tokens the %s "
                                 "template adds",
                                 ml, n_added, pair ? "pair" : "single");
            ml -= n_added;
        }
        max_len = ml;
        if (n1 + n2 <= max_len) {
            truncate = 0;
        } else if (max_len == 0) {
            t1 = t2 = 0;
        } else {
            size_t to_remove = n1 + n2 - max_len;
            switch (c->o->truncation) {
            case TP_TRUNCATE_LONGEST_FIRST:
                if (pair) {
                    size_t a = n1, b = n2;
                    int swap = a > b;
                    if (swap) { size_t x = a; a = b; b = x; }
                    if (a > max_len) b = a;
                    else b = a > max_len - a ? a : max_len - a;
                    if (a + b > max_len) {
                        a = max_len / 2;
                        b = a + max_len % 2;
                    }
                    if (swap) { size_t x = a; a = b; b = x; }
                    t1 = a;
                    t2 = b;
                } else {
                    t1 = n1 - to_remove;
                }
                break;
            case TP_TRUNCATE_ONLY_FIRST:
                if (n1 <= to_remove)
                    return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                     "truncation only_first cannot fit max_length %d: the first "
                                     "sequence has %zu tokens and %zu must go",
                                     c->max_length, n1, to_remove);
                t1 = n1 - to_remove;
                break;
            case TP_TRUNCATE_ONLY_SECOND:
                if (!pair)
                    return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                     "truncation only_second needs a pair, but texts[%zu] has "
                                     "none and is longer than max_length %d",
                                     sample, c->max_length);
                if (n2 <= to_remove)
                    return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                     "truncation only_second cannot fit max_length %d: the second "
                                     "sequence has %zu tokens and %zu must go (the first alone "
                                     "has %zu)",
                                     c->max_length, n2, to_remove, n1);
                t2 = n2 - to_remove;
                break;
            default:
                break;
            }
        }
    }
    size_t stride = (size_t)(c->o->stride > 0 ? c->o->stride : 0);
    int left = c->tok->truncate_left;
    TP_TRY(make_windows(n1, truncate ? t1 : n1, stride, left, &c->win[0], "first", err));
    TP_TRY(make_windows(n2, truncate ? t2 : n2, stride, left, &c->win[1], "second", err));
    const window *wa = c->win[0].data, *wb = c->win[1].data;
    size_t na = c->o->return_overflowing ? c->win[0].len : 1;
    size_t nb = c->o->return_overflowing && pair ? c->win[1].len : 1;

    /* the order of tokenizers' Encoding::merge_with over the template */
    TP_TRY(emit_row(c, sample, pieces, np, pair, &wa[0], &wb[0], err));
    for (size_t i = 1; i < na; i++) {
        TP_TRY(emit_row(c, sample, pieces, np, pair, &wa[i], &wb[0], err));
        for (size_t j = 1; j < nb; j++) TP_TRY(emit_row(c, sample, pieces, np, pair, &wa[i], &wb[j], err));
    }
    for (size_t j = 1; j < nb; j++) TP_TRY(emit_row(c, sample, pieces, np, pair, &wa[0], &wb[j], err));
    return TP_OK;
}

void tp_encode_options_init(tp_encode_options *o)
{
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
    o->add_special_tokens = 1;
    o->truncation = TP_TRUNCATE_NONE;
    o->padding = TP_PAD_NONE;
    o->pad_left = -1;
}

tp_status tp_tokenizer_encode(tp_tokenizer *tok, const char *const *texts,
                              const char *const *pairs, size_t n, const tp_encode_options *opts,
                              tp_encoding **out, tp_error *err)
{
    if (!out) return tp__error(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenizer_encode: out is NULL");
    *out = NULL;
    if (!tok || (!texts && n))
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenizer_encode: %s is NULL",
                         tok ? "texts" : "tok");
    tp_encode_options o;
    tp_encode_options_init(&o);
    if (opts) {
        if (opts->struct_size < sizeof o)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "tp_encode_options: struct_size %zu is smaller than %zu (call "
                             "tp_encode_options_init)",
                             opts->struct_size, sizeof o);
        o = *opts;
    }
    if ((int)o.truncation < TP_TRUNCATE_NONE || (int)o.truncation > TP_TRUNCATE_ONLY_SECOND)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "truncation: unknown strategy %d",
                         (int)o.truncation);
    if ((int)o.padding < TP_PAD_NONE || (int)o.padding > TP_PAD_MAX_LENGTH)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "padding: unknown strategy %d",
                         (int)o.padding);
    if (o.max_length < 0 || o.stride < 0 || o.pad_to_multiple_of < 0)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "max_length, stride and pad_to_multiple_of must not be negative");
    for (size_t i = 0; i < n; i++) {
        const char *tx[2] = {texts[i], pairs ? pairs[i] : NULL};
        for (int k = 0; k < 2; k++) {
            if (!tx[k]) {
                if (k == 0)
                    return tp__error(err, TP_ERR_INVALID_ARGUMENT, "texts[%zu] is NULL", i);
                continue;
            }
            size_t len = strlen(tx[k]), bad = tp__utf8_invalid_at(tx[k], len);
            if (bad < len)
                return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                                 "%s[%zu]: text is not valid UTF-8 at byte %zu",
                                 k ? "pairs" : "texts", i, bad);
        }
    }
    int max_length = o.max_length ? o.max_length : tok->model_max_length;
    int32_t pad_id = -1;
    if (o.padding != TP_PAD_NONE) {
        pad_id = tp_tokenizer_special_id(tok, "pad");
        if (pad_id < 0)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "padding requested but the tokenizer has no pad token");
        if (o.padding == TP_PAD_MAX_LENGTH && max_length <= 0)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                             "padding to max_length needs max_length (the tokenizer's "
                             "model_max_length is unbounded)");
    }

    enc_ctx c;
    memset(&c, 0, sizeof c);
    c.tok = tok;
    c.o = &o;
    c.max_length = max_length;
    tp__rows_init(&c.rows);
    tp_status st = TP_OK;
    for (size_t i = 0; i < n && st == TP_OK; i++) st = encode_one(&c, i, texts[i], pairs ? pairs[i] : NULL, err);
    if (st == TP_OK) {
        size_t target = 0;
        if (o.padding == TP_PAD_LONGEST) target = tp__rows_longest(&c.rows);
        else if (o.padding == TP_PAD_MAX_LENGTH) target = (size_t)max_length;
        if (o.padding != TP_PAD_NONE && o.pad_to_multiple_of > 0 &&
            target % (size_t)o.pad_to_multiple_of)
            target += (size_t)o.pad_to_multiple_of - target % (size_t)o.pad_to_multiple_of;
        int left = o.pad_left < 0 ? tok->pad_left : o.pad_left != 0;
        st = tp__rows_finish(&c.rows, target, left, pad_id, out, err);
    }
    tp__rows_free(&c.rows);
    tp__vec_free(&c.win[0]);
    tp__vec_free(&c.win[1]);
    tp__work_free(&c.w);
    return st;
}

/* ------------------------------------------------------------ decode */

tp_status tp_tokenizer_decode(tp_tokenizer *tok, const int32_t *ids, size_t n,
                              int skip_special_tokens, int clean_up, char **out, tp_error *err)
{
    if (!out) return tp__error(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenizer_decode: out is NULL");
    *out = NULL;
    if (!tok || (!ids && n))
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "tp_tokenizer_decode: %s is NULL",
                         tok ? "ids" : "tok");
    tp__toklist in = {0}, dec = {0};
    tp_status st = TP_OK;
    for (size_t i = 0; i < n && st == TP_OK; i++) {
        if (ids[i] < 0) {
            st = tp__error(err, TP_ERR_INVALID_ARGUMENT, "ids[%zu] = %d is negative", i,
                           (int)ids[i]);
            break;
        }
        size_t len;
        const char *t = id_to_token(tok, ids[i], &len);
        if (!t) continue; /* unknown ids are dropped, as tokenizers does */
        if (skip_special_tokens) {
            const tp__added_token *a = tp__added_by_content(&tok->added, t, len);
            if (a && a->special) continue;
        }
        st = tp__toklist_add(&in, t, len, err);
    }
    const tp__toklist *res = &in;
    if (st == TP_OK && tok->decoder) {
        st = tok->decoder->ops->decode_chain(tok->decoder, &in, &dec, err);
        res = &dec;
    }
    if (st == TP_OK) {
        const uint32_t *it = res->items.data;
        size_t count = res->items.len, total = 0;
        for (size_t i = 0; i < count; i++) total += it[2 * i + 1] + 1;
        char *s = malloc(total + 1);
        if (!s) {
            st = tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        } else {
            size_t w = 0;
            for (size_t i = 0; i < count; i++) {
                /* without a decoder tokens are joined with spaces */
                if (i && !tok->decoder) s[w++] = ' ';
                memcpy(s + w, (const char *)res->buf.data + it[2 * i], it[2 * i + 1]);
                w += it[2 * i + 1];
            }
            int cleanup = clean_up < 0 ? tok->clean_up_spaces : clean_up != 0;
            if (cleanup) w = tp__cleanup_spaces(s, w, 0);
            s[w] = '\0';
            *out = s;
        }
    }
    tp__toklist_free(&in);
    tp__toklist_free(&dec);
    return st;
}
