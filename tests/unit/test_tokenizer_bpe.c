/* test_tokenizer_bpe.c: the BPE family beyond the fixtures: byte-level round trips
 * (random text through GPT-2's tokenizer, arbitrary bytes through the ByteLevel
 * decoder, invalid UTF-8 decoded to U+FFFD as Python's errors="replace" does), the
 * Split behaviours, ignore_merges, byte_fallback with fuse_unk, added tokens with
 * lstrip and RoBERTa's offset trimming, Replace/Prepend alignment, and errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tokenizer/bpe_family.h"
#include <tpipe/tpipe.h>

#define DATA TP_TEST_DATA "/fixtures/"

static tp_tokenizer *from_json(const char *json)
{
    tp_tokenizer *tok = NULL;
    tp_error err;
    if (tp__tokenizer_from_json_buffer(json, strlen(json), &tok, &err) != TP_OK) {
        fprintf(stderr, "load failed: %s\n", err.message);
        return NULL;
    }
    return tok;
}

static tp_encoding *enc1(tp_tokenizer *tok, const char *text, int special)
{
    tp_encode_options o;
    tp_encode_options_init(&o);
    o.add_special_tokens = special;
    tp_encoding *enc = NULL;
    tp_error err;
    const char *texts[1] = {text};
    if (tp_tokenizer_encode(tok, texts, NULL, 1, &o, &enc, &err) != TP_OK) {
        fprintf(stderr, "encode failed: %s\n", err.message);
        return NULL;
    }
    return enc;
}

/* Space-separated tokens of the encoding. */
static void tokens_of(tp_tokenizer *tok, const tp_encoding *enc, char *out, size_t cap)
{
    size_t w = 0;
    out[0] = '\0';
    for (size_t i = 0; i < tp_encoding_length(enc, 0); i++) {
        const char *t = tp_tokenizer_id_to_token(tok, tp_encoding_ids(enc, 0)[i]);
        w += (size_t)snprintf(out + w, cap - w, "%s%s", i ? " " : "", t ? t : "?");
        if (w >= cap) break;
    }
}

static void check_tokens(tp_tokenizer *tok, const char *text, const char *want)
{
    char got[1024];
    tp_encoding *e = enc1(tok, text, 1);
    CHECK(e != NULL);
    if (!e) return;
    tokens_of(tok, e, got, sizeof got);
    CHECK_MSG(strcmp(got, want) == 0, "'%s': got [%s], want [%s]", text, got, want);
    tp_encoding_free(e);
}

