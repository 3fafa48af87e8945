/* test_tokenizer.c: the tokenizer against transformers 5.17's reference
 * (tests/data/fixtures/.../reference.json, list "tokenizer"), once from
 * tokenizer.json and once from the legacy files, then padding, truncation with
 * overflowing windows, errors and edge cases. One line per failing fixture case. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/json_util.h"
#include "tokenizer/tok_internal.h"
#include <tpipe/tpipe.h>

#define DATA TP_TEST_DATA "/fixtures/"

static int int_list_eq(const cJSON *want, const int32_t *got, size_t n)
{
    if (!cJSON_IsArray(want) || (size_t)cJSON_GetArraySize(want) != n) return 0;
    size_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, want)
    {
        if (!cJSON_IsNumber(v) || (int32_t)v->valuedouble != got[i]) return 0;
        i++;
    }
    return 1;
}

static int offsets_eq(const cJSON *want, const int32_t *got, size_t n)
{
    if (!cJSON_IsArray(want) || (size_t)cJSON_GetArraySize(want) != n) return 0;
    size_t i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, want)
    {
        if ((int32_t)cJSON_GetArrayItem(v, 0)->valuedouble != got[2 * i] ||
            (int32_t)cJSON_GetArrayItem(v, 1)->valuedouble != got[2 * i + 1])
            return 0;
        i++;
    }
    return 1;
}

static tp_encoding *encode1(tp_tokenizer *tok, const char *text, const char *pair, int special)
{
    tp_encode_options o;
    tp_encode_options_init(&o);
    o.add_special_tokens = special;
    tp_encoding *enc = NULL;
    tp_error err;
    const char *texts[1] = {text}, *pairs[1] = {pair};
    if (tp_tokenizer_encode(tok, texts, pair ? pairs : NULL, 1, &o, &enc, &err) != TP_OK) {
        fprintf(stderr, "encode failed: %s\n", err.message);
        return NULL;
    }
    return enc;
}

/* Returns NULL when the case passes, else the name of the first differing field. */
static const char *check_case(tp_tokenizer *tok, const cJSON *c)
{
    const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
    const cJSON *pair = cJSON_GetObjectItem(c, "text_pair");
    static char field[64];
    tp_encoding *enc = encode1(tok, text, pair ? pair->valuestring : NULL, 1);
    if (!enc) return "encode";
    const char *bad = NULL;
    size_t n = tp_encoding_length(enc, 0);
    if (tp_encoding_rows(enc) != 1) bad = "rows";
    else if (!int_list_eq(cJSON_GetObjectItem(c, "ids"), tp_encoding_ids(enc, 0), n)) bad = "ids";
    else if (cJSON_GetObjectItem(c, "offsets") &&
             !offsets_eq(cJSON_GetObjectItem(c, "offsets"), tp_encoding_offsets(enc, 0), n))
        bad = "offsets";
    else if (cJSON_GetArraySize(cJSON_GetObjectItem(c, "token_type_ids")) > 0 &&
             !int_list_eq(cJSON_GetObjectItem(c, "token_type_ids"), tp_encoding_type_ids(enc, 0), n))
        bad = "token_type_ids";
    if (!bad && cJSON_GetObjectItem(c, "tokens")) {
        const cJSON *toks = cJSON_GetObjectItem(c, "tokens");
        for (size_t i = 0; i < n && !bad; i++) {
            const char *t = tp_tokenizer_id_to_token(tok, tp_encoding_ids(enc, 0)[i]);
            if (!t || strcmp(t, cJSON_GetArrayItem(toks, (int)i)->valuestring) != 0) {
                snprintf(field, sizeof field, "tokens[%zu]", i);
                bad = field;
            }
        }
    }
    if (!bad && cJSON_GetObjectItem(c, "ids_no_special")) {
        tp_encoding *e2 = encode1(tok, text, NULL, 0);
        if (!e2 || !int_list_eq(cJSON_GetObjectItem(c, "ids_no_special"), tp_encoding_ids(e2, 0),
                                tp_encoding_length(e2, 0)))
            bad = "ids_no_special";
        tp_encoding_free(e2);
    }
    for (int skip = 1; skip >= 0 && !bad; skip--) {
        const cJSON *want = cJSON_GetObjectItem(c, skip ? "decoded" : "decoded_with_special");
        if (!want) continue;
        char *s = NULL;
        tp_error err;
        if (tp_tokenizer_decode(tok, tp_encoding_ids(enc, 0), n, skip, -1, &s, &err) != TP_OK ||
            strcmp(s, want->valuestring) != 0) {
            bad = skip ? "decoded" : "decoded_with_special";
            if (s) fprintf(stderr, "    got '%s'\n    want '%s'\n", s, want->valuestring);
        }
        tp_free(s);
    }
    tp_encoding_free(enc);
    return bad;
}

