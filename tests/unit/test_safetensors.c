/* test_safetensors.c: the safetensors reader on files built here (valid and each kind
 * of malformed header) and on a real fixture. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/safetensors.h"

static char tmpdir[256];

/* Writes <tmpdir>/<name>: the 8-byte LE length `hlen` (the real header length when
 * hlen is UINT64_MAX), the header text, then `data_len` bytes of data (floats 0,1,2..
 * where they fit). Returns the path (static buffer). */
static const char *write_st_len(const char *name, uint64_t hlen, const char *header,
                                size_t data_len) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    if (hlen == UINT64_MAX) hlen = strlen(header);
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < data_len / 4; i++) {
        float v = (float)i;
        fwrite(&v, 4, 1, f);
    }
    for (size_t i = 0; i < data_len % 4; i++) fputc(0, f);
    fclose(f);
    return path;
}

static const char *write_st(const char *name, const char *header, size_t data_len) {
    return write_st_len(name, UINT64_MAX, header, data_len);
}

/* Opens a file that must fail with `want`, and checks the message mentions the file
 * and `needle`. */
static void expect_fail(const char *path, tp_status want, const char *needle) {
    tp__safetensors *st = (tp__safetensors *)0x1;
    tp_error err = {0};
    CHECK_STATUS(tp__safetensors_open(path, &st, &err), want);
    CHECK(st == NULL);
    CHECK_CONTAINS(err.message, needle);
    const char *base = strrchr(path, '/');
    CHECK_CONTAINS(err.message, base ? base + 1 : path);
}

