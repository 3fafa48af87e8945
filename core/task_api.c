/* task_api.c: the tp_core_api table every task plugin receives in init().
 *
 * Mostly the public functions themselves; the rest are thin adapters: a printf-style
 * error setter, accessors on the opaque tp_task_pipeline (which is the core's
 * tp_pipeline), config lookup by dotted path, and a forward pinned to the backend
 * of the running request. The table is static and const: thread-safe. Append-only:
 * new members go at the end, never in between (see tpipe_plugin.h). */
#include <stdarg.h>
#include <stdio.h>

#include "error.h"
#include "generate/generate.h"
#include "json_util.h"
#include "models/model.h"
#include "pipeline.h"
#include "runtime.h"

static tp_status api_error_set(tp_error *err, tp_status status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->status = status;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return status;
}

static const char *api_pipeline_task(const tp_task_pipeline *p) {
    return p ? ((const tp_pipeline *)p)->task : NULL;
}

static const char *api_pipeline_task_as_called(const tp_task_pipeline *p) {
    return p ? ((const tp_pipeline *)p)->task_as_called : NULL;
}

static tp_model *api_pipeline_model(tp_task_pipeline *p) {
    return p ? ((tp_pipeline *)p)->model : NULL;
}

static tp_tokenizer *api_pipeline_tokenizer(tp_task_pipeline *p) {
    return p ? ((tp_pipeline *)p)->tokenizer : NULL;
}

static const struct cJSON *api_model_config(const tp_model *m, const char *key) {
    return m && key ? tp__json_path(m->config, key) : NULL;
}

static tp_status api_model_forward(tp_task_context *ctx, tp_model *m, const tp_model_input *in,
                                   tp_tensor **out, tp_error *err) {
    /* without a request (a plugin computing in open()), use the runtime's backend */
    if (!ctx) return tp_model_forward(m, in, out, err);
    return tp__model_forward(m, ctx->backend, in, out, err);
}

static tp_status api_model_generate(tp_task_context *ctx, tp_model *m, const tp_model_input *in,
                                    const struct cJSON *params, const char *const *skip,
                                    int (*on_step)(void *user, const int32_t *seq, int rows,
                                                   int len, uint8_t *stop),
                                    void *user, int32_t **sequences, int *rows, int *cols,
                                    tp_error *err) {
    if (!m || !in || !sequences || !rows || !cols)
        return api_error_set(err, TP_ERR_INVALID_ARGUMENT, "model_generate: NULL argument");
    tp__gen_config cfg;
    TP_TRY(tp__gen_config_init(m, &cfg, err));
    tp_status st = tp__gen_config_apply(&cfg, params, skip, err);
    if (st == TP_OK) {
        tp__backend *be = ctx ? ctx->backend : tp__runtime_acquire_backend(m->rt);
        st = tp__generate(m, be, &cfg, in->input_ids, in->attention_mask, in->batch, in->seq_len,
                          on_step, user, sequences, rows, cols, err);
        if (!ctx) tp__backend_release(be);
    }
    tp__gen_config_free(&cfg);
    return st;
}

static void api_stream_text(tp_task_context *ctx, const char *text_delta) {
    if (ctx && ctx->on_text && text_delta && text_delta[0])
        ctx->on_text(ctx->stream_user, text_delta);
}

static int api_context_streaming(const tp_task_context *ctx) {
    return ctx && ctx->on_text;
}

static const tp_core_api core_api = {
    .struct_size = sizeof(tp_core_api),
    .abi_version = TP_ABI_CURRENT,
    .error_set = api_error_set,

    .pipeline_task = api_pipeline_task,
    .pipeline_task_as_called = api_pipeline_task_as_called,
    .pipeline_model = api_pipeline_model,
    .pipeline_tokenizer = api_pipeline_tokenizer,

    .encode_options_init = tp_encode_options_init,
    .tokenizer_encode = tp_tokenizer_encode,
    .tokenizer_decode = tp_tokenizer_decode,
    .tokenizer_token_to_id = tp_tokenizer_token_to_id,
    .tokenizer_id_to_token = tp_tokenizer_id_to_token,
    .tokenizer_model_max_length = tp_tokenizer_model_max_length,
    .tokenizer_special_id = tp_tokenizer_special_id,
    .encoding_rows = tp_encoding_rows,
    .encoding_length = tp_encoding_length,
    .encoding_ids = tp_encoding_ids,
    .encoding_attention_mask = tp_encoding_attention_mask,
    .encoding_type_ids = tp_encoding_type_ids,
    .encoding_special_mask = tp_encoding_special_mask,
    .encoding_offsets = tp_encoding_offsets,
    .encoding_word_ids = tp_encoding_word_ids,
    .encoding_sequence_ids = tp_encoding_sequence_ids,
    .encoding_sample = tp_encoding_sample,
    .encoding_free = tp_encoding_free,

    .model_type = tp_model_type,
    .model_architecture = tp_model_architecture,
    .model_head = tp_model_head,
    .model_num_labels = tp_model_num_labels,
    .model_label = tp_model_label,
    .model_problem_type = tp_model_problem_type,
    .model_config = api_model_config,
    .model_forward = api_model_forward,

    .tensor_ndim = tp_tensor_ndim,
    .tensor_dim = tp_tensor_dim,
    .tensor_f32 = tp_tensor_f32,
    .tensor_free = tp_tensor_free,

    .free = tp_free,

    .model_generate = api_model_generate,
    .tokenizer_apply_chat_template = tp_tokenizer_apply_chat_template,
    .stream_text = api_stream_text,
    .context_streaming = api_context_streaming,
};

const tp_core_api *tp__core_api(void) { return &core_api; }