static void replay(const char *dir, tp_tokenizer_source source)
{
    const char *src = source == TP_TOKENIZER_JSON ? "json" : "legacy";
    char path[512];
    snprintf(path, sizeof path, "%s/reference.json", dir);
    cJSON *ref = NULL;
    tp_error err;
    if (tp__json_load(path, &ref, &err) != TP_OK) {
        CHECK_MSG(0, "%s", err.message);
        return;
    }
    tp_tokenizer *tok = NULL;
    tp_status st = tp_tokenizer_new(dir, source, &tok, &err);
    CHECK_MSG(st == TP_OK, "%s (%s): %s", dir, src, err.message);
    if (st != TP_OK) {
        cJSON_Delete(ref);
        return;
    }
    int pass = 0, fail = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(ref, "tokenizer"))
    {
        const char *bad = check_case(tok, c);
        if (bad) {
            fail++;
            printf("FAIL %s [%s] text=%s: %s\n", strrchr(dir, '/') + 1, src,
                   cJSON_GetObjectItem(c, "text")->valuestring, bad);
        } else {
            pass++;
        }
        CHECK(bad == NULL);
    }
    printf("fixture %s [%s]: %d passed, %d failed\n", strrchr(dir, '/') + 1, src, pass, fail);
    tp_tokenizer_free(tok);
    cJSON_Delete(ref);
}

static tp_tokenizer *load(const char *dir, tp_tokenizer_source src)
{
    tp_tokenizer *tok = NULL;
    tp_error err;
    if (tp_tokenizer_new(dir, src, &tok, &err) != TP_OK) fprintf(stderr, "%s\n", err.message);
    return tok;
}

static void test_queries(void)
{
    tp_tokenizer *tok = load(DATA "tokenizers/bert-base-uncased", TP_TOKENIZER_AUTO);
    CHECK(tok != NULL);
    if (!tok) return;
    CHECK(tp_tokenizer_vocab_size(tok) == 30522);
    CHECK(tp_tokenizer_model_max_length(tok) == 512);
    CHECK(tp_tokenizer_special_id(tok, "pad") == 0);
    CHECK(tp_tokenizer_special_id(tok, "unk") == 100);
    CHECK(tp_tokenizer_special_id(tok, "cls") == 101);
    CHECK(tp_tokenizer_special_id(tok, "sep") == 102);
    CHECK(tp_tokenizer_special_id(tok, "mask") == 103);
    CHECK(tp_tokenizer_special_id(tok, "bos") == -1);
    CHECK(tp_tokenizer_special_id(tok, "nope") == -1);
    CHECK(tp_tokenizer_token_to_id(tok, "hello") == 7592);
    CHECK(tp_tokenizer_token_to_id(tok, "##face") == 12172);
    CHECK(tp_tokenizer_token_to_id(tok, "definitely-not-a-token") == -1);
    CHECK(strcmp(tp_tokenizer_id_to_token(tok, 7592), "hello") == 0);
    CHECK(tp_tokenizer_id_to_token(tok, 30522) == NULL);
    CHECK(tp_tokenizer_id_to_token(tok, -1) == NULL);

    /* word ids, sequence ids, special mask */
    tp_encoding *e = encode1(tok, "Hello, HuggingFace!", "the pair", 1);
    CHECK(e != NULL);
    if (e) {
        /* [CLS] hello , hugging ##face ! [SEP] the pair [SEP] */
        static const int32_t words[] = {-1, 0, 1, 2, 2, 3, -1, 0, 1, -1};
        static const int32_t seqs[] = {-1, 0, 0, 0, 0, 0, -1, 1, 1, -1};
        static const int32_t special[] = {1, 0, 0, 0, 0, 0, 1, 0, 0, 1};
        CHECK(tp_encoding_length(e, 0) == 10);
        CHECK(memcmp(tp_encoding_word_ids(e, 0), words, sizeof words) == 0);
        CHECK(memcmp(tp_encoding_sequence_ids(e, 0), seqs, sizeof seqs) == 0);
        CHECK(memcmp(tp_encoding_special_mask(e, 0), special, sizeof special) == 0);
        CHECK(tp_encoding_offsets(e, 0)[2 * 7] == 0 && tp_encoding_offsets(e, 0)[2 * 7 + 1] == 3);
        CHECK(tp_encoding_ids(e, 1) == NULL);
        CHECK(tp_encoding_length(e, 1) == 0);
    }
    tp_encoding_free(e);
    tp_tokenizer_free(tok);
}

