/* scheduler.h: the request scheduler of a runtime.
 *
 * One libuv loop thread per runtime owns the queues and the routing; a small pool of
 * worker threads (num_workers, owned by this scheduler, not libuv's process-wide
 * threadpool) runs the plugins; completions come back to the loop thread, which calls
 * the user's callback exactly once per accepted request.
 *
 * Threading: tp__scheduler_submit may be called from any thread (it is the only
 * cross-thread entry: lock, push, uv_async_send). new/free on the runtime's thread. */
#ifndef TP_CORE_SCHEDULER_H
#define TP_CORE_SCHEDULER_H

#include <cjson/cJSON.h>
#include <tpipe/tpipe.h>

typedef struct tp__scheduler tp__scheduler;

/* One request from tp_submit to its completion. Owned by the scheduler once
 * submitted; freed after the callback returns. */
typedef struct tp__request {
    struct tp__request *next;   /* intrusive queue link: one queue at a time */
    tp_pipeline *pipeline;
    cJSON *doc;                 /* the parsed request; owns inputs and params */
    const cJSON *inputs;
    const cJSON *params;        /* never NULL: an empty object when absent */
    tp_completion_fn callback;
    void *user_data;
    tp_stream_fn on_text;       /* tp_pipeline_run_stream's; NULL when not streaming */
    void *stream_user;          /* called on the worker, through tp_task_context */
    /* Filled by the worker. */
    tp_status status;
    tp_error err;
    char *response;             /* cJSON_PrintUnformatted of the plugin's result */
    /* Room for the scheduler work to come, read on the loop thread when routing:
     * a deadline (uv_now-based, checked when routing and by a uv_timer), a cancel
     * flag (atomic, set by a future tp_cancel, checked when routing and by plugins
     * through tp_task_context), a priority, and a batch key (pipeline + shape) for
     * the batching windows. */
} tp__request;

/* Starts the loop thread and `num_workers` (>= 1) workers. */
tp_status tp__scheduler_new(int num_workers, tp__scheduler **out, tp_error *err);

/* Queues `r`; on TP_OK the scheduler owns it and its callback will run exactly
 * once. TP_ERR_BUSY once the scheduler is stopping. */
tp_status tp__scheduler_submit(tp__scheduler *s, tp__request *r, tp_error *err);

/* Completes every request already accepted (they run normally), refuses new ones
 * from then on (TP_ERR_BUSY), stops the loop (closing every handle) and joins every
 * thread. The object stays valid, so late submitters get an error, not a crash.
 * Idempotent. Must not be called from the loop thread (a completion callback). */
void tp__scheduler_stop(tp__scheduler *s);

/* Stops (when not stopped yet) and frees. NULL is fine. */
void tp__scheduler_free(tp__scheduler *s);

/* 1 when called on the scheduler's loop thread (inside a completion callback). */
int tp__scheduler_on_loop_thread(const tp__scheduler *s);

#endif
