/* legacy_vocab.c: builds a tokenizer from the legacy files when there is no
 * tokenizer.json: vocab.txt + tokenizer_config.json gives the pipeline
 * transformers' BertTokenizer builds (BertNormalizer from do_lower_case,
 * strip_accents and tokenize_chinese_chars; BertPreTokenizer; WordPiece; the
 * [CLS] A [SEP] (B [SEP]) template; the WordPiece decoder). Other legacy formats
 * are reported as unsupported for now. Thread-safety: fills a tokenizer that is
 * not yet shared. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/bpe_family.h"
#include "tokenizer/spm_internal.h"

const char *tp__config_token_string(const cJSON *v)
{
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

static int file_exists(const char *dir, const char *name)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* vocab.txt: one token per line, id = line number. Lines end at \n, \r\n or \r,
 * as Python's universal newlines read them. */
static tp_status load_vocab_txt(const char *path, tp__vocab *v, tp_error *err)
{
    char *data = NULL;
    size_t size = 0;
    TP_TRY(tp__read_file(path, &data, &size, err));
    size_t bad = tp__utf8_invalid_at(data, size);
    if (bad < size) {
        free(data);
        return tp__error(err, TP_ERR_FORMAT, "%s: not valid UTF-8 at byte %zu", path, bad);
    }
    size_t lines = 1;
    for (size_t i = 0; i < size; i++) lines += data[i] == '\n';
    tp_status st = tp__vocab_init(v, lines, err);
    if (st != TP_OK) {
        free(data);
        return st;
    }
    size_t i = 0;
    int32_t id = 0;
    while (i < size && st == TP_OK) {
        size_t j = i;
        while (j < size && data[j] != '\n' && data[j] != '\r') j++;
        if (id == INT32_MAX) {
            st = tp__error(err, TP_ERR_FORMAT, "%s: too many lines", path);
            break;
        }
        st = tp__vocab_add(v, data + i, j - i, id++, err);
        if (j < size && data[j] == '\r' && j + 1 < size && data[j + 1] == '\n') j++;
        i = j + 1;
    }
    free(data);
    if (st != TP_OK) tp__vocab_free(v);
    return st;
}

static tp_status add_special(tp_tokenizer *tok, const tp__vocab *vocab, const char *content,
                             int32_t *next_id, tp_error *err)
{
    if (!content || tp__added_by_content(&tok->added, content, strlen(content))) return TP_OK;
    int32_t id = tp__vocab_find(vocab, content, strlen(content));
    if (id < 0) id = (*next_id)++;
    return tp__added_add(&tok->added, content, id, 1, 0, 0, 0, 0, err);
}

