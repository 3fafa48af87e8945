/* test_seq2seq.c: the T5 and Marian encoder-decoders against transformers (the
 * fixtures' reference.json `forward` cases: decoder logits, fp32, within 1e-4), a
 * padded batch against the unpadded rows, T5's relative position buckets against
 * hand-computed values, the decoder-output scaling rule, and the errors (no
 * decoder_input_ids, ids outside the decoder vocabulary). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "json_util.h"
#include "models/model.h"
#include "models/t5.h"

#define FIXTURES TP_TEST_DATA "/fixtures/models"
#define TOL 1e-4

/* [rows][cols] ints of a reference.json array of arrays, flattened. */
static int32_t *ints_2d(const cJSON *a, int *rows, int *cols) {
    *rows = cJSON_GetArraySize(a);
    *cols = cJSON_GetArraySize(cJSON_GetArrayItem(a, 0));
    int32_t *v = calloc((size_t)*rows * *cols + 1, sizeof *v);
    int i = 0;
    const cJSON *row, *x;
    cJSON_ArrayForEach(row, a) cJSON_ArrayForEach(x, row) v[i++] = (int32_t)x->valuedouble;
    return v;
}

static cJSON *load_json(const char *name, const char *file) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", FIXTURES, name, file);
    tp_error err;
    cJSON *j = NULL;
    tp_status st = tp__json_load(path, &j, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    return j;
}

static tp_model *load(const char *name) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", FIXTURES, name);
    tp_model *m = NULL;
    tp_error err;
    tp_status st = tp_model_new(NULL, dir, &m, &err);
    CHECK_MSG(st == TP_OK, "%s: %s", name, err.message);
    return m;
}

/* Worst |got - want| over the first n floats; -1 on a size mismatch. */
static double worst_diff(const float *got, size_t n, const cJSON *data) {
    if ((size_t)cJSON_GetArraySize(data) != n) return -1;
    double worst = 0;
    size_t i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, data) {
        double d = fabs((double)got[i++] - x->valuedouble);
        if (!(d <= worst)) worst = d; /* NaN counts as worst */
    }
    return worst;
}

/* The fixture's forward case, then the same source in a right-padded batch of two
 * (row 1 a shorter prefix), whose rows must match the single-row runs. */
