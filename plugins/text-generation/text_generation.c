/*
 * text_generation.c: the "text-generation" task plugin, reproducing transformers
 * 5's TextGenerationPipeline for decoder-only language models (GPT-2, Llama...).
 *
 * Inputs: a string (output [{"generated_text"}]) or a list of strings (one such
 * list per string). Each prompt is generated on its own, as the pipeline does with
 * its default batch size of 1. Parameters: return_full_text (default true: the
 * prompt text + the new text), stop (a string or list of strings: generation of a
 * row ends once its new text contains one; the stop string is kept, as
 * generate(stop_strings=...) keeps it), and every generate() parameter
 * (max_new_tokens, num_return_sequences, do_sample, temperature, top_k, top_p,
 * typical_p, min_p, seed, repetition_penalty, ...), checked by the core.
 * The pipeline's defaults (max_new_tokens 256, do_sample true, temperature 0.7)
 * come first, then the request's parameters.
 *
 * Chat input (a list of {role, content} messages, or a list of such lists) is
 * rendered with the tokenizer's chat template (add_generation_prompt) and tokenized
 * without adding special tokens, as the pipeline does; with return_full_text the
 * output is the messages plus {"role": "assistant", "content": <new text>}.
 *
 * Streaming (tp_pipeline_run_stream): for one prompt (a string or one conversation)
 * generating one sequence, each step decodes the new text so far and hands the part
 * that the next token cannot change any more to core->stream_text; what is held back
 * is sent when generation ends, so the deltas add up to the new text of the result.
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

#define TG_TASK "text-generation"

typedef struct tg_pipeline {
    const tp_core_api *core;
    tp_model *model;
    tp_tokenizer *tok;
} tg_pipeline;

/* The plugin's own parameters; the rest go to generate(). */
static const char *const own_params[] = {"return_full_text", "stop", "stop_strings", NULL};

/* Per request: the stop strings, and the streaming state (stream_text). */
typedef struct stop_check {
    const tg_pipeline *st;
    const char *const *stops;
    int n_stops;
    int prompt_len;
    tp_task_context *ctx;
    int stream;             /* stream this prompt's text (one prompt, core has stream_text) */
    const char *prompt_dec; /* the decoded prompt: the new text is what follows its length */
    char *shown;            /* the new text sent so far (malloc'd) */
    size_t n_shown;
} stop_check;

static tp_status tg_init(const tp_core_api *core, void **plugin_state, tp_error *err) {
    tp_status core_ok =
        tp_plugin_require_core(core, TP_CORE_API_SIZE_THROUGH(tokenizer_apply_chat_template),
                               TG_TASK, err);
    if (core_ok != TP_OK) return core_ok;
    *plugin_state = (void *)core;
    return TP_OK;
}

static tp_status tg_open(void *plugin_state, tp_task_pipeline *p, void **pipeline_state,
                         tp_error *err) {
    const tp_core_api *core = plugin_state;
    tp_model *m = core->pipeline_model(p);
    tp_tokenizer *tok = core->pipeline_tokenizer(p);
    if (!m || core->model_head(m) != TP_HEAD_CAUSAL_LM) {
        const char *arch = m ? core->model_architecture(m) : NULL;
        return core->error_set(err, TP_ERR_UNSUPPORTED,
                               "model %s is not a causal language model (*ForCausalLM, "
                               "*LMHeadModel): it cannot serve " TG_TASK,
                               arch && arch[0] ? arch : "(unknown architecture)");
    }
    if (!tok)
        return core->error_set(err, TP_ERR_NOT_FOUND,
                               TG_TASK " needs a tokenizer, and the model directory has none");
    tg_pipeline *st = calloc(1, sizeof *st);
    if (!st) return core->error_set(err, TP_ERR_NOMEM, "out of memory");
    st->core = core, st->model = m, st->tok = tok;
    *pipeline_state = st;
    return TP_OK;
}

