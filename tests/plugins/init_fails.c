/* init_fails.c: init() fails: refused with its message */
#include <stddef.h>
#include <tpipe_plugin.h>

static const char *const tasks[] = {"init-fails", NULL};

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

static tp_status t_init(const tp_core_api *core, void **state, tp_error *err) {
    (void)state;
    return core->error_set(err, TP_ERR_NOT_FOUND, "init_fails: cannot read %s", "words.txt");
}

static const tp_task_vtable vtable = {
    .struct_size = sizeof(tp_task_vtable),
    .tasks = tasks,
    .open = t_open,
    .run = t_run,
    .init = t_init,
};

static const tp_module_descriptor descriptor = {
    .struct_size = sizeof(tp_module_descriptor),
    .abi_version = TP_ABI_CURRENT,
    .kind = TP_MODULE_TASK,
    .name = "init-fails",
    .version = "0.0.1",
    .license = "MIT",
    .description = "init() fails: refused with its message",
    .vtable = &vtable,
};

TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void) { return &descriptor; }