/* ------------------------------------------------------------ byte level */

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void test_gpt2_round_trip(void)
{
    tp_tokenizer *tok = NULL;
    tp_error err;
    CHECK_STATUS(tp_tokenizer_new(DATA "tokenizers/gpt2", TP_TOKENIZER_JSON, &tok, &err), TP_OK);
    if (!tok) return;
    check_tokens(tok, "Hello world!", "Hello Ġworld !");
    check_tokens(tok, "  x", "Ġ Ġx");
    /* random valid UTF-8 (ASCII, Latin, CJK, emoji, spaces, controls) survives */
    static const uint32_t pools[][2] = {{0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x17F},
                                        {0x4E00, 0x4E80}, {0x1F600, 0x1F64F}, {0x2000, 0x200D}};
    int ok = 1;
    for (int iter = 0; iter < 300 && ok; iter++) {
        char text[512];
        size_t n = 0, want = rnd() % 60;
        for (size_t k = 0; k < want; k++) {
            const uint32_t *p = pools[rnd() % 6];
            uint32_t cp = p[0] + rnd() % (p[1] - p[0] + 1);
            n += (size_t)tp__utf8_encode(cp, text + n);
        }
        text[n] = '\0';
        tp_encoding *e = enc1(tok, text, 0);
        if (!e) { ok = 0; break; }
        char *back = NULL;
        if (tp_tokenizer_decode(tok, tp_encoding_ids(e, 0), tp_encoding_length(e, 0), 0, -1, &back,
                                &err) != TP_OK || strcmp(back, text) != 0) {
            fprintf(stderr, "round trip failed for '%s' -> '%s'\n", text, back ? back : "(error)");
            ok = 0;
        }
        tp_free(back);
        tp_encoding_free(e);
    }
    CHECK(ok);

    /* arbitrary bytes: one single-byte token per byte, decoded as Python does */
    struct { const char *bytes; size_t n; const char *want; } cases[] = {
        {"\xe2\x82\xac", 3, "\xe2\x82\xac"},
        {"a\xff" "b", 3, "a\xef\xbf\xbd" "b"},
        {"\xe2\x82", 2, "\xef\xbf\xbd"},                 /* truncated: one U+FFFD */
        {"\xf0\x9f\x98", 3, "\xef\xbf\xbd"},
        {"\xe2\x28\xa1", 3, "\xef\xbf\xbd(\xef\xbf\xbd"},
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
        {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},     /* overlong */
        {"\xf4\x90\x80\x80", 4,
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* past U+10FFFF */
        {"\xf0\x9f\x98\x80\x80", 5, "\xf0\x9f\x98\x80\xef\xbf\xbd"},
    };
    /* the byte-level stand-ins, as tokens */
    uint32_t cp_of[256];
    int n_extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        cp_of[b] = printable ? (uint32_t)b : (uint32_t)(256 + n_extra++);
    }
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t ids[8];
        for (size_t i = 0; i < cases[c].n; i++) {
            char t[5];
            int k = tp__utf8_encode(cp_of[(unsigned char)cases[c].bytes[i]], t);
            t[k] = '\0';
            ids[i] = tp_tokenizer_token_to_id(tok, t);
        }
        char *s = NULL;
        CHECK_STATUS(tp_tokenizer_decode(tok, ids, cases[c].n, 0, -1, &s, &err), TP_OK);
        CHECK_MSG(s && strcmp(s, cases[c].want) == 0, "case %zu", c);
        tp_free(s);
    }
    /* random bytes never give invalid UTF-8 */
    int valid = 1;
    for (int iter = 0; iter < 500; iter++) {
        int32_t ids[16];
        size_t n = 1 + rnd() % 16;
        for (size_t i = 0; i < n; i++) {
            char t[5];
            int k = tp__utf8_encode(cp_of[rnd() & 255], t);
            t[k] = '\0';
            ids[i] = tp_tokenizer_token_to_id(tok, t);
        }
        char *s = NULL;
        if (tp_tokenizer_decode(tok, ids, n, 0, -1, &s, &err) != TP_OK ||
            tp__utf8_invalid_at(s, strlen(s)) != strlen(s))
            valid = 0;
        tp_free(s);
    }
    CHECK(valid);
    /* invalid UTF-8 input is refused, naming the byte */
    tp_encoding *e = NULL;
    const char *bad[1] = {"ok\xff"};
    CHECK_STATUS(tp_tokenizer_encode(tok, bad, NULL, 1, NULL, &e, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "not valid UTF-8 at byte 2");
    tp_tokenizer_free(tok);
}

/* ------------------------------------------------------------ Split */

static void split_case(const char *behavior, int invert, const char *pattern, const char *text,
                       const char *want)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"type\": \"Split\", \"pattern\": %s, \"behavior\": \"%s\", \"invert\": %s}",
             pattern, behavior, invert ? "true" : "false");
    cJSON *j = cJSON_Parse(json);
    tp__pre_tokenizer *p = NULL;
    tp_error err;
    CHECK_STATUS(tp__pre_tokenizer_from_json(j, "test", &p, &err), TP_OK);
    cJSON_Delete(j);
    if (!p) return;
    tp__work w;
    memset(&w, 0, sizeof w);
    w.splits.elem = w.splits2.elem = sizeof(tp__split);
    size_t len = strlen(text);
    CHECK_STATUS(tp__nstr_append(&w.arena, text, len, NULL, (tp__span){0, 1}, &err), TP_OK);
    tp__split *s = tp__vec_push(&w.splits, &err);
    s->off = 0;
    s->len = (uint32_t)len;
    s->added = -1;
    CHECK_STATUS(p->ops->pre_tokenize(p, &w, &err), TP_OK);
    char got[256];
    size_t o = 0;
    got[0] = '\0';
    for (size_t i = 0; i < w.splits.len; i++) {
        const tp__split *x = (const tp__split *)w.splits.data + i;
        o += (size_t)snprintf(got + o, sizeof got - o, "%s%.*s", i ? "|" : "", (int)x->len,
                              w.arena.s + x->off);
    }
    CHECK_MSG(strcmp(got, want) == 0, "%s%s on '%s': got '%s', want '%s'", behavior,
              invert ? " (invert)" : "", text, got, want);
    tp__work_free(&w);
    tp__pre_tokenizer_free(p);
}

