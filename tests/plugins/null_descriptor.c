/* null_descriptor.c: entry function returns NULL: refused */
#include <stddef.h>
#include <tpipe_plugin.h>

static const char *const tasks[] = {"null-descriptor", NULL};

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

static const __attribute__((unused)) tp_task_vtable vtable = {
    .struct_size = sizeof(tp_task_vtable),
    .tasks = tasks,
    .open = t_open,
    .run = t_run,
};

static const __attribute__((unused)) tp_module_descriptor descriptor = {
    .struct_size = sizeof(tp_module_descriptor),
    .abi_version = TP_ABI_CURRENT,
    .kind = TP_MODULE_TASK,
    .name = "null-descriptor",
    .version = "0.0.1",
    .license = "MIT",
    .description = "entry function returns NULL: refused",
    .vtable = &vtable,
};

TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void) { return NULL; }
