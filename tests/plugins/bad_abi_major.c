/* bad_abi_major.c: built for ABI 2.0: refused, the major differs */
#include <stddef.h>
#include <tpipe_plugin.h>

static const char *const tasks[] = {"bad-abi-major", NULL};

static tp_status t_open(void *state, tp_task_pipeline *p, void **ps, tp_error *err) {
    (void)state; (void)p; (void)err;
    *ps = NULL;
    return TP_OK;
}

static tp_status t_run(void *ps, tp_task_context *ctx, const struct cJSON *inputs,
                       const struct cJSON *params, struct cJSON **result, tp_error *err) {
    (void)ps; (void)ctx; (void)inputs; (void)params; (void)result; (void)err;
    return TP_ERR_UNSUPPORTED;
}

static const tp_task_vtable vtable = {
    .struct_size = sizeof(tp_task_vtable),
    .tasks = tasks,
    .open = t_open,
    .run = t_run,
};

static const tp_module_descriptor descriptor = {
    .struct_size = sizeof(tp_module_descriptor),
    .abi_version = TP_ABI_VERSION(TP_ABI_MAJOR + 1, 0),
    .kind = TP_MODULE_TASK,
    .name = "bad-abi-major",
    .version = "0.0.1",
    .license = "MIT",
    .description = "built for ABI 2.0: refused, the major differs",
    .vtable = &vtable,
};

TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void) { return &descriptor; }
