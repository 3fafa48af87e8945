/* decoders_bpe.c: the decoders of SentencePiece-style BPE tokenizers (Replace,
 * ByteFallback, Fuse, Strip) and Sequence, each tokenizers' decode_chain over a
 * token list. ByteFallback turns runs of <0xXX> tokens into their bytes when they
 * form valid UTF-8, else into one U+FFFD per byte, as tokenizers does.
 * Thread-safety: immutable after construction. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/bpe_family.h"

#define ITEM(l, i) ((const char *)(l)->buf.data + ((const uint32_t *)(l)->items.data)[2 * (i)])
#define ITEM_LEN(l, i) (((const uint32_t *)(l)->items.data)[2 * (i) + 1])

static void simple_free(tp__decoder *d) { free(d); }

static tp_status simple_new(const tp__decoder_ops *ops, tp__decoder **out, tp_error *err)
{
    tp__decoder *d = calloc(1, sizeof *d);
    if (!d) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    d->ops = ops;
    *out = d;
    return TP_OK;
}

/* ------------------------------------------------------------ Replace */

typedef struct replace_dec {
    tp__decoder base;
    tp__pattern *pat;
    char *content;
    size_t content_len;
} replace_dec;

typedef struct rd_ctx {
    const replace_dec *d;
    const char *s;
    tp__vec *buf;
    size_t last;
} rd_ctx;

static tp_status buf_add(tp__vec *v, const char *s, size_t n, tp_error *err)
{
    TP_TRY(tp__vec_reserve(v, v->len + n + 1, err));
    if (n) memcpy((char *)v->data + v->len, s, n);
    v->len += n;
    return TP_OK;
}

static tp_status rd_match(void *ctx, size_t a, size_t b, tp_error *err)
{
    rd_ctx *c = ctx;
    TP_TRY(buf_add(c->buf, c->s + c->last, a - c->last, err));
    TP_TRY(buf_add(c->buf, c->d->content, c->d->content_len, err));
    c->last = b;
    return TP_OK;
}

static tp_status replace_decode_chain(const tp__decoder *self, const tp__toklist *in,
                                      tp__toklist *out, tp_error *err)
{
    const replace_dec *d = (const replace_dec *)self;
    tp__vec buf = {NULL, 0, 0, 1};
    tp_status st = TP_OK;
    for (size_t i = 0; i < in->items.len && st == TP_OK; i++) {
        const char *t = ITEM(in, i);
        size_t len = ITEM_LEN(in, i);
        buf.len = 0;
        rd_ctx c = {d, t, &buf, 0};
        st = tp__pattern_each(d->pat, t, len, rd_match, &c, err);
        if (st == TP_OK) st = buf_add(&buf, t + c.last, len - c.last, err);
        if (st == TP_OK) st = tp__toklist_add(out, buf.data, buf.len, err);
    }
    tp__vec_free(&buf);
    return st;
}

static void replace_free(tp__decoder *self)
{
    replace_dec *d = (replace_dec *)self;
    tp__pattern_free(d->pat);
    free(d->content);
    free(d);
}

static const tp__decoder_ops replace_ops = {"Replace", replace_decode_chain, replace_free};

tp_status tp__replace_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                    tp_error *err)
{
    const char *content;
    TP_TRY(tp__json_string(j, "content", NULL, &content, what, err));
    if (!content) return tp__error(err, TP_ERR_FORMAT, "%s: missing key 'decoder.content'", what);
    replace_dec *d = calloc(1, sizeof *d);
    if (!d || !(d->content = strdup(content))) {
        free(d);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    d->base.ops = &replace_ops;
    d->content_len = strlen(content);
    tp_status st = tp__pattern_parse(cJSON_GetObjectItemCaseSensitive(j, "pattern"),
                                     "decoder.pattern", what, &d->pat, err);
    if (st != TP_OK) {
        replace_free(&d->base);
        return st;
    }
    *out = &d->base;
    return TP_OK;
}

/* ------------------------------------------------------------ ByteFallback */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "<0xXX>" -> the byte (u8::from_str_radix accepts a leading '+'), else -1. */
static int byte_token(const char *t, size_t len)
{
    if (len != 6 || memcmp(t, "<0x", 3) != 0 || t[5] != '>') return -1;
    int h = hexval(t[3]), l = hexval(t[4]);
    if (t[3] == '+' && l >= 0) return l;
    if (h < 0 || l < 0) return -1;
    return h * 16 + l;
}

static tp_status flush_bytes(tp__toklist *out, const unsigned char *b, size_t n, tp_error *err)
{
    if (!n) return TP_OK;
    if (tp__utf8_invalid_at((const char *)b, n) == n) return tp__toklist_add(out, (const char *)b, n, err);
    for (size_t i = 0; i < n; i++) TP_TRY(tp__toklist_add(out, "\xEF\xBF\xBD", 3, err));
    return TP_OK;
}

static tp_status bf_decode_chain(const tp__decoder *self, const tp__toklist *in, tp__toklist *out,
                                 tp_error *err)
{
    (void)self;
    unsigned char *bytes = malloc(in->items.len + 1);
    if (!bytes) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    size_t nb = 0;
    tp_status st = TP_OK;
    for (size_t i = 0; i < in->items.len && st == TP_OK; i++) {
        const char *t = ITEM(in, i);
        size_t len = ITEM_LEN(in, i);
        int b = byte_token(t, len);
        if (b >= 0) {
            bytes[nb++] = (unsigned char)b;
            continue;
        }
        st = flush_bytes(out, bytes, nb, err);
        nb = 0;
        if (st == TP_OK) st = tp__toklist_add(out, t, len, err);
    }
    if (st == TP_OK) st = flush_bytes(out, bytes, nb, err);
    free(bytes);
    return st;
}

static const tp__decoder_ops bf_ops = {"ByteFallback", bf_decode_chain, simple_free};

tp_status tp__byte_fallback_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                          tp_error *err)
{
    (void)j;
    (void)what;
    return simple_new(&bf_ops, out, err);
}

