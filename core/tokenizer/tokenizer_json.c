/* tokenizer_json.c: builds a tokenizer's pipeline from tokenizer.json (the
 * `tokenizers` serialization): model, normalizer, pre-tokenizer, post-processor,
 * decoder and added tokens. Unknown component types are TP_ERR_UNSUPPORTED naming
 * the type; malformed documents TP_ERR_FORMAT naming the key. Thread-safety: fills
 * a tokenizer that is not yet shared. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/bpe_family.h"
#include "tokenizer/spm_internal.h"

typedef tp_status (*model_parse_fn)(const cJSON *, const char *, tp__model **, tp_error *);
static const struct {
    const char *type;
    model_parse_fn parse;
} model_kinds[] = {
    {"WordPiece", tp__wordpiece_from_json},
    {"BPE", tp__bpe_from_json},
    {"Unigram", tp__unigram_from_json},
};

static tp_status model_from_json(const cJSON *j, const char *what, tp__model **out,
                                 tp_error *err)
{
    if (!j) return tp__error(err, TP_ERR_FORMAT, "%s: missing key 'model'", what);
    if (!cJSON_IsObject(j))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'model' must be an object, got %s", what,
                         tp__json_type_name(j));
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    const char *name;
    if (type && !cJSON_IsString(type))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'model.type' must be a string", what);
    if (type) {
        name = type->valuestring;
    } else if (cJSON_GetObjectItemCaseSensitive(j, "merges")) {
        name = "BPE"; /* old files omit "type": infer it from the fields */
    } else if (cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "vocab"))) {
        name = "Unigram";
    } else if (cJSON_GetObjectItemCaseSensitive(j, "continuing_subword_prefix") ||
               cJSON_GetObjectItemCaseSensitive(j, "max_input_chars_per_word")) {
        name = "WordPiece";
    } else {
        name = "WordLevel";
    }
    for (size_t i = 0; i < sizeof model_kinds / sizeof model_kinds[0]; i++)
        if (strcmp(model_kinds[i].type, name) == 0) return model_kinds[i].parse(j, what, out, err);
    return tp__error(err, TP_ERR_UNSUPPORTED, "%s: model type '%s' is not supported", what, name);
}

static tp_status added_from_json(tp_tokenizer *tok, const cJSON *arr, const char *what,
                                 tp_error *err)
{
    if (!arr || cJSON_IsNull(arr)) return TP_OK;
    if (!cJSON_IsArray(arr))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'added_tokens' must be an array, got %s",
                         what, tp__json_type_name(arr));
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 2e9 ||
            !cJSON_IsString(content))
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: key 'added_tokens[%zu]' needs an integer 'id' and a string "
                             "'content'",
                             what, i);
        int special, single_word, lstrip, rstrip, normalized;
        TP_TRY(tp__json_bool(it, "special", 0, &special, what, err));
        TP_TRY(tp__json_bool(it, "single_word", 0, &single_word, what, err));
        TP_TRY(tp__json_bool(it, "lstrip", 0, &lstrip, what, err));
        TP_TRY(tp__json_bool(it, "rstrip", 0, &rstrip, what, err));
        TP_TRY(tp__json_bool(it, "normalized", !special, &normalized, what, err));
        TP_TRY(tp__added_add(&tok->added, content->valuestring, (int32_t)id->valuedouble, special,
                             single_word, lstrip, rstrip, normalized, err));
        i++;
    }
    return TP_OK;
}

tp_status tp__tokenizer_load_json(tp_tokenizer *tok, const char *text, size_t len,
                                  const char *what, tp_error *err)
{
    cJSON *root = NULL;
    TP_TRY(tp__json_parse(text, len, what, &root, err));
    tp_status st = TP_OK;
    if (!cJSON_IsObject(root))
        st = tp__error(err, TP_ERR_FORMAT, "%s: the document must be an object, got %s", what,
                       tp__json_type_name(root));
    if (st == TP_OK)
        st = model_from_json(cJSON_GetObjectItemCaseSensitive(root, "model"), what, &tok->model,
                             err);
    /* transformers 5 skips clean_up_tokenization_spaces for BPE models */
    if (st == TP_OK && tp__is_bpe_model(tok->model)) tok->clean_up_spaces = 0;
    if (st == TP_OK)
        st = tp__normalizer_from_json(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), what,
                                      &tok->normalizer, err);
    if (st == TP_OK)
        st = tp__pre_tokenizer_from_json(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"),
                                         what, &tok->pre_tokenizer, err);
    if (st == TP_OK)
        st = tp__post_processor_from_json(
            cJSON_GetObjectItemCaseSensitive(root, "post_processor"), what, tok,
            &tok->post_processor, err);
    if (st == TP_OK)
        st = tp__decoder_from_json(cJSON_GetObjectItemCaseSensitive(root, "decoder"), what,
                                   &tok->decoder, err);
    if (st == TP_OK)
        st = added_from_json(tok, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), what,
                             err);
    if (st == TP_OK) st = tp__added_finish(&tok->added, tok->normalizer, err);
    cJSON_Delete(root);
    return st;
}
