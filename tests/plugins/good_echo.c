/* good_echo.c: a valid task plugin ("echo-task") for the loader and scheduler tests.
 *
 * Task "echo" (alias "echo-alias") answers with the request's inputs unchanged.
 * Parameters steer it for tests:
 *   "wrap": true        -> {"inputs": ..., "parameters": ..., "task": <name as called>}
 *   "fail": "why"       -> fails with TP_ERR_INVALID_ARGUMENT "echo: why"
 *   "sleep_ms": N       -> sleeps N ms first (to keep requests pending)
 *   "forward": true     -> tokenizes the string input, runs the model on the request's
 *                          pinned backend, answers {"inputs": ..., "logits": [...]}
 * Threading: run() keeps no state of its own. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <time.h>
#include <tpipe_plugin.h>

typedef struct {
    const tp_core_api *core;
    tp_task_pipeline *p;
} echo_pipeline;

static const char *const tasks[] = {"echo", NULL};
static const char *const aliases[] = {"echo-alias", "echo", NULL};

static tp_status echo_init(const tp_core_api *core, void **state, tp_error *err) {
    if (core->struct_size < sizeof(tp_core_api))
        return core->error_set(err, TP_ERR_ABI, "echo: core API too old");
    *state = (void *)core;
    return TP_OK;
}

static void echo_shutdown(void *state) { (void)state; }

static tp_status echo_open(void *state, tp_task_pipeline *p, void **pipeline_state,
                           tp_error *err) {
    const tp_core_api *core = state;
    echo_pipeline *ep = cJSON_malloc(sizeof *ep);
    if (!ep) return core->error_set(err, TP_ERR_NOMEM, "echo: out of memory");
    ep->core = core;
    ep->p = p;
    *pipeline_state = ep;
    return TP_OK;
}

static void echo_close(void *pipeline_state) { cJSON_free(pipeline_state); }

static tp_status forward(echo_pipeline *ep, tp_task_context *ctx, const cJSON *inputs,
                         cJSON *out, tp_error *err) {
    const tp_core_api *core = ep->core;
    if (!cJSON_IsString(inputs))
        return core->error_set(err, TP_ERR_INVALID_ARGUMENT, "echo: forward wants a string");
    const char *text = inputs->valuestring;
    tp_encoding *enc = NULL;
    tp_status st = core->tokenizer_encode(core->pipeline_tokenizer(ep->p), &text, NULL, 1, NULL,
                                          &enc, err);
    if (st != TP_OK) return st;
    tp_model_input in = {.struct_size = sizeof in,
                         .batch = 1,
                         .seq_len = (int)core->encoding_length(enc, 0),
                         .input_ids = core->encoding_ids(enc, 0),
                         .attention_mask = core->encoding_attention_mask(enc, 0),
                         .token_type_ids = core->encoding_type_ids(enc, 0)};
    tp_tensor *logits = NULL;
    st = core->model_forward(ctx, core->pipeline_model(ep->p), &in, &logits, err);
    core->encoding_free(enc);
    if (st != TP_OK) return st;
    cJSON *arr = cJSON_AddArrayToObject(out, "logits");
    const float *x = core->tensor_f32(logits);
    int64_t n = core->tensor_dim(logits, core->tensor_ndim(logits) - 1);
    for (int64_t i = 0; arr && x && i < n; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(x[i]));
    core->tensor_free(logits);
    return TP_OK;
}

static tp_status echo_run(void *pipeline_state, tp_task_context *ctx, const cJSON *inputs,
                          const cJSON *params, cJSON **result, tp_error *err) {
    echo_pipeline *ep = pipeline_state;
    const tp_core_api *core = ep->core;
    const cJSON *sleep_ms = cJSON_GetObjectItemCaseSensitive(params, "sleep_ms");
    if (cJSON_IsNumber(sleep_ms) && sleep_ms->valuedouble > 0) {
        struct timespec ts = {(time_t)(sleep_ms->valuedouble / 1000),
                              (long)((long long)sleep_ms->valuedouble % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    const cJSON *fail = cJSON_GetObjectItemCaseSensitive(params, "fail");
    if (cJSON_IsString(fail))
        return core->error_set(err, TP_ERR_INVALID_ARGUMENT, "echo: %s", fail->valuestring);
    int wrap = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(params, "wrap"));
    int fwd = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(params, "forward"));
    if (!wrap && !fwd) {
        *result = cJSON_Duplicate(inputs, 1);
        return *result ? TP_OK : core->error_set(err, TP_ERR_NOMEM, "echo: out of memory");
    }
    cJSON *out = cJSON_CreateObject();
    if (!out) return core->error_set(err, TP_ERR_NOMEM, "echo: out of memory");
    cJSON_AddItemToObject(out, "inputs", cJSON_Duplicate(inputs, 1));
    if (wrap) {
        cJSON_AddItemToObject(out, "parameters", cJSON_Duplicate(params, 1));
        cJSON_AddStringToObject(out, "task", core->pipeline_task_as_called(ep->p));
        cJSON_AddStringToObject(out, "canonical", core->pipeline_task(ep->p));
    }
    if (fwd) {
        tp_status st = forward(ep, ctx, inputs, out, err);
        if (st != TP_OK) {
            cJSON_Delete(out);
            return st;
        }
    }
    *result = out;
    return TP_OK;
}

static const tp_task_vtable vtable = {
    .struct_size = sizeof(tp_task_vtable),
    .tasks = tasks,
    .aliases = aliases,
    .init = echo_init,
    .shutdown = echo_shutdown,
    .open = echo_open,
    .close = echo_close,
    .run = echo_run,
};

static const tp_module_descriptor descriptor = {
    .struct_size = sizeof(tp_module_descriptor),
    .abi_version = TP_ABI_CURRENT,
    .kind = TP_MODULE_TASK,
    .name = "echo-task",
    .version = "1.0.0",
    .license = "MIT",
    .description = "test plugin: answers with its inputs",
    .vtable = &vtable,
};

TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void) { return &descriptor; }
