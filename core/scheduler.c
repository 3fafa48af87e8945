/* scheduler.c: one libuv loop thread per runtime, a worker pool, three queues.
 *
 *   any thread --submit--> incoming --loop routes--> ready --worker runs--> done
 *   done --loop thread--> the user's callback, exactly once
 *
 * Requests cross threads through three intrusive lists under one mutex; the loop is
 * woken with uv_async_send, which is the only libuv call made off the loop thread
 * (by submitters and by workers handing back results), always under the mutex so
 * that it can never race with the uv_close of the async handle at shutdown.
 *
 * The workers are this scheduler's own threads rather than libuv's threadpool
 * (uv_queue_work): that pool is process-wide (UV_THREADPOOL_SIZE, default 4, shared
 * with every runtime and with libuv's file system calls), so a long request on one
 * runtime would hold back another's. Own threads make num_workers mean what it says.
 *
 * Threading: tp__scheduler_submit from any thread; everything else as scheduler.h
 * states. No global state. */
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "error.h"
#include "json_util.h"
#include "pipeline.h"
#include "runtime.h"

typedef struct {
    tp__request *head, *tail;
} tp__queue;

struct tp__scheduler {
    uv_loop_t loop;
    uv_async_t wake;
    uv_thread_t loop_thread;
    uv_thread_t loop_tid;       /* uv_thread_self() of the loop, set before new returns */
    uv_sem_t started;
    uv_thread_t *workers;
    int num_workers;

    uv_mutex_t lock;            /* guards everything below */
    uv_cond_t work_ready;
    tp__queue incoming;         /* submitted, not yet routed */
    tp__queue ready;            /* routed, waiting for a worker */
    tp__queue done;             /* run, waiting for the loop to call back */
    size_t in_flight;           /* routed and not yet called back */
    int stopping;               /* no new submissions */
    int closed;                 /* the async handle is closing: no uv_async_send */
    int quit;                   /* workers exit */

    int joined;                 /* stop's caller thread only: threads are gone */
};

static void push(tp__queue *q, tp__request *r) {
    r->next = NULL;
    if (q->tail) q->tail->next = r;
    else q->head = r;
    q->tail = r;
}

static tp__request *pop(tp__queue *q) {
    tp__request *r = q->head;
    if (r) {
        q->head = r->next;
        if (!q->head) q->tail = NULL;
        r->next = NULL;
    }
    return r;
}

static tp__request *take_all(tp__queue *q) {
    tp__request *r = q->head;
    q->head = q->tail = NULL;
    return r;
}

/* ---------------------------------------------------------------- worker side */

/* Runs on a worker: pins the backend, runs the plugin, serializes the result. */
static void execute(tp__request *r) {
    tp_pipeline *p = r->pipeline;
    tp_task_context ctx = {.backend = tp__runtime_acquire_backend(p->rt), .pipeline = p,
                           .on_text = r->on_text, .stream_user = r->stream_user};
    struct cJSON *result = NULL;
    r->err.status = TP_OK;
    r->err.message[0] = '\0';
    tp_status st = p->vt->run(p->state, &ctx, r->inputs, r->params, &result, &r->err);
    tp__backend_release(ctx.backend);
    r->err.message[TP_ERROR_MESSAGE_MAX - 1] = '\0';
    if (st == TP_OK) {
        if (!result)
            st = tp__error(&r->err, TP_ERR_INTERNAL, "task '%s': plugin '%s' returned no result",
                           p->task, p->plugin->name);
        else if (!(r->response = tp__json_print(result)))
            st = tp__error(&r->err, TP_ERR_NOMEM, "out of memory writing the response");
    } else {
        if (!r->err.message[0])
            tp__error(&r->err, st, "task '%s' failed: %s", p->task, tp_strerror(st));
        r->err.status = st;
    }
    cJSON_Delete(result);
    /* the inputs are not needed past this point: free them on the worker */
    cJSON_Delete(r->doc);
    r->doc = NULL;
    r->inputs = r->params = NULL;
    r->status = st;
}

