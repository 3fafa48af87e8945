/* test_scheduler.c: requests through the scheduler with the echo test plugin on the
 * distilbert-sst2 fixture: many requests from several threads while the backend is
 * switched, each callback exactly once with the right result on the loop thread,
 * synchronous rejection of malformed requests, error completions, tp_pipeline_run,
 * draining at tp_runtime_free and tp_pipeline_free, and a model forward pinned to
 * the request's backend. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "module_loader.h"
#include "pipeline.h"
#include "runtime.h"

#define PLUGINS TP_TEST_PLUGIN_DIR
#define MODEL TP_TEST_DATA "/fixtures/models/distilbert-sst2"

#define THREADS 6
#define PER_THREAD 150

static tp_runtime *make(int workers) {
    tp_runtime_options o;
    tp_runtime_options_init(&o);
    /* good_echo alone (duplicate_name.so would take its name in directory order) and
     * the test backend, to switch between two backends */
    o.plugin_path = PLUGINS "/good_echo.so";
    o.backend_path = PLUGINS "/bad_kind.so";
    o.no_default_dirs = 1;
    o.ignore_environment = 1;
    o.num_workers = workers;
    tp_runtime *rt = NULL;
    tp_error err = {0};
    tp_status st = tp_runtime_new(&o, &rt, &err);
    CHECK_MSG(st == TP_OK, "tp_runtime_new: %s", err.message);
    return rt;
}

static tp_pipeline *open_echo(tp_runtime *rt, const char *task) {
    tp_pipeline *p = NULL;
    tp_error err = {0};
    tp_status st = tp_pipeline_new(rt, task, MODEL, &p, &err);
    CHECK_MSG(st == TP_OK, "tp_pipeline_new: %s", err.message);
    return p;
}

/* ---------------------------------------------------------------- completions */

typedef struct {
    char request[160];
    char expected[200];
    atomic_int calls;
    int ok;
    pthread_t thread;
} slot;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} counter;

static counter all_done = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void count_one(counter *c) {
    pthread_mutex_lock(&c->lock);
    c->done++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void wait_for(counter *c, int n) {
    pthread_mutex_lock(&c->lock);
    while (c->done < n) pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
}

static void on_done(void *user_data, tp_status status, const char *response,
                    const tp_error *err) {
    slot *s = user_data;
    s->ok = status == TP_OK && err == NULL && response && strcmp(response, s->expected) == 0;
    if (!s->ok)
        fprintf(stderr, "request %s: status %d, response %s, want %s\n", s->request, status,
                response ? response : "(null)", s->expected);
    s->thread = pthread_self();
    atomic_fetch_add(&s->calls, 1);
    count_one(&all_done);
}

typedef struct {
    tp_pipeline *p;
    slot *slots;
    int t;
    int refused;
} submitter;

static void *submit_many(void *arg) {
    submitter *sub = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        slot *s = &sub->slots[i];
        int wrap = i % 3 == 0;
        snprintf(s->request, sizeof s->request,
                 "{\"inputs\": {\"t\": %d, \"i\": %d}, \"parameters\": {\"wrap\": %s}}", sub->t, i,
                 wrap ? "true" : "false");
        if (wrap)
            snprintf(s->expected, sizeof s->expected,
                     "{\"inputs\":{\"t\":%d,\"i\":%d},\"parameters\":{\"wrap\":true},"
                     "\"task\":\"echo\",\"canonical\":\"echo\"}",
                     sub->t, i);
        else
            snprintf(s->expected, sizeof s->expected, "{\"t\":%d,\"i\":%d}", sub->t, i);
        tp_error err;
        if (tp_submit(sub->p, s->request, on_done, s, &err) != TP_OK) sub->refused++;
    }
    return NULL;
}

static atomic_int stop_switching;
static atomic_int switches;

static void *switch_backends(void *arg) {
    tp_runtime *rt = arg;
    int flip = 0;
    while (!atomic_load(&stop_switching)) {
        tp_error err;
        if (tp_runtime_set_backend(rt, flip ? "ref" : "test-naive", &err) == TP_OK)
            atomic_fetch_add(&switches, 1);
        flip = !flip;
    }
    return NULL;
}