static void tg_close(void *pipeline_state) { free(pipeline_state); }

/* How much of `t` (n bytes, the new text so far) is final: the next token cannot
 * change it. Held back: an incomplete UTF-8 character at the end, trailing U+FFFD
 * (byte-level BPE decodes a character split across tokens as U+FFFD until its last
 * byte arrives), and a trailing space that clean_up_tokenization_spaces could still
 * remove (" ." " ?" " !" " ," " ' " " n't" " 'm" " 's" " 've" " 're"). */
static size_t stable_len(const char *t, size_t n) {
    size_t k = n, lead = n;
    while (lead > 0 && n - lead < 4 && ((unsigned char)t[lead - 1] & 0xC0) == 0x80) lead--;
    if (lead > 0) {
        const unsigned char c = (unsigned char)t[lead - 1];
        const size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (n - (lead - 1) < want) k = lead - 1;
    }
    while (k >= 3 && memcmp(t + k - 3, "\xEF\xBF\xBD", 3) == 0) k -= 3;
    static const char *const cleanups[] = {" .", " ?",  " !",  " ,",  " ' ",
                                           " n't", " 'm", " 's", " 've", " 're"};
    for (size_t i = k >= 4 ? k - 4 : 0; i < k; i++) {
        if (t[i] != ' ') continue;
        for (size_t j = 0; j < sizeof cleanups / sizeof cleanups[0]; j++)
            if (strncmp(cleanups[j], t + i, k - i) == 0) return i;
    }
    return k;
}

/* Sends the part of `text` (the new text so far) past what was already sent, up to
 * `upto` bytes. Text that no longer extends what was sent is not sent. */
static void stream_upto(stop_check *sc, const char *text, size_t upto) {
    if (upto <= sc->n_shown || strncmp(text, sc->shown ? sc->shown : "", sc->n_shown) != 0)
        return;
    char *grown = realloc(sc->shown, upto + 1);
    if (!grown) return;
    memcpy(grown + sc->n_shown, text + sc->n_shown, upto - sc->n_shown);
    grown[upto] = '\0';
    sc->shown = grown;
    sc->st->core->stream_text(sc->ctx, grown + sc->n_shown);
    sc->n_shown = upto;
}

/* Streams the stable part of the one row's new text. */
static void stream_step(stop_check *sc, const int32_t *row, int len) {
    const tp_core_api *core = sc->st->core;
    char *dec = NULL;
    tp_error e = {0};
    if (core->tokenizer_decode(sc->st->tok, row, (size_t)len, 1, -1, &dec, &e) == TP_OK) {
        /* cut as the final result is cut (generate_one) */
        const size_t pl = strlen(sc->prompt_dec), dl = strlen(dec);
        const char *tail = dec + (pl < dl ? pl : dl);
        stream_upto(sc, tail, stable_len(tail, strlen(tail)));
    }
    core->free(dec);
}

/* Streams the newest text of a single row, and ends a row once a stop string ends
 * inside its newest token's text. */
static int on_step(void *user, const int32_t *seq, int rows, int len, uint8_t *stop) {
    stop_check *sc = user;
    const tp_core_api *core = sc->st->core;
    if (sc->stream && rows == 1) stream_step(sc, seq, len);
    for (int r = 0; sc->n_stops && r < rows; r++) {
        const int32_t *row = seq + (size_t)r * len + sc->prompt_len;
        const int n = len - sc->prompt_len;
        char *all = NULL, *before = NULL;
        tp_error e = {0};
        if (core->tokenizer_decode(sc->st->tok, row, (size_t)n, 1, 0, &all, &e) == TP_OK &&
            core->tokenizer_decode(sc->st->tok, row, (size_t)(n - 1), 1, 0, &before, &e) ==
                TP_OK) {
            const size_t from = strlen(before);
            for (int i = 0; i < sc->n_stops && !stop[r]; i++) {
                const size_t sl = strlen(sc->stops[i]);
                for (const char *h = strstr(all, sc->stops[i]); h && !stop[r];
                     h = strstr(h + 1, sc->stops[i]))
                    if ((size_t)(h - all) + sl > from) stop[r] = 1;
            }
        }
        core->free(all);
        core->free(before);
    }
    return 0;
}