static void test_split(void)
{
    const char *dash = "{\"String\": \"-\"}";
    const char *t = "the-final--countdown";
    split_case("Removed", 0, dash, t, "the|final|countdown");
    split_case("Isolated", 0, dash, t, "the|-|final|-|-|countdown");
    split_case("MergedWithPrevious", 0, dash, t, "the-|final-|-|countdown");
    split_case("MergedWithNext", 0, dash, t, "the|-final|-|-countdown");
    split_case("Contiguous", 0, dash, t, "the|-|final|--|countdown");
    /* invert: the words are the delimiters */
    split_case("Removed", 1, "{\"Regex\": \"\\\\w+\"}", "ab, cd", "ab|cd");
    split_case("MergedWithNext", 1, "{\"Regex\": \"\\\\w+\"}", "ab, cd!", "ab|, cd|!");
    /* Unicode classes and the Llama 3 pattern's case-insensitive contractions */
    split_case("Isolated", 0,
               "{\"Regex\": \"(?i:'s|'t)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}|\\\\s+\"}",
               "IT'S 12345 é", "IT|'S| |123|45| é");
    /* empty matches split between characters, as onig's find_iter reports them */
    split_case("Removed", 0, "{\"Regex\": \"x*\"}", "abxxc", "a|b|c");
}

/* ------------------------------------------------------------ BPE model */

static void test_ignore_merges(void)
{
    const char *fmt =
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"bc\": 3, "
        "\"abc\": 4}, \"merges\": [\"b c\", [\"a\", \"bc\"]], \"ignore_merges\": %s}, "
        "\"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"}}";
    char json[512];
    /* merges apply when ignore_merges is off: a + bc -> abc only through the merge list */
    snprintf(json, sizeof json, fmt, "false");
    tp_tokenizer *tok = from_json(json);
    CHECK(tok != NULL);
    if (tok) {
        check_tokens(tok, "abc cab", "abc c a b");
        tp_tokenizer_free(tok);
    }
    const char *fmt2 =
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"c\": 2, \"bc\": 3, "
        "\"abc\": 4, \"cab\": 5}, \"merges\": [\"b c\"], \"ignore_merges\": %s}, "
        "\"pre_tokenizer\": {\"type\": \"WhitespaceSplit\"}}";
    snprintf(json, sizeof json, fmt2, "true");
    tok = from_json(json);
    CHECK(tok != NULL);
    if (tok) {
        check_tokens(tok, "abc cab abcb", "abc cab a bc b");
        tp_tokenizer_free(tok);
    }
    snprintf(json, sizeof json, fmt2, "false");
    tok = from_json(json);
    CHECK(tok != NULL);
    if (tok) {
        check_tokens(tok, "abc cab", "a bc c a b");
        tp_tokenizer_free(tok);
    }
}

