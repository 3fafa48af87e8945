/* fuzz_spm_model.c: libFuzzer target: arbitrary bytes read as a SentencePiece .model
 * (ModelProto). A malformed file must be rejected with TP_ERR_FORMAT; a file that
 * parses must build the sentencepiece-flavour normalizer and Unigram, the
 * tokenizers-flavour Unigram over the same pieces and the Precompiled normalizer of
 * its charsmap (or reject them with an error), and every one of them must run over
 * a few texts: tokens must lie inside the normalized text, in order. Any violation
 * aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/spm_internal.h"
#include <tpipe/tpipe.h>

static const char *const texts[] = {
    "Hello world! ab<sep>xy", "  leading  and trailing  ", "caf\xC3\xA9 \xEF\xAC\x81ne \xEF\xBC\xA1",
    "\xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD e\xCC\x81", "\x07\r\n\t", "",
};

static void run(const tp__normalizer *norm, const tp__model *model, const char *text)
{
    tp__work w;
    tp_error err;
    memset(&w, 0, sizeof w);
    w.toks.elem = sizeof(tp__tok);
    size_t len = strlen(text);
    if (tp__nstr_reserve(&w.arena, len + 16, &err) != TP_OK) abort();
    for (size_t i = 0; i < len; i++) {
        w.arena.s[i] = text[i];
        w.arena.al[i] = (tp__span){(uint32_t)i, (uint32_t)i + 1};
    }
    w.arena.len = len;
    if (norm && norm->ops->normalize(norm, &w.arena, &w.n1, &err) != TP_OK) {
        tp__work_free(&w);
        return;
    }
    for (size_t i = 0; i < w.arena.len; i++)
        if (w.arena.al[i].start > len || w.arena.al[i].end > len) abort();
    if (model && model->ops->tokenize(model, &w, 0, (uint32_t)w.arena.len, 0, &err) == TP_OK) {
        const tp__tok *t = w.toks.data;
        uint32_t prev = 0;
        for (size_t i = 0; i < w.toks.len; i++) {
            if (t[i].start < prev || t[i].end < t[i].start || t[i].end > w.arena.len) abort();
            prev = t[i].start;
            size_t tl;
            (void)model->ops->id_to_token(model, t[i].id, &tl);
        }
    }
    tp__work_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tp__spm_model m;
    tp_error err;
    tp_status st = tp__spm_model_parse(data, size, "fuzz.model", &m, &err);
    if (st != TP_OK) {
        if (st != TP_ERR_FORMAT && st != TP_ERR_NOMEM) abort();
        if (!strstr(err.message, "fuzz.model")) abort();
        return 0;
    }
    tp__normalizer *sn = NULL, *pc = NULL;
    tp__model *su = NULL, *tu = NULL;
    (void)tp__spm_normalizer_new(&m, "fuzz.model", &sn, &err);
    (void)tp__unigram_spm_new(&m, NULL, -1, &su, &err);
    tp__unigram_piece *p = calloc(m.n_pieces, sizeof *p);
    if (!p) abort();
    for (size_t i = 0; i < m.n_pieces; i++) {
        p[i].s = tp__spm_piece_str(&m, i);
        p[i].len = m.pieces[i].len;
        p[i].score = m.pieces[i].score;
        p[i].type = TP__SPM_NORMAL;
    }
    (void)tp__unigram_new(p, m.n_pieces, m.unk_id, m.byte_fallback, &tu, &err);
    free(p);
    (void)tp__precompiled_new(m.charsmap, m.charsmap_len, "fuzz.model", &pc, &err);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        run(sn, su, texts[i]);
        run(pc, tu, texts[i]);
    }
    tp__normalizer_free(sn);
    tp__normalizer_free(pc);
    tp__model_free(su);
    tp__model_free(tu);
    tp__spm_model_free(&m);
    return 0;
}