tp_status tp__tokenizer_load_legacy(tp_tokenizer *tok, const char *dir, const cJSON *config,
                                    tp_error *err)
{
    if (file_exists(dir, "vocab.json") && file_exists(dir, "merges.txt"))
        return tp__bpe_load_legacy(tok, dir, config, err);
    if (!file_exists(dir, "vocab.txt") &&
        (file_exists(dir, "source.spm") || file_exists(dir, "spiece.model")))
        return tp__spm_load_legacy(tok, dir, config, err);
    if (!file_exists(dir, "vocab.txt")) {
        static const char *const others[] = {"vocab.json", "spiece.model", "sentencepiece.bpe.model",
                                             "source.spm", "tokenizer.model"};
        for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
            if (file_exists(dir, others[i]))
                return tp__error(err, TP_ERR_UNSUPPORTED,
                                 "%s: legacy tokenizer file %s is not supported yet", dir,
                                 others[i]);
        return tp__error(err, TP_ERR_NOT_FOUND,
                         "%s: no legacy tokenizer files (looked for vocab.txt, vocab.json + "
                         "merges.txt, spiece.model, sentencepiece.bpe.model, source.spm, "
                         "tokenizer.model)",
                         dir);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    const char *cfg_name = "tokenizer_config.json";
    int lower, chinese, strip = -1;
    TP_TRY(tp__json_bool(config, "do_lower_case", 1, &lower, cfg_name, err));
    TP_TRY(tp__json_bool(config, "tokenize_chinese_chars", 1, &chinese, cfg_name, err));
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(config, "strip_accents");
    if (sa && !cJSON_IsNull(sa)) TP_TRY(tp__json_bool(config, "strip_accents", 0, &strip, cfg_name, err));

    /* BertTokenizer's defaults for the roles the files leave out */
    static const char *const defaults[TP__ROLE_COUNT] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                         "[MASK]", NULL, NULL};
    for (int r = 0; r < TP__ROLE_COUNT; r++) {
        if (!tok->role_token[r] && defaults[r]) {
            tok->role_token[r] = strdup(defaults[r]);
            if (!tok->role_token[r]) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        }
    }

    tp__vocab vocab;
    TP_TRY(load_vocab_txt(path, &vocab, err));
    int32_t next_id = (int32_t)vocab.n_ids;
    tp_status st = TP_OK;

    /* added_tokens_decoder: {"<id>": {"content": ..., flags}} */
    const cJSON *atd = cJSON_GetObjectItemCaseSensitive(config, "added_tokens_decoder");
    if (cJSON_IsObject(atd)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, atd)
        {
            const char *content = tp__config_token_string(it);
            char *end = NULL;
            long id = strtol(it->string ? it->string : "", &end, 10);
            if (!content || !end || *end || id < 0 || id > INT32_MAX) {
                st = tp__error(err, TP_ERR_FORMAT,
                               "%s: key 'added_tokens_decoder.%s' must map an id to a token",
                               cfg_name, it->string ? it->string : "");
                break;
            }
            int special, single_word, lstrip, rstrip, normalized;
            if ((st = tp__json_bool(it, "special", 0, &special, cfg_name, err)) != TP_OK) break;
            if ((st = tp__json_bool(it, "single_word", 0, &single_word, cfg_name, err)) != TP_OK) break;
            if ((st = tp__json_bool(it, "lstrip", 0, &lstrip, cfg_name, err)) != TP_OK) break;
            if ((st = tp__json_bool(it, "rstrip", 0, &rstrip, cfg_name, err)) != TP_OK) break;
            if ((st = tp__json_bool(it, "normalized", !special, &normalized, cfg_name, err)) != TP_OK)
                break;
            st = tp__added_add(&tok->added, content, (int32_t)id, special, single_word, lstrip,
                               rstrip, normalized, err);
            if (st != TP_OK) break;
            if ((int32_t)id >= next_id) next_id = (int32_t)id + 1;
        }
    }
    /* transformers' special-token attribute order */
    static const int order[] = {TP__ROLE_BOS, TP__ROLE_EOS, TP__ROLE_UNK, TP__ROLE_SEP,
                                TP__ROLE_PAD, TP__ROLE_CLS, TP__ROLE_MASK};
    for (size_t i = 0; i < sizeof order / sizeof order[0] && st == TP_OK; i++)
        st = add_special(tok, &vocab, tok->role_token[order[i]], &next_id, err);

    int32_t cls = -1, sep = -1;
    if (st == TP_OK) {
        const tp__added_token *t = tp__added_by_content(&tok->added, tok->role_token[TP__ROLE_CLS],
                                                        strlen(tok->role_token[TP__ROLE_CLS]));
        cls = t ? t->id : -1;
        t = tp__added_by_content(&tok->added, tok->role_token[TP__ROLE_SEP],
                                 strlen(tok->role_token[TP__ROLE_SEP]));
        sep = t ? t->id : -1;
    }
    if (st == TP_OK)
        st = tp__bert_normalizer_new(1, chinese, strip, lower, &tok->normalizer, err);
    if (st == TP_OK) st = tp__bert_pre_tokenizer_new(&tok->pre_tokenizer, err);
    if (st == TP_OK)
        st = tp__wordpiece_new(&vocab, tok->role_token[TP__ROLE_UNK], "##", 100, &tok->model, err);
    if (st == TP_OK && cls >= 0 && sep >= 0) {
        tp__piece single[3] = {{0, 0, 0, &cls, 1}, {1, 0, 0, NULL, 0}, {0, 0, 0, &sep, 1}};
        tp__piece pair[5] = {{0, 0, 0, &cls, 1}, {1, 0, 0, NULL, 0}, {0, 0, 0, &sep, 1},
                             {1, 1, 1, NULL, 0}, {0, 0, 1, &sep, 1}};
        st = tp__template_processing_new(single, 3, pair, 5, &tok->post_processor, err);
    }
    if (st == TP_OK) st = tp__wordpiece_decoder_new("##", 1, &tok->decoder, err);
    if (st == TP_OK) st = tp__added_finish(&tok->added, tok->normalizer, err);
    tp__vocab_free(&vocab);
    return st;
}