/* Generates for one prompt and appends num_return_sequences records to `out`. */
static tp_status generate_one(const tg_pipeline *st, tp_task_context *ctx, const char *text,
                              int add_special_tokens, const cJSON *gparams, int full_text,
                              stop_check *sc, cJSON *out, tp_error *err) {
    const tp_core_api *core = st->core;
    tp_encode_options opts;
    core->encode_options_init(&opts);
    opts.add_special_tokens = add_special_tokens;
    tp_encoding *enc = NULL;
    const char *texts[1] = {text};
    if (core->tokenizer_encode(st->tok, texts, NULL, 1, &opts, &enc, err) != TP_OK)
        return err ? err->status : TP_ERR_INTERNAL;
    const int T = (int)core->encoding_length(enc, 0);
    const int32_t *ids = core->encoding_ids(enc, 0);
    if (T == 0) {
        core->encoding_free(enc);
        return core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                               "inputs: the prompt \"%s\" has no tokens", text);
    }
    tp_model_input in = {.struct_size = sizeof in, .batch = 1, .seq_len = T, .input_ids = ids};
    int32_t *seqs = NULL;
    int rows = 0, cols = 0;
    char *prompt_dec = NULL;
    sc->prompt_len = T;
    tp_status s = core->tokenizer_decode(st->tok, ids, (size_t)T, 1, -1, &prompt_dec, err);
    sc->prompt_dec = prompt_dec;
    sc->shown = NULL;
    sc->n_shown = 0;
    if (s == TP_OK)
        s = core->model_generate(ctx, st->model, &in, gparams, own_params,
                                 sc->n_stops || sc->stream ? on_step : NULL, sc, &seqs, &rows,
                                 &cols, err);
    for (int r = 0; s == TP_OK && r < rows; r++) {
        char *dec = NULL;
        s = core->tokenizer_decode(st->tok, seqs + (size_t)r * cols, (size_t)cols, 1, -1, &dec,
                                   err);
        if (s != TP_OK) break;
        /* the new text is what follows the decoded prompt's length, as the pipeline cuts it */
        const size_t pl = strlen(prompt_dec), dl = strlen(dec);
        const char *tail = dec + (pl < dl ? pl : dl);
        size_t n = strlen(tail) + (full_text ? strlen(text) : 0) + 1;
        char *gen = malloc(n);
        if (!gen) {
            core->free(dec);
            s = core->error_set(err, TP_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(gen, n, "%s%s", full_text ? text : "", tail);
        /* the rest of the new text, held back or never stepped through (beam search) */
        if (sc->stream && rows == 1) stream_upto(sc, tail, strlen(tail));
        cJSON *rec = cJSON_CreateObject();
        if (!rec || !cJSON_AddStringToObject(rec, "generated_text", gen)) {
            cJSON_Delete(rec);
            s = core->error_set(err, TP_ERR_NOMEM, "out of memory");
        } else {
            cJSON_AddItemToArray(out, rec);
        }
        free(gen);
        core->free(dec);
    }
    free(sc->shown);
    sc->shown = NULL;
    sc->prompt_dec = NULL;
    core->free(prompt_dec);
    core->free(seqs);
    core->encoding_free(enc);
    return s;
}

static int is_chat(const cJSON *v) {
    const cJSON *first = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, 0) : NULL;
    return first && (cJSON_IsObject(first) || (cJSON_IsArray(first) &&
                                               cJSON_IsObject(cJSON_GetArrayItem(first, 0))));
}

