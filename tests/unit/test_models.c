/* test_models.c: BERT and DistilBERT forward against transformers' logits (the
 * fixtures' reference.json `forward` case, fp32, within 1e-4), the model accessors,
 * the run state's spare block (reused across forwards, also from several threads at
 * once), the profile's sums (tp_profile_read) over a forward, and the load errors a
 * user meets (missing or broken config.json, unknown
 * model_type or architecture, a missing tensor, a wrongly shaped tensor). */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "json_util.h"
#include "models/model.h"
#include "models/spare.h"

#define FIXTURES TP_TEST_DATA "/fixtures/models"

/* [rows][cols] ints of a reference.json array of arrays, flattened. */
static int32_t *ints_2d(const cJSON *a, int *rows, int *cols) {
    *rows = cJSON_GetArraySize(a);
    *cols = cJSON_GetArraySize(cJSON_GetArrayItem(a, 0));
    int32_t *v = calloc((size_t)*rows * *cols, sizeof *v);
    int i = 0;
    const cJSON *row, *x;
    cJSON_ArrayForEach(row, a) cJSON_ArrayForEach(x, row) v[i++] = (int32_t)x->valuedouble;
    return v;
}

/* Runs the reference `forward` case of a fixture and returns the worst |difference|
 * of the logits, or -1 when it could not run. */
static double forward_case(const char *name, tp_model *m) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/reference.json", FIXTURES, name);
    cJSON *ref;
    tp_error err;
    CHECK_STATUS(tp__json_load(path, &ref, &err), TP_OK);
    const cJSON *fw = cJSON_GetObjectItem(ref, "forward");
    int B, T, b2, t2;
    int32_t *ids = ints_2d(cJSON_GetObjectItem(fw, "input_ids"), &B, &T);
    int32_t *mask = ints_2d(cJSON_GetObjectItem(fw, "attention_mask"), &b2, &t2);
    int32_t *types = cJSON_GetObjectItem(fw, "token_type_ids")
                         ? ints_2d(cJSON_GetObjectItem(fw, "token_type_ids"), &b2, &t2)
                         : NULL;
    const cJSON *logits = cJSON_GetObjectItem(fw, "logits");
    const cJSON *shape = cJSON_GetObjectItem(logits, "shape");
    const cJSON *data = cJSON_GetObjectItem(logits, "data");

    tp_model_input in = {.struct_size = sizeof in, .batch = B, .seq_len = T, .input_ids = ids,
                         .attention_mask = mask, .token_type_ids = types};
    tp_tensor *out = NULL;
    double worst = -1;
    tp_status st = tp_model_forward(m, &in, &out, &err);
    CHECK_MSG(st == TP_OK, "%s: %s", name, err.message);
    if (st == TP_OK) {
        CHECK(tp_tensor_ndim(out) == cJSON_GetArraySize(shape));
        for (int i = 0; i < tp_tensor_ndim(out); i++)
            CHECK(tp_tensor_dim(out, i) == (int64_t)cJSON_GetArrayItem(shape, i)->valuedouble);
        CHECK(tp_tensor_numel(out) == cJSON_GetArraySize(data));
        const float *got = tp_tensor_f32(out);
        worst = 0;
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, data) {
            double d = fabs(got[i++] - x->valuedouble);
            if (d > worst) worst = d;
        }

        /* the padded row alone, unpadded, gives the same logits: the mask works */
        int len = 0;
        while (len < T && mask[(size_t)(B - 1) * T + len]) len++;
        tp_model_input one = {.struct_size = sizeof one, .batch = 1, .seq_len = len,
                              .input_ids = ids + (size_t)(B - 1) * T,
                              .token_type_ids = types ? types + (size_t)(B - 1) * T : NULL};
        tp_tensor *o1 = NULL;
        CHECK_STATUS(tp_model_forward(m, &one, &o1, &err), TP_OK);
        if (o1) {
            const int L = (int)tp_tensor_dim(out, 1);
            double d1 = 0;
            for (int j = 0; j < L; j++)
                d1 = fmax(d1, fabs(tp_tensor_f32(o1)[j] - got[(size_t)(B - 1) * L + j]));
            CHECK_NEAR(d1, 0, 1e-5);
        }
        tp_tensor_free(o1);
    }
    tp_tensor_free(out);
    free(ids);
    free(mask);
    free(types);
    cJSON_Delete(ref);
    return worst;
}