static void test_padding(void)
{
    tp_tokenizer *tok = load(DATA "tokenizers/bert-base-uncased", TP_TOKENIZER_JSON);
    if (!tok) { CHECK(0); return; }
    const char *texts[3] = {"Hello world!", "a", "I hate this so much!"};
    tp_encode_options o;
    tp_encode_options_init(&o);
    tp_encoding *e = NULL;
    tp_error err;

    /* longest, right */
    o.padding = TP_PAD_LONGEST;
    CHECK_STATUS(tp_tokenizer_encode(tok, texts, NULL, 3, &o, &e, &err), TP_OK);
    CHECK(tp_encoding_rows(e) == 3);
    for (size_t r = 0; r < 3; r++) CHECK(tp_encoding_length(e, r) == 8);
    static const int32_t row1[8] = {101, 1037, 102, 0, 0, 0, 0, 0};
    static const int32_t mask1[8] = {1, 1, 1, 0, 0, 0, 0, 0};
    CHECK(memcmp(tp_encoding_ids(e, 1), row1, sizeof row1) == 0);
    CHECK(memcmp(tp_encoding_attention_mask(e, 1), mask1, sizeof mask1) == 0);
    CHECK(tp_encoding_ids(e, 1) == tp_encoding_ids(e, 0) + 8); /* contiguous */
    CHECK(tp_encoding_word_ids(e, 1)[5] == -1 && tp_encoding_special_mask(e, 1)[5] == 1);
    tp_encoding_free(e);

    /* longest, left, to a multiple of 5 */
    o.pad_left = 1;
    o.pad_to_multiple_of = 5;
    CHECK_STATUS(tp_tokenizer_encode(tok, texts, NULL, 3, &o, &e, &err), TP_OK);
    static const int32_t row1l[10] = {0, 0, 0, 0, 0, 0, 0, 101, 1037, 102};
    static const int32_t mask1l[10] = {0, 0, 0, 0, 0, 0, 0, 1, 1, 1};
    CHECK(tp_encoding_length(e, 1) == 10);
    CHECK(memcmp(tp_encoding_ids(e, 1), row1l, sizeof row1l) == 0);
    CHECK(memcmp(tp_encoding_attention_mask(e, 1), mask1l, sizeof mask1l) == 0);
    CHECK(tp_encoding_offsets(e, 1)[2 * 8] == 0 && tp_encoding_offsets(e, 1)[2 * 8 + 1] == 1);
    tp_encoding_free(e);

    /* max_length, right, with truncation of the long row */
    tp_encode_options_init(&o);
    o.padding = TP_PAD_MAX_LENGTH;
    o.truncation = TP_TRUNCATE_LONGEST_FIRST;
    o.max_length = 6;
    CHECK_STATUS(tp_tokenizer_encode(tok, texts, NULL, 3, &o, &e, &err), TP_OK);
    static const int32_t r0[6] = {101, 7592, 2088, 999, 102, 0};
    static const int32_t r2[6] = {101, 1045, 5223, 2023, 2061, 102};
    CHECK(tp_encoding_length(e, 0) == 6 && tp_encoding_length(e, 2) == 6);
    CHECK(memcmp(tp_encoding_ids(e, 0), r0, sizeof r0) == 0);
    CHECK(memcmp(tp_encoding_ids(e, 2), r2, sizeof r2) == 0);
    CHECK(tp_encoding_attention_mask(e, 0)[5] == 0 && tp_encoding_attention_mask(e, 2)[5] == 1);
    tp_encoding_free(e);

    /* max_length without a max_length falls back to model_max_length (512) */
    tp_encode_options_init(&o);
    o.padding = TP_PAD_MAX_LENGTH;
    o.pad_left = 1;
    CHECK_STATUS(tp_tokenizer_encode(tok, texts, NULL, 1, &o, &e, &err), TP_OK);
    CHECK(tp_encoding_length(e, 0) == 512);
    CHECK(tp_encoding_ids(e, 0)[511] == 102 && tp_encoding_ids(e, 0)[0] == 0);
    tp_encoding_free(e);
    tp_tokenizer_free(tok);
}

