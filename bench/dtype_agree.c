/* dtype_agree.c (tpipe-agree): how far bf16 and int8 compute (--dtype) move a model's
 * answers from fp32, on full-size checkpoints (bench/make_models.py), through the
 * public API:
 *   encoders         logits of a batch of synthetic rows; labels (argmax per row or
 *                    token) compared on every row, and counted apart where fp32's
 *                    margin between its two best exceeds 1e-2
 *   language models  fp32 greedy generation (min_new_tokens = max_new_tokens), then
 *                    one teacher-forced forward of that sequence per dtype: at every
 *                    generated position, the dtype's argmax against fp32's where fp32's
 *                    margin exceeds 1e-2 (raw logits on both sides: the generation
 *                    config's processors, forced BOS/EOS and bad words, chose some of
 *                    the generated tokens); and the dtype's own greedy run, equal to
 *                    fp32's up to the first position whose margin is 1e-2 or less
 * Logit differences are max |dtype - fp32| over max(1, max |fp32|), the figure
 * docs/benchmarks.md states tolerances in. Exit status 1 when a clear position (margin
 * > 1e-2) disagrees.
 *
 *   tpipe-agree [--backend NAME] [--threads N] [--new-tokens N] [--seq T] DIR...
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tpipe/tpipe.h>

#define MARGIN 1e-2

typedef enum { ENCODER, DECODER, SEQ2SEQ } model_kind;

/* What config.json's first architecture says; the vocabulary size. */
static int inspect(const char *dir, model_kind *kind, int *vocab) {
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    const char *arch = strstr(text, "\"architectures\"");
    *kind = ENCODER;
    if (arch && (strstr(arch, "CausalLM") || strstr(arch, "LMHeadModel"))) *kind = DECODER;
    if (arch && (strstr(arch, "ConditionalGeneration") || strstr(arch, "MTModel"))) *kind = SEQ2SEQ;
    const char *v = strstr(text, "\"vocab_size\"");
    *vocab = v ? atoi(strchr(v, ':') + 1) : 1000;
    return 1;
}

static int top1(const float *row, int n, double *margin) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (row[i] > row[best]) best = i;
    double second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != best && row[i] > second) second = row[i];
    if (margin) *margin = row[best] - second;
    return best;
}

static double rel_diff(const tp_tensor *a, const tp_tensor *b) {
    if (!a || !b || tp_tensor_numel(a) != tp_tensor_numel(b)) return INFINITY;
    const float *x = tp_tensor_f32(a), *y = tp_tensor_f32(b);
    double worst = 0, scale = 1;
    for (int64_t i = 0; i < tp_tensor_numel(a); i++) {
        if (fabs(x[i]) > scale) scale = fabs(x[i]);
        if (!(fabs(x[i] - y[i]) <= worst)) worst = fabs(x[i] - y[i]);
    }
    return worst / scale;
}

static tp_model *load(tp_runtime *rt, const char *dir, tp_dtype dtype) {
    tp_model_options o;
    tp_model_options_init(&o);
    o.dtype = dtype;
    tp_model *m = NULL;
    tp_error err;
    if (tp_model_new_ex(rt, dir, &o, &m, &err) != TP_OK) {
        fprintf(stderr, "%s: %s\n", dir, err.message);
        return NULL;
    }
    return m;
}

static tp_tensor *forward(tp_model *m, const tp_model_input *in) {
    tp_tensor *out = NULL;
    tp_error err;
    if (tp_model_forward(m, in, &out, &err) != TP_OK) {
        fprintf(stderr, "forward: %s\n", err.message);
        return NULL;
    }
    return out;
}

static const char *dtype_name(tp_dtype d) { return d == TP_BF16 ? "bf16" : "int8"; }

/* Synthetic ids in [100, vocab): a fixed pseudo-random walk, the same every run. */
static void fill_ids(int32_t *ids, int n, int vocab, unsigned seed) {
    const int span = (vocab < 20000 ? vocab : 20000) - 100;
    for (int i = 0; i < n; i++) ids[i] = 100 + (int)((seed + 7919u * (unsigned)i) % (unsigned)span);
}

static int encoder(tp_runtime *rt, const char *dir, int vocab, int seq) {
    enum { B = 16 };
    int32_t *ids = malloc((size_t)B * seq * sizeof *ids);
    fill_ids(ids, B * seq, vocab, 17);
    tp_model_input in = {.struct_size = sizeof in, .batch = B, .seq_len = seq, .input_ids = ids};
    tp_model *f = load(rt, dir, TP_F32);
    tp_tensor *ref = f ? forward(f, &in) : NULL;
    int bad = !ref;
    const tp_dtype types[] = {TP_BF16, TP_I8};
    for (int t = 0; t < 2 && ref; t++) {
        tp_model *m = load(rt, dir, types[t]);
        tp_tensor *got = m ? forward(m, &in) : NULL;
        if (!got) {
            bad = 1;
        } else {
            const int n = (int)tp_tensor_dim(ref, tp_tensor_ndim(ref) - 1);
            const int64_t rows = tp_tensor_numel(ref) / n;
            int same = 0, clear = 0, clear_same = 0;
            for (int64_t r = 0; r < rows; r++) {
                double mg;
                const int want = top1(tp_tensor_f32(ref) + r * n, n, &mg);
                const int have = top1(tp_tensor_f32(got) + r * n, n, NULL);
                same += want == have;
                if (mg > MARGIN) clear++, clear_same += want == have;
            }
            printf("%-28s %s  logits rel diff %.5f  labels %d/%lld equal; where margin > 1e-2: "
                   "%d/%d\n", dir, dtype_name(types[t]), rel_diff(ref, got), same, (long long)rows,
                   clear_same, clear);
            bad |= clear_same != clear;
        }
        tp_tensor_free(got);
        tp_model_free(m);
    }
    tp_tensor_free(ref);
    tp_model_free(f);
    free(ids);
    return bad;
}

