/*
 * hello_pipeline: the smallest host program. Creates a runtime, picks a backend,
 * opens a text-classification pipeline on a model directory, classifies the texts
 * given on the command line as one batch, and frees everything.
 *
 *   build/bin/hello_pipeline models/spam-filter "Win a FREE cruise now!" "Lunch at 12?"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <tpipe/tpipe.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR TEXT...\n", argv[0]);
        return 2;
    }
    tp_error err;
    tp_runtime_options opts;
    tp_runtime_options_init(&opts);
    opts.backend = getenv("TPIPE_BACKEND"); /* NULL: the fastest backend that loaded */

    tp_runtime *rt = NULL;
    if (tp_runtime_new(&opts, &rt, &err) != TP_OK) {
        fprintf(stderr, "runtime: %s\n", err.message);
        return 1;
    }
    printf("backend: %s\n", tp_runtime_backend(rt));

    tp_pipeline *pipe = NULL;
    if (tp_pipeline_new(rt, "sentiment-analysis", argv[1], &pipe, &err) != TP_OK) {
        fprintf(stderr, "pipeline: %s\n", err.message);
        tp_runtime_free(rt);
        return 1;
    }

    /* The request is the Inference API body: {"inputs": [...], "parameters": {...}} */
    cJSON *req = cJSON_CreateObject();
    cJSON *inputs = cJSON_AddArrayToObject(req, "inputs");
    for (int i = 2; i < argc; i++) cJSON_AddItemToArray(inputs, cJSON_CreateString(argv[i]));
    cJSON_AddObjectToObject(req, "parameters");
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);

    char *response = NULL;
    int rc = 0;
    if (tp_pipeline_run(pipe, body, &response, &err) == TP_OK) {
        printf("%s\n", response);
    } else {
        fprintf(stderr, "run: %s\n", err.message);
        rc = 1;
    }
    tp_free(response);
    free(body);
    tp_pipeline_free(pipe);
    tp_runtime_free(rt);
    return rc;
}
