/* pipeline.h: the pipeline as the core sees it (the public tp_pipeline, and the
 * tp_task_pipeline plugins get is the same object), plus the runtime parts pipelines
 * reach. Threading: a pipeline is immutable after tp_pipeline_new except its pending
 * count, which `lock` guards. */
#ifndef TP_CORE_PIPELINE_H
#define TP_CORE_PIPELINE_H

#include <uv.h>

#include "module_loader.h"
#include "scheduler.h"

struct tp_pipeline {
    tp_runtime *rt;             /* holds a reference: the runtime outlives its pipelines */
    const tp__module *plugin;
    const tp_task_vtable *vt;
    const char *task;           /* canonical, inside the plugin's descriptor */
    char *task_as_called;       /* the name or alias given to tp_pipeline_new */
    char *model_dir;
    tp_tokenizer *tokenizer;
    tp_model *model;
    void *state;                /* the plugin's open() result */
    int opened;
    uv_mutex_t lock;
    uv_cond_t idle;             /* signalled when pending drops to 0 */
    size_t pending;             /* submitted, callback not yet returned */
    int free_when_idle;         /* tp_pipeline_free was called inside a callback */
};

/* Called on the loop thread after a request's callback has returned. Frees the
 * pipeline when a callback asked for that and this was its last request. */
void tp__pipeline_request_done(tp_pipeline *p);

/* Implemented in runtime.c: the runtime's parts pipelines use. */
tp__modules *tp__runtime_modules(tp_runtime *rt);
tp__scheduler *tp__runtime_scheduler(tp_runtime *rt);
/* A pipeline keeps its runtime alive: tp_runtime_free stops the scheduler at once
 * but unloads modules only when the last pipeline is gone. */
void tp__runtime_ref(tp_runtime *rt);
void tp__runtime_unref(tp_runtime *rt);

#endif
