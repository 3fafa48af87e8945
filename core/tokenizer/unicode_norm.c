/* unicode_norm.c: the NFC, NFKC and NFKD normalizers (utf8proc) and Strip. The
 * text is cut before every character that starts a new composition context (a
 * starter that cannot compose with what precedes it); each chunk is normalized
 * alone, which gives the same text as normalizing the whole string, and its i-th
 * output character takes the span of the i-th input character (extra ones the span
 * of the last), which is how tokenizers aligns a composition or an expansion.
 * Thread-safety: immutable after construction. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/spm_internal.h"

typedef struct unorm {
    tp__normalizer base;
    int options;
} unorm;

static void swap_nstr(tp__nstr *a, tp__nstr *b)
{
    tp__nstr t = *a;
    *a = *b;
    *b = t;
}

/* Whether a chunk may start at c: a starter that never composes as a second
 * character (Hangul vowel and trailing jamo compose algorithmically). */
static int chunk_start(uint32_t c)
{
    if (c < 0x80) return 1;
    if ((c >= 0x1161 && c <= 0x1175) || (c >= 0x11A8 && c <= 0x11C2)) return 0;
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
    if (p->combining_class != 0) return 0;
    if (p->comb_index != UINT16_MAX && p->comb_index >= 0x8000) return 0;
    return 1;
}

static tp_status un_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                              tp_error *err)
{
    const unorm *u = (const unorm *)self;
    tmp->len = 0;
    TP_TRY(tp__nstr_reserve(tmp, n->len + n->len / 2 + 8, err));
    size_t i = 0;
    while (i < n->len) {
        uint32_t c;
        size_t j = i + (size_t)tp__utf8_decode(n->s + i, n->len - i, &c);
        while (j < n->len) {
            uint32_t d;
            int k = tp__utf8_decode(n->s + j, n->len - j, &d);
            if (chunk_start(d)) break;
            j += (size_t)k;
        }
        if (j - i == 1) { /* an ASCII character alone is its own normal form */
            TP_TRY(tp__nstr_append(tmp, n->s + i, 1, n->al + i, n->al[i], err));
            i = j;
            continue;
        }
        utf8proc_uint8_t *o = NULL;
        utf8proc_ssize_t ol = utf8proc_map((const utf8proc_uint8_t *)n->s + i,
                                           (utf8proc_ssize_t)(j - i), &o,
                                           (utf8proc_option_t)u->options);
        if (ol < 0) {
            free(o);
            if (ol == UTF8PROC_ERROR_NOMEM)
                return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
            /* invalid input cannot reach here (texts are validated); keep it */
            TP_TRY(tp__nstr_append(tmp, n->s + i, j - i, n->al + i, n->al[i], err));
            i = j;
            continue;
        }
        size_t src = i, q = 0;
        tp__span last = n->al[i];
        tp_status st = TP_OK;
        while (q < (size_t)ol && st == TP_OK) {
            uint32_t d;
            q += (size_t)tp__utf8_decode((const char *)o + q, (size_t)ol - q, &d);
            if (src < j) {
                last = n->al[src];
                uint32_t x;
                src += (size_t)tp__utf8_decode(n->s + src, j - src, &x);
            }
            st = tp__nstr_push(tmp, d, last, err);
        }
        free(o);
        TP_TRY(st);
        i = j;
    }
    swap_nstr(n, tmp);
    return TP_OK;
}

static void un_free(tp__normalizer *self) { free(self); }

static const tp__normalizer_ops nfc_ops = {"NFC", un_normalize, un_free};
static const tp__normalizer_ops nfkc_ops = {"NFKC", un_normalize, un_free};
static const tp__normalizer_ops nfkd_ops = {"NFKD", un_normalize, un_free};

tp_status tp__unicode_norm_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                     tp_error *err)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "";
    unorm *u = calloc(1, sizeof *u);
    if (!u) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    if (strcmp(type, "NFC") == 0) {
        u->base.ops = &nfc_ops;
        u->options = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    } else if (strcmp(type, "NFKC") == 0) {
        u->base.ops = &nfkc_ops;
        u->options = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    } else if (strcmp(type, "NFKD") == 0) {
        u->base.ops = &nfkd_ops;
        u->options = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    } else {
        free(u);
        return tp__error(err, TP_ERR_UNSUPPORTED, "%s: normalizer type '%s' is not supported",
                         what, type);
    }
    *out = &u->base;
    return TP_OK;
}

/* ------------------------------------------------------------ Strip */

typedef struct strip_norm {
    tp__normalizer base;
    int left, right;
} strip_norm;

static tp_status strip_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                                 tp_error *err)
{
    const strip_norm *s = (const strip_norm *)self;
    size_t a = 0, b = n->len;
    while (s->left && a < b) {
        uint32_t c;
        int k = tp__utf8_decode(n->s + a, b - a, &c);
        if (!tp__uc_is_whitespace(c)) break;
        a += (size_t)k;
    }
    while (s->right && b > a) {
        size_t k = b - 1;
        while (k > a && ((unsigned char)n->s[k] & 0xC0) == 0x80) k--;
        uint32_t c;
        tp__utf8_decode(n->s + k, b - k, &c);
        if (!tp__uc_is_whitespace(c)) break;
        b = k;
    }
    if (a == 0 && b == n->len) return TP_OK;
    tmp->len = 0;
    TP_TRY(tp__nstr_append(tmp, n->s + a, b - a, n->al + a, (tp__span){0, 0}, err));
    swap_nstr(n, tmp);
    return TP_OK;
}

static const tp__normalizer_ops strip_ops = {"Strip", strip_normalize, un_free};

tp_status tp__strip_norm_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                   tp_error *err)
{
    strip_norm *s = calloc(1, sizeof *s);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    s->base.ops = &strip_ops;
    tp_status st = tp__json_bool(j, "left", 1, &s->left, what, err);
    if (st == TP_OK) st = tp__json_bool(j, "right", 1, &s->right, what, err);
    if (st != TP_OK) {
        free(s);
        return st;
    }
    *out = &s->base;
    return TP_OK;
}
