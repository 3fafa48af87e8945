/* test_generate_seq2seq.c: generation with encoder-decoders (BART, Marian, T5):
 * every generate case of the bart-cnn, marian-fr-en, t5-small and flan-t5
 * fixtures equals transformers' decoder sequences exactly (greedy, beam search with
 * length_penalty / early_stopping / no_repeat_ngram_size / forced bos and eos,
 * batched sources with padding); the session's reorder moves self-attention rows
 * and the row -> source pairing together; request errors name the parameter. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "backend.h"
#include "check.h"
#include "generate/generate.h"
#include "json_util.h"
#include "models/model.h"

static int32_t *int_matrix(const cJSON *a, int *rows, int *cols) {
    *rows = cJSON_GetArraySize(a);
    *cols = cJSON_GetArraySize(cJSON_GetArrayItem(a, 0));
    int32_t *m = malloc((size_t)*rows * *cols * sizeof *m);
    int i = 0;
    const cJSON *row, *v;
    cJSON_ArrayForEach(row, a) cJSON_ArrayForEach(v, row) m[i++] = v->valueint;
    return m;
}

static tp_model *load(const char *name) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", TP_TEST_DATA, name);
    tp_model *m = NULL;
    tp_error err = {0};
    CHECK_STATUS(tp_model_new(NULL, dir, &m, &err), TP_OK);
    return m;
}

/* Every generate case of a fixture equals the reference sequences exactly; returns
 * how many beam cases there were. */
static int reference_cases(const char *name, int min_cases) {
    char ref[1100];
    snprintf(ref, sizeof ref, "%s/fixtures/models/%s/reference.json", TP_TEST_DATA, name);
    tp_error err = {0};
    tp_model *m = load(name);
    cJSON *r = NULL;
    CHECK_STATUS(tp__json_load(ref, &r, &err), TP_OK);
    if (!m || !r) {
        tp_model_free(m);
        cJSON_Delete(r);
        return 0;
    }
    const cJSON *c;
    int n = 0, beams = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(r, "generate")) {
        int b, t, mb, mt, wb, wt, gb = 0, gc = 0;
        int32_t *ids = int_matrix(cJSON_GetObjectItem(c, "input_ids"), &b, &t);
        int32_t *mask = int_matrix(cJSON_GetObjectItem(c, "attention_mask"), &mb, &mt);
        int32_t *want = int_matrix(cJSON_GetObjectItem(c, "sequences"), &wb, &wt);
        char *params = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "params"));
        const char *search = cJSON_GetObjectItem(c, "search")->valuestring;
        beams += strcmp(search, "beam") == 0;
        tp_model_input in = {.struct_size = sizeof in, .batch = b, .seq_len = t,
                             .input_ids = ids, .attention_mask = mask};
        int32_t *got = NULL;
        CHECK_STATUS(tp_model_generate(m, &in, params, &got, &gb, &gc, &err), TP_OK);
        CHECK_MSG(got && gb == wb && gc == wt &&
                      memcmp(got, want, (size_t)wb * wt * sizeof *got) == 0,
                  "%s generate[%d] (%s, %s): got %d x %d, want %d x %d", name, n, search,
                  params, gb, gc, wb, wt);
        tp_free(got);
        cJSON_free(params);
        free(ids);
        free(mask);
        free(want);
        n++;
    }
    CHECK_MSG(n >= min_cases, "%s: %d generate cases", name, n);
    cJSON_Delete(r);
    tp_model_free(m);
    return beams;
}

/* Reordering a session equals having fed the rows in the reordered order: sources
 * {x, y} fed tokens {b, a} then swapped must give the logits of sources {y, x} fed
 * {a, b}, i.e. the self-attention rows and the cross-attention source move together. */