static void test_byte_fallback(void)
{
    /* Llama 2 style: Prepend + Replace, byte fallback, fused unk */
    const char *json =
        "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", "
        "\"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, "
        "\"content\": \"\\u2581\"}]},"
        "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true, "
        "\"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, \"<0xC3>\": 1, \"<0xA9>\": 2, "
        "\"\\u2581\": 3, \"a\": 4, \"\\u2581a\": 5}, \"merges\": [\"\\u2581 a\"]},"
        "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", "
        "\"pattern\": {\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"},"
        "{\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, "
        "\"stop\": 0}]}}";
    tp_tokenizer *tok = from_json(json);
    CHECK(tok != NULL);
    if (!tok) return;
    /* é is two byte tokens; x and y (no bytes for them) fuse into one <unk> */
    tp_encoding *e = enc1(tok, "a \xc3\xa9xy", 1);
    CHECK(e != NULL);
    if (e) {
        static const int32_t want[] = {5, 3, 1, 2, 0};
        static const int32_t want_offs[] = {0, 1, 1, 2, 2, 3, 2, 3, 3, 5};
        CHECK(tp_encoding_length(e, 0) == 5);
        for (size_t i = 0; i < 5 && tp_encoding_length(e, 0) == 5; i++) {
            CHECK_MSG(tp_encoding_ids(e, 0)[i] == want[i], "id %zu: %d", i, tp_encoding_ids(e, 0)[i]);
            CHECK_MSG(tp_encoding_offsets(e, 0)[2 * i] == want_offs[2 * i] &&
                          tp_encoding_offsets(e, 0)[2 * i + 1] == want_offs[2 * i + 1],
                      "offsets %zu: (%d, %d)", i, tp_encoding_offsets(e, 0)[2 * i],
                      tp_encoding_offsets(e, 0)[2 * i + 1]);
        }
        tp_encoding_free(e);
    }
    tp_error err;
    char *s = NULL;
    int32_t ids[] = {5, 3, 1, 2, 4};
    CHECK_STATUS(tp_tokenizer_decode(tok, ids, 5, 0, -1, &s, &err), TP_OK);
    CHECK_MSG(s && strcmp(s, "a \xc3\xa9" "a") == 0, "got '%s'", s ? s : "");
    tp_free(s);
    /* a lone continuation byte: one U+FFFD per byte token */
    int32_t ids2[] = {4, 2, 2, 4};
    CHECK_STATUS(tp_tokenizer_decode(tok, ids2, 4, 0, -1, &s, &err), TP_OK);
    CHECK_MSG(s && strcmp(s, "a\xef\xbf\xbd\xef\xbf\xbd" "a") == 0, "got '%s'", s ? s : "");
    tp_free(s);
    tp_tokenizer_free(tok);
}

/* ------------------------------------------------------------ added tokens */

static void test_added_lstrip(void)
{
    /* byte-level vocabulary: T h e Ġ i s . and Ġis */
    const char *json =
        "{\"added_tokens\": [{\"id\": 0, \"content\": \"<s>\", \"special\": true}, "
        "{\"id\": 1, \"content\": \"</s>\", \"special\": true}, "
        "{\"id\": 2, \"content\": \"<mask>\", \"special\": true, \"lstrip\": true}],"
        "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false},"
        "\"post_processor\": {\"type\": \"RobertaProcessing\", \"sep\": [\"</s>\", 1], "
        "\"cls\": [\"<s>\", 0], \"trim_offsets\": true, \"add_prefix_space\": false},"
        "\"decoder\": {\"type\": \"ByteLevel\"},"
        "\"model\": {\"type\": \"BPE\", \"vocab\": {\"<s>\": 0, \"</s>\": 1, \"<mask>\": 2, "
        "\"i\": 3, \"s\": 4, \".\": 5, \"\\u0120\": 6, \"\\u0120i\": 7, \"\\u0120is\": 8}, "
        "\"merges\": [\"\\u0120 i\", \"\\u0120i s\"]}}";
    tp_tokenizer *tok = from_json(json);
    CHECK(tok != NULL);
    if (!tok) return;
    check_tokens(tok, "is <mask>.", "<s> i s <mask> . </s>");
    check_tokens(tok, " is  <mask>", "<s> Ġis <mask> </s>");
    tp_encoding *e = enc1(tok, " is <mask>.", 1);
    CHECK(e != NULL);
    if (e) {
        /* trim_offsets: Ġis starts at 'i'; the mask's stripped space is trimmed */
        static const int32_t want[] = {0, 0, 1, 3, 4, 10, 10, 11, 0, 0};
        const int32_t *o = tp_encoding_offsets(e, 0);
        CHECK(tp_encoding_length(e, 0) == 5);
        for (size_t i = 0; i < 10 && tp_encoding_length(e, 0) == 5; i++)
            CHECK_MSG(o[i] == want[i], "offset %zu: %d, want %d", i, o[i], want[i]);
        CHECK(tp_encoding_type_ids(e, 0) == NULL || tp_encoding_type_ids(e, 0)[1] == 0);
        tp_encoding_free(e);
    }
    /* decode keeps the mask's text, drops it with skip_special_tokens */
    tp_error err;
    int32_t ids[] = {0, 8, 2, 5, 1};
    char *s = NULL;
    CHECK_STATUS(tp_tokenizer_decode(tok, ids, 5, 1, -1, &s, &err), TP_OK);
    CHECK_MSG(s && strcmp(s, " is.") == 0, "got '%s'", s ? s : "");
    tp_free(s);
    CHECK_STATUS(tp_tokenizer_decode(tok, ids, 5, 0, -1, &s, &err), TP_OK);
    CHECK_MSG(s && strcmp(s, "<s> is<mask>.</s>") == 0, "got '%s'", s ? s : "");
    tp_free(s);
    tp_tokenizer_free(tok);
}