static void test_valid(void) {
    const char *h =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"b.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]},"
        "\"a.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[32,40]},"
        "\"empty\":{\"dtype\":\"F16\",\"shape\":[0,4],\"data_offsets\":[8,8]}}";
    /* pad the header to a multiple of 8 as writers do */
    char padded[512];
    size_t len = strlen(h);
    size_t plen = (len + 7) & ~(size_t)7;
    memcpy(padded, h, len);
    memset(padded + len, ' ', plen - len);
    padded[plen] = '\0';
    const char *path = write_st("valid.safetensors", padded, 40);

    tp__safetensors *st = NULL;
    tp_error err = {0};
    CHECK_STATUS(tp__safetensors_open(path, &st, &err), TP_OK);
    if (!st) {
        fprintf(stderr, "%s\n", err.message);
        return;
    }
    CHECK(st->count == 4);
    CHECK(strcmp(st->tensors[0].name, "a.bias") == 0);
    CHECK(strcmp(st->tensors[3].name, "ids") == 0);

    const tp__st_tensor *t = tp__safetensors_find(st, "b.weight");
    CHECK(t && t->dtype == TP_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    CHECK(t && t->nbytes == 24);
    CHECK(tp__safetensors_find(st, "nope") == NULL);
    t = tp__safetensors_find(st, "empty");
    CHECK(t && t->dtype == TP_F16 && t->nbytes == 0);

    const float *w = NULL;
    int64_t want[2] = {2, 3};
    CHECK_STATUS(tp__safetensors_f32(st, "b.weight", 2, want, &w, &err), TP_OK);
    CHECK(w && w[0] == 2.0f && w[5] == 7.0f);
    int64_t wild[2] = {-1, 3};
    CHECK_STATUS(tp__safetensors_f32(st, "b.weight", 2, wild, &w, &err), TP_OK);
    int64_t wrong[2] = {2, 4};
    CHECK_STATUS(tp__safetensors_f32(st, "b.weight", 2, wrong, &w, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "tensor 'b.weight' has shape [2, 3], expected [2, 4]");
    CHECK(w == NULL);
    CHECK_STATUS(tp__safetensors_f32(st, "b.weight", 1, wrong, &w, &err), TP_ERR_FORMAT);
    int64_t one[1] = {1};
    CHECK_STATUS(tp__safetensors_f32(st, "ids", 1, one, &w, &err), TP_ERR_UNSUPPORTED);
    CHECK_CONTAINS(err.message, "tensor 'ids' has dtype I64, expected F32");
    CHECK_STATUS(tp__safetensors_f32(st, "missing", 1, one, &w, &err), TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "valid.safetensors: tensor 'missing' not found");
    tp__safetensors_close(st);
    tp__safetensors_close(NULL);
}

/* A header whose length is not a multiple of 4 puts F32 data off alignment: the
 * reader hands out an aligned copy. */
static void test_misaligned(void) {
    const char *h = "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}";
    CHECK(strlen(h) % 4 != 0);
    const char *path = write_st("misaligned.safetensors", h, 12);
    tp__safetensors *st = NULL;
    tp_error err = {0};
    CHECK_STATUS(tp__safetensors_open(path, &st, &err), TP_OK);
    if (!st) return;
    const float *x = NULL;
    int64_t shape[1] = {3};
    CHECK_STATUS(tp__safetensors_f32(st, "x", 1, shape, &x, &err), TP_OK);
    CHECK(x && ((uintptr_t)x % 4) == 0);
    CHECK(x && x[0] == 0.0f && x[1] == 1.0f && x[2] == 2.0f);
    tp__safetensors_close(st);
}

static void test_from_memory(void) {
    const char *h = "{\"t\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}";
    size_t hl = strlen(h);
    unsigned char buf[256];
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, h, hl);
    memcpy(buf + 8 + hl, "\x01\x02\x03\x04", 4);
    tp__safetensors *st = NULL;
    tp_error err = {0};
    CHECK_STATUS(tp__safetensors_from_memory(buf, 8 + hl + 4, "mem", &st, &err), TP_OK);
    const tp__st_tensor *t = st ? tp__safetensors_find(st, "t") : NULL;
    CHECK(t && t->dtype == TP_I8 && ((const signed char *)t->data)[3] == 4);
    CHECK(t && (const unsigned char *)t->data == buf + 8 + hl);
    tp__safetensors_close(st);

    CHECK_STATUS(tp__safetensors_from_memory(buf, 8 + hl + 3, "mem", &st, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "mem: tensor 't': data_offsets [0, 4] exceed the data section (3 bytes)");
    CHECK_STATUS(tp__safetensors_from_memory(NULL, 0, "nothing", &st, &err), TP_ERR_FORMAT);
    CHECK_CONTAINS(err.message, "nothing: file is 0 bytes");
}

static void test_malformed(void) {
    tp__safetensors *st = NULL;
    tp_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/absent.safetensors", tmpdir);
    CHECK_STATUS(tp__safetensors_open(path, &st, &err), TP_ERR_NOT_FOUND);
    CHECK_CONTAINS(err.message, "absent.safetensors");

    /* truncated: not even the length */
    {
        snprintf(path, sizeof path, "%s/truncated.safetensors", tmpdir);
        FILE *f = fopen(path, "wb");
        fwrite("\x10\x00\x00", 1, 3, f);
        fclose(f);
        expect_fail(path, TP_ERR_FORMAT, "file is 3 bytes, too short for the 8-byte header length");
        f = fopen(path, "wb");
        fclose(f);
        expect_fail(path, TP_ERR_FORMAT, "file is 0 bytes");
    }
    const char *ok_entry = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    expect_fail(write_st_len("pastend.safetensors", 4096, ok_entry, 8), TP_ERR_FORMAT,
                "header length 4096 runs past the end of the file");
    expect_fail(write_st_len("huge.safetensors", 200000000, ok_entry, 8), TP_ERR_FORMAT,
                "exceeds the 100 MB limit");
    expect_fail(write_st_len("max.safetensors", UINT64_MAX - 1, ok_entry, 8), TP_ERR_FORMAT,
                "exceeds the 100 MB limit");
    /* the data section shorter than the header claims */
    expect_fail(write_st("short.safetensors", ok_entry, 4), TP_ERR_FORMAT,
                "tensor 'x': data_offsets [0, 8] exceed the data section (4 bytes)");
    expect_fail(write_st("range.safetensors",
                         "{\"x.weight\":{\"dtype\":\"F32\",\"shape\":[24],\"data_offsets\":[0,96]}}",
                         64),
                TP_ERR_FORMAT,
                "range.safetensors: tensor 'x.weight': data_offsets [0, 96] exceed the data "
                "section (64 bytes)");
    expect_fail(write_st("overlap.safetensors",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[12,28]}}",
                         32),
                TP_ERR_FORMAT, "tensor 'b': data_offsets [12, 28] overlap tensor 'a'");
    expect_fail(write_st("same.safetensors",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                         8),
                TP_ERR_FORMAT, "overlap tensor");
    expect_fail(write_st("dtype.safetensors",
                         "{\"x\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                TP_ERR_FORMAT, "tensor 'x': unknown dtype 'F33'");
    expect_fail(write_st("f64.safetensors",
                         "{\"d\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8),
                TP_ERR_UNSUPPORTED, "tensor 'd': unsupported dtype F64");
    expect_fail(write_st("dtypenum.safetensors",
                         "{\"x\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8),
                TP_ERR_FORMAT, "'dtype' must be a string, got a number");
    expect_fail(write_st("size.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8),
                TP_ERR_FORMAT,
                "tensor 'x': data_offsets [0, 8] hold 8 bytes, but shape [3] of F32 needs 12");
    expect_fail(write_st("nojson.safetensors", "{\"x\": nope}", 0), TP_ERR_FORMAT,
                "invalid JSON at line 1, column");
    expect_fail(write_st("array.safetensors", "[1, 2]", 0), TP_ERR_FORMAT,
                "header must be a JSON object, got an array");
    expect_fail(write_st("emptyhdr.safetensors", "", 0), TP_ERR_FORMAT, "empty");
    expect_fail(write_st("offtype.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",8]}}", 8),
                TP_ERR_FORMAT, "tensor 'x': data_offsets must be [begin, end]");
    expect_fail(write_st("offlen.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,16]}}", 16),
                TP_ERR_FORMAT, "data_offsets must be [begin, end]");
    expect_fail(write_st("offfrac.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0.5,8]}}", 8),
                TP_ERR_FORMAT, "data_offsets must be [begin, end]");
    expect_fail(write_st("offobj.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"a\":1}}}", 8),
                TP_ERR_FORMAT, "data_offsets must be [begin, end]");
    expect_fail(write_st("backwards.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8),
                TP_ERR_FORMAT, "data_offsets [8, 0] have begin > end");
    expect_fail(write_st("negshape.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8),
                TP_ERR_FORMAT, "tensor 'x': shape[0] must be a non-negative integer");
    expect_fail(write_st("shapetype.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8),
                TP_ERR_FORMAT, "'shape' must be an array, got a string");
    expect_fail(write_st("rank.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],"
                         "\"data_offsets\":[0,8]}}",
                         8),
                TP_ERR_UNSUPPORTED, "shape has 9 dimensions, at most 8");
    expect_fail(write_st("bigshape.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                         "\"data_offsets\":[0,8]}}",
                         8),
                TP_ERR_FORMAT, "shape is too large");
    expect_fail(write_st("nooffsets.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8),
                TP_ERR_FORMAT, "tensor 'x': missing 'data_offsets'");
    expect_fail(write_st("entry.safetensors", "{\"x\":3}", 8), TP_ERR_FORMAT,
                "tensor 'x': entry must be an object");
    expect_fail(write_st("meta.safetensors",
                         "{\"__metadata__\":{\"format\":1},"
                         "\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                         8),
                TP_ERR_FORMAT, "__metadata__ key 'format' must be a string");
    expect_fail(write_st("metaarr.safetensors", "{\"__metadata__\":[]}", 0), TP_ERR_FORMAT,
                "__metadata__ must be an object");
    expect_fail(write_st("dup.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                         "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                         8),
                TP_ERR_FORMAT, "tensor 'x' appears twice");
    expect_fail(write_st("trailing.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}xx", 8),
                TP_ERR_FORMAT, "trailing bytes after the JSON object");
    /* a directory is not a model file */
    expect_fail(tmpdir, TP_ERR_IO, "not a regular file");
}

static void test_fixture(void) {
    const char *path = TP_TEST_DATA "/fixtures/models/distilbert-sst2/model.safetensors";
    tp__safetensors *st = NULL;
    tp_error err = {0};
    CHECK_STATUS(tp__safetensors_open(path, &st, &err), TP_OK);
    if (!st) {
        fprintf(stderr, "%s\n", err.message);
        return;
    }
    CHECK(st->count == 40);
    const float *w = NULL;
    int64_t shape[2] = {1200, 32};
    CHECK_STATUS(tp__safetensors_f32(st, "distilbert.embeddings.word_embeddings.weight", 2,
                                     shape, &w, &err),
                 TP_OK);
    CHECK(w != NULL);
    const tp__st_tensor *t = tp__safetensors_find(st, "classifier.weight");
    CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 32);
    for (size_t i = 1; i < st->count; i++)
        CHECK(strcmp(st->tensors[i - 1].name, st->tensors[i].name) < 0);
    tp__safetensors_close(st);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tp_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_valid();
    test_misaligned();
    test_from_memory();
    test_malformed();
    test_fixture();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return CHECK_DONE();
}
