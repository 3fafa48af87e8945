/*
 * text2text.c: the "text2text-generation", "summarization" and "translation" task
 * plugin, reproducing transformers 4's Text2TextGenerationPipeline and its two
 * subclasses (transformers 5 removed all three) for encoder-decoder models (BART,
 * Marian, T5).
 *
 * Inputs: a string (output [{"<name>_text"}]) or a list of strings (one record per
 * string when each gives one sequence, else one list of records per string); <name>
 * is "generated", "summary" or "translation". Each string is generated on its own,
 * as the v4 pipeline does with its default batch size of 1.
 *
 * Per string: input = prefix + text, where the prefix and the task's generation
 * settings come from config.json task_specific_params[task] when present (t5-small
 * has "summarization", "translation_en_to_de", ...; "translation" alone picks the
 * first translation_* entry, as v4's pipeline() did), tokenized with truncation to
 * the tokenizer's model_max_length; generate with the model's generation config,
 * then the task's settings, then the request's parameters; decode with
 * skip_special_tokens and clean_up_tokenization_spaces false (v4's postprocess
 * default). Own parameters: clean_up_tokenization_spaces, return_tensors (records
 * of "<name>_token_ids" instead of text), return_text, truncation, src_lang,
 * tgt_lang (used by multilingual tokenizers only: accepted and ignored here); every
 * other parameter goes to generate(), which names an unknown or invalid one.
 *
 * Links nothing of the core: every service comes from the tp_core_api table.
 * Thread-safety: run() only reads the pipeline state, so it may run concurrently.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tpipe_plugin.h"
#include "tpipe_plugin_params.h"

typedef struct t2t_pipeline {
    const tp_core_api *core;
    tp_model *model;
    tp_tokenizer *tok;
    const char *task;          /* canonical */
    const char *record_key;    /* "generated_text", "summary_text", "translation_text" */
    const char *ids_key;       /* "<name>_token_ids" */
    const char *prefix;        /* from task_specific_params, "" when none */
    cJSON *task_params;        /* task_specific_params[task] without "prefix"; owned */
} t2t_pipeline;

/* The plugin's own parameters; the rest go to generate(). */
static const char *const own_params[] = {"clean_up_tokenization_spaces", "return_tensors",
                                         "return_text", "return_type", "truncation",
                                         "src_lang", "tgt_lang", NULL};

static tp_status t2t_init(const tp_core_api *core, void **plugin_state, tp_error *err) {
    tp_status core_ok =
        tp_plugin_require_core(core, TP_CORE_API_SIZE_THROUGH(model_generate), "text2text", err);
    if (core_ok != TP_OK) return core_ok;
    *plugin_state = (void *)core;
    return TP_OK;
}

static void t2t_close(void *pipeline_state) {
    t2t_pipeline *st = pipeline_state;
    if (!st) return;
    cJSON_Delete(st->task_params);
    free(st);
}

/* task_specific_params[name] for the task as called; "translation" alone takes the
 * first translation_* entry, as transformers 4's pipeline() did. */
static const cJSON *task_entry(const tp_core_api *core, tp_model *m, const char *called) {
    const cJSON *tsp = core->model_config(m, "task_specific_params");
    if (!cJSON_IsObject(tsp)) return NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(tsp, called);
    if (e || strcmp(called, "translation") != 0) return cJSON_IsObject(e) ? e : NULL;
    cJSON_ArrayForEach(e, tsp)
        if (e->string && strncmp(e->string, "translation", 11) == 0 && cJSON_IsObject(e))
            return e;
    return NULL;
}

