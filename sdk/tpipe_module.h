/*
 * tpipe_module.h: what every loadable module (task plugin or compute backend) exports.
 *
 * A module is a shared object exporting exactly one symbol, TP_MODULE_ENTRY_SYMBOL,
 * a function returning a pointer to a constant descriptor. The loader checks, before
 * calling anything else: the ABI major equals the core's, the ABI minor is not newer
 * than the core's, struct_size is at least the size of the first published
 * descriptor, the kind is known, and the name is not already taken. A refused module
 * is reported in one line and the runtime carries on without it.
 *
 * Versioning: a minor version only appends members at the end of structs and
 * tables; the core reads a member only when struct_size says it is there. A major
 * version may change anything.
 *
 * Threading: the entry function may be called from any thread and must have no side
 * effects; the descriptor must be constant for the lifetime of the .so.
 */
#ifndef TPIPE_MODULE_H
#define TPIPE_MODULE_H

#include <stddef.h>
#include <stdint.h>
#include <tpipe/tpipe.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TP_ABI_MAJOR 1
#define TP_ABI_MINOR 0
#define TP_ABI_VERSION(major, minor) (((uint32_t)(major) << 16) | (uint32_t)(minor))
#define TP_ABI_CURRENT TP_ABI_VERSION(TP_ABI_MAJOR, TP_ABI_MINOR)

#define TP_MODULE_ENTRY_SYMBOL "tpipe_module_entry"

typedef struct tp_module_descriptor {
    size_t struct_size;      /* sizeof(tp_module_descriptor) the module was built with */
    uint32_t abi_version;    /* TP_ABI_CURRENT the module was built with */
    uint32_t kind;           /* tp_module_kind: TP_MODULE_TASK or TP_MODULE_BACKEND */
    const char *name;        /* unique among modules of its kind: [a-z0-9_-]+ */
    const char *version;     /* the module's own version, free form */
    const char *license;     /* SPDX identifier */
    const char *description; /* one line */
    const void *vtable;      /* const tp_task_vtable * or const tp_backend_vtable * */
} tp_module_descriptor;

typedef const tp_module_descriptor *(*tp_module_entry_fn)(void);

/* Put this in front of the entry function of a module. */
#if defined(__GNUC__)
#define TP_MODULE_EXPORT __attribute__((visibility("default")))
#else
#define TP_MODULE_EXPORT
#endif

#ifdef __cplusplus
}
#endif
#endif