static int generator(tp_runtime *rt, const char *dir, int vocab, int seq2seq, int new_tokens) {
    const int src = seq2seq ? 32 : 16;
    int32_t ids[64];
    fill_ids(ids, src, vocab, 5);
    char params[256];
    snprintf(params, sizeof params,
             "{\"max_new_tokens\": %d, \"min_new_tokens\": %d, \"do_sample\": false, "
             "\"num_beams\": 1}", new_tokens, new_tokens);
    tp_model_input gin = {.struct_size = sizeof gin, .batch = 1, .seq_len = src, .input_ids = ids};
    tp_model *f = load(rt, dir, TP_F32);
    int32_t *want = NULL;
    int rows = 0, cols = 0;
    tp_error err;
    if (!f || tp_model_generate(f, &gin, params, &want, &rows, &cols, &err) != TP_OK) {
        if (f) fprintf(stderr, "%s fp32 generate: %s\n", dir, err.message);
        tp_model_free(f);
        return 1;
    }
    /* the positions whose logits chose a generated token */
    tp_model_input tf = gin;
    int first = src; /* index in `want` of the first generated token */
    int32_t *ones = NULL;
    if (seq2seq) {
        tf.decoder_input_ids = want, tf.decoder_seq_len = cols;
        first = 1; /* after the decoder's start token */
    } else {
        tf.input_ids = want, tf.seq_len = cols;
        ones = malloc((size_t)cols * sizeof *ones);
        for (int i = 0; i < cols; i++) ones[i] = 1;
        tf.attention_mask = ones;
    }
    tp_tensor *ref = forward(f, &tf);
    int bad = !ref;
    const int V = ref ? (int)tp_tensor_dim(ref, 2) : 0;
    const tp_dtype types[] = {TP_BF16, TP_I8};
    for (int t = 0; t < 2 && ref; t++) {
        tp_model *m = load(rt, dir, types[t]);
        tp_tensor *lg = m ? forward(m, &tf) : NULL;
        int32_t *got = NULL;
        int r2 = 0, c2 = 0;
        if (!lg || tp_model_generate(m, &gin, params, &got, &r2, &c2, &err) != TP_OK) {
            bad = 1;
        } else {
            int clear = 0, clear_same = 0, ambiguous_at = -1;
            double min_margin = INFINITY;
            for (int p = first; p < cols; p++) {
                double mg;
                const int fp32 = top1(tp_tensor_f32(ref) + (size_t)(p - 1) * V, V, &mg);
                min_margin = fmin(min_margin, mg);
                const int have = top1(tp_tensor_f32(lg) + (size_t)(p - 1) * V, V, NULL);
                if (mg > MARGIN) clear++, clear_same += have == fp32;
                else if (ambiguous_at < 0) ambiguous_at = p - first;
            }
            int same = 0;
            while (first + same < cols && first + same < c2 && got[first + same] == want[first + same])
                same++;
            const int must = ambiguous_at < 0 ? cols - first : ambiguous_at;
            printf("%-28s %s  logits rel diff %.5f  teacher-forced argmax equal at %d/%d positions "
                   "with margin > 1e-2 (smallest fp32 margin %.4f); greedy: first %d of %d tokens "
                   "equal (must: %d)\n", dir, dtype_name(types[t]), rel_diff(ref, lg), clear_same,
                   clear, min_margin, same, cols - first, must);
            bad |= clear_same != clear || same < must;
        }
        tp_tensor_free(lg);
        tp_free(got);
        tp_model_free(m);
    }
    tp_tensor_free(ref);
    tp_free(want);
    free(ones);
    tp_model_free(f);
    return bad;
}

int main(int argc, char **argv) {
    const char *backend = "onednn";
    int threads = 0, new_tokens = 32, seq = 128, i = 1;
    for (; i < argc && argv[i][0] == '-'; i += 2) {
        if (i + 1 >= argc) break;
        if (!strcmp(argv[i], "--backend")) backend = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--new-tokens")) new_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq")) seq = atoi(argv[i + 1]);
        else break;
    }
    if (i >= argc || argv[i][0] == '-' || new_tokens < 1 || seq < 2) {
        fprintf(stderr, "usage: tpipe-agree [--backend NAME] [--threads N] [--new-tokens N] "
                        "[--seq T] DIR...\n");
        return 2;
    }
    tp_runtime_options o;
    tp_runtime_options_init(&o);
    o.backend = backend;
    o.num_threads = threads;
    tp_runtime *rt = NULL;
    tp_error err;
    if (tp_runtime_new(&o, &rt, &err) != TP_OK) {
        fprintf(stderr, "tpipe-agree: %s\n", err.message);
        return 2;
    }
    int bad = 0;
    for (; i < argc; i++) {
        model_kind kind;
        int vocab;
        if (!inspect(argv[i], &kind, &vocab)) {
            fprintf(stderr, "%s: no config.json\n", argv[i]);
            bad = 1;
            continue;
        }
        bad |= kind == ENCODER ? encoder(rt, argv[i], vocab, seq)
                               : generator(rt, argv[i], vocab, kind == SEQ2SEQ, new_tokens);
    }
    tp_runtime_free(rt);
    return bad;
}
