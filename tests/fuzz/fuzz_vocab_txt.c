/* fuzz_vocab_txt.c: libFuzzer target: arbitrary bytes written as vocab.txt into
 * a temporary directory, loaded as a legacy BERT tokenizer, then used. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tpipe/tpipe.h>

static char dir[64];

static void cleanup(void)
{
    char path[96];
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        strcpy(dir, "/tmp/tp_fuzz_vocab_XXXXXX");
        if (!mkdtemp(dir)) abort();
        atexit(cleanup);
    }
    char path[96];
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size) fwrite(data, 1, size, f);
    fclose(f);

    tp_tokenizer *tok = NULL;
    tp_error err;
    if (tp_tokenizer_new(dir, TP_TOKENIZER_LEGACY, &tok, &err) != TP_OK) return 0;
    const char *texts[1] = {"Hello [SEP] unaffable, WORLD! naïve 日本"};
    tp_encoding *enc = NULL;
    if (tp_tokenizer_encode(tok, texts, NULL, 1, NULL, &enc, &err) == TP_OK) {
        char *s = NULL;
        if (tp_tokenizer_decode(tok, tp_encoding_ids(enc, 0), tp_encoding_length(enc, 0), 0, -1,
                                &s, &err) == TP_OK)
            tp_free(s);
        tp_encoding_free(enc);
    }
    (void)tp_tokenizer_vocab_size(tok);
    tp_tokenizer_free(tok);
    return 0;
}
