/* test_tokenizer_spm.c: the SentencePiece family beyond the fixtures: the .model
 * reader on a hand-made ModelProto (and malformed ones: TP_ERR_FORMAT naming the
 * offset and field), Unigram Viterbi on a tiny vocabulary (best path, fused unknowns,
 * byte fallback), the Precompiled normalizer on T5's charsmap (NFKC-style rewrites
 * with tokenizers' alignment), Metaspace variants (prepend schemes, split, decoder),
 * Whitespace / Digits / Punctuation, NFKC, and the Marian legacy loader. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/json_util.h"
#include "tokenizer/spm_internal.h"
#include <tpipe/tpipe.h>

#define DATA TP_TEST_DATA "/fixtures/"

/* ------------------------------------------------------------ protobuf writer */

typedef struct buf {
    unsigned char d[4096];
    size_t n;
} buf;

static void put_varint(buf *b, uint64_t v)
{
    do {
        unsigned char c = v & 0x7F;
        v >>= 7;
        b->d[b->n++] = c | (v ? 0x80 : 0);
    } while (v);
}
static void put_tag(buf *b, int field, int wt) { put_varint(b, (uint64_t)field << 3 | (uint64_t)wt); }
static void put_bytes(buf *b, int field, const void *s, size_t n)
{
    put_tag(b, field, 2);
    put_varint(b, n);
    memcpy(b->d + b->n, s, n);
    b->n += n;
}
static void put_float(buf *b, int field, float f)
{
    put_tag(b, field, 5);
    memcpy(b->d + b->n, &f, 4); /* little-endian host */
    b->n += 4;
}
static void put_piece(buf *b, const char *s, float score, int type)
{
    buf p = {.n = 0};
    put_bytes(&p, 1, s, strlen(s));
    put_float(&p, 2, score);
    if (type != 1) {
        put_tag(&p, 3, 0);
        put_varint(&p, (uint64_t)type);
    }
    put_bytes(b, 1, p.d, p.n);
}

static void make_model(buf *b)
{
    b->n = 0;
    put_piece(b, "<unk>", 0.0f, TP__SPM_UNKNOWN);
    put_piece(b, "<s>", 0.0f, TP__SPM_CONTROL);
    put_piece(b, "\xE2\x96\x81", -1.0f, TP__SPM_NORMAL);
    put_piece(b, "a", -2.0f, TP__SPM_NORMAL);
    put_piece(b, "b", -2.0f, TP__SPM_NORMAL);
    put_piece(b, "\xE2\x96\x81" "ab", -1.5f, TP__SPM_NORMAL);
    put_piece(b, "<sep>", 0.0f, TP__SPM_USER_DEFINED);
    buf t = {.n = 0};
    put_tag(&t, 3, 0); put_varint(&t, 1);  /* model_type UNIGRAM */
    put_tag(&t, 40, 0); put_varint(&t, 0); /* unk_id */
    put_tag(&t, 41, 0); put_varint(&t, 1); /* bos_id */
    put_tag(&t, 42, 0); put_varint(&t, (uint64_t)-1); /* eos_id -1, sign-extended */
    put_tag(&t, 99, 2); put_varint(&t, 2); t.d[t.n++] = 'x'; t.d[t.n++] = 'y'; /* unknown */
    put_bytes(b, 2, t.d, t.n);
    buf nm = {.n = 0};
    put_bytes(&nm, 1, "identity", 8);
    put_tag(&nm, 3, 0); put_varint(&nm, 1);
    put_tag(&nm, 4, 0); put_varint(&nm, 0); /* keep extra whitespace */
    put_bytes(b, 3, nm.d, nm.n);
}