static tp_status t2t_open(void *plugin_state, tp_task_pipeline *p, void **pipeline_state,
                          tp_error *err) {
    const tp_core_api *core = plugin_state;
    tp_model *m = core->pipeline_model(p);
    tp_tokenizer *tok = core->pipeline_tokenizer(p);
    const char *task = core->pipeline_task(p);
    if (!m || core->model_head(m) != TP_HEAD_SEQ2SEQ_LM) {
        const char *arch = m ? core->model_architecture(m) : NULL;
        return core->error_set(err, TP_ERR_UNSUPPORTED,
                               "model %s is not a seq2seq language model: it cannot serve %s",
                               arch && arch[0] ? arch : "(unknown architecture)", task);
    }
    if (!tok)
        return core->error_set(err, TP_ERR_NOT_FOUND,
                               "%s needs a tokenizer, and the model directory has none", task);
    t2t_pipeline *st = calloc(1, sizeof *st);
    if (!st) return core->error_set(err, TP_ERR_NOMEM, "out of memory");
    st->core = core, st->model = m, st->tok = tok, st->task = task, st->prefix = "";
    if (strcmp(task, "summarization") == 0)
        st->record_key = "summary_text", st->ids_key = "summary_token_ids";
    else if (strcmp(task, "translation") == 0)
        st->record_key = "translation_text", st->ids_key = "translation_token_ids";
    else
        st->record_key = "generated_text", st->ids_key = "generated_token_ids";
    const cJSON *entry = task_entry(core, m, core->pipeline_task_as_called(p));
    st->task_params = entry ? cJSON_Duplicate(entry, 1) : cJSON_CreateObject();
    if (!st->task_params) {
        free(st);
        return core->error_set(err, TP_ERR_NOMEM, "out of memory");
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(entry, "prefix");
    if (cJSON_IsString(pre)) st->prefix = pre->valuestring; /* lives with the model */
    cJSON_DeleteItemFromObjectCaseSensitive(st->task_params, "prefix");
    *pipeline_state = st;
    return TP_OK;
}

typedef struct t2t_opts {
    int clean_up, tensors, truncate;
} t2t_opts;

/* Generates for one string and appends its records to `out`. */
static tp_status generate_one(const t2t_pipeline *st, tp_task_context *ctx, const char *text,
                              const cJSON *gparams, const t2t_opts *o, cJSON *out,
                              tp_error *err) {
    const tp_core_api *core = st->core;
    const size_t n = strlen(st->prefix) + strlen(text) + 1;
    char *input = malloc(n);
    if (!input) return core->error_set(err, TP_ERR_NOMEM, "out of memory");
    snprintf(input, n, "%s%s", st->prefix, text);
    tp_encode_options opts;
    core->encode_options_init(&opts);
    if (o->truncate) opts.truncation = TP_TRUNCATE_LONGEST_FIRST; /* model_max_length */
    tp_encoding *enc = NULL;
    const char *texts[1] = {input};
    tp_status s = core->tokenizer_encode(st->tok, texts, NULL, 1, &opts, &enc, err);
    free(input);
    if (s != TP_OK) return s;
    const int T = (int)core->encoding_length(enc, 0);
    if (T == 0) {
        core->encoding_free(enc);
        return core->error_set(err, TP_ERR_INVALID_ARGUMENT, "inputs: \"%s\" has no tokens",
                               text);
    }
    tp_model_input in = {.struct_size = sizeof in, .batch = 1, .seq_len = T,
                         .input_ids = core->encoding_ids(enc, 0),
                         .attention_mask = core->encoding_attention_mask(enc, 0)};
    int32_t *seqs = NULL;
    int rows = 0, cols = 0;
    s = core->model_generate(ctx, st->model, &in, gparams, own_params, NULL, NULL, &seqs, &rows,
                             &cols, err);
    for (int r = 0; s == TP_OK && r < rows; r++) {
        const int32_t *row = seqs + (size_t)r * cols;
        cJSON *rec = cJSON_CreateObject();
        if (!rec) {
            s = core->error_set(err, TP_ERR_NOMEM, "out of memory");
            break;
        }
        cJSON_AddItemToArray(out, rec);
        if (o->tensors) {
            cJSON *ids = cJSON_AddArrayToObject(rec, st->ids_key);
            for (int t = 0; ids && t < cols; t++)
                cJSON_AddItemToArray(ids, cJSON_CreateNumber(row[t]));
            if (!ids) s = core->error_set(err, TP_ERR_NOMEM, "out of memory");
            continue;
        }
        char *dec = NULL;
        s = core->tokenizer_decode(st->tok, row, (size_t)cols, 1, o->clean_up, &dec, err);
        if (s == TP_OK && !cJSON_AddStringToObject(rec, st->record_key, dec))
            s = core->error_set(err, TP_ERR_NOMEM, "out of memory");
        core->free(dec);
    }
    core->free(seqs);
    core->encoding_free(enc);
    return s;
}

static tp_status get_bool(const tp_core_api *core, const cJSON *params, const char *key,
                          int *out, tp_error *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(params, key);
    if (!v || cJSON_IsNull(v)) return TP_OK;
    if (!cJSON_IsBool(v))
        return core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                               "parameter '%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return TP_OK;
}

static tp_status read_opts(const t2t_pipeline *st, const cJSON *params, t2t_opts *o,
                           tp_error *err) {
    const tp_core_api *core = st->core;
    o->clean_up = 0, o->tensors = 0, o->truncate = 1;
    int text = 1;
    tp_status s;
    if ((s = get_bool(core, params, "clean_up_tokenization_spaces", &o->clean_up, err)) ||
        (s = get_bool(core, params, "return_tensors", &o->tensors, err)) ||
        (s = get_bool(core, params, "return_text", &text, err)))
        return s;
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(params, "return_type");
    if (rt && !cJSON_IsNull(rt)) {
        /* ReturnType: 0 tensors, 1 text */
        if (!cJSON_IsNumber(rt) || (rt->valueint != 0 && rt->valueint != 1) ||
            rt->valuedouble != rt->valueint)
            return core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                                   "parameter 'return_type' must be 0 (tensors) or 1 (text)");
        o->tensors = rt->valueint == 0;
    }
    const cJSON *tr = cJSON_GetObjectItemCaseSensitive(params, "truncation");
    if (tr && !cJSON_IsNull(tr)) {
        if (cJSON_IsBool(tr)) o->truncate = cJSON_IsTrue(tr);
        else if (cJSON_IsString(tr) && (!strcmp(tr->valuestring, "longest_first") ||
                                        !strcmp(tr->valuestring, "only_first")))
            o->truncate = 1;
        else if (cJSON_IsString(tr) && !strcmp(tr->valuestring, "do_not_truncate"))
            o->truncate = 0;
        else
            return core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                                   "parameter 'truncation' must be true, false, "
                                   "\"longest_first\", \"only_first\" or \"do_not_truncate\"");
    }
    for (const char *const *k = own_params + 5; *k; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(params, *k);
        if (v && !cJSON_IsNull(v) && !cJSON_IsString(v))
            return core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                                   "parameter '%s' must be a language code string", *k);
    }
    return TP_OK;
}