/* ------------------------------------------------------------ Fuse */

static tp_status fuse_decode_chain(const tp__decoder *self, const tp__toklist *in,
                                   tp__toklist *out, tp_error *err)
{
    (void)self;
    tp__vec buf = {NULL, 0, 0, 1};
    tp_status st = TP_OK;
    for (size_t i = 0; i < in->items.len && st == TP_OK; i++)
        st = buf_add(&buf, ITEM(in, i), ITEM_LEN(in, i), err);
    if (st == TP_OK) st = tp__toklist_add(out, buf.data ? buf.data : "", buf.len, err);
    tp__vec_free(&buf);
    return st;
}

static const tp__decoder_ops fuse_ops = {"Fuse", fuse_decode_chain, simple_free};

tp_status tp__fuse_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                 tp_error *err)
{
    (void)j;
    (void)what;
    return simple_new(&fuse_ops, out, err);
}

/* ------------------------------------------------------------ Strip */

typedef struct strip_dec {
    tp__decoder base;
    char content[4];
    size_t content_len;
    size_t start, stop; /* characters to strip at most, from each end */
} strip_dec;

static tp_status strip_decode_chain(const tp__decoder *self, const tp__toklist *in,
                                    tp__toklist *out, tp_error *err)
{
    const strip_dec *d = (const strip_dec *)self;
    size_t cl = d->content_len;
    for (size_t i = 0; i < in->items.len; i++) {
        const char *t = ITEM(in, i);
        size_t len = ITEM_LEN(in, i), a = 0, b = len;
        for (size_t k = 0; k < d->start && a + cl <= b && memcmp(t + a, d->content, cl) == 0; k++)
            a += cl;
        for (size_t k = 0; k < d->stop && b >= a + cl && memcmp(t + b - cl, d->content, cl) == 0; k++)
            b -= cl;
        TP_TRY(tp__toklist_add(out, t + a, b - a, err));
    }
    return TP_OK;
}

static const tp__decoder_ops strip_ops = {"Strip", strip_decode_chain, simple_free};

tp_status tp__strip_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                  tp_error *err)
{
    const char *content;
    int64_t start, stop;
    TP_TRY(tp__json_string(j, "content", " ", &content, what, err));
    TP_TRY(tp__json_int(j, "start", 0, &start, what, err));
    TP_TRY(tp__json_int(j, "stop", 0, &stop, what, err));
    uint32_t cp;
    size_t cl = strlen(content);
    if (!cl || (size_t)tp__utf8_decode(content, cl, &cp) != cl || start < 0 || stop < 0 ||
        start > 1 << 20 || stop > 1 << 20)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: decoder Strip needs one character 'content' and non-negative "
                         "'start' and 'stop'",
                         what);
    strip_dec *d = calloc(1, sizeof *d);
    if (!d) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    d->base.ops = &strip_ops;
    memcpy(d->content, content, cl);
    d->content_len = cl;
    d->start = (size_t)start;
    d->stop = (size_t)stop;
    *out = &d->base;
    return TP_OK;
}

/* ------------------------------------------------------------ Sequence */

typedef struct seq_dec {
    tp__decoder base;
    tp__decoder **items;
    size_t n;
} seq_dec;

static tp_status seq_decode_chain(const tp__decoder *self, const tp__toklist *in,
                                  tp__toklist *out, tp_error *err)
{
    const seq_dec *d = (const seq_dec *)self;
    tp__toklist a = {0}, b = {0};
    const tp__toklist *cur = in;
    tp_status st = TP_OK;
    for (size_t i = 0; i < d->n && st == TP_OK; i++) {
        tp__toklist *dst = i + 1 == d->n ? out : (cur == &a ? &b : &a);
        if (dst != out) dst->buf.len = dst->items.len = 0;
        st = d->items[i]->ops->decode_chain(d->items[i], cur, dst, err);
        cur = dst;
    }
    if (st == TP_OK && d->n == 0) {
        for (size_t i = 0; i < in->items.len && st == TP_OK; i++)
            st = tp__toklist_add(out, ITEM(in, i), ITEM_LEN(in, i), err);
    }
    tp__toklist_free(&a);
    tp__toklist_free(&b);
    return st;
}

static void seq_free(tp__decoder *self)
{
    seq_dec *d = (seq_dec *)self;
    for (size_t i = 0; i < d->n; i++) tp__decoder_free(d->items[i]);
    free(d->items);
    free(d);
}

static const tp__decoder_ops seq_ops = {"Sequence", seq_decode_chain, seq_free};

tp_status tp__sequence_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                     tp_error *err)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "decoders");
    if (!cJSON_IsArray(arr))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'decoder.decoders' must be an array", what);
    seq_dec *d = calloc(1, sizeof *d);
    size_t cnt = (size_t)cJSON_GetArraySize(arr);
    if (d) d->items = calloc(cnt ? cnt : 1, sizeof *d->items);
    if (!d || !d->items) {
        free(d);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    d->base.ops = &seq_ops;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        tp__decoder *child = NULL;
        tp_status st = tp__decoder_from_json(it, what, &child, err);
        if (st != TP_OK) {
            seq_free(&d->base);
            return st;
        }
        if (child) d->items[d->n++] = child;
    }
    *out = &d->base;
    return TP_OK;
}
