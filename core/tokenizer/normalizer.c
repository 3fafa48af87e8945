/* normalizer.c: normalizer components (BertNormalizer, Lowercase, NFD,
 * StripAccents, Sequence) and the JSON registry that builds them. Every kind
 * rewrites a tp__nstr keeping per-byte original spans, so offsets survive.
 * Thread-safety: components are immutable after construction. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/bpe_family.h"
#include "tokenizer/spm_internal.h"

static void swap_nstr(tp__nstr *a, tp__nstr *b)
{
    tp__nstr t = *a;
    *a = *b;
    *b = t;
}

tp_status tp__normalize(const tp__normalizer *norm, tp__nstr *n, tp__nstr *tmp, tp_error *err)
{
    if (!norm) return TP_OK;
    return norm->ops->normalize(norm, n, tmp, err);
}

void tp__normalizer_free(tp__normalizer *n)
{
    if (n) n->ops->free(n);
}

static void simple_free(tp__normalizer *n) { free(n); }

/* ------------------------------------------------------------ BertNormalizer */

typedef struct bert_norm {
    tp__normalizer base;
    int clean_text, handle_chinese, strip_accents, lowercase;
} bert_norm;

/* Emits c (already cleaned) applying accent stripping and lowercasing. */
static tp_status bert_emit(const bert_norm *b, uint32_t c, tp__span sp, tp__nstr *out,
                           tp_error *err)
{
    uint32_t dec[8];
    int nd = 1;
    dec[0] = c;
    if (b->strip_accents) nd = tp__uc_nfd(c, dec, 8);
    for (int i = 0; i < nd; i++) {
        uint32_t d = dec[i];
        if (b->strip_accents && tp__uc_is_mn(d)) continue;
        if (b->lowercase) {
            uint32_t lo[3];
            int nl = tp__uc_lower(d, lo);
            for (int k = 0; k < nl; k++) TP_TRY(tp__nstr_push(out, lo[k], sp, err));
        } else {
            TP_TRY(tp__nstr_push(out, d, sp, err));
        }
    }
    return TP_OK;
}

static tp_status bert_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                                tp_error *err)
{
    const bert_norm *b = (const bert_norm *)self;
    tmp->len = 0;
    TP_TRY(tp__nstr_reserve(tmp, n->len + n->len / 2 + 8, err));
    size_t i = 0;
    while (i < n->len) {
        unsigned char ch = (unsigned char)n->s[i];
        tp__span sp = n->al[i];
        if (ch < 0x80) {
            /* ASCII fast path: no accents, no CJK, simple lowercase */
            i++;
            if (b->clean_text) {
                if (ch == 0 || ((ch < 0x20 || ch == 0x7F) && ch != '\t' && ch != '\n' &&
                                ch != '\r'))
                    continue;
                if (ch == '\t' || ch == '\n' || ch == '\r') ch = ' ';
            }
            if (b->lowercase && ch >= 'A' && ch <= 'Z') ch = (unsigned char)(ch + 32);
            if (tmp->len + 1 > tmp->cap) TP_TRY(tp__nstr_reserve(tmp, tmp->len + 1, err));
            tmp->s[tmp->len] = (char)ch;
            tmp->al[tmp->len++] = sp;
            continue;
        }
        uint32_t c;
        int k = tp__utf8_decode(n->s + i, n->len - i, &c);
        i += (size_t)k;
        if (b->clean_text) {
            if (c == 0xFFFD || tp__uc_is_bert_control(c)) continue;
            if (tp__uc_is_whitespace(c)) c = ' ';
        }
        if (b->handle_chinese && tp__uc_is_cjk(c)) {
            TP_TRY(tp__nstr_push(tmp, ' ', sp, err));
            TP_TRY(bert_emit(b, c, sp, tmp, err));
            TP_TRY(tp__nstr_push(tmp, ' ', sp, err));
            continue;
        }
        TP_TRY(bert_emit(b, c, sp, tmp, err));
    }
    swap_nstr(n, tmp);
    return TP_OK;
}

static const tp__normalizer_ops bert_ops = {"BertNormalizer", bert_normalize, simple_free};