static void test_truncation(void)
{
    tp_tokenizer *tok = load(DATA "tokenizers/bert-base-uncased", TP_TOKENIZER_JSON);
    if (!tok) { CHECK(0); return; }
    tp_encode_options o;
    tp_encoding *e = NULL;
    tp_error err;
    /* "a b c d e f g h i j" -> 10 tokens, ids 1037 1038 ... */
    const char *text[1] = {"a b c d e f g h i j"};
    const char *pair[1] = {"x y z"};
    int32_t a = 1037;

    /* single, overflow windows of 4 with stride 1: max_length 6 = 4 + [CLS] [SEP] */
    tp_encode_options_init(&o);
    o.truncation = TP_TRUNCATE_LONGEST_FIRST;
    o.max_length = 6;
    o.stride = 1;
    o.return_overflowing = 1;
    CHECK_STATUS(tp_tokenizer_encode(tok, text, NULL, 1, &o, &e, &err), TP_OK);
    /* tokenizers 0.23's early exit stops after "f" (6 = max_length tokens), so
     * windows start at 0, 3 (step 3): [a b c d] [d e f] (0.22 went on to [g h i j]) */
    CHECK(tp_encoding_rows(e) == 2);
    for (size_t r = 0; r < tp_encoding_rows(e); r++) {
        const int32_t *ids = tp_encoding_ids(e, r);
        size_t len = tp_encoding_length(e, r);
        CHECK(len == (r ? 5u : 6u));
        CHECK(ids[0] == 101 && ids[len - 1] == 102);
        CHECK(ids[1] == a + (int32_t)(3 * r));
        CHECK(tp_encoding_sample(e, r) == 0);
        CHECK(tp_encoding_offsets(e, r)[2] == (int32_t)(6 * r));
    }
    tp_encoding_free(e);

    /* without return_overflowing only the first window */
    o.return_overflowing = 0;
    CHECK_STATUS(tp_tokenizer_encode(tok, text, NULL, 1, &o, &e, &err), TP_OK);
    CHECK(tp_encoding_rows(e) == 1 && tp_encoding_length(e, 0) == 6);
    tp_encoding_free(e);

    /* pair, only_second with stride (the QA layout): question "x y z", context long */
    tp_encode_options_init(&o);
    o.truncation = TP_TRUNCATE_ONLY_SECOND;
    o.max_length = 10; /* [CLS] 3 [SEP] 4 [SEP] */
    o.stride = 2;
    o.return_overflowing = 1;
    o.padding = TP_PAD_LONGEST;
    CHECK_STATUS(tp_tokenizer_encode(tok, pair, text, 1, &o, &e, &err), TP_OK);
    /* context windows of 4, step 2: starts 0 2 4 6 */
    CHECK(tp_encoding_rows(e) == 4);
    for (size_t r = 0; r < tp_encoding_rows(e); r++) {
        const int32_t *ids = tp_encoding_ids(e, r), *ty = tp_encoding_type_ids(e, r);
        CHECK(tp_encoding_length(e, r) == 10);
        CHECK(ids[1] == 1060 && ids[4] == 102 && ids[9] == 102);
        CHECK(ids[5] == a + (int32_t)(2 * r));
        CHECK(ty[4] == 0 && ty[5] == 1 && ty[9] == 1);
        CHECK(tp_encoding_sequence_ids(e, r)[5] == 1);
    }
    tp_encoding_free(e);

    /* only_second cannot work when the first alone is too long */
    o.max_length = 5;
    CHECK_STATUS(tp_tokenizer_encode(tok, text, pair, 1, &o, &e, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "only_second");
    CHECK(e == NULL);

    /* only_first */
    tp_encode_options_init(&o);
    o.truncation = TP_TRUNCATE_ONLY_FIRST;
    o.max_length = 9;
    CHECK_STATUS(tp_tokenizer_encode(tok, text, pair, 1, &o, &e, &err), TP_OK);
    CHECK(tp_encoding_length(e, 0) == 9); /* [CLS] a b c [SEP] x y z [SEP] */
    CHECK(tp_encoding_ids(e, 0)[3] == a + 2 && tp_encoding_ids(e, 0)[4] == 102);
    tp_encoding_free(e);

    /* longest_first: 10 + 3 into 8 -> 5 + 3 */
    tp_encode_options_init(&o);
    o.truncation = TP_TRUNCATE_LONGEST_FIRST;
    o.max_length = 11;
    CHECK_STATUS(tp_tokenizer_encode(tok, text, pair, 1, &o, &e, &err), TP_OK);
    CHECK(tp_encoding_length(e, 0) == 11);
    CHECK(tp_encoding_ids(e, 0)[6] == 102 && tp_encoding_ids(e, 0)[7] == 1060);
    tp_encoding_free(e);
    /* longest_first, both long: 10 + 10 into 6 -> 3 + 3 */
    const char *text2[1] = {"a b c d e f g h i j"};
    o.max_length = 9;
    CHECK_STATUS(tp_tokenizer_encode(tok, text, text2, 1, &o, &e, &err), TP_OK);
    CHECK(tp_encoding_length(e, 0) == 9 && tp_encoding_ids(e, 0)[4] == 102);
    tp_encoding_free(e);

    /* stride too large for the window */
    tp_encode_options_init(&o);
    o.truncation = TP_TRUNCATE_LONGEST_FIRST;
    o.max_length = 6;
    o.stride = 4;
    CHECK_STATUS(tp_tokenizer_encode(tok, text, NULL, 1, &o, &e, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "stride");
    /* max_length smaller than the special tokens */
    o.stride = 0;
    o.max_length = 1;
    CHECK_STATUS(tp_tokenizer_encode(tok, text, NULL, 1, &o, &e, &err), TP_ERR_INVALID_ARGUMENT);
    /* truncation with max_length 0 uses model_max_length: nothing to cut here */
    o.max_length = 0;
    CHECK_STATUS(tp_tokenizer_encode(tok, text, NULL, 1, &o, &e, &err), TP_OK);
    CHECK(tp_encoding_length(e, 0) == 12);
    tp_encoding_free(e);
    tp_tokenizer_free(tok);
}

static void test_errors(void)
{
    tp_tokenizer *tok = NULL;
    tp_error err;
    CHECK_STATUS(tp_tokenizer_new(TP_TEST_DATA "/no-such-dir", TP_TOKENIZER_AUTO, &tok, &err),
                 TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "no-such-dir");
    CHECK(tok == NULL);
    /* a directory with no tokenizer files */
    CHECK_STATUS(tp_tokenizer_new(TP_TEST_DATA "/fixtures", TP_TOKENIZER_AUTO, &tok, &err),
                 TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "vocab.txt");
    CHECK_STATUS(tp_tokenizer_new(TP_TEST_DATA "/fixtures", TP_TOKENIZER_JSON, &tok, &err),
                 TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "tokenizer.json");

    /* malformed and unsupported tokenizer.json content */
    const char *bad_json = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(bad_json, strlen(bad_json), &tok, &err),
                 TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "tokenizer.json");
    const char *no_model = "{\"normalizer\": null}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(no_model, strlen(no_model), &tok, &err),
                 TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "'model'");
    const char *bad_vocab = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": \"x\"}}}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(bad_vocab, strlen(bad_vocab), &tok, &err),
                 TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "model.vocab");
    const char *foo = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}},"
                      " \"normalizer\": {\"type\": \"Foo\"}}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(foo, strlen(foo), &tok, &err), TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(err.message, "tokenizer.json: normalizer type 'Foo' is not supported");
    const char *bpe = "{\"model\": {\"type\": \"Foo\", \"vocab\": {}, \"merges\": []}}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(bpe, strlen(bpe), &tok, &err), TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(err.message, "'Foo'");
    const char *bad_bool = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}},"
                           " \"normalizer\": {\"type\": \"BertNormalizer\", \"lowercase\": 3}}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(bad_bool, strlen(bad_bool), &tok, &err),
                 TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "lowercase");

    /* a minimal tokenizer.json: no post-processor, no decoder, missing unk */
    const char *mini = "{\"model\": {\"type\": \"WordPiece\", \"unk_token\": \"?\", \"vocab\": "
                       "{\"ab\": 0, \"##c\": 1, \"x\": 2}}, \"pre_tokenizer\": {\"type\": "
                       "\"Sequence\", \"pretokenizers\": [{\"type\": \"WhitespaceSplit\"}]},"
                       " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
                       "\"NFD\"}, {\"type\": \"StripAccents\"}, {\"type\": \"Lowercase\"}]}}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(mini, strlen(mini), &tok, &err), TP_OK);
    if (tok) {
        tp_encoding *e = encode1(tok, "ÁBc x", NULL, 1);
        CHECK(e && tp_encoding_length(e, 0) == 3);
        if (e) {
            CHECK(tp_encoding_ids(e, 0)[0] == 0 && tp_encoding_ids(e, 0)[1] == 1);
            CHECK(tp_encoding_offsets(e, 0)[0] == 0 && tp_encoding_offsets(e, 0)[1] == 2);
            char *s = NULL;
            CHECK_STATUS(tp_tokenizer_decode(tok, tp_encoding_ids(e, 0), 3, 1, -1, &s, &err), TP_OK);
            CHECK(s && strcmp(s, "ab ##c x") == 0);
            tp_free(s);
        }
        tp_encoding_free(e);
        const char *texts[1] = {"zzz"};
        CHECK_STATUS(tp_tokenizer_encode(tok, texts, NULL, 1, NULL, &e, &err), TP_ERR_FORMAT);
        CHECK_CONTAINS(err.message, "unk_token");
        tp_encode_options o;
        tp_encode_options_init(&o);
        o.padding = TP_PAD_LONGEST;
        CHECK_STATUS(tp_tokenizer_encode(tok, texts, NULL, 1, &o, &e, &err), TP_ERR_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.message, "pad token");
        tp_tokenizer_free(tok);
        tok = NULL;
    }

    /* invalid UTF-8 input is refused, naming the byte */
    tok = load(DATA "tokenizers/bert-base-uncased", TP_TOKENIZER_JSON);
    if (tok) {
        const char *texts[2] = {"fine", "ok \xC3\x28 no"};
        tp_encoding *e = NULL;
        CHECK_STATUS(tp_tokenizer_encode(tok, texts, NULL, 2, NULL, &e, &err),
                     TP_ERR_INVALID_ARGUMENT);
        CHECK_CONTAINS(err.message, "texts[1]: text is not valid UTF-8 at byte 3");
        CHECK(e == NULL);
        const char *sur[1] = {"\xED\xA0\x80"}; /* a UTF-16 surrogate */
        CHECK_STATUS(tp_tokenizer_encode(tok, sur, NULL, 1, NULL, &e, &err), TP_ERR_INVALID_ARGUMENT);
        const int32_t neg[2] = {101, -5};
        char *s = NULL;
        CHECK_STATUS(tp_tokenizer_decode(tok, neg, 2, 0, -1, &s, &err), TP_ERR_INVALID_ARGUMENT);
        /* an id past the vocabulary is dropped, as tokenizers does */
        const int32_t far[3] = {7592, 999999, 2088};
        CHECK_STATUS(tp_tokenizer_decode(tok, far, 3, 0, -1, &s, &err), TP_OK);
        CHECK(s && strcmp(s, "hello world") == 0);
        tp_free(s);
        /* transformers' clean_up_tokenization on request */
        const int32_t apos[4] = {2009, 1005, 1055, 999}; /* it ' s ! */
        CHECK_STATUS(tp_tokenizer_decode(tok, apos, 4, 0, 1, &s, &err), TP_OK);
        CHECK(s && strcmp(s, "it's!") == 0);
        tp_free(s);
        CHECK_STATUS(tp_tokenizer_decode(tok, apos, 4, 0, -1, &s, &err), TP_OK);
        CHECK(s && strcmp(s, "it ' s!") == 0);
        tp_free(s);
        /* empty batch */
        CHECK_STATUS(tp_tokenizer_encode(tok, texts, NULL, 0, NULL, &e, &err), TP_OK);
        CHECK(tp_encoding_rows(e) == 0);
        tp_encoding_free(e);
        tp_tokenizer_free(tok);
    }
    tp_tokenizer_free(NULL);
    tp_encoding_free(NULL);
}

