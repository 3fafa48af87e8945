/* legacy_bpe.c: byte-level BPE tokenizers from vocab.json + merges.txt and
 * tokenizer_config.json, built the way transformers 5's GPT2Tokenizer and
 * RobertaTokenizer/BartTokenizer classes build them: BPE (no unk, empty affixes),
 * the ByteLevel pre-tokenizer (add_prefix_space from the config) and decoder;
 * RobertaProcessing (<s> A </s>, trim_offsets) for RoBERTa and BART, no special
 * tokens for GPT-2 (and any other class). The configured special tokens become
 * special added tokens. Thread-safety: fills a tokenizer that is not yet shared. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/bpe_family.h"

static tp_status load_vocab_json(const char *path, tp__vocab *v, tp_error *err)
{
    cJSON *root = NULL;
    TP_TRY(tp__json_load(path, &root, err));
    tp_status st = TP_OK;
    if (!cJSON_IsObject(root)) {
        st = tp__error(err, TP_ERR_FORMAT, "%s: must be an object of token -> id, got %s", path,
                       tp__json_type_name(root));
    } else {
        st = tp__vocab_init(v, (size_t)cJSON_GetArraySize(root), err);
        const cJSON *it;
        if (st == TP_OK) {
            cJSON_ArrayForEach(it, root)
            {
                if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e9 ||
                    it->valuedouble != (double)(int32_t)it->valuedouble) {
                    st = tp__error(err, TP_ERR_FORMAT,
                                   "%s: entry '%.64s' must be a non-negative integer id", path,
                                   it->string ? it->string : "");
                    break;
                }
                const char *key = it->string ? it->string : "";
                if ((st = tp__vocab_add(v, key, strlen(key), (int32_t)it->valuedouble, err)) != TP_OK)
                    break;
            }
            if (st != TP_OK) tp__vocab_free(v);
        }
    }
    cJSON_Delete(root);
    return st;
}

/* merges.txt: "#version" header, then "a b" per line. */
static tp_status load_merges(const char *path, tp__model *m, tp_error *err)
{
    char *data = NULL;
    size_t size = 0;
    TP_TRY(tp__read_file(path, &data, &size, err));
    size_t bad = tp__utf8_invalid_at(data, size);
    if (bad < size) {
        free(data);
        return tp__error(err, TP_ERR_FORMAT, "%s: not valid UTF-8 at byte %zu", path, bad);
    }
    tp_status st = TP_OK;
    size_t i = 0, line = 0, rank = 0;
    while (i < size && st == TP_OK) {
        size_t j = i;
        while (j < size && data[j] != '\n') j++;
        size_t e = j;
        if (e > i && data[e - 1] == '\r') e--;
        line++;
        if (!(line == 1 && e - i >= 8 && memcmp(data + i, "#version", 8) == 0) && e > i) {
            const char *sp = memchr(data + i, ' ', e - i);
            if (!sp || memchr(sp + 1, ' ', (size_t)(data + e - sp - 1))) {
                st = tp__error(err, TP_ERR_FORMAT, "%s: line %zu must be two tokens \"a b\"", path,
                               line);
                break;
            }
            st = tp__bpe_add_merge(m, data + i, (size_t)(sp - data - i), sp + 1,
                                   (size_t)(data + e - sp - 1), path, rank++, err);
        }
        i = j + 1;
    }
    free(data);
    return st;
}

static tp_status add_special(tp_tokenizer *tok, const tp__model *m, const char *content,
                             int32_t *next_id, tp_error *err)
{
    if (!content || tp__added_by_content(&tok->added, content, strlen(content))) return TP_OK;
    int32_t id = m->ops->token_to_id(m, content, strlen(content));
    if (id < 0) id = (*next_id)++;
    return tp__added_add(&tok->added, content, id, 1, 0, 0, 0, 0, err);
}