tp_status tp__bert_normalizer_new(int clean_text, int handle_chinese, int strip_accents,
                                  int lowercase, tp__normalizer **out, tp_error *err)
{
    bert_norm *b = calloc(1, sizeof *b);
    if (!b) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    b->base.ops = &bert_ops;
    b->clean_text = clean_text;
    b->handle_chinese = handle_chinese;
    b->strip_accents = strip_accents < 0 ? lowercase : strip_accents;
    b->lowercase = lowercase;
    *out = &b->base;
    return TP_OK;
}

static tp_status bert_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                tp_error *err)
{
    int clean, chinese, lower, strip = -1;
    TP_TRY(tp__json_bool(j, "clean_text", 1, &clean, what, err));
    TP_TRY(tp__json_bool(j, "handle_chinese_chars", 1, &chinese, what, err));
    TP_TRY(tp__json_bool(j, "lowercase", 1, &lower, what, err));
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(j, "strip_accents");
    if (sa && !cJSON_IsNull(sa)) TP_TRY(tp__json_bool(j, "strip_accents", 0, &strip, what, err));
    return tp__bert_normalizer_new(clean, chinese, strip, lower, out, err);
}

/* ------------------------------------------------------------ Lowercase */

static tp_status lower_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                                 tp_error *err)
{
    (void)self;
    tmp->len = 0;
    TP_TRY(tp__nstr_reserve(tmp, n->len + 8, err));
    size_t i = 0;
    while (i < n->len) {
        uint32_t c, lo[3];
        tp__span sp = n->al[i];
        i += (size_t)tp__utf8_decode(n->s + i, n->len - i, &c);
        int nl = tp__uc_lower(c, lo);
        for (int k = 0; k < nl; k++) TP_TRY(tp__nstr_push(tmp, lo[k], sp, err));
    }
    swap_nstr(n, tmp);
    return TP_OK;
}

static const tp__normalizer_ops lower_ops = {"Lowercase", lower_normalize, simple_free};

/* ------------------------------------------------------------ StripAccents */

static tp_status strip_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                                 tp_error *err)
{
    (void)self;
    tmp->len = 0;
    TP_TRY(tp__nstr_reserve(tmp, n->len + 8, err));
    size_t i = 0;
    while (i < n->len) {
        uint32_t c;
        size_t at = i;
        int k = tp__utf8_decode(n->s + i, n->len - i, &c);
        i += (size_t)k;
        if (tp__uc_is_mn(c)) continue;
        TP_TRY(tp__nstr_append(tmp, n->s + at, (size_t)k, n->al + at, n->al[at], err));
    }
    swap_nstr(n, tmp);
    return TP_OK;
}

static const tp__normalizer_ops strip_ops = {"StripAccents", strip_normalize, simple_free};

/* ------------------------------------------------------------ NFD */

typedef struct cp_span {
    uint32_t cp;
    tp__span sp;
    int ccc;
} cp_span;

static tp_status nfd_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                               tp_error *err)
{
    (void)self;
    tp__vec v = {NULL, 0, 0, sizeof(cp_span)};
    tp_status st = tp__vec_reserve(&v, n->len + 8, err);
    size_t i = 0;
    while (st == TP_OK && i < n->len) {
        uint32_t c, dec[32];
        tp__span sp = n->al[i];
        i += (size_t)tp__utf8_decode(n->s + i, n->len - i, &c);
        int nd = tp__uc_nfd(c, dec, 32);
        for (int k = 0; k < nd && st == TP_OK; k++) {
            cp_span *e = tp__vec_push(&v, err);
            if (!e) { st = TP_ERR_NOMEM; break; }
            e->cp = dec[k];
            e->sp = sp;
            e->ccc = tp__uc_ccc(dec[k]);
        }
    }
    if (st == TP_OK) {
        /* canonical ordering: stable sort of each run of non-starters by class */
        cp_span *a = v.data;
        for (size_t x = 1; x < v.len; x++) {
            if (a[x].ccc == 0) continue;
            size_t y = x;
            while (y > 0 && a[y - 1].ccc > a[y].ccc) {
                cp_span t = a[y - 1];
                a[y - 1] = a[y];
                a[y] = t;
                y--;
            }
        }
        tmp->len = 0;
        for (size_t x = 0; x < v.len && st == TP_OK; x++) st = tp__nstr_push(tmp, a[x].cp, a[x].sp, err);
        if (st == TP_OK) swap_nstr(n, tmp);
    }
    tp__vec_free(&v);
    return st;
}

