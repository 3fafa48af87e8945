/* fuzz_vocab_json.c: libFuzzer target for the legacy byte-level BPE files: the input
 * is split at its first NUL byte into vocab.json and merges.txt, written into a
 * temporary directory with a RoBERTa tokenizer_config.json, loaded and used. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tpipe/tpipe.h>

static char dir[64];

static void path_of(char *path, size_t size, const char *name)
{
    snprintf(path, size, "%s/%s", dir, name);
}

static void write_file(const char *name, const void *data, size_t size)
{
    char path[128];
    path_of(path, sizeof path, name);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size) fwrite(data, 1, size, f);
    fclose(f);
}

static void cleanup(void)
{
    const char *names[] = {"vocab.json", "merges.txt", "tokenizer_config.json"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        path_of(path, sizeof path, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        strcpy(dir, "/tmp/tp_fuzz_bpe_XXXXXX");
        if (!mkdtemp(dir)) abort();
        atexit(cleanup);
        const char *config = "{\"tokenizer_class\": \"RobertaTokenizer\", \"model_max_length\": 512}";
        write_file("tokenizer_config.json", config, strlen(config));
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t vocab_len = nul ? (size_t)(nul - data) : size;
    write_file("vocab.json", data, vocab_len);
    write_file("merges.txt", nul ? nul + 1 : data + size, nul ? size - vocab_len - 1 : 0);

    tp_tokenizer *tok = NULL;
    tp_error err;
    if (tp_tokenizer_new(dir, TP_TOKENIZER_LEGACY, &tok, &err) != TP_OK) return 0;
    const char *texts[2] = {"Hello <mask> world! naïve 日本 \xf0\x9f\x98\x80", "  spaces\tand\nlines  "};
    tp_encoding *enc = NULL;
    if (tp_tokenizer_encode(tok, texts, texts, 2, NULL, &enc, &err) == TP_OK) {
        for (size_t r = 0; r < tp_encoding_rows(enc); r++) {
            char *s = NULL;
            if (tp_tokenizer_decode(tok, tp_encoding_ids(enc, r), tp_encoding_length(enc, r), 1,
                                    -1, &s, &err) == TP_OK)
                tp_free(s);
        }
        tp_encoding_free(enc);
    }
    tp_tokenizer_free(tok);
    return 0;
}
