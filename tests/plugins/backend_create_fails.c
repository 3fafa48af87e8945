/* backend_create_fails.c: a backend whose create() fails, as one whose library is
 * missing would: refused with its `why` line. */
#include <stdio.h>
#include <tpipe_backend.h>

static tp_status fail_create(const tp_backend_config *cfg, void **ctx, char *why, size_t len) {
    (void)cfg;
    *ctx = NULL;
    snprintf(why, len, "libnotthere.so.3: cannot open shared object file");
    return TP_ERR_BACKEND;
}

static tp_status never_matmul(void *ctx, const tp_matmul_args *a) {
    (void)ctx;
    (void)a;
    return TP_ERR_INTERNAL;
}

static const tp_backend_vtable vtable = {
    .struct_size = sizeof(tp_backend_vtable),
    .create = fail_create,
    .matmul = never_matmul,
};

static const tp_module_descriptor descriptor = {
    .struct_size = sizeof(tp_module_descriptor),
    .abi_version = TP_ABI_CURRENT,
    .kind = TP_MODULE_BACKEND,
    .name = "create-fails",
    .version = "0.0.1",
    .license = "MIT",
    .description = "test backend whose create() fails",
    .vtable = &vtable,
};

TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void) { return &descriptor; }
