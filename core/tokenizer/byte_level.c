/* byte_level.c: GPT-2's byte-level components. The pre-tokenizer optionally adds
 * a leading space to each split, cuts it with GPT-2's pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (matched by a hand-written scanner: the alternatives are tried in order at each
 * position, exactly as the regex does, so no regex engine runs), and rewrites every
 * byte as its printable stand-in character (bytes_to_unicode: 'Ġ' for ' ', ...),
 * each keeping the span of the character it came from. The decoder maps the stand-
 * ins back to bytes and decodes them as Python's bytes.decode("utf-8",
 * errors="replace") does. Thread-safety: immutable after construction. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/bpe_family.h"

/* ------------------------------------------------------------ bytes_to_unicode */

typedef struct byte_map {
    char enc[256][2];     /* UTF-8 of each byte's stand-in */
    unsigned char enc_len[256];
    int16_t rev[324];     /* stand-in code point -> byte, -1 none */
} byte_map;

static void byte_map_init(byte_map *m)
{
    uint32_t cp[256];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
    }
    for (int i = 0; i < 324; i++) m->rev[i] = -1;
    for (int b = 0; b < 256; b++) {
        char tmp[4];
        int k = tp__utf8_encode(cp[b], tmp);
        memcpy(m->enc[b], tmp, (size_t)k);
        m->enc_len[b] = (unsigned char)k;
        m->rev[cp[b]] = (int16_t)b;
    }
}

/* ------------------------------------------------------------ GPT-2 pattern */

enum { C_OTHER, C_L, C_N, C_S };

static int cp_class(uint32_t c)
{
    if (c < 0x80) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return C_L;
        if (c >= '0' && c <= '9') return C_N;
        if (c == ' ' || (c >= 9 && c <= 13)) return C_S;
        return C_OTHER;
    }
    if (tp__uc_is_whitespace(c)) return C_S;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return C_L;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return C_N;
    default:
        return C_OTHER;
    }
}

static inline int class_at(const char *s, size_t len, size_t i, size_t *k)
{
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) {
        *k = 1;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return C_L;
        if (c >= '0' && c <= '9') return C_N;
        if (c == ' ' || (c >= 9 && c <= 13)) return C_S;
        return C_OTHER;
    }
    uint32_t cp;
    *k = (size_t)tp__utf8_decode(s + i, len - i, &cp);
    return cp_class(cp);
}

/* End of the run of characters of class `cls` that starts at i. */
static size_t run_end(const char *s, size_t len, size_t i, int cls)
{
    while (i < len) {
        size_t k;
        if (class_at(s, len, i, &k) != cls) break;
        i += k;
    }
    return i;
}

/* End of the GPT-2 pattern's match at i (every position starts a match). */
size_t tp__gpt2_match(const char *s, size_t len, size_t i);
size_t tp__gpt2_match(const char *s, size_t len, size_t i)
{
    if (s[i] == '\'' && i + 1 < len) {
        char n1 = s[i + 1];
        if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') return i + 2;
        if (i + 2 < len && ((n1 == 'r' && s[i + 2] == 'e') || (n1 == 'v' && s[i + 2] == 'e') ||
                            (n1 == 'l' && s[i + 2] == 'l')))
            return i + 3;
    }
    size_t k0;
    int c0 = class_at(s, len, i, &k0);
    if (s[i] == ' ' && i + 1 < len) {
        size_t k1;
        int c1 = class_at(s, len, i + 1, &k1);
        if (c1 != C_S) return run_end(s, len, i + 1 + k1, c1);
    }
    if (c0 != C_S) return run_end(s, len, i + k0, c0);
    /* \s+(?!\S) then \s+: a whitespace run, less its last character when a
     * non-space follows and the run has more than one character */
    size_t j = i + k0, last = i;
    while (j < len) {
        size_t k;
        if (class_at(s, len, j, &k) != C_S) break;
        last = j;
        j += k;
    }
    if (j == len || last == i) return j;
    return last;
}

/* ------------------------------------------------------------ pre-tokenizer */

