/* test_loader.c: the module loader: search order, every refusal (one line, listed,
 * the runtime carries on), backend selection and switching, and the task name
 * resolution. Uses the modules built from tests/plugins into TP_TEST_PLUGIN_DIR. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "module_loader.h"
#include "pipeline.h"
#include "runtime.h"

#define PLUGINS TP_TEST_PLUGIN_DIR

static const char *base(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* The module whose file is `file` under `dir` (dir NULL: any dir); 0 when absent. */
static int find(tp_runtime *rt, const char *dir, const char *file, tp_module_info *out) {
    int found = 0;
    for (size_t i = 0; i < tp_runtime_module_count(rt); i++) {
        tp_module_info info;
        if (tp_runtime_module_info(rt, i, &info) != TP_OK) continue;
        if (strcmp(base(info.path), file) != 0) continue;
        if (dir && strncmp(info.path, dir, strlen(dir)) != 0) continue;
        if (!found) *out = info;
        found++;
    }
    return found;
}

static void expect_refused(tp_runtime *rt, const char *file, const char *words) {
    tp_module_info info;
    int n = find(rt, PLUGINS, file, &info);
    CHECK_MSG(n == 1, "%s listed %d times", file, n);
    if (n != 1) return;
    CHECK_MSG(!info.loaded, "%s loaded", file);
    CHECK_MSG(info.reason != NULL, "%s: no reason", file);
    if (!info.reason) return;
    CHECK_CONTAINS(info.reason, words);
    CHECK_MSG(strncmp(info.reason, file, strlen(file)) == 0, "reason '%s' does not start with %s",
              info.reason, file);
    CHECK_MSG(!strchr(info.reason, '\n'), "reason of %s is not one line", file);
}

static int copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    char buf[65536];
    size_t n;
    int ok = in && out;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = 0;
    return ok;
}

static tp_runtime *make(const char *backend_path, const char *plugin_path, tp_error *err) {
    tp_runtime_options o;
    tp_runtime_options_init(&o);
    o.backend_path = backend_path;
    o.plugin_path = plugin_path;
    o.no_default_dirs = 1;
    o.ignore_environment = 1;
    tp_runtime *rt = NULL;
    tp_status st = tp_runtime_new(&o, &rt, err);
    CHECK_MSG(st == TP_OK, "tp_runtime_new: %s", err->message);
    return rt;
}

static void test_plugin_refusals(void) {
    tp_error err = {0};
    /* good_echo first as a file entry, then the whole directory: duplicate_name.so
     * (named "echo-task" too) sorts before good_echo.so, so this pins who wins */
    tp_runtime *rt = make(NULL, PLUGINS "/good_echo.so:" PLUGINS, &err);
    if (!rt) return;

    tp_module_info info;
    CHECK_STATUS(tp_runtime_module_info(rt, 0, &info), TP_OK);
    CHECK(info.kind == TP_MODULE_BACKEND && info.loaded);
    CHECK(strcmp(info.name, "ref") == 0 && strcmp(info.path, "(built in)") == 0);
    CHECK(info.reason == NULL);
    CHECK_STATUS(tp_runtime_module_info(rt, tp_runtime_module_count(rt), &info),
                 TP_ERR_NOT_FOUND);
    CHECK(strcmp(tp_runtime_backend(rt), "ref") == 0);

    /* the same file met twice (as an entry and in its directory) is loaded once */
    CHECK_MSG(find(rt, PLUGINS, "good_echo.so", &info) == 1, "good_echo.so listed twice");
    CHECK(info.loaded && info.kind == TP_MODULE_TASK);
    CHECK(strcmp(info.name, "echo-task") == 0);
    CHECK(strcmp(info.version, "1.0.0") == 0 && strcmp(info.license, "MIT") == 0);
    CHECK_CONTAINS(info.detail, "tasks: echo");
    CHECK_CONTAINS(info.detail, "echo-alias -> echo");

    expect_refused(rt, "duplicate_name.so", "duplicate name 'echo-task' (already loaded from ");
    expect_refused(rt, "duplicate_name.so", "/good_echo.so)");
    expect_refused(rt, "bad_abi_major.so", "ABI 2.0, this tpipe has ABI 1.0");
    expect_refused(rt, "bad_abi_minor_newer.so", "ABI 1.1 is newer than this tpipe's ABI 1.0");
    expect_refused(rt, "bad_struct_size.so", "descriptor struct_size");
    expect_refused(rt, "no_entry.so", "no entry symbol 'tpipe_module_entry'");
    expect_refused(rt, "null_descriptor.so", "returned NULL");
    expect_refused(rt, "null_vtable.so", "no vtable");
    expect_refused(rt, "missing_run.so", "task vtable has no 'run'");
    expect_refused(rt, "small_vtable.so", "task vtable struct_size");
    expect_refused(rt, "bad_kind.so", "is a backend, found in the task plugin search path");
    expect_refused(rt, "backend_create_fails.so", "is a backend");
    expect_refused(rt, "init_fails.so", "init() failed: init_fails: cannot read words.txt");

    /* refused modules are listed under their file names */
    if (find(rt, PLUGINS, "no_entry.so", &info)) CHECK(strcmp(info.name, "no_entry.so") == 0);
    if (find(rt, PLUGINS, "init_fails.so", &info)) CHECK(strcmp(info.name, "init_fails.so") == 0);

    /* task resolution */
    const tp__module *plugin;
    const char *canonical;
    tp__modules *ms = tp__runtime_modules(rt);
    CHECK_STATUS(tp__modules_resolve_task(ms, "echo", &plugin, &canonical, &err), TP_OK);
    CHECK(plugin && strcmp(plugin->name, "echo-task") == 0 && strcmp(canonical, "echo") == 0);
    CHECK_STATUS(tp__modules_resolve_task(ms, "echo-alias", &plugin, &canonical, &err), TP_OK);
    CHECK(plugin && strcmp(canonical, "echo") == 0);
    CHECK_STATUS(tp__modules_resolve_task(ms, "no-such-task", &plugin, &canonical, &err),
                 TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "unknown task 'no-such-task' (known: echo, echo-alias)");

    /* the runtime still works: pipelines refuse with the right errors */
    tp_pipeline *p = NULL;
    CHECK_STATUS(tp_pipeline_new(rt, "nope", TP_TEST_DATA, &p, &err), TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "unknown task 'nope'");
    CHECK_STATUS(tp_pipeline_new(rt, "echo", TP_TEST_DATA "/no-such-model", &p, &err),
                 TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "no-such-model");
    CHECK(p == NULL);
    tp_runtime_free(rt);
}

