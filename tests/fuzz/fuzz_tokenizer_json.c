/* fuzz_tokenizer_json.c: libFuzzer target: arbitrary bytes as tokenizer.json
 * content; when they load, encode (single, pair, truncated with overflow, padded)
 * and decode a fixed text. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "tokenizer/tok_internal.h"
#include <tpipe/tpipe.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tp_tokenizer *tok = NULL;
    tp_error err;
    if (tp__tokenizer_from_json_buffer((const char *)data, size, &tok, &err) != TP_OK) return 0;
    const char *texts[2] = {"Hello, WORLD! café 中文 [MASK] ##x", "a b  c\t\xe2\x80\x8b d"};
    const char *pairs[2] = {"the pair", NULL};
    tp_encode_options o;
    tp_encode_options_init(&o);
    tp_encoding *enc = NULL;
    if (tp_tokenizer_encode(tok, texts, pairs, 2, &o, &enc, &err) == TP_OK) {
        for (size_t r = 0; r < tp_encoding_rows(enc); r++) {
            char *s = NULL;
            if (tp_tokenizer_decode(tok, tp_encoding_ids(enc, r), tp_encoding_length(enc, r), r & 1,
                                    -1, &s, &err) == TP_OK)
                tp_free(s);
            for (size_t i = 0; i < tp_encoding_length(enc, r); i++)
                (void)tp_tokenizer_id_to_token(tok, tp_encoding_ids(enc, r)[i]);
        }
        tp_encoding_free(enc);
    }
    o.truncation = TP_TRUNCATE_LONGEST_FIRST;
    o.max_length = 7;
    o.stride = 2;
    o.return_overflowing = 1;
    o.padding = TP_PAD_LONGEST;
    o.pad_left = 1;
    enc = NULL;
    if (tp_tokenizer_encode(tok, texts, pairs, 2, &o, &enc, &err) == TP_OK) tp_encoding_free(enc);
    (void)tp_tokenizer_vocab_size(tok);
    (void)tp_tokenizer_token_to_id(tok, "[UNK]");
    tp_tokenizer_free(tok);
    return 0;
}
