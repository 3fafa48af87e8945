/* test_generate.c: generation (core/generate): greedy and beam search on the gpt2
 * fixture against transformers' sequences, each logits processor on a crafted
 * logits vector, seeded sampling reproducible, and the sampling warpers cutting
 * the distribution as specified over many draws. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "generate/generate.h"
#include "json_util.h"

static int32_t *int_matrix(const cJSON *a, int *rows, int *cols) {
    *rows = cJSON_GetArraySize(a);
    *cols = cJSON_GetArraySize(cJSON_GetArrayItem(a, 0));
    int32_t *m = malloc((size_t)*rows * *cols * sizeof *m);
    int i = 0;
    const cJSON *row, *v;
    cJSON_ArrayForEach(row, a) cJSON_ArrayForEach(v, row) m[i++] = v->valueint;
    return m;
}

/* Every generate case of a fixture equals the reference sequences exactly. */
static void reference_cases(const char *name) {
    char dir[1024], ref[1100];
    snprintf(dir, sizeof dir, "%s/fixtures/models/%s", TP_TEST_DATA, name);
    snprintf(ref, sizeof ref, "%s/reference.json", dir);
    tp_error err = {0};
    tp_model *m = NULL;
    cJSON *r = NULL;
    CHECK_STATUS(tp_model_new(NULL, dir, &m, &err), TP_OK);
    CHECK_STATUS(tp__json_load(ref, &r, &err), TP_OK);
    if (!m || !r) return;
    const cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(r, "generate")) {
        int b, t, mb, mt, wb, wt, gb, gc;
        int32_t *ids = int_matrix(cJSON_GetObjectItem(c, "input_ids"), &b, &t);
        int32_t *mask = int_matrix(cJSON_GetObjectItem(c, "attention_mask"), &mb, &mt);
        int32_t *want = int_matrix(cJSON_GetObjectItem(c, "sequences"), &wb, &wt);
        char *params = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "params"));
        tp_model_input in = {.struct_size = sizeof in, .batch = b, .seq_len = t,
                             .input_ids = ids, .attention_mask = mask};
        int32_t *got = NULL;
        CHECK_STATUS(tp_model_generate(m, &in, params, &got, &gb, &gc, &err), TP_OK);
        CHECK_MSG(got && gb == wb && gc == wt &&
                      memcmp(got, want, (size_t)wb * wt * sizeof *got) == 0,
                  "%s generate[%d] (%s) differs", name, n,
                  cJSON_GetObjectItem(c, "search")->valuestring);
        free(got);
        cJSON_free(params);
        free(ids);
        free(mask);
        free(want);
        n++;
    }
    CHECK(n >= 10);
    cJSON_Delete(r);
    tp_model_free(m);
}