/* One conversation: render it, generate from the text, and append the records to
 * `out`: the new text alone, or (full_text) the messages plus the assistant's reply. */
static tp_status generate_chat(const tg_pipeline *st, tp_task_context *ctx,
                               const cJSON *messages, const cJSON *gparams, int full_text,
                               stop_check *sc, cJSON *out, tp_error *err) {
    const tp_core_api *core = st->core;
    char *json = cJSON_PrintUnformatted(messages);
    if (!json) return core->error_set(err, TP_ERR_NOMEM, "out of memory");
    char *prompt = NULL;
    tp_status s = core->tokenizer_apply_chat_template(st->tok, json, 1, &prompt, err);
    cJSON_free(json);
    if (s != TP_OK) return s;
    cJSON *replies = cJSON_CreateArray();
    s = replies ? generate_one(st, ctx, prompt, 0, gparams, 0, sc, replies, err)
                : core->error_set(err, TP_ERR_NOMEM, "out of memory");
    core->free(prompt);
    const cJSON *rec;
    cJSON_ArrayForEach(rec, replies) {
        if (s != TP_OK) break;
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(rec, "generated_text");
        cJSON *item = cJSON_CreateObject();
        cJSON *gen = full_text ? cJSON_Duplicate(messages, 1) : cJSON_CreateString(text->valuestring);
        if (gen && full_text) {
            cJSON *reply = cJSON_CreateObject();
            if (reply) {
                cJSON_AddStringToObject(reply, "role", "assistant");
                cJSON_AddStringToObject(reply, "content", text->valuestring);
                cJSON_AddItemToArray(gen, reply);
            }
        }
        if (!item || !gen) {
            cJSON_Delete(item);
            cJSON_Delete(gen);
            s = core->error_set(err, TP_ERR_NOMEM, "out of memory");
            break;
        }
        cJSON_AddItemToObject(item, "generated_text", gen);
        cJSON_AddItemToArray(out, item);
    }
    cJSON_Delete(replies);
    return s;
}