static void reorder_session(const char *name) {
    tp_model *m = load(name);
    if (!m) return;
    const tp__lm_ops *ops = m->family->lm;
    CHECK(ops && ops->encode && ops->decoder_start);
    if (!ops || !ops->encode) {
        tp_model_free(m);
        return;
    }
    const tp_module_descriptor *d = tp__ref_backend_descriptor();
    tp__backend be = {.vt = d->vtable, .name = d->name};
    const int V = ops->vocab_size(m), S = 6;
    const int32_t x[6] = {5, 9, 13, 17, 21, 2}, y[6] = {30, 31, 32, 33, 2, 1};
    const int32_t xm[6] = {1, 1, 1, 1, 1, 1}, ym[6] = {1, 1, 1, 1, 1, 0};
    int32_t src_xy[12], src_yx[12], mask_xy[12], mask_yx[12];
    memcpy(src_xy, x, sizeof x), memcpy(src_xy + 6, y, sizeof y);
    memcpy(src_yx, y, sizeof y), memcpy(src_yx + 6, x, sizeof x);
    memcpy(mask_xy, xm, sizeof xm), memcpy(mask_xy + 6, ym, sizeof ym);
    memcpy(mask_yx, ym, sizeof ym), memcpy(mask_yx + 6, xm, sizeof xm);
    const int32_t st = ops->decoder_start(m);
    const int32_t start[2] = {st, st}, ba[2] = {8, 7}, ab[2] = {7, 8}, cd[2] = {11, 12};
    float *l1 = malloc((size_t)2 * V * sizeof *l1), *l2 = malloc((size_t)2 * V * sizeof *l2);
    void *s1 = NULL, *s2 = NULL;
    tp_error err = {0};
    const int swap[2] = {1, 0};
    CHECK_STATUS(ops->open(m, &be, 2, 8, 1, &s1, &err), TP_OK);
    CHECK_STATUS(ops->encode(s1, src_xy, mask_xy, 2, S, &err), TP_OK);
    CHECK_STATUS(ops->step(s1, start, NULL, 1, 0, l1, &err), TP_OK);
    CHECK_STATUS(ops->step(s1, ba, NULL, 1, 0, l1, &err), TP_OK);
    CHECK_STATUS(ops->reorder(s1, swap, &err), TP_OK);
    CHECK_STATUS(ops->step(s1, cd, NULL, 1, 0, l1, &err), TP_OK);
    CHECK_STATUS(ops->open(m, &be, 2, 8, 1, &s2, &err), TP_OK);
    CHECK_STATUS(ops->encode(s2, src_yx, mask_yx, 2, S, &err), TP_OK);
    CHECK_STATUS(ops->step(s2, start, NULL, 1, 0, l2, &err), TP_OK);
    CHECK_STATUS(ops->step(s2, ab, NULL, 1, 0, l2, &err), TP_OK);
    CHECK_STATUS(ops->step(s2, cd, NULL, 1, 0, l2, &err), TP_OK);
    float worst = 0;
    for (int i = 0; i < 2 * V; i++) worst = fmaxf(worst, fabsf(l1[i] - l2[i]));
    CHECK_MSG(worst <= 1e-5f, "%s: reordered logits differ by %g", name, worst);
    /* one source expanded to two rows: reorder {0, 0} makes row 1 a copy of row 0 */
    void *s3 = NULL;
    const int dup[2] = {0, 0};
    CHECK_STATUS(ops->open(m, &be, 2, 8, 1, &s3, &err), TP_OK);
    CHECK_STATUS(ops->encode(s3, x, xm, 1, S, &err), TP_OK);
    CHECK_STATUS(ops->step(s3, start, NULL, 1, 0, l1, &err), TP_OK);
    CHECK_STATUS(ops->step(s3, ab, NULL, 1, 0, l1, &err), TP_OK);
    CHECK_STATUS(ops->reorder(s3, dup, &err), TP_OK);
    const int32_t same[2] = {11, 11};
    CHECK_STATUS(ops->step(s3, same, NULL, 1, 0, l1, &err), TP_OK);
    worst = 0;
    for (int i = 0; i < V; i++) worst = fmaxf(worst, fabsf(l1[i] - l1[V + i]));
    CHECK_MSG(worst <= 1e-5f, "%s: duplicated row differs by %g", name, worst);
    /* past capacity and bad decoder ids are refused */
    CHECK_STATUS(ops->step(s3, (const int32_t[2]){-1, 0}, NULL, 1, 0, l1, &err),
                 TP_ERR_INVALID_ARGUMENT);
    ops->close(s1);
    ops->close(s2);
    ops->close(s3);
    free(l1);
    free(l2);
    tp_model_free(m);
}

static void bad_params(void) {
    tp_model *m = load("t5-small");
    if (!m) return;
    int32_t ids[4] = {5, 6, 7, 1}, *out = NULL;
    int rows, cols;
    tp_error err = {0};
    tp_model_input in = {.struct_size = sizeof in, .batch = 1, .seq_len = 4, .input_ids = ids};
    const char *cases[][2] = {{"{\"num_beams\": 0}", "num_beams"},
                              {"{\"decoder_start_token_id\": 100000}", "decoder_start_token_id"},
                              {"{\"no_repeat_ngram_size\": -2}", "no_repeat_ngram_size"},
                              {"{\"frobnicate\": 1}", "frobnicate"}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        err.message[0] = 0;
        CHECK_STATUS(tp_model_generate(m, &in, cases[i][0], &out, &rows, &cols, &err),
                     TP_ERR_INVALID_ARGUMENT);
        CHECK_MSG(strstr(err.message, cases[i][1]) != NULL, "message '%s' lacks '%s'",
                  err.message, cases[i][1]);
    }
    /* max_length counts the decoder start token: max_length 5 gives 5 tokens */
    CHECK_STATUS(tp_model_generate(m, &in, "{\"max_length\": 5, \"min_length\": 5}", &out, &rows,
                                   &cols, &err),
                 TP_OK);
    CHECK(rows == 1 && cols == 5 && out && out[0] == 0);
    tp_free(out);
    tp_model_free(m);
}

/* A classification head has no generation. */
static void not_a_generator(void) {
    tp_model *m = load("bart-mnli");
    if (!m) return;
    int32_t ids[3] = {0, 5, 2}, *out = NULL;
    int rows, cols;
    tp_error err = {0};
    tp_model_input in = {.struct_size = sizeof in, .batch = 1, .seq_len = 3, .input_ids = ids};
    CHECK_STATUS(tp_model_generate(m, &in, NULL, &out, &rows, &cols, &err), TP_ERR_UNSUPPORTED);
    CHECK(strstr(err.message, "BartForSequenceClassification") != NULL);
    tp_model_free(m);
}

int main(void) {
    int beams = 0;
    beams += reference_cases("bart-cnn", 5);
    beams += reference_cases("marian-fr-en", 6);
    beams += reference_cases("t5-small", 12);
    beams += reference_cases("flan-t5", 9);
    CHECK(beams >= 10); /* beam-4 runs (bart-cnn, marian, t5 tasks) among them */
    reorder_session("bart-cnn");
    reorder_session("marian-fr-en");
    reorder_session("t5-small");
    bad_params();
    not_a_generator();
    return CHECK_DONE();
}