typedef struct bl_pre {
    tp__pre_tokenizer base;
    int add_prefix_space, use_regex;
    byte_map map;
} bl_pre;

/* Appends the byte-level form of src[0..n) (spans al) to the arena, whose
 * capacity the caller reserved, and records it as a split. */
static tp_status emit_mapped(const bl_pre *p, tp__work *w, const char *src, const tp__span *al,
                             size_t n, tp_error *err)
{
    tp__nstr *a = &w->arena;
    uint32_t start = (uint32_t)a->len;
    char *o = a->s + a->len;
    tp__span *oa = a->al + a->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)src[i];
        if (p->map.enc_len[b] == 1) {
            *o++ = p->map.enc[b][0];
            *oa++ = al[i];
        } else {
            *o++ = p->map.enc[b][0];
            *o++ = p->map.enc[b][1];
            *oa++ = al[i];
            *oa++ = al[i];
        }
    }
    a->len = (size_t)(o - a->s);
    tp__split *s = tp__vec_push(&w->splits2, err);
    if (!s) return err ? err->status : TP_ERR_NOMEM;
    s->off = start;
    s->len = (uint32_t)(a->len - start);
    s->added = -1;
    return TP_OK;
}

static tp_status bl_pre_tokenize(const tp__pre_tokenizer *self, tp__work *w, tp_error *err)
{
    const bl_pre *p = (const bl_pre *)self;
    w->splits2.elem = sizeof(tp__split);
    w->splits2.len = 0;
    for (size_t k = 0; k < w->splits.len; k++) {
        tp__split sp = ((const tp__split *)w->splits.data)[k];
        if (sp.added >= 0) {
            tp__split *o = tp__vec_push(&w->splits2, err);
            if (!o) return err ? err->status : TP_ERR_NOMEM;
            *o = sp;
            continue;
        }
        if (!sp.len) continue;
        const char *src;
        const tp__span *al;
        size_t n;
        if (p->add_prefix_space && w->arena.s[sp.off] != ' ') {
            /* the added space takes the span of the first character */
            w->n1.len = 0;
            TP_TRY(tp__nstr_push(&w->n1, ' ', w->arena.al[sp.off], err));
            TP_TRY(tp__nstr_append(&w->n1, w->arena.s + sp.off, sp.len, w->arena.al + sp.off,
                                   (tp__span){0, 0}, err));
            n = w->n1.len;
            if (w->arena.len + 2 * n + 8 > UINT32_MAX)
                return tp__error(err, TP_ERR_INVALID_ARGUMENT, "text is too long");
            TP_TRY(tp__nstr_reserve(&w->arena, w->arena.len + 2 * n + 8, err));
            src = w->n1.s;
            al = w->n1.al;
        } else {
            n = sp.len;
            if (w->arena.len + 2 * n + 8 > UINT32_MAX)
                return tp__error(err, TP_ERR_INVALID_ARGUMENT, "text is too long");
            TP_TRY(tp__nstr_reserve(&w->arena, w->arena.len + 2 * n + 8, err));
            src = w->arena.s + sp.off;
            al = w->arena.al + sp.off;
        }
        if (!p->use_regex) {
            TP_TRY(emit_mapped(p, w, src, al, n, err));
            continue;
        }
        size_t pos = 0;
        while (pos < n) {
            size_t end = tp__gpt2_match(src, n, pos);
            TP_TRY(emit_mapped(p, w, src + pos, al + pos, end - pos, err));
            pos = end;
        }
    }
    tp__vec t = w->splits;
    w->splits = w->splits2;
    w->splits2 = t;
    return TP_OK;
}

static void bl_pre_free(tp__pre_tokenizer *self) { free(self); }

static const tp__pre_tokenizer_ops bl_pre_ops = {"ByteLevel", bl_pre_tokenize, bl_pre_free};

tp_status tp__byte_level_pre_tokenizer_new(int add_prefix_space, int use_regex,
                                           tp__pre_tokenizer **out, tp_error *err)
{
    bl_pre *p = calloc(1, sizeof *p);
    if (!p) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    p->base.ops = &bl_pre_ops;
    p->add_prefix_space = add_prefix_space;
    p->use_regex = use_regex;
    byte_map_init(&p->map);
    *out = &p->base;
    return TP_OK;
}