/* tokenizers 0.23's truncation early exit (core/tokenizer/tokenizer.c): with
 * truncation on, a sequence is tokenized only up to the first word that brings it
 * to max_length tokens, so stride windows stop there. The QA case is
 * distilbert-qa's qa[11] (max_seq_len 64, doc_stride 16): transformers 5.17 with
 * tokenizers 0.23.2 gives 2 windows where tokenizers 0.22 gave 11. */
static void test_truncation_early_exit(void)
{
    tp_error err;
    cJSON *ref = NULL;
    CHECK_STATUS(tp__json_load(DATA "models/distilbert-qa/reference.json", &ref, &err), TP_OK);
    tp_tokenizer *tok = load(DATA "models/distilbert-qa", TP_TOKENIZER_JSON);
    const cJSON *qa = cJSON_GetArrayItem(cJSON_GetObjectItem(ref, "qa"), 11);
    if (!tok || !qa) {
        CHECK(0);
        cJSON_Delete(ref);
        tp_tokenizer_free(tok);
        return;
    }
    const char *question[1] = {cJSON_GetObjectItem(qa, "question")->valuestring};
    const char *context[1] = {cJSON_GetObjectItem(qa, "context")->valuestring};
    const cJSON *spans = cJSON_GetObjectItem(qa, "spans");
    tp_encode_options o;
    tp_encode_options_init(&o);
    o.truncation = TP_TRUNCATE_ONLY_SECOND;
    o.max_length = 64;
    o.stride = 16;
    o.return_overflowing = 1;
    tp_encoding *e = NULL;
    CHECK_STATUS(tp_tokenizer_encode(tok, question, context, 1, &o, &e, &err), TP_OK);
    CHECK(cJSON_GetArraySize(spans) == 2);
    CHECK(tp_encoding_rows(e) == (size_t)cJSON_GetArraySize(spans));
    for (size_t r = 0; r < tp_encoding_rows(e) && r < (size_t)cJSON_GetArraySize(spans); r++) {
        const cJSON *sp = cJSON_GetArrayItem(spans, (int)r);
        size_t n = tp_encoding_length(e, r);
        CHECK(int_list_eq(cJSON_GetObjectItem(sp, "input_ids"), tp_encoding_ids(e, r), n));
        CHECK(offsets_eq(cJSON_GetObjectItem(sp, "offsets"), tp_encoding_offsets(e, r), n));
    }
    tp_encoding_free(e);
    /* without truncation the whole context is there (the windows would cover it) */
    tp_encode_options_init(&o);
    CHECK_STATUS(tp_tokenizer_encode(tok, question, context, 1, &o, &e, &err), TP_OK);
    CHECK(tp_encoding_length(e, 0) > 200);
    tp_encoding_free(e);
    tp_tokenizer_free(tok);
    cJSON_Delete(ref);

    tok = load(DATA "tokenizers/bert-base-uncased", TP_TOKENIZER_JSON);
    if (!tok) { CHECK(0); return; }
    int32_t a = 1037; /* "a", then "b" ... */
    /* an added token counts but only a word the model tokenized stops the walk:
     * a b [MASK] c reach 3 at [MASK], the stop comes after c */
    const char *masked[1] = {"a b [MASK] c d e"};
    tp_encode_options_init(&o);
    o.add_special_tokens = 0;
    o.truncation = TP_TRUNCATE_LONGEST_FIRST;
    o.max_length = 3;
    o.return_overflowing = 1;
    CHECK_STATUS(tp_tokenizer_encode(tok, masked, NULL, 1, &o, &e, &err), TP_OK);
    CHECK(tp_encoding_rows(e) == 2);
    if (tp_encoding_rows(e) == 2) {
        CHECK(tp_encoding_length(e, 0) == 3 && tp_encoding_ids(e, 0)[2] == 103);
        CHECK(tp_encoding_length(e, 1) == 1 && tp_encoding_ids(e, 1)[0] == a + 2);
    }
    tp_encoding_free(e);
    /* truncation_side left: the last words are kept, word ids restart at the first
     * kept word; "e".."j" are the 6 tokens left, windows [g h i j] [e f g] */
    tok->truncate_left = 1;
    const char *text[1] = {"a b c d e f g h i j"};
    tp_encode_options_init(&o);
    o.truncation = TP_TRUNCATE_LONGEST_FIRST;
    o.max_length = 6;
    o.stride = 1;
    o.return_overflowing = 1;
    CHECK_STATUS(tp_tokenizer_encode(tok, text, NULL, 1, &o, &e, &err), TP_OK);
    CHECK(tp_encoding_rows(e) == 2);
    if (tp_encoding_rows(e) == 2) {
        CHECK(tp_encoding_length(e, 0) == 6 && tp_encoding_ids(e, 0)[1] == a + 6);
        CHECK(tp_encoding_word_ids(e, 0)[1] == 2 && tp_encoding_word_ids(e, 0)[4] == 5);
        CHECK(tp_encoding_length(e, 1) == 5 && tp_encoding_ids(e, 1)[1] == a + 4);
        CHECK(tp_encoding_word_ids(e, 1)[1] == 0 && tp_encoding_offsets(e, 1)[2] == 8);
    }
    tp_encoding_free(e);
    tp_tokenizer_free(tok);
}

int main(void)
{
    static const char *const dirs[] = {DATA "tokenizers/bert-base-uncased",
                                       DATA "tokenizers/bert-base-cased-like",
                                       DATA "models/distilbert-sst2"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        replay(dirs[i], TP_TOKENIZER_JSON);
        replay(dirs[i], TP_TOKENIZER_LEGACY);
    }
    test_queries();
    test_padding();
    test_truncation();
    test_truncation_early_exit();
    test_errors();
    return CHECK_DONE();
}