static const tp__normalizer_ops nfd_ops = {"NFD", nfd_normalize, simple_free};

static tp_status simple_new(const tp__normalizer_ops *ops, tp__normalizer **out, tp_error *err)
{
    tp__normalizer *n = calloc(1, sizeof *n);
    if (!n) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    n->ops = ops;
    *out = n;
    return TP_OK;
}

static tp_status lower_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                 tp_error *err)
{
    (void)j; (void)what;
    return simple_new(&lower_ops, out, err);
}

static tp_status strip_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                 tp_error *err)
{
    (void)j; (void)what;
    return simple_new(&strip_ops, out, err);
}

static tp_status nfd_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                               tp_error *err)
{
    (void)j; (void)what;
    return simple_new(&nfd_ops, out, err);
}

/* ------------------------------------------------------------ Sequence */

typedef struct seq_norm {
    tp__normalizer base;
    tp__normalizer **items;
    size_t n;
} seq_norm;

static tp_status seq_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                               tp_error *err)
{
    const seq_norm *s = (const seq_norm *)self;
    for (size_t i = 0; i < s->n; i++) TP_TRY(s->items[i]->ops->normalize(s->items[i], n, tmp, err));
    return TP_OK;
}

static void seq_free(tp__normalizer *self)
{
    seq_norm *s = (seq_norm *)self;
    for (size_t i = 0; i < s->n; i++) tp__normalizer_free(s->items[i]);
    free(s->items);
    free(s);
}

static const tp__normalizer_ops seq_ops = {"Sequence", seq_normalize, seq_free};

static tp_status seq_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                               tp_error *err)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "normalizers");
    if (!cJSON_IsArray(arr))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'normalizer.normalizers' must be an array",
                         what);
    seq_norm *s = calloc(1, sizeof *s);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    s->base.ops = &seq_ops;
    size_t cnt = (size_t)cJSON_GetArraySize(arr);
    s->items = calloc(cnt ? cnt : 1, sizeof *s->items);
    if (!s->items) {
        free(s);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        tp__normalizer *child = NULL;
        tp_status st = tp__normalizer_from_json(it, what, &child, err);
        if (st != TP_OK) {
            seq_free(&s->base);
            return st;
        }
        if (child) s->items[s->n++] = child;
    }
    *out = &s->base;
    return TP_OK;
}

/* ------------------------------------------------------------ registry */

typedef tp_status (*norm_parse_fn)(const cJSON *, const char *, tp__normalizer **, tp_error *);
static const struct {
    const char *type;
    norm_parse_fn parse;
} kinds[] = {
    {"BertNormalizer", bert_from_json},
    {"Lowercase", lower_from_json},
    {"StripAccents", strip_from_json},
    {"NFD", nfd_from_json},
    {"Sequence", seq_from_json},
    {"Prepend", tp__prepend_from_json},
    {"Replace", tp__replace_norm_from_json},
    {"Precompiled", tp__precompiled_from_json},
    {"NFC", tp__unicode_norm_from_json},
    {"NFKC", tp__unicode_norm_from_json},
    {"NFKD", tp__unicode_norm_from_json},
    {"Strip", tp__strip_norm_from_json},
};

tp_status tp__normalizer_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                   tp_error *err)
{
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return TP_OK;
    if (!cJSON_IsObject(j))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'normalizer' must be an object, got %s",
                         what, tp__json_type_name(j));
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'normalizer.type' must be a string", what);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i].type, type->valuestring) == 0) return kinds[i].parse(j, what, out, err);
    return tp__error(err, TP_ERR_UNSUPPORTED, "%s: normalizer type '%s' is not supported", what,
                     type->valuestring);
}