tp_status tp__byte_level_pre_from_json(const cJSON *j, const char *what,
                                       tp__pre_tokenizer **out, tp_error *err)
{
    int aps, use_regex;
    TP_TRY(tp__json_bool(j, "add_prefix_space", 1, &aps, what, err));
    TP_TRY(tp__json_bool(j, "use_regex", 1, &use_regex, what, err));
    return tp__byte_level_pre_tokenizer_new(aps, use_regex, out, err);
}

/* ------------------------------------------------------------ lossy UTF-8 */

tp_status tp__utf8_lossy_add(tp__toklist *out, const unsigned char *b, size_t n, tp_error *err)
{
    char *o = malloc(3 * n + 1);
    if (!o) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    size_t w = 0, i = 0;
    while (i < n) {
        unsigned char c = b[i];
        if (c < 0x80) {
            o[w++] = (char)c;
            i++;
            continue;
        }
        /* the ranges of Unicode's table 3-7 */
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) need = 2;
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c >= 0xEE && c <= 0xEF) need = 2;
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else need = 0;
        size_t got = 0;
        if (need) {
            if (i + 1 < n && b[i + 1] >= lo && b[i + 1] <= hi) {
                got = 1;
                while (got < need && i + 1 + got < n && b[i + 1 + got] >= 0x80 && b[i + 1 + got] <= 0xBF)
                    got++;
            }
        }
        if (need && got == need) {
            memcpy(o + w, b + i, need + 1);
            w += need + 1;
            i += need + 1;
        } else {
            /* one replacement per maximal subpart of a valid sequence */
            o[w++] = (char)0xEF;
            o[w++] = (char)0xBF;
            o[w++] = (char)0xBD;
            i += 1 + got;
        }
    }
    tp_status st = tp__toklist_add(out, o, w, err);
    free(o);
    return st;
}

/* ------------------------------------------------------------ decoder */

typedef struct bl_dec {
    tp__decoder base;
    byte_map map;
} bl_dec;

static tp_status bl_decode_chain(const tp__decoder *self, const tp__toklist *in, tp__toklist *out,
                                 tp_error *err)
{
    const bl_dec *d = (const bl_dec *)self;
    const uint32_t *it = in->items.data;
    const char *buf = in->buf.data;
    unsigned char *bytes = malloc(in->buf.len + 1);
    if (!bytes) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    size_t nb = 0;
    for (size_t i = 0; i < in->items.len; i++) {
        const char *t = buf + it[2 * i];
        size_t len = it[2 * i + 1], start = nb, p = 0;
        int ok = 1;
        while (p < len) {
            uint32_t cp;
            int k = tp__utf8_decode(t + p, len - p, &cp);
            if (cp >= 324 || d->map.rev[cp] < 0) {
                ok = 0;
                break;
            }
            bytes[nb++] = (unsigned char)d->map.rev[cp];
            p += (size_t)k;
        }
        if (!ok) {
            /* a token outside the byte alphabet (an added token) keeps its bytes */
            nb = start;
            memcpy(bytes + nb, t, len);
            nb += len;
        }
    }
    tp_status st = tp__utf8_lossy_add(out, bytes, nb, err);
    free(bytes);
    return st;
}

static void bl_dec_free(tp__decoder *self) { free(self); }

static const tp__decoder_ops bl_dec_ops = {"ByteLevel", bl_decode_chain, bl_dec_free};

tp_status tp__byte_level_decoder_new(tp__decoder **out, tp_error *err)
{
    bl_dec *d = calloc(1, sizeof *d);
    if (!d) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    d->base.ops = &bl_dec_ops;
    byte_map_init(&d->map);
    *out = &d->base;
    return TP_OK;
}

tp_status tp__byte_level_decoder_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                           tp_error *err)
{
    (void)j;
    (void)what;
    return tp__byte_level_decoder_new(out, err);
}
