/* module_loader.h: finding, checking and loading backends and task plugins.
 *
 * The loader walks the search path (see tp__modules_load), dlopens every `*.so`,
 * checks its descriptor before calling anything in it, and keeps a list of every
 * module it met, loaded or refused with a one-line reason. A refusal never fails the
 * runtime. Nothing is unloaded before tp__modules_free, which the runtime calls only
 * once nothing from any module is alive.
 *
 * Threading: tp__modules_load and tp__modules_free run on one thread; everything
 * else reads an immutable list and may run on any thread concurrently. */
#ifndef TP_CORE_MODULE_LOADER_H
#define TP_CORE_MODULE_LOADER_H

#include "backend.h"
#include "../sdk/tpipe_plugin.h"

typedef struct tp__module {
    tp_module_kind kind;
    int loaded;                 /* 1: usable; 0: refused, see reason */
    char *name;                 /* the descriptor's name; the file name when refused early */
    char *version;
    char *license;
    char *path;                 /* the .so, or "(built in)" */
    char *detail;               /* backend: describe(); task: tasks and aliases */
    char *reason;               /* one line when refused */
    void *handle;               /* dlopen handle; NULL for built-in modules */
    const tp_module_descriptor *desc;
    /* backend */
    tp__backend *backend;       /* loaded backends: the context made with create() */
    /* task plugin */
    const tp_task_vtable *task;
    void *plugin_state;         /* from init() */
} tp__module;

typedef struct tp__modules tp__modules;

/* Search order, per kind (backends: backend_path and TPIPE_BACKEND_PATH and
 * <libdir>/tpipe/backends; plugins: plugin_path and TPIPE_PLUGIN_PATH and
 * <libdir>/tpipe/plugins):
 *   1. opts->backend_path / opts->plugin_path, ':'-separated, left to right;
 *   2. the environment variable, ':'-separated, unless opts->ignore_environment
 *      (read with secure_getenv: ignored in setuid programs);
 *   3. the default directory, unless opts->no_default_dirs: "tpipe/backends" and
 *      "tpipe/plugins" next to the file holding libtpipe's code (found with dladdr:
 *      build/lib/libtpipe.so -> build/lib/tpipe/...; the install tree is the same).
 * An entry may also name one module file. A directory or file met twice (same
 * realpath) is used once; one that does not exist is skipped. Inside a directory,
 * `*.so` files load in strcmp order of their names.
 * Backends load before plugins; the built-in ref backend is first of all. When two
 * modules of one kind share a name, the first wins and the second is refused.
 * Fails only on out-of-memory or when the built-in ref backend is refused. */
tp_status tp__modules_load(const tp_runtime_options *opts, tp__modules **out, tp_error *err);

/* Shuts plugins down, destroys backend contexts, then dlcloses, in reverse load
 * order. NULL is fine. */
void tp__modules_free(tp__modules *ms);

size_t tp__modules_count(const tp__modules *ms);
const tp__module *tp__modules_at(const tp__modules *ms, size_t i);

/* A module by kind and name: the loaded one, else a refused one whose descriptor or
 * file ("name" or "name.so") has that name; NULL when absent. */
const tp__module *tp__modules_find(const tp__modules *ms, tp_module_kind kind,
                                   const char *name);

/* The loaded backend called `name`, or NULL. */
tp__backend *tp__modules_backend(const tp__modules *ms, const char *name);

/* "ref, openblas": the loaded backends, for messages. */
void tp__modules_backend_names(const tp__modules *ms, char *buf, size_t len);

/* Resolves a task name or alias to the plugin serving it, in load order: an exact
 * canonical name first, then an alias, then "translation_XX_to_YY" as "translation".
 * `*canonical` points into the plugin's descriptor. TP_ERR_NOT_FOUND
 * "unknown task 'x' (known: ...)". */
tp_status tp__modules_resolve_task(const tp__modules *ms, const char *task,
                                   const tp__module **plugin, const char **canonical,
                                   tp_error *err);

#endif
