/* test_bart.c: the BART encoder-decoder against transformers (the fixtures'
 * reference.json `forward` cases, fp32, within 1e-4): BartForSequenceClassification
 * (bart-mnli, eos pooling over a padded batch) and BartForConditionalGeneration
 * (bart-cnn: decoder logits, and the encoder's last hidden state through
 * output_hidden_states), plus the errors: rows with different eos counts, a row with
 * no eos, the LM head without decoder_input_ids, ids out of range. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "json_util.h"
#include "models/model.h"

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

static cJSON *load_forward(const char *name, cJSON **ref) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/reference.json", FIXTURES, name);
    tp_error err;
    *ref = NULL;
    tp_status st = tp__json_load(path, ref, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    return st == TP_OK ? cJSON_GetObjectItem(*ref, "forward") : NULL;
}

/* Worst |got - want| over a reference {shape, data}; -1 on a shape mismatch. When
 * `mask` is given (token-level [B, T, ...] outputs) only its 1 positions count. */
static double worst_diff(const tp_tensor *t, const cJSON *want, const int32_t *mask) {
    const cJSON *shape = cJSON_GetObjectItem(want, "shape");
    const cJSON *data = cJSON_GetObjectItem(want, "data");
    if (tp_tensor_ndim(t) != cJSON_GetArraySize(shape)) return -1;
    for (int i = 0; i < tp_tensor_ndim(t); i++)
        if (tp_tensor_dim(t, i) != (int64_t)cJSON_GetArrayItem(shape, i)->valuedouble) return -1;
    if (tp_tensor_numel(t) != cJSON_GetArraySize(data)) return -1;
    int64_t per = 1;
    for (int i = 2; i < tp_tensor_ndim(t); i++) per *= tp_tensor_dim(t, i);
    const float *got = tp_tensor_f32(t);
    double worst = 0;
    int64_t i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, data) {
        if (!mask || mask[i / per]) {
            double d = fabs((double)got[i] - x->valuedouble);
            if (!(d <= worst)) worst = d; /* NaN counts as worst */
        }
        i++;
    }
    return worst;
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