static void test_forward(const char *name, const char *model_type) {
    tp_model *m = load(name);
    cJSON *ref = load_json(name, "reference.json");
    const cJSON *fw = ref ? cJSON_GetObjectItem(ref, "forward") : NULL;
    if (!m || !fw) goto out;
    CHECK(strcmp(tp_model_type(m), model_type) == 0);
    CHECK(tp_model_head(m) == TP_HEAD_SEQ2SEQ_LM);

    int B, S, db, T;
    int32_t *ids = ints_2d(cJSON_GetObjectItem(fw, "input_ids"), &B, &S);
    int32_t *dec = ints_2d(cJSON_GetObjectItem(fw, "decoder_input_ids"), &db, &T);
    const cJSON *logits = cJSON_GetObjectItem(fw, "logits");
    const cJSON *shape = cJSON_GetObjectItem(logits, "shape");
    const int V = (int)cJSON_GetArrayItem(shape, 2)->valuedouble;
    tp_model_input in = {.struct_size = sizeof in, .batch = B, .seq_len = S, .input_ids = ids,
                         .decoder_input_ids = dec, .decoder_seq_len = T};
    tp_tensor *out = NULL, *one = NULL;
    tp_error err;
    tp_status st = tp_model_forward(m, &in, &out, &err);
    CHECK_MSG(st == TP_OK, "%s: %s", name, err.message);
    if (st == TP_OK) {
        CHECK(tp_tensor_ndim(out) == 3 && tp_tensor_dim(out, 0) == B &&
              tp_tensor_dim(out, 1) == T && tp_tensor_dim(out, 2) == V);
        double w = worst_diff(tp_tensor_f32(out), (size_t)tp_tensor_numel(out),
                              cJSON_GetObjectItem(logits, "data"));
        CHECK_MSG(w >= 0 && w <= TOL, "%s logits: worst |diff| %g", name, w);
        printf("%s logits: worst |diff| %.1e\n", name, w);
    }

    /* padded batch: [fixture row; its first 7 tokens, then pad with mask 0] */
    const int short_len = 7;
    int32_t *bids = calloc((size_t)2 * S, sizeof *bids);
    int32_t *bmask = calloc((size_t)2 * S, sizeof *bmask);
    int32_t *bdec = calloc((size_t)2 * T, sizeof *bdec);
    memcpy(bids, ids, (size_t)S * sizeof *bids);
    memcpy(bids + S, ids, (size_t)short_len * sizeof *bids);
    for (int t = 0; t < S; t++) bmask[t] = 1, bmask[S + t] = t < short_len;
    memcpy(bdec, dec, (size_t)T * sizeof *bdec);
    memcpy(bdec + T, dec, (size_t)T * sizeof *bdec);
    tp_tensor *batch = NULL;
    tp_model_input bin = {.struct_size = sizeof bin, .batch = 2, .seq_len = S, .input_ids = bids,
                          .attention_mask = bmask, .decoder_input_ids = bdec,
                          .decoder_seq_len = T};
    st = tp_model_forward(m, &bin, &batch, &err);
    CHECK_MSG(st == TP_OK, "%s batch: %s", name, err.message);
    tp_model_input sin = {.struct_size = sizeof sin, .batch = 1, .seq_len = short_len,
                          .input_ids = ids, .decoder_input_ids = dec, .decoder_seq_len = T};
    tp_status st1 = tp_model_forward(m, &sin, &one, &err);
    CHECK_MSG(st1 == TP_OK, "%s short row: %s", name, err.message);
    if (st == TP_OK && st1 == TP_OK && out) {
        const float *b = tp_tensor_f32(batch), *o = tp_tensor_f32(out), *s = tp_tensor_f32(one);
        const size_t n = (size_t)T * V;
        double w0 = 0, w1 = 0;
        for (size_t i = 0; i < n; i++) {
            w0 = fmax(w0, fabs((double)b[i] - o[i]));
            w1 = fmax(w1, fabs((double)b[n + i] - s[i]));
        }
        CHECK_MSG(w0 <= TOL && w1 <= TOL, "%s padded batch: rows differ by %g and %g", name, w0,
                  w1);
    }
    tp_tensor_free(batch);
    tp_tensor_free(one);
    tp_tensor_free(out);
    out = NULL;

    /* output_hidden_states: the encoder's last hidden state, no decoder input needed */
    tp_model_input hs = {.struct_size = sizeof hs, .batch = B, .seq_len = S, .input_ids = ids,
                         .output_hidden_states = 1};
    st = tp_model_forward(m, &hs, &out, &err);
    CHECK_MSG(st == TP_OK, "%s hidden states: %s", name, err.message);
    if (st == TP_OK)
        CHECK(tp_tensor_ndim(out) == 3 && tp_tensor_dim(out, 0) == B &&
              tp_tensor_dim(out, 1) == S && tp_tensor_dim(out, 2) == 32);
    tp_tensor_free(out);
    out = NULL;

    /* the LM head without decoder_input_ids */
    tp_model_input nodec = {.struct_size = sizeof nodec, .batch = B, .seq_len = S,
                            .input_ids = ids};
    CHECK_STATUS(tp_model_forward(m, &nodec, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "decoder_input_ids");
    CHECK(out == NULL);

    /* a decoder id past the vocabulary */
    dec[T - 1] = V;
    CHECK_STATUS(tp_model_forward(m, &in, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "decoder_input_ids[0]");

    free(bids);
    free(bmask);
    free(bdec);
    free(ids);
    free(dec);
out:
    cJSON_Delete(ref);
    tp_model_free(m);
}

static void test_buckets(void) {
    /* {relative position (key - query), bidirectional, num_buckets, max_distance,
     * bucket}, worked by hand: exact buckets below max_exact = buckets/2 (of the half
     * table when bidirectional), then max_exact + floor(log(|rel|/max_exact) /
     * log(max_distance/max_exact) * (buckets - max_exact)), capped at buckets - 1 */
    static const int cases[][5] = {
        /* the encoder's table (t5: 32 buckets, max distance 128); keys after the query
         * use the upper 16 */
        {0, 1, 32, 128, 0},    {-1, 1, 32, 128, 1},  {1, 1, 32, 128, 17},
        {-7, 1, 32, 128, 7},   {-8, 1, 32, 128, 8},  {8, 1, 32, 128, 24},
        {-11, 1, 32, 128, 8},  /* log(1.375)/log(16)*8 = 0.92 */
        {-12, 1, 32, 128, 9},  /* log(1.5)/log(16)*8 = 1.17 */
        {-16, 1, 32, 128, 10}, /* exactly 2: no rounding below */
        {-32, 1, 32, 128, 12}, {-64, 1, 32, 128, 14}, {-127, 1, 32, 128, 15},
        {-128, 1, 32, 128, 15}, {1000, 1, 32, 128, 31},
        {20, 1, 32, 128, 26},  /* 16 + 8 + floor(log(2.5)/log(16)*8 = 2.64) */
        /* the decoder's causal table: the future is bucket 0, max_exact 16 */
        {5, 0, 32, 128, 0},    {0, 0, 32, 128, 0},   {-1, 0, 32, 128, 1},
        {-15, 0, 32, 128, 15}, {-16, 0, 32, 128, 16},
        {-20, 0, 32, 128, 17}, /* log(1.25)/log(8)*16 = 1.72 */
        {-32, 0, 32, 128, 21}, {-64, 0, 32, 128, 26}, {-127, 0, 32, 128, 31},
        {-128, 0, 32, 128, 31}, {-500, 0, 32, 128, 31},
        /* a small table: 8 buckets, max distance 20 (max_exact 2) */
        {-3, 1, 8, 20, 2},     {-5, 1, 8, 20, 2},    {-7, 1, 8, 20, 3},
        {7, 1, 8, 20, 7},      {-20, 1, 8, 20, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int *c = cases[i];
        int got = tp__t5_relative_bucket(c[0], c[1], c[2], c[3]);
        CHECK_MSG(got == c[4], "bucket(%d, bidirectional %d, %d buckets, max %d) = %d, want %d",
                  c[0], c[1], c[2], c[3], got, c[4]);
    }
}

static void check_rule(const char *json, tp_status want_st, int want) {
    cJSON *cfg = cJSON_Parse(json);
    int scale = -1;
    tp_error err;
    tp_status st = tp__t5_scale_decoder_outputs(cfg, "config.json", &scale, &err);
    CHECK_MSG(st == want_st, "%s: status %d", json, (int)st);
    if (st == TP_OK) CHECK_MSG(scale == want, "%s: scale %d, want %d", json, scale, want);
    cJSON_Delete(cfg);
}

static void test_scale_rule(void) {
    /* the fixtures: t5-small asks for the rescale (tied), flan-t5 does not (untied) */
    cJSON *t5 = load_json("t5-small", "config.json");
    cJSON *flan = load_json("flan-t5", "config.json");
    int s1 = -1, s2 = -1;
    tp_error err;
    CHECK_STATUS(tp__t5_scale_decoder_outputs(t5, "t5-small", &s1, &err), TP_OK);
    CHECK_STATUS(tp__t5_scale_decoder_outputs(flan, "flan-t5", &s2, &err), TP_OK);
    CHECK(s1 == 1);
    CHECK(s2 == 0);
    cJSON_Delete(t5);
    cJSON_Delete(flan);
    /* the key wins where present; else tie_word_embeddings, true when absent */
    check_rule("{}", TP_OK, 1);
    check_rule("{\"tie_word_embeddings\": true}", TP_OK, 1);
    check_rule("{\"tie_word_embeddings\": false}", TP_OK, 0);
    check_rule("{\"tie_word_embeddings\": true, \"scale_decoder_outputs\": false}", TP_OK, 0);
    check_rule("{\"tie_word_embeddings\": false, \"scale_decoder_outputs\": true}", TP_OK, 1);
    check_rule("{\"scale_decoder_outputs\": null, \"tie_word_embeddings\": false}", TP_OK, 0);
    check_rule("{\"scale_decoder_outputs\": \"yes\"}", TP_ERR_FORMAT, 0);
}

int main(void) {
    test_forward("t5-small", "t5");
    test_forward("flan-t5", "t5");
    test_forward("marian-fr-en", "marian");
    test_buckets();
    test_scale_rule();
    return CHECK_DONE();
}