static void bad_params(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/fixtures/models/gpt2", TP_TEST_DATA);
    tp_model *m = NULL;
    tp_error err = {0};
    CHECK_STATUS(tp_model_new(NULL, dir, &m, &err), TP_OK);
    if (!m) return;
    int32_t ids[3] = {5, 6, 7}, *out = NULL;
    int rows, cols;
    tp_model_input in = {.struct_size = sizeof in, .batch = 1, .seq_len = 3, .input_ids = ids};
    const char *cases[][2] = {{"{\"num_beams\": 0}", "num_beams"},
                              {"{\"top_p\": 2}", "top_p"},
                              {"{\"max_new_tokens\": -1}", "max_new_tokens"},
                              {"{\"early_stopping\": \"sometimes\"}", "early_stopping"},
                              {"{\"frobnicate\": 1}", "frobnicate"},
                              {"{\"num_return_sequences\": 2}", "num_return_sequences"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_STATUS(tp_model_generate(m, &in, cases[i][0], &out, &rows, &cols, &err),
                     TP_ERR_INVALID_ARGUMENT);
        CHECK_MSG(strstr(err.message, cases[i][1]) != NULL, "'%s' not in: %s", cases[i][1],
                  err.message);
    }
    /* seeded sampling: same seed, same tokens */
    int32_t *a = NULL, *b = NULL;
    int ra, ca, rb, cb;
    const char *p = "{\"do_sample\": true, \"max_new_tokens\": 12, \"seed\": 42, "
                    "\"num_return_sequences\": 3}";
    CHECK_STATUS(tp_model_generate(m, &in, p, &a, &ra, &ca, &err), TP_OK);
    CHECK_STATUS(tp_model_generate(m, &in, p, &b, &rb, &cb, &err), TP_OK);
    CHECK(a && b && ra == 3 && rb == 3 && ca == cb && ca == 15);
    if (a && b) CHECK(memcmp(a, b, (size_t)ra * ca * sizeof *a) == 0);
    free(a);
    free(b);
    tp_model_free(m);
}

static void base_config(tp__gen_config *c) {
    memset(c, 0, sizeof *c);
    c->num_beams = c->num_return_sequences = 1;
    c->temperature = c->top_p = c->typical_p = c->repetition_penalty = c->length_penalty = 1.0;
    c->max_new_tokens = -1;
    c->max_length = 100;
    c->pad_id = c->bos_id = c->forced_bos_id = c->forced_eos_id = -1;
}

static void processors(void) {
    enum { V = 8 };
    tp__gen_config c;
    float s[V];
    const int32_t seq[] = {1, 2, 3, 1, 2};
    /* repetition_penalty: seen tokens divided (positive) or multiplied (negative), once */
    base_config(&c);
    c.repetition_penalty = 2.0;
    for (int i = 0; i < V; i++) s[i] = i % 2 ? 1.0f : -1.0f;
    tp__gen_process(&c, seq, 5, 5, seq, 5, 100, 1, s, V);
    CHECK_NEAR(s[1], 0.5, 1e-6);
    CHECK_NEAR(s[2], -2.0, 1e-6);
    CHECK_NEAR(s[3], 0.5, 1e-6);
    CHECK_NEAR(s[4], -1.0, 1e-6);
    /* no_repeat_ngram_size 3: "1 2" was followed by 3 */
    base_config(&c);
    c.no_repeat_ngram_size = 3;
    for (int i = 0; i < V; i++) s[i] = 0;
    tp__gen_process(&c, seq, 5, 5, seq, 5, 100, 1, s, V);
    for (int i = 0; i < V; i++) CHECK(i == 3 ? isinf(s[i]) && s[i] < 0 : s[i] == 0);
    /* encoder_no_repeat_ngram_size 2 over a prompt {2, 6}: after 2, 6 is banned */
    base_config(&c);
    c.encoder_no_repeat_ngram_size = 2;
    const int32_t prompt[] = {2, 6};
    for (int i = 0; i < V; i++) s[i] = 0;
    tp__gen_process(&c, seq, 5, 2, prompt, 2, 100, 1, s, V);
    for (int i = 0; i < V; i++) CHECK(i == 6 ? isinf(s[i]) : s[i] == 0);
    /* bad_words_ids [[5], [2, 7]]: 5 always, 7 after a 2 */
    base_config(&c);
    int32_t words[] = {5, 2, 7};
    int lens[] = {1, 2};
    c.bad_words = words, c.bad_len = lens, c.n_bad = 2;
    for (int i = 0; i < V; i++) s[i] = 0;
    tp__gen_process(&c, seq, 5, 5, seq, 5, 100, 1, s, V);
    for (int i = 0; i < V; i++) CHECK(i == 5 || i == 7 ? isinf(s[i]) : s[i] == 0);
    c.bad_words = NULL, c.bad_len = NULL, c.n_bad = 0;
    /* min_length / min_new_tokens ban eos while short */
    base_config(&c);
    c.eos[0] = 4, c.n_eos = 1, c.min_length = 6;
    for (int i = 0; i < V; i++) s[i] = 0;
    tp__gen_process(&c, seq, 5, 5, seq, 5, 100, 1, s, V);
    CHECK(isinf(s[4]));
    c.min_length = 5;
    s[4] = 0;
    tp__gen_process(&c, seq, 5, 5, seq, 5, 100, 1, s, V);
    CHECK(s[4] == 0);
    c.min_new_tokens = 1;
    tp__gen_process(&c, seq, 5, 5, seq, 5, 100, 1, s, V);
    CHECK(isinf(s[4]));
    /* forced_eos at max_length - 1; suppress_tokens */
    base_config(&c);
    c.forced_eos_id = 3;
    for (int i = 0; i < V; i++) s[i] = 1;
    tp__gen_process(&c, seq, 5, 5, seq, 5, 6, 1, s, V);
    for (int i = 0; i < V; i++) CHECK(i == 3 ? s[i] == 0 : isinf(s[i]));
    base_config(&c);
    int32_t sup[] = {0, 7};
    c.suppress = sup, c.n_suppress = 2;
    for (int i = 0; i < V; i++) s[i] = 1;
    tp__gen_process(&c, seq, 5, 5, seq, 5, 100, 1, s, V);
    CHECK(isinf(s[0]) && isinf(s[7]) && s[1] == 1);
    c.suppress = NULL, c.n_suppress = 0;
}

/* Draws from softmax of fixed logits after the warpers; returns counts per token. */
static void draw(const tp__gen_config *c, const float *logits, int V, int n, int *counts) {
    tp__rng rng;
    tp__rng_seed(&rng, 1234);
    float *s = malloc((size_t)V * sizeof *s);
    memset(counts, 0, (size_t)V * sizeof *counts);
    const int32_t seq[1] = {0};
    for (int i = 0; i < n; i++) {
        memcpy(s, logits, (size_t)V * sizeof *s);
        tp__gen_process(c, seq, 1, 1, seq, 1, 100, 1, s, V);
        counts[tp__gen_sample(s, V, &rng)]++;
    }
    free(s);
}

static void sampling_statistics(void) {
    enum { V = 6, N = 20000 };
    /* probabilities 0.4, 0.3, 0.15, 0.1, 0.04, 0.01 */
    const double p[V] = {0.4, 0.3, 0.15, 0.1, 0.04, 0.01};
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)log(p[i]);
    int counts[V];
    tp__gen_config c;
    base_config(&c);
    c.do_sample = 1;
    draw(&c, logits, V, N, counts);
    for (int i = 0; i < V; i++)
        CHECK_MSG(fabs(counts[i] / (double)N - p[i]) < 0.015, "plain: token %d at %.4f", i,
                  counts[i] / (double)N);
    c.top_k = 2; /* only the two best, renormalised: 4/7, 3/7 */
    draw(&c, logits, V, N, counts);
    CHECK(counts[2] + counts[3] + counts[4] + counts[5] == 0);
    CHECK_NEAR(counts[0] / (double)N, 4.0 / 7, 0.015);
    c.top_k = 0, c.top_p = 0.8; /* 0.4 + 0.3 + 0.15 covers 0.8: three tokens */
    draw(&c, logits, V, N, counts);
    CHECK(counts[3] + counts[4] + counts[5] == 0);
    CHECK_NEAR(counts[2] / (double)N, 0.15 / 0.85, 0.015);
    c.top_p = 1.0, c.temperature = 0.5; /* p^2 renormalised */
    draw(&c, logits, V, N, counts);
    double z = 0;
    for (int i = 0; i < V; i++) z += p[i] * p[i];
    for (int i = 0; i < V; i++) CHECK_NEAR(counts[i] / (double)N, p[i] * p[i] / z, 0.015);
    c.temperature = 1.0, c.min_p = 0.3; /* keeps p >= 0.12: three tokens */
    draw(&c, logits, V, N, counts);
    CHECK(counts[3] + counts[4] + counts[5] == 0 && counts[2] > 0);
    /* the same seed draws the same tokens */
    tp__rng a, b;
    tp__rng_seed(&a, 99), tp__rng_seed(&b, 99);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= tp__rng_next(&a) == tp__rng_next(&b);
    CHECK(same);
}

int main(void) {
    reference_cases("gpt2");
    reference_cases("smollm2");
    bad_params();
    processors();
    sampling_statistics();
    return CHECK_DONE();
}
