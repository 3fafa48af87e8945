/* post_processor.c: post-processors (TemplateProcessing, BertProcessing) as
 * templates of pieces: special tokens with their ids and type id, and the
 * sequences A and B with theirs. The encoder lays rows out from a template, so a
 * new kind only has to produce one. Thread-safety: immutable after construction. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/bpe_family.h"

typedef struct template_pp {
    tp__post_processor base;
    tp__piece *single, *pair;
    size_t n_single, n_pair;
} template_pp;

static void pieces_free(tp__piece *p, size_t n)
{
    if (!p) return;
    for (size_t i = 0; i < n; i++) free(p[i].ids);
    free(p);
}

static void template_free(tp__post_processor *self)
{
    template_pp *t = (template_pp *)self;
    pieces_free(t->single, t->n_single);
    pieces_free(t->pair, t->n_pair);
    free(t);
}

static void template_layout(const tp__post_processor *self, int pair, const tp__piece **pieces,
                            size_t *n)
{
    const template_pp *t = (const template_pp *)self;
    *pieces = pair ? t->pair : t->single;
    *n = pair ? t->n_pair : t->n_single;
}

static const tp__post_processor_ops template_ops = {"TemplateProcessing", template_layout,
                                                    template_free};

void tp__post_processor_free(tp__post_processor *p)
{
    if (p) p->ops->free(p);
}

static tp_status copy_pieces(const tp__piece *src, size_t n, tp__piece **out, tp_error *err)
{
    tp__piece *p = calloc(n ? n : 1, sizeof *p);
    if (!p) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < n; i++) {
        p[i] = src[i];
        p[i].ids = NULL;
        if (src[i].n_ids) {
            p[i].ids = malloc(src[i].n_ids * sizeof *p[i].ids);
            if (!p[i].ids) {
                pieces_free(p, i);
                return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
            }
            memcpy(p[i].ids, src[i].ids, src[i].n_ids * sizeof *p[i].ids);
        }
    }
    *out = p;
    return TP_OK;
}

tp_status tp__template_processing_new(const tp__piece *single, size_t n_single,
                                      const tp__piece *pair, size_t n_pair,
                                      tp__post_processor **out, tp_error *err)
{
    template_pp *t = calloc(1, sizeof *t);
    if (!t) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    t->base.ops = &template_ops;
    tp_status st = copy_pieces(single, n_single, &t->single, err);
    if (st == TP_OK) {
        t->n_single = n_single;
        st = copy_pieces(pair, n_pair, &t->pair, err);
        if (st == TP_OK) t->n_pair = n_pair;
    }
    if (st != TP_OK) {
        template_free(&t->base);
        return st;
    }
    *out = &t->base;
    return TP_OK;
}

/* Parses one template list ("single" or "pair") into `out` (owned ids). */
static tp_status parse_template(const cJSON *list, const cJSON *specials, const char *key,
                                const char *what, tp__piece **out, size_t *n_out,
                                tp_error *err)
{
    if (!cJSON_IsArray(list))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'post_processor.%s' must be an array",
                         what, key);
    size_t n = (size_t)cJSON_GetArraySize(list);
    tp__piece *p = calloc(n ? n : 1, sizeof *p);
    if (!p) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    size_t i = 0;
    const cJSON *it;
    tp_status st = TP_OK;
    cJSON_ArrayForEach(it, list)
    {
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        const cJSON *body = seq ? seq : sp;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(body, "id");
        const cJSON *type_id = cJSON_GetObjectItemCaseSensitive(body, "type_id");
        if (!body || !cJSON_IsString(id) || (type_id && !cJSON_IsNumber(type_id))) {
            st = tp__error(err, TP_ERR_FORMAT,
                           "%s: key 'post_processor.%s[%zu]' must be {\"Sequence\"|\"SpecialToken\": "
                           "{\"id\": string, \"type_id\": int}}",
                           what, key, i);
            break;
        }
        p[i].type_id = type_id ? (int)type_id->valuedouble : 0;
        if (seq) {
            p[i].is_seq = 1;
            if (strcmp(id->valuestring, "A") == 0) p[i].seq = 0;
            else if (strcmp(id->valuestring, "B") == 0) p[i].seq = 1;
            else {
                st = tp__error(err, TP_ERR_FORMAT,
                               "%s: key 'post_processor.%s[%zu].Sequence.id' must be \"A\" or \"B\"",
                               what, key, i);
                break;
            }
        } else {
            const cJSON *tokdef = cJSON_GetObjectItemCaseSensitive(specials, id->valuestring);
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(tokdef, "ids");
            if (!cJSON_IsArray(ids)) {
                st = tp__error(err, TP_ERR_FORMAT,
                               "%s: key 'post_processor.special_tokens' has no entry with ids for '%s'",
                               what, id->valuestring);
                break;
            }
            size_t m = (size_t)cJSON_GetArraySize(ids);
            p[i].ids = malloc((m ? m : 1) * sizeof *p[i].ids);
            if (!p[i].ids) {
                st = tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
                break;
            }
            const cJSON *x;
            cJSON_ArrayForEach(x, ids)
            {
                if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 2e9) {
                    st = tp__error(err, TP_ERR_FORMAT,
                                   "%s: key 'post_processor.special_tokens.%s.ids' must hold ids",
                                   what, id->valuestring);
                    break;
                }
                p[i].ids[p[i].n_ids++] = (int32_t)x->valuedouble;
            }
            if (st != TP_OK) break;
        }
        i++;
    }
    if (st != TP_OK) {
        pieces_free(p, i + 1 <= n ? i + 1 : n);
        return st;
    }
    *out = p;
    *n_out = n;
    return TP_OK;
}

