/* fuzz_bpe_encode.c: libFuzzer target for byte-level BPE. At startup it loads GPT-2's
 * tokenizer.json (TP_FUZZ_TOKENIZER_JSON in the environment, else the copy under
 * TP_TEST_DATA); each input is encoded as text and then:
 *  - invalid UTF-8 must fail with TP_ERR_INVALID_ARGUMENT ("not valid UTF-8 at byte N");
 *  - valid text must encode, and decoding its ids must give the text back (GPT-2's
 *    byte-level BPE is lossless; the input is cut at its first NUL);
 *  - the input bytes, read as ids, must decode to valid UTF-8 (U+FFFD for bad bytes).
 * Any violation aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "core/json_util.h"
#include <tpipe/tpipe.h>

#ifndef TP_TEST_DATA
#define TP_TEST_DATA "tests/data"
#endif

static tp_tokenizer *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *path = getenv("TP_FUZZ_TOKENIZER_JSON");
    if (!path) path = TP_TEST_DATA "/fixtures/tokenizers/gpt2/tokenizer.json";
    char *data = NULL;
    size_t size = 0;
    tp_error err;
    if (tp__read_file(path, &data, &size, &err) != TP_OK ||
        tp__tokenizer_from_json_buffer(data, size, &g_tok, &err) != TP_OK) {
        fprintf(stderr, "fuzz_bpe_encode: cannot load %s: %s\n", path, err.message);
        abort();
    }
    free(data);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    size_t len = strlen(text);
    int valid = tp__utf8_invalid_at(text, len) == len;

    tp_error err;
    tp_encoding *enc = NULL;
    const char *texts[1] = {text};
    tp_status st = tp_tokenizer_encode(g_tok, texts, NULL, 1, NULL, &enc, &err);
    if (!valid) {
        if (st != TP_ERR_INVALID_ARGUMENT || !strstr(err.message, "not valid UTF-8")) abort();
    } else {
        if (st != TP_OK) abort();
        char *back = NULL;
        if (tp_tokenizer_decode(g_tok, tp_encoding_ids(enc, 0), tp_encoding_length(enc, 0), 0, -1,
                                &back, &err) != TP_OK)
            abort();
        if (strcmp(back, text) != 0) abort();
        tp_free(back);
        tp_encoding_free(enc);
    }

    /* arbitrary ids (two bytes each) decode to valid UTF-8 */
    size_t n = size / 2;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (ids) {
        for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(data[2 * i] | (data[2 * i + 1] << 8)) % 50300;
        char *s = NULL;
        if (tp_tokenizer_decode(g_tok, ids, n, size & 1, -1, &s, &err) != TP_OK) abort();
        if (tp__utf8_invalid_at(s, strlen(s)) != strlen(s)) abort();
        tp_free(s);
        free(ids);
    }
    free(text);
    return 0;
}