static void test_distilbert_sst2(void) {
    tp_model *m = NULL;
    tp_error err;
    tp_status st = tp_model_new(NULL, FIXTURES "/distilbert-sst2", &m, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (!m) return;
    CHECK(strcmp(tp_model_type(m), "distilbert") == 0);
    CHECK(strcmp(tp_model_architecture(m), "DistilBertForSequenceClassification") == 0);
    CHECK(tp_model_head(m) == TP_HEAD_SEQUENCE_CLASSIFICATION);
    CHECK(tp_model_num_labels(m) == 2);
    CHECK(strcmp(tp_model_label(m, 0), "NEGATIVE") == 0);
    CHECK(strcmp(tp_model_label(m, 1), "POSITIVE") == 0);
    CHECK(tp_model_label(m, 2) == NULL && tp_model_label(m, -1) == NULL);
    CHECK(tp_model_problem_type(m) == NULL);
    char *json = NULL;
    CHECK_STATUS(tp_model_config_value(m, "id2label.1", &json, &err), TP_OK);
    CHECK(json && strcmp(json, "\"POSITIVE\"") == 0);
    tp_free(json);
    CHECK_STATUS(tp_model_config_value(m, "task_specific_params.x", &json, &err),
                 TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "task_specific_params.x");

    double worst = forward_case("distilbert-sst2", m);
    CHECK_NEAR(worst, 0, 1e-4);
    printf("distilbert-sst2: worst logit difference %.3g\n", worst);

    /* ids outside the vocabulary are refused, naming the position */
    int32_t bad[3] = {2, 5000, 3};
    tp_model_input in = {.struct_size = sizeof in, .batch = 1, .seq_len = 3, .input_ids = bad};
    tp_tensor *out = NULL;
    CHECK_STATUS(tp_model_forward(m, &in, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "input_ids[0][1] = 5000");
    CHECK(out == NULL);
    in.seq_len = 0;
    CHECK_STATUS(tp_model_forward(m, &in, &out, &err), TP_ERR_INVALID_ARGUMENT);
    tp_model_free(m);
}

/* The spare block: a forward that fits takes the one given back; a larger one
 * replaces it. */
static void test_spare_block(void) {
    tp__spare s = {0};
    char *p = tp__spare_take(&s, 1000);
    CHECK(p && (uintptr_t)p % 64 == 0);
    memset(p, 1, 1000);
    tp__spare_give(&s, p);
    char *again = tp__spare_take(&s, 500);
    CHECK(again == p);
    tp__spare_give(&s, again);
    char *big = tp__spare_take(&s, 5000);
    CHECK(big != NULL);
    memset(big, 2, 5000); /* the small one was freed: ASan would flag a reuse */
    tp__spare_give(&s, big);
    CHECK(tp__spare_take(&s, 5000) == big);
    tp__spare_give(&s, big);
    tp__spare_give(&s, NULL);
    tp__spare_clear(&s);
    tp__spare_clear(&s);
}

/* Several threads run forwards of two sizes on one model: each gets the logits a
 * lone forward gives, bit for bit, whichever block it was handed. */
typedef struct forward_job {
    tp_model *m;
    const tp_model_input *in[2];
    const float *want[2];
    size_t n[2];
    int mismatches;
} forward_job;

static void *forward_thread(void *arg) {
    forward_job *j = arg;
    for (int i = 0; i < 40; i++) {
        const int which = i % 2;
        tp_tensor *out = NULL;
        tp_error err;
        if (tp_model_forward(j->m, j->in[which], &out, &err) != TP_OK ||
            memcmp(tp_tensor_f32(out), j->want[which], j->n[which] * sizeof(float)))
            j->mismatches++;
        tp_tensor_free(out);
    }
    return NULL;
}

static void test_concurrent_forwards(void) {
    tp_model *m = NULL;
    tp_error err;
    CHECK_STATUS(tp_model_new(NULL, FIXTURES "/distilbert-sst2", &m, &err), TP_OK);
    if (!m) return;
    int32_t ids[2][12] = {{101, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 102}, {101, 20, 21, 102}};
    int32_t mask[2][12] = {{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1}};
    const tp_model_input batch = {.struct_size = sizeof batch, .batch = 2, .seq_len = 12,
                                  .input_ids = ids[0], .attention_mask = mask[0]};
    const tp_model_input one = {.struct_size = sizeof one, .batch = 1, .seq_len = 4,
                                .input_ids = ids[1]};
    tp_tensor *want[2] = {NULL, NULL};
    CHECK_STATUS(tp_model_forward(m, &batch, &want[0], &err), TP_OK);
    CHECK_STATUS(tp_model_forward(m, &one, &want[1], &err), TP_OK);
    if (want[0] && want[1]) {
        forward_job jobs[4];
        pthread_t t[4];
        for (int i = 0; i < 4; i++) {
            jobs[i] = (forward_job){m,
                                    {&batch, &one},
                                    {tp_tensor_f32(want[0]), tp_tensor_f32(want[1])},
                                    {(size_t)tp_tensor_numel(want[0]), (size_t)tp_tensor_numel(want[1])},
                                    0};
            CHECK(pthread_create(&t[i], NULL, forward_thread, &jobs[i]) == 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            CHECK_MSG(jobs[i].mismatches == 0, "thread %d: %d of 40 forwards differ", i,
                      jobs[i].mismatches);
        }
    }
    tp_tensor_free(want[0]);
    tp_tensor_free(want[1]);
    tp_model_free(m);
}

/* The same case from text: tokenizer -> padded encoding -> forward_encoding. */
static void test_forward_encoding(void) {
    tp_error err;
    tp_model *m = NULL;
    tp_tokenizer *tok = NULL;
    const char *dir = FIXTURES "/bert-multilabel";
    CHECK_STATUS(tp_model_new(NULL, dir, &m, &err), TP_OK);
    tp_status st = tp_tokenizer_new(dir, TP_TOKENIZER_AUTO, &tok, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (!m || !tok) {
        tp_model_free(m);
        tp_tokenizer_free(tok);
        return;
    }
    cJSON *ref;
    CHECK_STATUS(tp__json_load(FIXTURES "/bert-multilabel/reference.json", &ref, &err), TP_OK);
    const cJSON *fw = cJSON_GetObjectItem(ref, "forward");
    const cJSON *texts = cJSON_GetObjectItem(fw, "texts");
    const char *t[2] = {cJSON_GetArrayItem(texts, 0)->valuestring,
                        cJSON_GetArrayItem(texts, 1)->valuestring};
    tp_encode_options o;
    tp_encode_options_init(&o);
    tp_encoding *enc = NULL;
    tp_tensor *out = NULL;

    /* unpadded rows of different lengths are refused */
    st = tp_tokenizer_encode(tok, t, NULL, 2, &o, &enc, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (enc) {
        CHECK_STATUS(tp_model_forward_encoding(m, enc, &out, &err), TP_ERR_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.message, "encoding rows differ in length: pad the batch");
        tp_encoding_free(enc);
        enc = NULL;
    }

    o.padding = TP_PAD_LONGEST;
    st = tp_tokenizer_encode(tok, t, NULL, 2, &o, &enc, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (enc) {
        st = tp_model_forward_encoding(m, enc, &out, &err);
        CHECK_MSG(st == TP_OK, "%s", err.message);
    }
    if (out) {
        const cJSON *data = cJSON_GetObjectItem(cJSON_GetObjectItem(fw, "logits"), "data");
        CHECK(tp_tensor_numel(out) == cJSON_GetArraySize(data));
        double worst = 0;
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, data) {
            if (i < tp_tensor_numel(out))
                worst = fmax(worst, fabs(tp_tensor_f32(out)[i] - x->valuedouble));
            i++;
        }
        CHECK_NEAR(worst, 0, 1e-4);
        printf("bert-multilabel from text: worst logit difference %.3g\n", worst);
    }
    tp_tensor_free(out);
    tp_encoding_free(enc);
    cJSON_Delete(ref);
    tp_tokenizer_free(tok);
    tp_model_free(m);
}

static tp_status fail_matmul(void *ctx, const tp_matmul_args *a) {
    (void)ctx;
    (void)a;
    return TP_ERR_INTERNAL;
}

static void test_bert_multilabel(void) {
    tp_model *m = NULL;
    tp_error err;
    tp_status st = tp_model_new(NULL, FIXTURES "/bert-multilabel", &m, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (!m) return;
    CHECK(strcmp(tp_model_type(m), "bert") == 0);
    CHECK(tp_model_head(m) == TP_HEAD_SEQUENCE_CLASSIFICATION);
    CHECK(tp_model_num_labels(m) == 4);
    CHECK(strcmp(tp_model_label(m, 3), "threat") == 0);
    CHECK(tp_model_problem_type(m) && strcmp(tp_model_problem_type(m), "multi_label_classification") == 0);
    double worst = forward_case("bert-multilabel", m);
    CHECK_NEAR(worst, 0, 1e-4);
    printf("bert-multilabel: worst logit difference %.3g\n", worst);

    /* a backend failure surfaces as TP_ERR_BACKEND naming the backend */
    tp_backend_vtable vt = {.struct_size = sizeof vt, .matmul = fail_matmul};
    tp__backend be = {.vt = &vt, .name = "broken"};
    int32_t ids[3] = {2, 48, 3};
    tp_model_input in = {.struct_size = sizeof in, .batch = 1, .seq_len = 3, .input_ids = ids};
    tp_tensor *out = NULL;
    CHECK_STATUS(tp__model_forward(m, &be, &in, &out, &err), TP_ERR_BACKEND);
    CHECK_CONTAINS(err.message, "broken");
    CHECK(out == NULL);
    /* token type ids past type_vocab_size */
    int32_t types[3] = {0, 2, 0};
    in.token_type_ids = types;
    CHECK_STATUS(tp_model_forward(m, &in, &out, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "type_vocab_size");
    tp_model_free(m);
}

/* ---------------------------------------------------------------- load errors */

static char tmpdir[64];

static void write_text(const char *file, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, file);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void clean_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
}

static char *slurp(const char *path, size_t *len) {
    char *data;
    tp_error err;
    if (tp__read_file(path, &data, len, &err) != TP_OK) return NULL;
    return data;
}

/* Copies bert-multilabel's config.json and model.safetensors into tmpdir; `edit`
 * changes the safetensors header (the data section is kept as it is). */
static void make_variant(void (*edit)(cJSON *header)) {
    clean_tmpdir();
    size_t clen, slen;
    char *config = slurp(FIXTURES "/bert-multilabel/config.json", &clen);
    char *st = slurp(FIXTURES "/bert-multilabel/model.safetensors", &slen);
    write_text("config.json", config);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)st[i];
    cJSON *header = cJSON_ParseWithLength(st + 8, (size_t)hlen);
    edit(header);
    char *text = cJSON_PrintUnformatted(header);
    size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", tmpdir);
    FILE *f = fopen(path, "wb");
    unsigned char lenbytes[8];
    for (int i = 0; i < 8; i++) lenbytes[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    fwrite(lenbytes, 1, 8, f);
    fwrite(text, 1, n, f);
    for (size_t i = n; i < padded; i++) fputc(' ', f);
    fwrite(st + 8 + hlen, 1, slen - 8 - hlen, f);
    fclose(f);
    cJSON_free(text);
    cJSON_Delete(header);
    free(config);
    free(st);
}

static void drop_layer1_value_bias(cJSON *h) {
    cJSON_DeleteItemFromObject(h, "bert.encoder.layer.1.attention.self.value.bias");
}

static void reshape_classifier(cJSON *h) {
    /* same byte count, other shape */
    cJSON *t = cJSON_GetObjectItem(h, "classifier.weight");
    cJSON_ReplaceItemInObject(t, "shape", cJSON_CreateIntArray((const int[]){8, 16}, 2));
}

static void keep_all(cJSON *h) { (void)h; }

static void test_load_errors(void) {
    tp_model *m = (tp_model *)1;
    tp_error err;

    /* no config.json */
    CHECK_STATUS(tp_model_new(NULL, "/nonexistent/tpipe-model", &m, &err), TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "/nonexistent/tpipe-model/config.json");
    CHECK(m == NULL);

    strcpy(tmpdir, "/tmp/tp_test_models_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK(!"mkdtemp");
        return;
    }

    /* config.json that is not JSON: the position is given */
    write_text("config.json", "{\n  \"model_type\": \"bert\",\n  \"hidden_size\": 32,,\n}\n");
    CHECK_STATUS(tp_model_new(NULL, tmpdir, &m, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "config.json");
    CHECK_CONTAINS(err.message, "line 3, column");

    write_text("config.json", "{\"architectures\": [\"BertModel\"]}");
    CHECK_STATUS(tp_model_new(NULL, tmpdir, &m, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "missing key 'model_type'");

    write_text("config.json", "{\"model_type\": \"xyz\"}");
    CHECK_STATUS(tp_model_new(NULL, tmpdir, &m, &err), TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(err.message,
                   "config.json: model_type 'xyz' is not supported (supported: bert, distilbert");

    write_text("config.json",
               "{\"model_type\": \"bert\", \"architectures\": [\"BertForPreTraining\"]}");
    CHECK_STATUS(tp_model_new(NULL, tmpdir, &m, &err), TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(err.message, "architecture 'BertForPreTraining' is not supported");

    write_text("config.json", "{\"model_type\": \"bert\", \"id2label\": {\"0\": \"a\", \"x\": \"b\"}}");
    CHECK_STATUS(tp_model_new(NULL, tmpdir, &m, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "id2label key 'x'");

    /* config fine, no weights */
    write_text("config.json", "{\"model_type\": \"bert\", \"architectures\": [\"BertModel\"]}");
    CHECK_STATUS(tp_model_new(NULL, tmpdir, &m, &err), TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "model.safetensors");

    /* a tensor the architecture needs is missing: named */
    make_variant(drop_layer1_value_bias);
    CHECK_STATUS(tp_model_new(NULL, tmpdir, &m, &err), TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "tensor 'bert.encoder.layer.1.attention.self.value.bias' not found");
    CHECK(m == NULL);

    /* a tensor of the wrong shape: named with both shapes */
    make_variant(reshape_classifier);
    CHECK_STATUS(tp_model_new(NULL, tmpdir, &m, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "tensor 'classifier.weight' has shape [8, 16], expected [4, 32]");

    /* the same weights load; without id2label, num_labels names LABEL_i */
    make_variant(keep_all);
    write_text("config.json",
               "{\"model_type\": \"bert\", \"architectures\": [\"BertForSequenceClassification\"],"
               " \"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 2,"
               " \"intermediate_size\": 64, \"max_position_embeddings\": 128,"
               " \"vocab_size\": 1200, \"num_labels\": 4}");
    tp_status st = tp_model_new(NULL, tmpdir, &m, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (st == TP_OK) {
        CHECK(tp_model_num_labels(m) == 4);
        CHECK(strcmp(tp_model_label(m, 2), "LABEL_2") == 0);
        tp_model_free(m);
    }
    /* hidden_act the graph does not know */
    write_text("config.json",
               "{\"model_type\": \"bert\", \"hidden_size\": 32, \"num_hidden_layers\": 2,"
               " \"num_attention_heads\": 2, \"intermediate_size\": 64,"
               " \"max_position_embeddings\": 128, \"vocab_size\": 1200,"
               " \"hidden_act\": \"quick_gelu\"}");
    CHECK_STATUS(tp_model_new(NULL, tmpdir, &m, &err), TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(err.message, "hidden_act 'quick_gelu'");
    /* a base model reads "bert."-prefixed weights too */
    write_text("config.json",
               "{\"model_type\": \"bert\", \"architectures\": [\"BertModel\"], \"hidden_size\": 32,"
               " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"intermediate_size\": 64,"
               " \"max_position_embeddings\": 128, \"vocab_size\": 1200}");
    st = tp_model_new(NULL, tmpdir, &m, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (st == TP_OK) {
        CHECK(tp_model_head(m) == TP_HEAD_NONE);
        int32_t ids[4] = {2, 48, 314, 3};
        tp_model_input in = {.struct_size = sizeof in, .batch = 1, .seq_len = 4, .input_ids = ids};
        tp_tensor *out = NULL;
        CHECK_STATUS(tp_model_forward(m, &in, &out, &err), TP_OK);
        CHECK(out && tp_tensor_ndim(out) == 3 && tp_tensor_dim(out, 2) == 32);
        tp_tensor_free(out);
        tp_model_free(m);
    }

    clean_tmpdir();
    rmdir(tmpdir);
}

/* The profile counts a forward's products, attentions and layer norms while on, and
 * nothing while off; a reset read zeroes it. */
static void test_profile(void) {
    tp_model *m = NULL;
    tp_error err;
    CHECK_STATUS(tp_model_new(NULL, FIXTURES "/distilbert-sst2", &m, &err), TP_OK);
    if (!m) return;
    tp_profile p;
    tp_profile_enable(1);
    tp_profile_read(NULL, 1);
    CHECK_NEAR(forward_case("distilbert-sst2", m), 0, 1e-4);
    tp_profile_read(&p, 1);
    /* per layer: q, k, v, out, two FFN products, one attention a row, two norms */
    int layers = 0;
    char *json = NULL;
    if (tp_model_config_value(m, "n_layers", &json, &err) == TP_OK) layers = atoi(json);
    tp_free(json);
    CHECK(layers > 0);
    CHECK(p.calls[TP_PROFILE_PRODUCTS] + p.calls[TP_PROFILE_PRODUCTS_FEW] >= 6u * layers);
    CHECK(p.calls[TP_PROFILE_ATTENTION] >= (uint64_t)layers);
    CHECK(p.calls[TP_PROFILE_NORMS] >= 2u * layers);
    CHECK(p.flops[TP_PROFILE_PRODUCTS] + p.flops[TP_PROFILE_PRODUCTS_FEW] > 0);
    for (int i = 0; i < TP_PROFILE_PARTS; i++) CHECK(p.seconds[i] >= 0);
    tp_profile_read(&p, 0);
    CHECK(p.calls[TP_PROFILE_PRODUCTS] == 0 && p.seconds[TP_PROFILE_ATTENTION] == 0);
    tp_profile_enable(0);
    CHECK_NEAR(forward_case("distilbert-sst2", m), 0, 1e-4);
    tp_profile_read(&p, 1);
    for (int i = 0; i < TP_PROFILE_PARTS; i++) CHECK(p.calls[i] == 0);
    tp_model_free(m);
}

int main(void) {
    test_distilbert_sst2();
    test_bert_multilabel();
    test_forward_encoding();
    test_spare_block();
    test_concurrent_forwards();
    test_profile();
    test_load_errors();
    return CHECK_DONE();
}
