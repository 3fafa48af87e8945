/* test_stream.c: tp_pipeline_run_stream on the gpt2 fixture: the deltas are
 * non-empty valid UTF-8, arrive before the response, add up to exactly the new text
 * of the response (greedy, with return_full_text, and with a stop string), and the
 * response equals tp_pipeline_run's. Requests that do not stream (a batch, several
 * sequences) never call the callback. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tpipe/tpipe.h"

#define GPT2 TP_TEST_DATA "/fixtures/models/gpt2"
#define PROMPT "In this course, we will teach you how to"

typedef struct sink {
    char buf[8192];
    size_t len;
    int calls, empty, bad_utf8;
} sink;

/* 1 when s is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
static int valid_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p, n = c < 0x80 ? 0 : c >= 0xC2 && c < 0xE0 ? 1 : c >= 0xE0 && c < 0xF0 ? 2
                                            : c >= 0xF0 && c < 0xF5 ? 3 : 9;
        if (n == 9) return 0;
        unsigned cp = n == 0 ? c : c & (0x3F >> n);
        for (unsigned i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp < 0xE000))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        p += n + 1;
    }
    return 1;
}

static void on_text(void *user, const char *delta) {
    sink *s = user;
    s->calls++;
    if (!delta[0]) s->empty++;
    if (!valid_utf8(delta)) s->bad_utf8++;
    size_t n = strlen(delta);
    if (s->len + n < sizeof s->buf) {
        memcpy(s->buf + s->len, delta, n);
        s->len += n;
        s->buf[s->len] = '\0';
    }
}

/* The generated_text of the response's first record, minus `prefix`. */
static char *new_text(const char *response, const char *prefix) {
    cJSON *doc = cJSON_Parse(response);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(doc, 0), "generated_text");
    char *out = NULL;
    if (cJSON_IsString(t) && strncmp(t->valuestring, prefix, strlen(prefix)) == 0)
        out = strdup(t->valuestring + strlen(prefix));
    cJSON_Delete(doc);
    return out;
}

/* Streams `request`; checks the deltas against the response and tp_pipeline_run's. */
static void check_stream(tp_pipeline *p, const char *request, const char *prefix,
                         const char *what) {
    sink s = {0};
    tp_error err = {0};
    char *streamed = NULL, *plain = NULL;
    CHECK_STATUS(tp_pipeline_run_stream(p, request, on_text, &s, &streamed, &err), TP_OK);
    CHECK_STATUS(tp_pipeline_run(p, request, &plain, &err), TP_OK);
    if (!streamed || !plain) {
        fprintf(stderr, "%s: %s\n", what, err.message);
        tp_free(streamed);
        tp_free(plain);
        return;
    }
    CHECK_MSG(strcmp(streamed, plain) == 0, "%s: %s vs %s", what, streamed, plain);
    char *want = new_text(streamed, prefix);
    CHECK_MSG(want != NULL, "%s: response %s", what, streamed);
    if (want) {
        CHECK_MSG(strcmp(s.buf, want) == 0, "%s: deltas \"%s\", new text \"%s\"", what, s.buf,
                  want);
        /* streamed as it came, not in one piece at the end */
        CHECK_MSG(s.calls > 1, "%s: %d deltas", what, s.calls);
    }
    CHECK_MSG(s.empty == 0 && s.bad_utf8 == 0, "%s: %d empty, %d invalid UTF-8 deltas", what,
              s.empty, s.bad_utf8);
    free(want);
    tp_free(streamed);
    tp_free(plain);
}

static void check_silent(tp_pipeline *p, const char *request, const char *what) {
    sink s = {0};
    tp_error err = {0};
    char *response = NULL;
    CHECK_STATUS(tp_pipeline_run_stream(p, request, on_text, &s, &response, &err), TP_OK);
    CHECK_MSG(response != NULL && s.calls == 0, "%s: %d deltas", what, s.calls);
    tp_free(response);
}

int main(void) {
    tp_runtime_options opts;
    tp_runtime_options_init(&opts);
    opts.backend_path = TP_BUILD_DIR "/lib/tpipe/backends";
    opts.plugin_path = TP_BUILD_DIR "/lib/tpipe/plugins";
    opts.no_default_dirs = 1;
    tp_runtime *rt = NULL;
    tp_pipeline *p = NULL;
    tp_error err = {0};
    CHECK_STATUS(tp_runtime_new(&opts, &rt, &err), TP_OK);
    if (rt) CHECK_STATUS(tp_pipeline_new(rt, "text-generation", GPT2, &p, &err), TP_OK);
    if (!p) {
        fprintf(stderr, "%s\n", err.message);
        tp_runtime_free(rt);
        return CHECK_DONE();
    }

    check_stream(p,
                 "{\"inputs\": \"" PROMPT "\", \"parameters\": {\"max_new_tokens\": 16, "
                 "\"do_sample\": false}}",
                 PROMPT, "greedy, full text");
    check_stream(p,
                 "{\"inputs\": \"" PROMPT "\", \"parameters\": {\"max_new_tokens\": 16, "
                 "\"do_sample\": false, \"return_full_text\": false}}",
                 "", "greedy, new text only");
    check_stream(p,
                 "{\"inputs\": \"" PROMPT "\", \"parameters\": {\"max_new_tokens\": 24, "
                 "\"do_sample\": false, \"stop\": \"mechanism\"}}",
                 PROMPT, "stop string");
    check_stream(p,
                 "{\"inputs\": \"Hello\", \"parameters\": {\"max_new_tokens\": 12, "
                 "\"seed\": 3}}",
                 "Hello", "seeded sampling");

    check_silent(p,
                 "{\"inputs\": [\"" PROMPT "\"], \"parameters\": {\"max_new_tokens\": 4, "
                 "\"do_sample\": false}}",
                 "a batch of one");
    check_silent(p,
                 "{\"inputs\": \"" PROMPT "\", \"parameters\": {\"max_new_tokens\": 4, "
                 "\"seed\": 1, \"num_return_sequences\": 2}}",
                 "two sequences");

    /* no callback: the same as tp_pipeline_run; bad arguments fail as it does */
    char *response = NULL;
    CHECK_STATUS(tp_pipeline_run_stream(p, "{\"inputs\": \"Hi\", \"parameters\": "
                                           "{\"max_new_tokens\": 2}}",
                                        NULL, NULL, &response, &err),
                 TP_OK);
    CHECK(response != NULL);
    tp_free(response);
    CHECK_STATUS(tp_pipeline_run_stream(p, "{}", on_text, NULL, &response, &err),
                 TP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tp_pipeline_run_stream(p, "{\"inputs\": \"Hi\"}", on_text, NULL, NULL, &err),
                 TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "tp_pipeline_run_stream");

    tp_pipeline_free(p);
    tp_runtime_free(rt);
    return CHECK_DONE();
}