static void test_llama3_specials(void)
{
    tp_tokenizer *tok = NULL;
    tp_error err;
    CHECK_STATUS(tp_tokenizer_new(DATA "tokenizers/llama3", TP_TOKENIZER_AUTO, &tok, &err), TP_OK);
    if (!tok) return;
    CHECK(tp_tokenizer_token_to_id(tok, "<|begin_of_text|>") == 128000);
    CHECK(tp_tokenizer_token_to_id(tok, "<|reserved_special_token_250|>") == 128255);
    tp_encoding *e = enc1(tok, "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", 0);
    CHECK(e != NULL);
    if (e) {
        CHECK(tp_encoding_length(e, 0) == 6);
        CHECK(tp_encoding_ids(e, 0)[0] == 128006 && tp_encoding_ids(e, 0)[2] == 128007 &&
              tp_encoding_ids(e, 0)[5] == 128009);
        tp_encoding_free(e);
    }
    tp_tokenizer_free(tok);
}

/* ------------------------------------------------------------ errors */

static void test_errors(void)
{
    tp_tokenizer *tok = NULL;
    tp_error err;
    const char *bad_merge =
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(bad_merge, strlen(bad_merge), &tok, &err),
                 TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "merge 0");
    const char *bad_re = "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, "
                         "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                         "\"behavior\": \"Isolated\"}}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(bad_re, strlen(bad_re), &tok, &err),
                 TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(err.message, "cannot compile");
    const char *bad_beh = "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, "
                          "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \"x\"}, "
                          "\"behavior\": \"Sideways\"}}";
    CHECK_STATUS(tp__tokenizer_from_json_buffer(bad_beh, strlen(bad_beh), &tok, &err),
                 TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "behavior");
    /* an unk token missing from the vocabulary is reported when needed */
    const char *bad_unk = "{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": "
                          "{\"a\": 0}, \"merges\": []}}";
    tok = from_json(bad_unk);
    CHECK(tok != NULL);
    if (tok) {
        tp_encoding *e = NULL;
        const char *t[1] = {"ab"};
        CHECK_STATUS(tp_tokenizer_encode(tok, t, NULL, 1, NULL, &e, &err), TP_ERR_FORMAT);
        CHECK_CONTAINS(err.message, "unk_token '<unk>'");
        tp_tokenizer_free(tok);
    }
}

int main(void)
{
    test_gpt2_round_trip();
    test_split();
    test_ignore_merges();
    test_byte_fallback();
    test_added_lstrip();
    test_llama3_specials();
    test_errors();
    return CHECK_DONE();
}