static void test_many_threads(void) {
    tp_runtime *rt = make(4);
    if (!rt) return;
    tp_pipeline *p = open_echo(rt, "echo");
    if (!p) {
        tp_runtime_free(rt);
        return;
    }
    static slot slots[THREADS][PER_THREAD];
    submitter subs[THREADS];
    pthread_t threads[THREADS], switcher;
    atomic_store(&stop_switching, 0);
    pthread_create(&switcher, NULL, switch_backends, rt);
    for (int t = 0; t < THREADS; t++) {
        subs[t] = (submitter){p, slots[t], t, 0};
        pthread_create(&threads[t], NULL, submit_many, &subs[t]);
    }
    int refused = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        refused += subs[t].refused;
    }
    CHECK(refused == 0);
    wait_for(&all_done, THREADS * PER_THREAD - refused);
    atomic_store(&stop_switching, 1);
    pthread_join(switcher, NULL);
    CHECK(atomic_load(&switches) > 0);

    int once = 1, ok = 1, one_thread = 1;
    pthread_t loop = slots[0][0].thread;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++) {
            once &= atomic_load(&slots[t][i].calls) == 1;
            ok &= slots[t][i].ok;
            one_thread &= pthread_equal(slots[t][i].thread, loop) != 0;
        }
    CHECK_MSG(once, "a callback did not run exactly once");
    CHECK_MSG(ok, "a response was wrong");
    CHECK_MSG(one_thread, "callbacks ran on more than one thread");
    CHECK(!pthread_equal(loop, pthread_self()));

    /* no request holds a backend any more */
    tp__modules *ms = tp__runtime_modules(rt);
    CHECK(atomic_load(&tp__modules_backend(ms, "ref")->refs) == 0);
    CHECK(atomic_load(&tp__modules_backend(ms, "test-naive")->refs) == 0);

    /* nothing was called twice after the fact */
    tp_pipeline_free(p);
    tp_runtime_free(rt);
    CHECK(all_done.done == THREADS * PER_THREAD);
}

/* ---------------------------------------------------------------- one at a time */

static atomic_int stray_calls;

static void stray(void *user_data, tp_status status, const char *response,
                  const tp_error *err) {
    (void)user_data;
    (void)status;
    (void)response;
    (void)err;
    atomic_fetch_add(&stray_calls, 1);
}

typedef struct {
    tp_pipeline *p;
    counter c;
    tp_status nested;
    char message[TP_ERROR_MESSAGE_MAX];
} nested_ctx;

static void call_run_inside(void *user_data, tp_status status, const char *response,
                            const tp_error *err) {
    (void)status;
    (void)response;
    (void)err;
    nested_ctx *n = user_data;
    char *out = NULL;
    tp_error e = {0};
    n->nested = tp_pipeline_run(n->p, "{\"inputs\": 1}", &out, &e);
    snprintf(n->message, sizeof n->message, "%s", e.message);
    tp_free(out);
    count_one(&n->c);
}

typedef struct {
    tp_pipeline *q;
    atomic_int calls;
    counter c;
    atomic_int failed;
} free_ctx;

/* the first callback frees its own pipeline while more requests are pending */
static void free_in_callback(void *user_data, tp_status status, const char *response,
                             const tp_error *err) {
    (void)response;
    (void)err;
    free_ctx *f = user_data;
    if (status != TP_OK) atomic_fetch_add(&f->failed, 1); /* CHECK is not thread-safe */
    if (atomic_fetch_add(&f->calls, 1) == 0) tp_pipeline_free(f->q);
    count_one(&f->c);
}

