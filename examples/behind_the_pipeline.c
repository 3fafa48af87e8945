/*
 * behind_the_pipeline: what the Hugging Face course does by hand in "Behind the
 * pipeline", with tpipe's building blocks: tokenize a batch with padding and
 * truncation, run the model to logits, softmax, map ids to labels.
 *
 *   build/bin/behind_the_pipeline models/spam-filter "I've been waiting for this" "I hate this"
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <tpipe/tpipe.h>

static void softmax(float *x, int n) {
    float max = x[0], sum = 0.0f;
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    for (int i = 0; i < n; i++) sum += (x[i] = expf(x[i] - max));
    for (int i = 0; i < n; i++) x[i] /= sum;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR TEXT...\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    const char *const *texts = (const char *const *)&argv[2];
    size_t n = (size_t)(argc - 2);
    tp_error err;
    int rc = 1;
    tp_runtime *rt = NULL;
    tp_tokenizer *tok = NULL;
    tp_encoding *enc = NULL;
    tp_model *model = NULL;
    tp_tensor *logits = NULL;

    /* 1. The runtime holds the compute backends. */
    if (tp_runtime_new(NULL, &rt, &err) != TP_OK) goto fail;

    /* 2. Tokenizer: AutoTokenizer.from_pretrained(dir) */
    if (tp_tokenizer_new(dir, TP_TOKENIZER_AUTO, &tok, &err) != TP_OK) goto fail;

    /* 3. tokenizer(texts, padding=True, truncation=True) */
    tp_encode_options eo;
    tp_encode_options_init(&eo);
    eo.padding = TP_PAD_LONGEST;
    eo.truncation = TP_TRUNCATE_LONGEST_FIRST;
    if (tp_tokenizer_encode(tok, texts, NULL, n, &eo, &enc, &err) != TP_OK) goto fail;
    for (size_t r = 0; r < tp_encoding_rows(enc); r++) {
        printf("input_ids[%zu] =", r);
        const int32_t *ids = tp_encoding_ids(enc, r);
        for (size_t i = 0; i < tp_encoding_length(enc, r); i++) printf(" %d", ids[i]);
        printf("\n");
    }

    /* 4. AutoModelForSequenceClassification.from_pretrained(dir)(**inputs).logits */
    if (tp_model_new(rt, dir, &model, &err) != TP_OK) goto fail;
    if (tp_model_forward_encoding(model, enc, &logits, &err) != TP_OK) goto fail;

    /* 5. softmax over the labels, then config.id2label */
    int labels = (int)tp_tensor_dim(logits, 1);
    const float *data = tp_tensor_f32(logits);
    for (size_t b = 0; b < n; b++) {
        float p[64];
        int k = labels < 64 ? labels : 64;
        for (int j = 0; j < k; j++) p[j] = data[b * (size_t)labels + (size_t)j];
        softmax(p, k);
        printf("\"%s\"\n", texts[b]);
        for (int j = 0; j < k; j++) printf("  %-10s %.4f\n", tp_model_label(model, j), p[j]);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "error: %s\n", err.message);
done:
    tp_tensor_free(logits);
    tp_model_free(model);
    tp_encoding_free(enc);
    tp_tokenizer_free(tok);
    tp_runtime_free(rt);
    return rc;
}