static tp_status template_from_json(const cJSON *j, const char *what, tp__post_processor **out,
                                    tp_error *err)
{
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(j, "special_tokens");
    template_pp *t = calloc(1, sizeof *t);
    if (!t) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    t->base.ops = &template_ops;
    tp_status st = parse_template(cJSON_GetObjectItemCaseSensitive(j, "single"), specials,
                                  "single", what, &t->single, &t->n_single, err);
    if (st == TP_OK)
        st = parse_template(cJSON_GetObjectItemCaseSensitive(j, "pair"), specials, "pair", what,
                            &t->pair, &t->n_pair, err);
    if (st != TP_OK) {
        template_free(&t->base);
        return st;
    }
    *out = &t->base;
    return TP_OK;
}

/* BertProcessing: {"sep": [token, id], "cls": [token, id]}. */
static tp_status token_pair(const cJSON *j, const char *key, const char *what, int32_t *id,
                            tp_error *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, key);
    const cJSON *v = cJSON_GetArrayItem(a, 1);
    if (!cJSON_IsArray(a) || !cJSON_IsString(cJSON_GetArrayItem(a, 0)) || !cJSON_IsNumber(v) ||
        v->valuedouble < 0 || v->valuedouble > 2e9)
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'post_processor.%s' must be [token, id]",
                         what, key);
    *id = (int32_t)v->valuedouble;
    return TP_OK;
}

static tp_status bert_from_json(const cJSON *j, const char *what, tp__post_processor **out,
                                tp_error *err)
{
    int32_t cls, sep;
    TP_TRY(token_pair(j, "cls", what, &cls, err));
    TP_TRY(token_pair(j, "sep", what, &sep, err));
    tp__piece single[3] = {{0, 0, 0, &cls, 1}, {1, 0, 0, NULL, 0}, {0, 0, 0, &sep, 1}};
    tp__piece pair[5] = {{0, 0, 0, &cls, 1}, {1, 0, 0, NULL, 0}, {0, 0, 0, &sep, 1},
                         {1, 1, 1, NULL, 0}, {0, 0, 1, &sep, 1}};
    return tp__template_processing_new(single, 3, pair, 5, out, err);
}

typedef tp_status (*pp_parse_fn)(const cJSON *, const char *, tp__post_processor **,
                                 tp_error *);
static const struct {
    const char *type;
    pp_parse_fn parse;
} kinds[] = {
    {"TemplateProcessing", template_from_json},
    {"BertProcessing", bert_from_json},
    {"RobertaProcessing", tp__roberta_from_json},
    {"ByteLevel", tp__byte_level_pp_from_json},
    {"Sequence", tp__sequence_pp_from_json},
};

tp_status tp__post_processor_from_json(const cJSON *j, const char *what,
                                       const tp_tokenizer *tok, tp__post_processor **out,
                                       tp_error *err)
{
    (void)tok;
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return TP_OK;
    if (!cJSON_IsObject(j))
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: key 'post_processor' must be an object, got %s", what,
                         tp__json_type_name(j));
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'post_processor.type' must be a string",
                         what);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i].type, type->valuestring) == 0) return kinds[i].parse(j, what, out, err);
    return tp__error(err, TP_ERR_UNSUPPORTED, "%s: post_processor type '%s' is not supported",
                     what, type->valuestring);
}