static void worker_main(void *arg) {
    tp__scheduler *s = arg;
    uv_mutex_lock(&s->lock);
    for (;;) {
        while (!s->ready.head && !s->quit) uv_cond_wait(&s->work_ready, &s->lock);
        tp__request *r = pop(&s->ready);
        if (!r) break; /* quit, and nothing is left (quit is set only when idle) */
        uv_mutex_unlock(&s->lock);
        execute(r);
        uv_mutex_lock(&s->lock);
        push(&s->done, r);
        uv_async_send(&s->wake);
    }
    uv_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------------- loop side */

static void complete(tp__request *r) {
    if (r->status == TP_OK) r->callback(r->user_data, TP_OK, r->response, NULL);
    else r->callback(r->user_data, r->status, NULL, &r->err);
    /* after the callback: once the pipeline knows, tp_pipeline_free may proceed */
    tp__pipeline_request_done(r->pipeline);
    free(r->response);
    cJSON_Delete(r->doc);
    free(r);
}

static void on_wake(uv_async_t *handle) {
    tp__scheduler *s = handle->data;

    uv_mutex_lock(&s->lock);
    /* Routing. Today every request goes straight to the workers in arrival order.
     * This is where the scheduler work plugs in, all on the loop thread:
     *  - batching windows: park requests in per-pipeline buckets keyed by the batch
     *    key and release a bucket when it is full or its uv_timer fires;
     *  - deadlines: complete expired requests with TP_ERR_TIMEOUT here and from a
     *    uv_timer for those still parked;
     *  - cancellation: complete cancelled requests with TP_ERR_CANCELLED here;
     *  - backpressure: tp__scheduler_submit refuses with TP_ERR_BUSY past a queue
     *    limit (incoming + ready), and priorities order `ready`. */
    size_t routed = 0;
    for (tp__request *r; (r = pop(&s->incoming)) != NULL; routed++) push(&s->ready, r);
    s->in_flight += routed;
    if (routed == 1) uv_cond_signal(&s->work_ready);
    else if (routed > 1) uv_cond_broadcast(&s->work_ready);
    tp__request *done = take_all(&s->done);
    uv_mutex_unlock(&s->lock);

    /* callbacks run without the lock: they may submit more requests */
    size_t completed = 0;
    while (done) {
        tp__request *next = done->next;
        complete(done);
        done = next;
        completed++;
    }

    uv_mutex_lock(&s->lock);
    s->in_flight -= completed;
    if (s->stopping && !s->closed && !s->incoming.head && s->in_flight == 0) {
        /* drained: nobody will send on `wake` again, so it can close and uv_run
         * returns once the close callback has run */
        s->closed = 1;
        s->quit = 1;
        uv_cond_broadcast(&s->work_ready);
        uv_close((uv_handle_t *)&s->wake, NULL);
    }
    uv_mutex_unlock(&s->lock);
}

static void loop_main(void *arg) {
    tp__scheduler *s = arg;
    s->loop_tid = uv_thread_self();
    uv_sem_post(&s->started);
    uv_run(&s->loop, UV_RUN_DEFAULT);
}

/* ---------------------------------------------------------------- lifecycle */

static void join_workers(tp__scheduler *s, int n) {
    uv_mutex_lock(&s->lock);
    s->quit = 1;
    uv_cond_broadcast(&s->work_ready);
    uv_mutex_unlock(&s->lock);
    for (int i = 0; i < n; i++) uv_thread_join(&s->workers[i]);
}

static void destroy(tp__scheduler *s) {
    uv_loop_close(&s->loop);
    uv_cond_destroy(&s->work_ready);
    uv_mutex_destroy(&s->lock);
    uv_sem_destroy(&s->started);
    free(s->workers);
    free(s);
}

tp_status tp__scheduler_new(int num_workers, tp__scheduler **out, tp_error *err) {
    *out = NULL;
    if (num_workers < 1) num_workers = 1;
    tp__scheduler *s = calloc(1, sizeof *s);
    uv_thread_t *workers = calloc((size_t)num_workers, sizeof *workers);
    if (!s || !workers) {
        free(s);
        free(workers);
        return tp__error(err, TP_ERR_NOMEM, "out of memory starting the scheduler");
    }
    s->workers = workers;
    s->num_workers = num_workers;
    int rc = uv_loop_init(&s->loop);
    if (rc != 0) {
        free(workers);
        free(s);
        return tp__error(err, TP_ERR_INTERNAL, "scheduler: uv_loop_init: %s", uv_strerror(rc));
    }
    if ((rc = uv_mutex_init(&s->lock)) != 0 || (rc = uv_cond_init(&s->work_ready)) != 0 ||
        (rc = uv_sem_init(&s->started, 0)) != 0) {
        /* all three succeed on Linux short of resource exhaustion; give up plainly */
        uv_loop_close(&s->loop);
        free(workers);
        free(s);
        return tp__error(err, TP_ERR_INTERNAL, "scheduler: %s", uv_strerror(rc));
    }
    uv_async_init(&s->loop, &s->wake, on_wake);
    s->wake.data = s;

    int started = 0;
    for (; started < num_workers; started++)
        if ((rc = uv_thread_create(&s->workers[started], worker_main, s)) != 0) break;
    if (rc == 0) rc = uv_thread_create(&s->loop_thread, loop_main, s);
    if (rc != 0) {
        join_workers(s, started);
        uv_close((uv_handle_t *)&s->wake, NULL);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        destroy(s);
        return tp__error(err, TP_ERR_INTERNAL, "scheduler: cannot start a thread: %s",
                         uv_strerror(rc));
    }
    /* after this, loop_tid is published to every thread that sees `s` */
    uv_sem_wait(&s->started);
    *out = s;
    return TP_OK;
}

tp_status tp__scheduler_submit(tp__scheduler *s, tp__request *r, tp_error *err) {
    uv_mutex_lock(&s->lock);
    if (s->stopping) {
        uv_mutex_unlock(&s->lock);
        return tp__error(err, TP_ERR_BUSY, "the runtime is shutting down: request refused");
    }
    push(&s->incoming, r);
    uv_async_send(&s->wake);
    uv_mutex_unlock(&s->lock);
    return TP_OK;
}

void tp__scheduler_stop(tp__scheduler *s) {
    if (!s || s->joined) return;
    uv_mutex_lock(&s->lock);
    s->stopping = 1;
    if (!s->closed) uv_async_send(&s->wake);
    uv_mutex_unlock(&s->lock);
    uv_thread_join(&s->loop_thread);
    join_workers(s, s->num_workers);
    s->joined = 1;
}

void tp__scheduler_free(tp__scheduler *s) {
    if (!s) return;
    tp__scheduler_stop(s);
    destroy(s);
}

int tp__scheduler_on_loop_thread(const tp__scheduler *s) {
    uv_thread_t self = uv_thread_self();
    return s && uv_thread_equal(&self, &s->loop_tid);
}