static void test_backends(void) {
    tp_error err = {0};
    tp_runtime_options o;
    tp_runtime_options_init(&o);
    o.backend_path = PLUGINS;
    o.no_default_dirs = 1;
    o.ignore_environment = 1;
    o.num_threads = 3;
    tp_runtime *rt = NULL;
    CHECK_STATUS(tp_runtime_new(&o, &rt, &err), TP_OK);
    if (!rt) return;
    tp_module_info info;
    CHECK(find(rt, PLUGINS, "bad_kind.so", &info) == 1);
    CHECK(info.loaded && info.kind == TP_MODULE_BACKEND && strcmp(info.name, "test-naive") == 0);
    CHECK_CONTAINS(info.detail, "naive loops, 3 threads asked");
    expect_refused(rt, "backend_create_fails.so",
                   "create() failed: libnotthere.so.3: cannot open shared object file");
    expect_refused(rt, "good_echo.so", "is a task plugin, found in the backend search path");
    expect_refused(rt, "bad_abi_major.so", "ABI 2.0");

    /* test-naive is not one of the preferred ones: the default stays ref */
    CHECK(strcmp(tp_runtime_backend(rt), "ref") == 0);
    CHECK_STATUS(tp_runtime_set_backend(rt, "test-naive", &err), TP_OK);
    CHECK(strcmp(tp_runtime_backend(rt), "test-naive") == 0);

    /* a pinned backend stays pinned across a swap */
    tp__backend *be = tp__runtime_acquire_backend(rt);
    CHECK(strcmp(be->name, "test-naive") == 0 && atomic_load(&be->refs) == 1);
    CHECK_STATUS(tp_runtime_set_backend(rt, "ref", &err), TP_OK);
    CHECK(strcmp(be->name, "test-naive") == 0);
    tp__backend_release(be);
    CHECK(atomic_load(&be->refs) == 0);

    /* the naive backend computes through the dispatch */
    float a[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 0, -1, 2, 1, 0}, bias[2] = {5, -10}, y[4];
    CHECK_STATUS(tp__linear(be, a, 2, 3, w, bias, 2, TP_ACT_RELU, y, &err), TP_OK);
    CHECK_NEAR(y[0], 1 - 3 + 5, 1e-6);
    CHECK_NEAR(y[1], 0, 1e-6); /* 4 - 10, through the relu */
    CHECK_NEAR(y[2], 4 - 6 + 5, 1e-6);
    CHECK_NEAR(y[3], 8 + 5 - 10, 1e-6);
    CHECK_STATUS(tp__linear(be, a, 2, 3, w, bias, 2, TP_ACT_GELU, y, &err), TP_ERR_BACKEND);
    CHECK_CONTAINS(err.message, "backend 'test-naive'");

    CHECK_STATUS(tp_runtime_set_backend(rt, "nope", &err), TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "backend 'nope' not found (loaded: ref, test-naive)");
    CHECK_STATUS(tp_runtime_set_backend(rt, "create-fails", &err), TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "backend 'create-fails' was refused: backend_create_fails.so");
    CHECK(strcmp(tp_runtime_backend(rt), "ref") == 0);
    tp_runtime_free(rt);

    /* an explicit backend */
    o.backend = "test-naive";
    rt = NULL;
    CHECK_STATUS(tp_runtime_new(&o, &rt, &err), TP_OK);
    if (rt) CHECK(strcmp(tp_runtime_backend(rt), "test-naive") == 0);
    tp_runtime_free(rt);
    o.backend = "onednn";
    o.backend_path = NULL;
    rt = NULL;
    CHECK_STATUS(tp_runtime_new(&o, &rt, &err), TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "backend 'onednn' not found (loaded: ref)");
    CHECK(rt == NULL);
}