static void test_model_reader(void)
{
    buf b;
    make_model(&b);
    tp__spm_model m;
    tp_error err = {0};
    CHECK_STATUS(tp__spm_model_parse(b.d, b.n, "hand.model", &m, &err), TP_OK);
    CHECK(m.n_pieces == 7);
    CHECK(strcmp(tp__spm_piece_str(&m, 5), "\xE2\x96\x81" "ab") == 0);
    CHECK_NEAR(m.pieces[5].score, -1.5, 1e-6);
    CHECK(m.pieces[6].type == TP__SPM_USER_DEFINED);
    CHECK(m.model_type == TP__SPM_UNIGRAM && m.unk_id == 0 && m.bos_id == 1 && m.eos_id == -1);
    CHECK(m.add_dummy_prefix == 1 && m.remove_extra_whitespaces == 0 && m.escape_whitespaces == 1);
    CHECK(m.norm_name && strcmp(m.norm_name, "identity") == 0);
    CHECK(m.charsmap == NULL && strcmp(m.unk_surface, " \xE2\x81\x87 ") == 0);

    /* sentencepiece semantics over it: dummy prefix, user-defined symbol kept whole,
     * unknown characters fused */
    tp__normalizer *norm = NULL;
    tp__model *model = NULL;
    CHECK_STATUS(tp__spm_normalizer_new(&m, "hand.model", &norm, &err), TP_OK);
    CHECK_STATUS(tp__unigram_spm_new(&m, NULL, -1, &model, &err), TP_OK);
    tp__work w;
    memset(&w, 0, sizeof w);
    w.toks.elem = sizeof(tp__tok);
    const char *text = "ab<sep>xyb";
    size_t len = strlen(text);
    CHECK_STATUS(tp__nstr_reserve(&w.arena, 64, &err), TP_OK);
    for (size_t i = 0; i < len; i++) {
        w.arena.s[i] = text[i];
        w.arena.al[i] = (tp__span){(uint32_t)i, (uint32_t)i + 1};
    }
    w.arena.len = len;
    CHECK_STATUS(norm->ops->normalize(norm, &w.arena, &w.n1, &err), TP_OK);
    CHECK(w.arena.len == len + 3 && memcmp(w.arena.s, "\xE2\x96\x81" "ab<sep>xyb", len + 3) == 0);
    CHECK_STATUS(model->ops->tokenize(model, &w, 0, (uint32_t)w.arena.len, 0, &err), TP_OK);
    const tp__tok *t = w.toks.data;
    CHECK(w.toks.len == 4);
    if (w.toks.len == 4) {
        CHECK(t[0].id == 5 && t[1].id == 6 && t[2].id == 0 && t[3].id == 4);
        CHECK(t[2].end - t[2].start == 2); /* "xy" fused into one unk */
    }
    tp__work_free(&w);
    tp__normalizer_free(norm);
    tp__model_free(model);
    tp__spm_model_free(&m);
}