/* added_tokens_decoder: {"<id>": {"content": ..., flags}} */
static tp_status added_from_config(tp_tokenizer *tok, const cJSON *config, int32_t *next_id,
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
        if (!content || !end || *end || id < 0 || id > INT32_MAX)
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

tp_status tp__bpe_load_legacy(tp_tokenizer *tok, const char *dir, const cJSON *config,
                              tp_error *err)
{
    const char *cfg = "tokenizer_config.json";
    const char *cls_name;
    int aps, trim;
    TP_TRY(tp__json_string(config, "tokenizer_class", "GPT2Tokenizer", &cls_name, cfg, err));
    TP_TRY(tp__json_bool(config, "add_prefix_space", 0, &aps, cfg, err));
    TP_TRY(tp__json_bool(config, "trim_offsets", 1, &trim, cfg, err));
    int roberta = strncmp(cls_name, "RobertaTokenizer", 16) == 0 ||
                  strncmp(cls_name, "BartTokenizer", 13) == 0;

    /* the class's defaults for the roles the config leaves out (an explicit null
     * stays unset) */
    static const char *const gpt2_def[TP__ROLE_COUNT] = {NULL, "<|endoftext|>", NULL, NULL,
                                                         NULL, "<|endoftext|>", "<|endoftext|>"};
    static const char *const roberta_def[TP__ROLE_COUNT] = {"<pad>", "<unk>", "<s>", "</s>",
                                                            "<mask>", "<s>", "</s>"};
    static const char *const keys[TP__ROLE_COUNT] = {"pad_token", "unk_token", "cls_token",
                                                     "sep_token", "mask_token", "bos_token",
                                                     "eos_token"};
    const char *const *defs = roberta ? roberta_def : gpt2_def;
    for (int r = 0; r < TP__ROLE_COUNT; r++) {
        if (tok->role_token[r] || !defs[r] || cJSON_GetObjectItemCaseSensitive(config, keys[r]))
            continue;
        if (!(tok->role_token[r] = strdup(defs[r])))
            return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    tp__vocab vocab;
    TP_TRY(load_vocab_json(path, &vocab, err));
    int32_t sep_id = tok->role_token[TP__ROLE_SEP]
                         ? tp__vocab_find(&vocab, tok->role_token[TP__ROLE_SEP],
                                          strlen(tok->role_token[TP__ROLE_SEP]))
                         : -1;
    int32_t cls_id = tok->role_token[TP__ROLE_CLS]
                         ? tp__vocab_find(&vocab, tok->role_token[TP__ROLE_CLS],
                                          strlen(tok->role_token[TP__ROLE_CLS]))
                         : -1;
    int32_t next_id = (int32_t)vocab.n_ids;
    tp__bpe_options o = {NULL, "", "", 0, 0, 0};
    tp__model *model = NULL;
    tp_status st = tp__bpe_new(&vocab, &o, 50000, &model, err);
    tp__vocab_free(&vocab);
    if (st != TP_OK) return st;
    tok->model = model;
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    TP_TRY(load_merges(path, model, err));

    TP_TRY(added_from_config(tok, config, &next_id, err));
    static const int order[] = {TP__ROLE_BOS, TP__ROLE_EOS, TP__ROLE_UNK, TP__ROLE_SEP,
                                TP__ROLE_PAD, TP__ROLE_CLS, TP__ROLE_MASK};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        TP_TRY(add_special(tok, model, tok->role_token[order[i]], &next_id, err));

    TP_TRY(tp__byte_level_pre_tokenizer_new(aps, 1, &tok->pre_tokenizer, err));
    TP_TRY(tp__byte_level_decoder_new(&tok->decoder, err));
    if (roberta)
        TP_TRY(tp__roberta_processing_new(cls_id >= 0 ? cls_id : 2, sep_id >= 0 ? sep_id : 3, trim,
                                          aps, &tok->post_processor, err));
    /* transformers 5 never cleans up spaces after a BPE model */
    tok->clean_up_spaces = 0;
    return tp__added_finish(&tok->added, tok->normalizer, err);
}