static void test_search_order(void) {
    char tmpl[] = "/tmp/tpipe-loader-XXXXXX";
    char *tmp = mkdtemp(tmpl);
    CHECK(tmp != NULL);
    if (!tmp) return;
    char copy[512], garbage[512], path[1200];
    snprintf(copy, sizeof copy, "%s/good_echo.so", tmp);
    snprintf(garbage, sizeof garbage, "%s/not_elf.so", tmp);
    CHECK(copy_file(PLUGINS "/good_echo.so", copy));
    FILE *f = fopen(garbage, "w");
    if (f) {
        fputs("this is not a shared object\n", f);
        fclose(f);
    }

    /* a second file with a taken name, later on the path: refused, first wins */
    tp_error err = {0};
    snprintf(path, sizeof path, "%s::%s:/no/such/dir:%s", tmp, PLUGINS, tmp);
    tp_runtime *rt = make(NULL, path, &err);
    if (rt) {
        tp_module_info info;
        CHECK(find(rt, tmp, "good_echo.so", &info) == 1 && info.loaded);
        CHECK(find(rt, PLUGINS, "good_echo.so", &info) == 1 && !info.loaded);
        char want[600];
        snprintf(want, sizeof want, "duplicate name 'echo-task' (already loaded from %s)", copy);
        if (info.reason) CHECK_CONTAINS(info.reason, want);
        CHECK(find(rt, tmp, "not_elf.so", &info) == 1 && !info.loaded);
        if (info.reason) CHECK_CONTAINS(info.reason, "not_elf.so: dlopen failed: ");
        /* the directory listed twice is searched once */
        CHECK(find(rt, NULL, "not_elf.so", &info) == 1);
        tp_runtime_free(rt);
    }

    /* options before the environment; the environment only when allowed */
    setenv("TPIPE_PLUGIN_PATH", tmp, 1);
    tp_runtime_options o;
    tp_runtime_options_init(&o);
    o.no_default_dirs = 1;
    o.plugin_path = PLUGINS "/good_echo.so";
    rt = NULL;
    CHECK_STATUS(tp_runtime_new(&o, &rt, &err), TP_OK);
    if (rt) {
        tp_module_info info;
        CHECK(find(rt, PLUGINS, "good_echo.so", &info) == 1 && info.loaded);
        CHECK(find(rt, tmp, "good_echo.so", &info) == 1 && !info.loaded);
        tp_runtime_free(rt);
    }
    o.plugin_path = NULL;
    rt = NULL;
    CHECK_STATUS(tp_runtime_new(&o, &rt, &err), TP_OK);
    if (rt) {
        tp_module_info info;
        CHECK(find(rt, tmp, "good_echo.so", &info) == 1 && info.loaded);
        tp_runtime_free(rt);
    }
    o.ignore_environment = 1;
    rt = NULL;
    CHECK_STATUS(tp_runtime_new(&o, &rt, &err), TP_OK);
    if (rt) {
        CHECK(tp_runtime_module_count(rt) == 1); /* ref alone */
        tp_runtime_free(rt);
    }
    unsetenv("TPIPE_PLUGIN_PATH");

    unlink(copy);
    unlink(garbage);
    rmdir(tmp);
}

static void test_options(void) {
    tp_error err = {0};
    tp_runtime *rt = NULL;
    tp_runtime_options o;
    tp_runtime_options_init(&o);
    CHECK(o.struct_size == sizeof o && o.backend == NULL && o.num_workers == 0);
    o.struct_size = 0;
    CHECK_STATUS(tp_runtime_new(&o, &rt, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "struct_size");
    tp_runtime_options_init(&o);
    o.num_workers = -1;
    CHECK_STATUS(tp_runtime_new(&o, &rt, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "num_workers");
    CHECK(rt == NULL);
    tp_runtime_free(NULL);
    CHECK(tp_runtime_module_count(NULL) == 0);
    /* the defaults: environment and default dirs searched, whatever is there */
    unsetenv("TPIPE_PLUGIN_PATH");
    unsetenv("TPIPE_BACKEND_PATH");
    CHECK_STATUS(tp_runtime_new(NULL, &rt, &err), TP_OK);
    CHECK(rt && tp_runtime_module_count(rt) >= 1);
    tp_runtime_free(rt);
}

int main(void) {
    test_plugin_refusals();
    test_backends();
    test_search_order();
    test_options();
    return CHECK_DONE();
}