static tp_status t2t_run(void *pipeline_state, tp_task_context *ctx, const cJSON *inputs,
                         const cJSON *params, cJSON **result, tp_error *err) {
    const t2t_pipeline *st = pipeline_state;
    const tp_core_api *core = st->core;
    if (!cJSON_IsString(inputs) && !cJSON_IsArray(inputs))
        return core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                               "\"inputs\" must be a string or a list of strings");
    t2t_opts o;
    tp_status s = read_opts(st, params, &o, err);
    if (s != TP_OK) return s;
    /* the task's settings under the request's parameters */
    cJSON *gp = cJSON_Duplicate(st->task_params, 1);
    if (!gp) return core->error_set(err, TP_ERR_NOMEM, "out of memory");
    const cJSON *p;
    cJSON_ArrayForEach(p, params) {
        cJSON_DeleteItemFromObjectCaseSensitive(gp, p->string);
        cJSON_AddItemToObject(gp, p->string, cJSON_Duplicate(p, 1));
    }
    cJSON *res = cJSON_CreateArray();
    s = res ? TP_OK : core->error_set(err, TP_ERR_NOMEM, "out of memory");
    if (s == TP_OK && cJSON_IsString(inputs)) {
        s = generate_one(st, ctx, inputs->valuestring, gp, &o, res, err);
    } else if (s == TP_OK) {
        int i = 0, all_single = 1;
        const cJSON *v;
        cJSON_ArrayForEach(v, inputs) {
            if (!cJSON_IsString(v)) {
                s = core->error_set(err, TP_ERR_INVALID_ARGUMENT, "inputs[%d] must be a string",
                                    i);
                break;
            }
            cJSON *one = cJSON_CreateArray();
            if (!one) {
                s = core->error_set(err, TP_ERR_NOMEM, "out of memory");
                break;
            }
            cJSON_AddItemToArray(res, one);
            s = generate_one(st, ctx, v->valuestring, gp, &o, one, err);
            if (s != TP_OK) break;
            all_single &= cJSON_GetArraySize(one) == 1;
            i++;
        }
        if (s == TP_OK && all_single) {
            /* v4: a list of strings with one sequence each gives a flat list of records */
            cJSON *flat = cJSON_CreateArray();
            if (!flat) {
                s = core->error_set(err, TP_ERR_NOMEM, "out of memory");
            } else {
                cJSON *one;
                cJSON_ArrayForEach(one, res)
                    cJSON_AddItemToArray(flat, cJSON_DetachItemFromArray(one, 0));
                cJSON_Delete(res);
                res = flat;
            }
        }
    }
    cJSON_Delete(gp);
    if (s != TP_OK) {
        cJSON_Delete(res);
        return s;
    }
    *result = res;
    return TP_OK;
}

static const char *const t2t_tasks[] = {"text2text-generation", "summarization", "translation",
                                        NULL};

static const tp_task_vtable t2t_vtable = {
    .struct_size = sizeof(tp_task_vtable),
    .tasks = t2t_tasks,
    .aliases = NULL,
    .init = t2t_init,
    .shutdown = NULL,
    .open = t2t_open,
    .close = t2t_close,
    .run = t2t_run,
};

static const tp_module_descriptor t2t_descriptor = {
    .struct_size = sizeof(tp_module_descriptor),
    .abi_version = TP_ABI_CURRENT,
    .kind = TP_MODULE_TASK,
    .name = "text2text",
    .version = "0.1.0",
    .license = "MIT",
    .description = "text2text-generation, summarization and translation with encoder-decoder "
                   "models, as transformers 4 did them",
    .vtable = &t2t_vtable,
};

TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void) { return &t2t_descriptor; }