static void expect_format(const unsigned char *d, size_t n, const char *needle)
{
    tp__spm_model m;
    tp_error err = {0};
    CHECK_STATUS(tp__spm_model_parse(d, n, "bad.model", &m, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, needle);
}

static void test_model_malformed(void)
{
    buf b;
    make_model(&b);
    /* truncated anywhere: never a crash, always a format error */
    for (size_t cut = 1; cut < b.n; cut++) {
        tp__spm_model m;
        tp_error err = {0};
        tp_status st = tp__spm_model_parse(b.d, cut, "cut.model", &m, &err);
        if (st == TP_OK) tp__spm_model_free(&m);
        else CHECK(st == TP_ERR_FORMAT && strstr(err.message, "cut.model") != NULL);
    }
    const unsigned char overlong[] = {0x0A, 0x20, 0x0A, 0x01};
    expect_format(overlong, sizeof overlong, "field 'pieces[0]' has length 32 but only 2 bytes");
    const unsigned char inner[] = {0x0A, 0x04, 0x0A, 0x09, 'a', 'b'};
    expect_format(inner, sizeof inner, "byte 3: field 'pieces[0].piece' has length 9");
    const unsigned char wiretype[] = {0x08, 0x01};
    expect_format(wiretype, sizeof wiretype, "field 'pieces[0]' has wire type 0");
    const unsigned char varint[] = {0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    expect_format(varint, sizeof varint, "varint");
    buf nu = {.n = 0};
    put_piece(&nu, "a", -1.0f, TP__SPM_NORMAL);
    expect_format(nu.d, nu.n, "no piece has type UNKNOWN");
    buf bt = {.n = 0};
    put_piece(&bt, "<unk>", 0, TP__SPM_UNKNOWN);
    put_piece(&bt, "<0x41>", 0, TP__SPM_BYTE);
    expect_format(bt.d, bt.n, "pieces[1] is a BYTE piece but trainer_spec.byte_fallback is false");
    buf ty = {.n = 0};
    put_piece(&ty, "<unk>", 0, 9);
    expect_format(ty.d, ty.n, "pieces[0].type' = 9");
}

/* ------------------------------------------------------------ Unigram */

static tp_tokenizer *from_json(const char *json)
{
    tp_tokenizer *tok = NULL;
    tp_error err = {0};
    if (tp__tokenizer_from_json_buffer(json, strlen(json), &tok, &err) != TP_OK) {
        fprintf(stderr, "load failed: %s\n", err.message);
        return NULL;
    }
    return tok;
}

static tp_encoding *enc1(tp_tokenizer *tok, const char *text)
{
    tp_encode_options o;
    tp_encode_options_init(&o);
    tp_encoding *enc = NULL;
    tp_error err = {0};
    const char *texts[1] = {text};
    if (tp_tokenizer_encode(tok, texts, NULL, 1, &o, &enc, &err) != TP_OK) {
        fprintf(stderr, "encode failed: %s\n", err.message);
        return NULL;
    }
    return enc;
}

static int ids_are(tp_encoding *e, const int32_t *want, size_t n)
{
    if (!e || tp_encoding_length(e, 0) != n) return 0;
    return memcmp(tp_encoding_ids(e, 0), want, n * sizeof *want) == 0;
}

static void test_unigram(void)
{
    tp_tokenizer *tok = from_json(
        "{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"a\",-1],"
        "[\"b\",-1],[\"ab\",-1.5],[\"abc\",-4],[\"c\",-2]]}}");
    CHECK(tok != NULL);
    if (!tok) return;
    tp_encoding *e = enc1(tok, "abc");
    static const int32_t w1[] = {3, 5}; /* ab + c (-3.5) beats abc (-4) and a+b+c (-4) */
    CHECK(ids_are(e, w1, 2));
    tp_encoding_free(e);
    e = enc1(tok, "xyza");
    static const int32_t w2[] = {0, 1}; /* x y z fused into one unk */
    CHECK(ids_are(e, w2, 2));
    if (e) {
        const int32_t *off = tp_encoding_offsets(e, 0);
        CHECK(off && off[0] == 0 && off[1] == 3 && off[2] == 3 && off[3] == 4);
    }
    tp_encoding_free(e);
    tp_tokenizer_free(tok);

    /* byte fallback: an unknown run becomes its byte pieces, each spanning the run */
    tok = from_json("{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"byte_fallback\":true,"
                    "\"vocab\":[[\"<unk>\",0],[\"a\",-1],[\"<0xC3>\",-5],[\"<0xA9>\",-5]]}}");
    CHECK(tok != NULL);
    if (!tok) return;
    e = enc1(tok, "a\xC3\xA9");
    static const int32_t w3[] = {1, 2, 3};
    CHECK(ids_are(e, w3, 3));
    if (e) {
        const int32_t *off = tp_encoding_offsets(e, 0);
        CHECK(off && off[2] == 1 && off[3] == 2 && off[4] == 1 && off[5] == 2);
    }
    tp_encoding_free(e);
    e = enc1(tok, "\xC3\xA8"); /* <0xA8> missing: the whole run is unk */
    static const int32_t w4[] = {0};
    CHECK(ids_are(e, w4, 1));
    tp_encoding_free(e);
    tp_tokenizer_free(tok);

    tp_error err = {0};
    const char *bad = "{\"model\":{\"type\":\"Unigram\",\"unk_id\":7,\"vocab\":[[\"a\",-1]]}}";
    tp_tokenizer *t2 = NULL;
    CHECK_STATUS(tp__tokenizer_from_json_buffer(bad, strlen(bad), &t2, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "unk_id 7");
    bad = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\"]]}}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(bad, strlen(bad), &t2, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "model.vocab[0]");
}

/* ------------------------------------------------------------ Precompiled */

static void test_precompiled(void)
{
    char *data = NULL;
    size_t size = 0;
    tp_error err = {0};
    cJSON *root = NULL;
    if (tp__read_file(DATA "models/t5-small/tokenizer.json", &data, &size, &err) != TP_OK ||
        tp__json_parse(data, size, "t5", &root, &err) != TP_OK) {
        CHECK_MSG(0, "%s", err.message);
        free(data);
        return;
    }
    const cJSON *cm = tp__json_path(root, "normalizer.precompiled_charsmap");
    unsigned char *bytes = NULL;
    size_t nb = 0;
    CHECK(cJSON_IsString(cm));
    CHECK_STATUS(tp__base64_decode(cm->valuestring, strlen(cm->valuestring), &bytes, &nb, "t5",
                                   &err),
                 TP_OK);
    /* the same charsmap as spiece.model's normalizer_spec */
    tp__spm_model m;
    CHECK_STATUS(tp__spm_model_load(DATA "models/t5-small/spiece.model", &m, &err), TP_OK);
    CHECK(m.charsmap_len == nb && bytes && memcmp(m.charsmap, bytes, nb) == 0);
    CHECK(m.n_pieces == 500 && m.unk_id == 2);

    tp__normalizer *n = NULL;
    CHECK_STATUS(tp__precompiled_new(bytes, nb, "t5", &n, &err), TP_OK);
    if (n) {
        /* ligature (1 -> 2), fullwidth (3 bytes -> 1), control removed, e + U+0301 composed */
        const char *in = "\xEF\xAC\x81" "A\xEF\xBC\xA1\x07" "e\xCC\x81";
        tp__nstr s = {0}, tmp = {0};
        size_t len = strlen(in);
        CHECK_STATUS(tp__nstr_reserve(&s, 64, &err), TP_OK);
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            int k = tp__utf8_decode(in + i, len - i, &cp);
            CHECK_STATUS(tp__nstr_push(&s, cp, (tp__span){(uint32_t)i, (uint32_t)(i + k)}, &err), TP_OK);
            i += (size_t)k;
        }
        CHECK_STATUS(n->ops->normalize(n, &s, &tmp, &err), TP_OK);
        CHECK(s.len == 6 && memcmp(s.s, "fiAA\xC3\xA9", 6) == 0);
        if (s.len == 6) {
            CHECK(s.al[0].start == 0 && s.al[0].end == 3); /* f: the ligature */
            CHECK(s.al[1].start == 0 && s.al[1].end == 3); /* i: inserted, span before it */
            CHECK(s.al[3].start == 4 && s.al[3].end == 7); /* fullwidth A */
            CHECK(s.al[4].start == 8 && s.al[4].end == 9); /* é: the span of e alone */
        }
        tp__nstr_free(&s);
        tp__nstr_free(&tmp);
    }
    tp__normalizer_free(n);
    const unsigned char broken[] = {0xFF, 0, 0, 0, 1, 2, 3, 4};
    CHECK_STATUS(tp__precompiled_new(broken, sizeof broken, "broken", &n, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "trie size");
    tp__spm_model_free(&m);
    free(bytes);
    cJSON_Delete(root);
    free(data);
}

/* ------------------------------------------------------------ pre-tokenizers */

#define MS_VOCAB                                                                         \
    "\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],"            \
    "[\"\xE2\x96\x81\",-1],[\"h\",-1],[\"i\",-1],[\"\xE2\x96\x81hi\",-0.5],[\"hi\",-0.8]," \
    "[\"\xE2\x96\x81hi\xE2\x96\x81hi\",-0.1],[\"1\",-1],[\"2\",-1],[\"12\",-0.5],[\",\",-1]]}"

static void ms_case(const char *pre, const char *dec, const char *text, const int32_t *want,
                    size_t n, const char *decoded)
{
    char json[2048];
    snprintf(json, sizeof json, "{" MS_VOCAB ",\"pre_tokenizer\":%s,\"decoder\":%s}", pre,
             dec ? dec : "null");
    tp_tokenizer *tok = from_json(json);
    CHECK(tok != NULL);
    if (!tok) return;
    tp_encoding *e = enc1(tok, text);
    CHECK_MSG(ids_are(e, want, n), "%s on \"%s\"", pre, text);
    if (e && decoded) {
        char *s = NULL;
        tp_error err = {0};
        CHECK_STATUS(tp_tokenizer_decode(tok, tp_encoding_ids(e, 0), tp_encoding_length(e, 0), 1,
                                         0, &s, &err),
                     TP_OK);
        CHECK_MSG(s && strcmp(s, decoded) == 0, "decoded \"%s\", want \"%s\"", s ? s : "",
                  decoded);
        tp_free(s);
    }
    tp_encoding_free(e);
    tp_tokenizer_free(tok);
}

static void test_pre_tokenizers(void)
{
    const char *ms_dec = "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\"}";
    static const int32_t a[] = {4, 4};
    ms_case("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"always\"}",
            ms_dec, "hi hi", a, 2, "hi hi");
    static const int32_t b[] = {6};
    /* one token: tokenizers' decoder drops every replacement of the first token */
    ms_case("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"split\":false}", ms_dec,
            "hi hi", b, 1, "hihi");
    static const int32_t c[] = {5, 4};
    ms_case("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"never\"}",
            "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"never\"}",
            "hi hi", c, 2, "hi hi");
    /* legacy add_prefix_space false means never */
    ms_case("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"add_prefix_space\":false}",
            NULL, "hi hi", c, 2, NULL);
    ms_case("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"first\"}",
            ms_dec, "hi hi", a, 2, "hi hi");
    /* the always-decoder drops every replacement of the first token */
    static const int32_t d[] = {1, 4};
    ms_case("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\"}", ms_dec, "  hi", d, 2,
            " hi");
    /* Whitespace keeps \w+ and [^\w\s]+ runs; Digits splits digits out */
    static const int32_t e[] = {5, 10, 9};
    ms_case("{\"type\":\"Whitespace\"}", NULL, "hi , 12", e, 3, NULL);
    static const int32_t f[] = {5, 7, 8};
    ms_case("{\"type\":\"Digits\",\"individual_digits\":true}", NULL, "hi12", f, 3, NULL);
    static const int32_t g[] = {5, 9};
    ms_case("{\"type\":\"Digits\",\"individual_digits\":false}", NULL, "hi12", g, 2, NULL);
    static const int32_t h[] = {5, 10, 9};
    ms_case("{\"type\":\"Punctuation\"}", NULL, "hi,12", h, 3, NULL);
    static const int32_t i[] = {5, 9};
    ms_case("{\"type\":\"Punctuation\",\"behavior\":\"removed\"}", NULL, "hi,12", i, 2, NULL);

    tp_error err = {0};
    tp_tokenizer *t = NULL;
    const char *bad = "{" MS_VOCAB ",\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":"
                      "\"\xE2\x96\x81\",\"prepend_scheme\":\"sometimes\"}}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(bad, strlen(bad), &t, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "prepend_scheme");
}

static void test_nfkc(void)
{
    tp_tokenizer *tok = from_json(
        "{\"normalizer\":{\"type\":\"NFKC\"}," MS_VOCAB "}");
    CHECK(tok != NULL);
    if (!tok) return;
    tp_encoding *e = enc1(tok, "\xEF\xBC\x91\xEF\xBC\x92"); /* fullwidth 1 2 */
    static const int32_t w[] = {9};
    CHECK(ids_are(e, w, 1));
    if (e) {
        const int32_t *off = tp_encoding_offsets(e, 0);
        CHECK(off && off[0] == 0 && off[1] == 2);
    }
    tp_encoding_free(e);
    tp_tokenizer_free(tok);
}

/* ------------------------------------------------------------ Marian */

static void test_marian(void)
{
    tp_tokenizer *tok = NULL;
    tp_error err = {0};
    CHECK_STATUS(tp_tokenizer_new(DATA "tokenizers/opus-mt-fr-en", TP_TOKENIZER_AUTO, &tok, &err),
                 TP_OK);
    if (!tok) return;
    tp_encoding *e = enc1(tok, "Hello world!");
    static const int32_t w[] = {24205, 104, 52620, 19, 43311};
    CHECK(ids_are(e, w, 5));
    tp_encoding_free(e);
    CHECK(tp_tokenizer_special_id(tok, "eos") == 43311);
    CHECK(tp_tokenizer_special_id(tok, "pad") == 53016);
    static const int32_t u[] = {104, 50387, 43311};
    char *s = NULL;
    CHECK_STATUS(tp_tokenizer_decode(tok, u, 3, 0, -1, &s, &err), TP_OK);
    CHECK(s && strcmp(s, "<unk> </s>") == 0);
    tp_free(s);
    tp_tokenizer_free(tok);
}

int main(void)
{
    test_model_reader();
    test_model_malformed();
    test_unigram();
    test_precompiled();
    test_pre_tokenizers();
    test_nfkc();
    test_marian();
    return CHECK_DONE();
}