static void test_mnli(void) {
    tp_model *m = load("bart-mnli");
    cJSON *ref;
    const cJSON *fw = load_forward("bart-mnli", &ref);
    if (!m || !fw) goto out;
    CHECK(strcmp(tp_model_type(m), "bart") == 0);
    CHECK(tp_model_head(m) == TP_HEAD_SEQUENCE_CLASSIFICATION);
    CHECK(tp_model_num_labels(m) == 3);
    CHECK(strcmp(tp_model_label(m, 2), "entailment") == 0);

    int B, T, b2, t2;
    int32_t *ids = ints_2d(cJSON_GetObjectItem(fw, "input_ids"), &B, &T);
    int32_t *mask = ints_2d(cJSON_GetObjectItem(fw, "attention_mask"), &b2, &t2);
    const cJSON *logits = cJSON_GetObjectItem(fw, "logits");
    tp_model_input in = {.struct_size = sizeof in, .batch = B, .seq_len = T, .input_ids = ids,
                         .attention_mask = mask};
    tp_tensor *out = NULL;
    tp_error err;
    tp_status st = tp_model_forward(m, &in, &out, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (st == TP_OK) {
        double w = worst_diff(out, logits, NULL);
        CHECK_MSG(w >= 0 && w <= TOL, "bart-mnli logits: worst |diff| %g", w);
        printf("bart-mnli logits: worst |diff| %.1e\n", w);
    }
    tp_tensor_free(out);
    out = NULL;

    /* an explicit shift_tokens_right(input_ids) decoder input is the default one */
    int32_t *dec = malloc((size_t)B * T * sizeof *dec);
    for (int b = 0; b < B; b++) {
        dec[b * T] = 2; /* decoder_start_token_id */
        memcpy(dec + b * T + 1, ids + b * T, (size_t)(T - 1) * sizeof *dec);
    }
    tp_model_input in_dec = in;
    in_dec.decoder_input_ids = dec;
    in_dec.decoder_seq_len = T;
    st = tp_model_forward(m, &in_dec, &out, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (st == TP_OK) CHECK(worst_diff(out, logits, NULL) <= TOL);
    tp_tensor_free(out);
    out = NULL;
    in_dec.decoder_seq_len = T - 1;
    CHECK_STATUS(tp_model_forward(m, &in_dec, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "decoder_seq_len");

    /* row 0 alone, unpadded (15 tokens), gives the padded batch's row 0: what the
     * zero-shot plugin relies on when it pads the label hypotheses into one batch */
    int len0 = 0;
    while (len0 < T && mask[len0]) len0++;
    tp_model_input one = {.struct_size = sizeof one, .batch = 1, .seq_len = len0,
                          .input_ids = ids};
    st = tp_model_forward(m, &one, &out, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (st == TP_OK)
        for (int j = 0; j < 3; j++)
            CHECK_NEAR(tp_tensor_f32(out)[j],
                       cJSON_GetArrayItem(cJSON_GetObjectItem(logits, "data"), j)->valuedouble,
                       TOL);
    tp_tensor_free(out);
    out = NULL;

    /* output_hidden_states: the encoder's last hidden state [B, T, d_model] */
    tp_model_input hs = in;
    hs.output_hidden_states = 1;
    st = tp_model_forward(m, &hs, &out, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (st == TP_OK)
        CHECK(tp_tensor_ndim(out) == 3 && tp_tensor_dim(out, 0) == B &&
              tp_tensor_dim(out, 1) == T && tp_tensor_dim(out, 2) == 32);
    tp_tensor_free(out);
    out = NULL;

    /* rows with different eos counts: transformers' ValueError */
    int32_t saved = ids[T + 3];
    ids[T + 3] = 2;
    CHECK_STATUS(tp_model_forward(m, &in, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "same number of <eos> tokens");
    CHECK(out == NULL);
    ids[T + 3] = saved;

    /* a row without eos has nothing to pool */
    int32_t row[4] = {0, 100, 200, 300};
    tp_model_input noeos = {.struct_size = sizeof noeos, .batch = 1, .seq_len = 4,
                            .input_ids = row};
    CHECK_STATUS(tp_model_forward(m, &noeos, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "no eos token");

    /* ids outside the vocabulary */
    row[1] = 1000;
    CHECK_STATUS(tp_model_forward(m, &noeos, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "input_ids[0][1] = 1000");

    /* longer than max_position_embeddings (128) */
    int32_t *lng = calloc(129, sizeof *lng);
    tp_model_input too_long = {.struct_size = sizeof too_long, .batch = 1, .seq_len = 129,
                               .input_ids = lng};
    CHECK_STATUS(tp_model_forward(m, &too_long, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "max_position_embeddings");
    free(lng);
    free(dec);
    free(ids);
    free(mask);
out:
    cJSON_Delete(ref);
    tp_model_free(m);
}

static void test_cnn(void) {
    tp_model *m = load("bart-cnn");
    cJSON *ref;
    const cJSON *fw = load_forward("bart-cnn", &ref);
    if (!m || !fw) goto out;
    CHECK(tp_model_head(m) == TP_HEAD_SEQ2SEQ_LM);
    CHECK(strcmp(tp_model_architecture(m), "BartForConditionalGeneration") == 0);

    int B, T, DB, DT;
    int32_t *ids = ints_2d(cJSON_GetObjectItem(fw, "input_ids"), &B, &T);
    int32_t *dec = ints_2d(cJSON_GetObjectItem(fw, "decoder_input_ids"), &DB, &DT);
    tp_model_input in = {.struct_size = sizeof in, .batch = B, .seq_len = T, .input_ids = ids,
                         .decoder_input_ids = dec, .decoder_seq_len = DT};
    tp_tensor *out = NULL;
    tp_error err;
    tp_status st = tp_model_forward(m, &in, &out, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (st == TP_OK) {
        double w = worst_diff(out, cJSON_GetObjectItem(fw, "logits"), NULL);
        CHECK_MSG(w >= 0 && w <= TOL, "bart-cnn logits: worst |diff| %g", w);
        printf("bart-cnn logits [1, %d, 1000]: worst |diff| %.1e\n", DT, w);
    }
    tp_tensor_free(out);
    out = NULL;

    tp_model_input hs = in;
    hs.output_hidden_states = 1;
    st = tp_model_forward(m, &hs, &out, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (st == TP_OK) {
        double w = worst_diff(out, cJSON_GetObjectItem(fw, "encoder_last_hidden_state"), NULL);
        CHECK_MSG(w >= 0 && w <= TOL, "bart-cnn encoder_last_hidden_state: worst |diff| %g", w);
        printf("bart-cnn encoder_last_hidden_state: worst |diff| %.1e\n", w);
    }
    tp_tensor_free(out);
    out = NULL;

    /* the LM head needs the decoder's tokens */
    tp_model_input nodec = in;
    nodec.decoder_input_ids = NULL;
    nodec.decoder_seq_len = 0;
    CHECK_STATUS(tp_model_forward(m, &nodec, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "decoder_input_ids");
    CHECK(out == NULL);
    /* so does a caller built against the first tp_model_input layout */
    nodec.struct_size = offsetof(tp_model_input, token_type_ids) + sizeof nodec.token_type_ids;
    CHECK_STATUS(tp_model_forward(m, &nodec, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "decoder_input_ids");

    /* decoder ids are checked like input ids */
    dec[1] = -5;
    CHECK_STATUS(tp_model_forward(m, &in, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "decoder_input_ids[0][1] = -5");
    free(ids);
    free(dec);
out:
    cJSON_Delete(ref);
    tp_model_free(m);
}

int main(void) {
    test_mnli();
    test_cnn();
    return CHECK_DONE();
}