static tp_status tg_run(void *pipeline_state, tp_task_context *ctx, const cJSON *inputs,
                        const cJSON *params, cJSON **result, tp_error *err) {
    const tg_pipeline *st = pipeline_state;
    const tp_core_api *core = st->core;
    const int chat = is_chat(inputs);
    if (!cJSON_IsString(inputs) && !cJSON_IsArray(inputs))
        return core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                               "\"inputs\" must be a string or a list of strings");
    int full_text = 1;
    const cJSON *rft = cJSON_GetObjectItemCaseSensitive(params, "return_full_text");
    if (rft) {
        if (!cJSON_IsBool(rft))
            return core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                                   "parameter 'return_full_text' must be true or false");
        full_text = cJSON_IsTrue(rft);
    }
    const char *stops[16];
    stop_check sc = {.st = st, .stops = stops, .ctx = ctx};
    /* one prompt (a string or one conversation) streams, and only when the caller
     * asked for it: computing deltas decodes the whole row at every step */
    sc.stream =
        (cJSON_IsString(inputs) || (chat && cJSON_IsObject(cJSON_GetArrayItem(inputs, 0)))) &&
        core->struct_size >= TP_CORE_API_SIZE_THROUGH(context_streaming) &&
        core->context_streaming(ctx);
    for (const char *const *k = own_params + 1; *k; k++) {
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(params, *k);
        if (!sv || cJSON_IsNull(sv)) continue;
        if (cJSON_IsString(sv) && sv->valuestring[0] && sc.n_stops < 16) {
            stops[sc.n_stops++] = sv->valuestring;
            continue;
        }
        const cJSON *e;
        int ok = cJSON_IsArray(sv);
        cJSON_ArrayForEach(e, sv) {
            if (!cJSON_IsString(e) || !e->valuestring[0] || sc.n_stops >= 16) ok = 0;
            else stops[sc.n_stops++] = e->valuestring;
        }
        if (!ok)
            return core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                                   "parameter '%s' must be a non-empty string or a list of at "
                                   "most 16 of them",
                                   *k);
    }
    /* the pipeline's generation defaults under the request's parameters */
    cJSON *gp = cJSON_CreateObject();
    if (!gp) return core->error_set(err, TP_ERR_NOMEM, "out of memory");
    cJSON_AddNumberToObject(gp, "max_new_tokens", 256);
    cJSON_AddBoolToObject(gp, "do_sample", 1);
    cJSON_AddNumberToObject(gp, "temperature", 0.7);
    const cJSON *p;
    cJSON_ArrayForEach(p, params) {
        cJSON_DeleteItemFromObjectCaseSensitive(gp, p->string);
        cJSON_AddItemToObject(gp, p->string, cJSON_Duplicate(p, 1));
    }
    /* max_length given alone replaces the default max_new_tokens */
    if (cJSON_GetObjectItemCaseSensitive(params, "max_length") &&
        !cJSON_GetObjectItemCaseSensitive(params, "max_new_tokens"))
        cJSON_DeleteItemFromObjectCaseSensitive(gp, "max_new_tokens");
    cJSON *res = cJSON_CreateArray();
    tp_status s = res ? TP_OK : core->error_set(err, TP_ERR_NOMEM, "out of memory");
    if (s == TP_OK && chat && cJSON_IsObject(cJSON_GetArrayItem(inputs, 0))) {
        s = generate_chat(st, ctx, inputs, gp, full_text, &sc, res, err);
    } else if (s == TP_OK && chat) {
        /* a list of conversations: one list of records each */
        const cJSON *conv;
        cJSON_ArrayForEach(conv, inputs) {
            cJSON *one = cJSON_CreateArray();
            if (!one || !cJSON_IsArray(conv)) {
                cJSON_Delete(one);
                s = one ? core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                                          "inputs: a list of conversations must hold lists of "
                                          "messages")
                        : core->error_set(err, TP_ERR_NOMEM, "out of memory");
                break;
            }
            cJSON_AddItemToArray(res, one);
            s = generate_chat(st, ctx, conv, gp, full_text, &sc, one, err);
            if (s != TP_OK) break;
        }
    } else if (s == TP_OK && cJSON_IsString(inputs)) {
        s = generate_one(st, ctx, inputs->valuestring, 1, gp, full_text, &sc, res, err);
    } else if (s == TP_OK) {
        int i = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, inputs) {
            if (!cJSON_IsString(v)) {
                s = core->error_set(err, TP_ERR_INVALID_ARGUMENT,
                                    "inputs[%d] must be a string", i);
                break;
            }
            cJSON *one = cJSON_CreateArray();
            if (!one) {
                s = core->error_set(err, TP_ERR_NOMEM, "out of memory");
                break;
            }
            cJSON_AddItemToArray(res, one);
            s = generate_one(st, ctx, v->valuestring, 1, gp, full_text, &sc, one, err);
            if (s != TP_OK) break;
            i++;
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

static const char *const tg_tasks[] = {TG_TASK, NULL};

static const tp_task_vtable tg_vtable = {
    .struct_size = sizeof(tp_task_vtable),
    .tasks = tg_tasks,
    .aliases = NULL,
    .init = tg_init,
    .shutdown = NULL,
    .open = tg_open,
    .close = tg_close,
    .run = tg_run,
};

static const tp_module_descriptor tg_descriptor = {
    .struct_size = sizeof(tp_module_descriptor),
    .abi_version = TP_ABI_CURRENT,
    .kind = TP_MODULE_TASK,
    .name = TG_TASK,
    .version = "0.1.0",
    .license = "MIT",
    .description = "text-generation with decoder-only language models, as transformers 5 does it",
    .vtable = &tg_vtable,
};

TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void) { return &tg_descriptor; }