static void test_requests(void) {
    tp_runtime *rt = make(2);
    if (!rt) return;
    tp_pipeline *p = open_echo(rt, "echo-alias");
    if (!p) {
        tp_runtime_free(rt);
        return;
    }
    CHECK(strcmp(tp_pipeline_task(p), "echo") == 0);
    CHECK(tp_pipeline_model(p) != NULL && tp_pipeline_tokenizer(p) != NULL);

    char *out = NULL;
    tp_error err = {0};
    CHECK_STATUS(tp_pipeline_run(p, "{\"inputs\": \"hello\"}", &out, &err), TP_OK);
    CHECK(out && strcmp(out, "\"hello\"") == 0);
    tp_free(out);
    out = NULL;
    CHECK_STATUS(tp_pipeline_run(p, "{\"inputs\": [1, 2], \"parameters\": {\"wrap\": true}}",
                                 &out, &err),
                 TP_OK);
    CHECK(out && strcmp(out, "{\"inputs\":[1,2],\"parameters\":{\"wrap\":true},"
                             "\"task\":\"echo-alias\",\"canonical\":\"echo\"}") == 0);
    tp_free(out);
    out = NULL;
    /* absent and null parameters both reach the plugin as {} */
    CHECK_STATUS(tp_pipeline_run(p, "{\"inputs\": 3, \"parameters\": null}", &out, &err), TP_OK);
    CHECK(out && strcmp(out, "3") == 0);
    tp_free(out);
    out = NULL;

    /* a failing request completes with the plugin's error */
    CHECK_STATUS(tp_pipeline_run(p, "{\"inputs\": 1, \"parameters\": {\"fail\": \"boom\"}}", &out,
                                 &err),
                 TP_ERR_INVALID_ARGUMENT);
    CHECK(out == NULL);
    CHECK(strcmp(err.message, "echo: boom") == 0);

    /* malformed requests: refused synchronously, the callback never runs */
    atomic_store(&stray_calls, 0);
    CHECK_STATUS(tp_submit(p, "{\"inputs\": \n [1, 2", stray, NULL, &err),
                 TP_ERR_INVALID_ARGUMENT);
    CHECK(err.status == TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "request: invalid JSON at line 2, column");
    CHECK_STATUS(tp_submit(p, "", stray, NULL, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tp_submit(p, "[1]", stray, NULL, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "request: must be an object with 'inputs', got an array");
    CHECK_STATUS(tp_submit(p, "{\"parameters\": {}}", stray, NULL, &err),
                 TP_ERR_INVALID_ARGUMENT);
    CHECK(strcmp(err.message, "request: missing 'inputs'") == 0);
    CHECK_STATUS(tp_submit(p, "{\"inputs\": 1, \"parameters\": [1]}", stray, NULL, &err),
                 TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "request: 'parameters' must be an object");
    CHECK_STATUS(tp_submit(p, "{\"inputs\": 1}", NULL, NULL, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tp_pipeline_run(p, "{\"inputs\"}", &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "request: invalid JSON");
    /* a well-formed request afterwards proves the loop went through them all */
    CHECK_STATUS(tp_pipeline_run(p, "{\"inputs\": 0}", &out, &err), TP_OK);
    tp_free(out);
    out = NULL;
    CHECK(atomic_load(&stray_calls) == 0);

    /* tp_pipeline_run inside a callback would wait forever: refused */
    nested_ctx n = {p, {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}, TP_OK, ""};
    CHECK_STATUS(tp_submit(p, "{\"inputs\": 1}", call_run_inside, &n, &err), TP_OK);
    wait_for(&n.c, 1);
    CHECK_STATUS(n.nested, TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(n.message, "use tp_submit");

    /* tp_pipeline_free inside a callback: freed once its last request called back */
    free_ctx f = {open_echo(rt, "echo"), 0, {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}, 0};
    int accepted = 0;
    for (int i = 0; f.q && i < 5; i++)
        accepted += tp_submit(f.q, "{\"inputs\": 1, \"parameters\": {\"sleep_ms\": 20}}",
                              free_in_callback, &f, &err) == TP_OK;
    CHECK(accepted == 5);
    wait_for(&f.c, accepted);
    CHECK(atomic_load(&f.calls) == accepted);
    CHECK(atomic_load(&f.failed) == 0);

    /* a model forward on the request's pinned backend, against transformers */
    CHECK_STATUS(tp_runtime_set_backend(rt, "ref", &err), TP_OK);
    CHECK_STATUS(tp_pipeline_run(p,
                                 "{\"inputs\": \"I hate this so much!\", "
                                 "\"parameters\": {\"forward\": true}}",
                                 &out, &err),
                 TP_OK);
    cJSON *doc = out ? cJSON_Parse(out) : NULL;
    cJSON *logits = cJSON_GetObjectItemCaseSensitive(doc, "logits");
    CHECK_MSG(cJSON_GetArraySize(logits) == 2, "forward: %s", out ? out : err.message);
    if (cJSON_GetArraySize(logits) == 2) {
        CHECK_NEAR(cJSON_GetArrayItem(logits, 0)->valuedouble, -0.406490683555603, 1e-4);
        CHECK_NEAR(cJSON_GetArrayItem(logits, 1)->valuedouble, 0.05229021608829498, 1e-4);
    }
    cJSON_Delete(doc);
    tp_free(out);
    out = NULL;
    /* the same on the test backend, which has no GELU: the request fails there */
    CHECK_STATUS(tp_runtime_set_backend(rt, "test-naive", &err), TP_OK);
    CHECK_STATUS(tp_pipeline_run(p, "{\"inputs\": \"hi\", \"parameters\": {\"forward\": true}}",
                                 &out, &err),
                 TP_ERR_BACKEND);
    CHECK_CONTAINS(err.message, "test-naive");

    tp_pipeline_free(p);
    tp_runtime_free(rt);
}

/* ---------------------------------------------------------------- shutdown */

#define PENDING 40

static slot pending_slots[PENDING];
static counter pending_done = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};

static void on_pending(void *user_data, tp_status status, const char *response,
                       const tp_error *err) {
    (void)err;
    slot *s = user_data;
    s->ok = status == TP_OK && response && strcmp(response, s->expected) == 0;
    atomic_fetch_add(&s->calls, 1);
    count_one(&pending_done);
}

static int submit_pending(tp_pipeline *p, int first, int n) {
    int accepted = 0;
    for (int i = first; i < first + n; i++) {
        slot *s = &pending_slots[i];
        snprintf(s->request, sizeof s->request,
                 "{\"inputs\": %d, \"parameters\": {\"sleep_ms\": 3}}", i);
        snprintf(s->expected, sizeof s->expected, "%d", i);
        tp_error err;
        accepted += tp_submit(p, s->request, on_pending, s, &err) == TP_OK;
    }
    return accepted;
}

static void test_shutdown(void) {
    tp_runtime *rt = make(2);
    if (!rt) return;
    tp_pipeline *p = open_echo(rt, "echo");
    if (!p) {
        tp_runtime_free(rt);
        return;
    }
    /* tp_pipeline_free waits for the pipeline's requests */
    CHECK(submit_pending(p, 0, PENDING / 2) == PENDING / 2);
    tp_pipeline_free(p);
    CHECK_MSG(pending_done.done == PENDING / 2, "%d of %d done at tp_pipeline_free",
              pending_done.done, PENDING / 2);

    /* tp_runtime_free completes what is pending, then refuses */
    p = open_echo(rt, "echo");
    if (!p) {
        tp_runtime_free(rt);
        return;
    }
    CHECK(submit_pending(p, PENDING / 2, PENDING / 2) == PENDING / 2);
    tp_runtime_free(rt);
    CHECK_MSG(pending_done.done == PENDING, "%d of %d done at tp_runtime_free",
              pending_done.done, PENDING);
    int once = 1, ok = 1;
    for (int i = 0; i < PENDING; i++) {
        once &= atomic_load(&pending_slots[i].calls) == 1;
        ok &= pending_slots[i].ok;
    }
    CHECK(once && ok);

    /* the pipeline outlived the runtime's scheduler: requests are refused, not lost */
    tp_error err = {0};
    atomic_store(&stray_calls, 0);
    CHECK_STATUS(tp_submit(p, "{\"inputs\": 1}", stray, NULL, &err), TP_ERR_BUSY);
    CHECK_CONTAINS(err.message, "shutting down");
    tp_pipeline_free(p); /* the last reference: modules unload here */
    CHECK(atomic_load(&stray_calls) == 0);

    /* a runtime freed with nothing ever submitted */
    rt = make(3);
    tp_runtime_free(rt);
}

int main(void) {
    test_requests();
    test_many_threads();
    test_shutdown();
    return CHECK_DONE();
}
