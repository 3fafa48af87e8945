/* norm_bpe.c: the Prepend and Replace normalizers (SentencePiece-style BPE uses
 * them to turn spaces into '▁'), with tokenizers' alignment rules: prepended
 * characters take the span of the first character; a replacement takes the span
 * of the last byte it replaces (of the byte before an empty match). Thread-safety:
 * immutable after construction. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/bpe_family.h"

static void swap_nstr(tp__nstr *a, tp__nstr *b)
{
    tp__nstr t = *a;
    *a = *b;
    *b = t;
}

/* ------------------------------------------------------------ Prepend */

typedef struct prepend_norm {
    tp__normalizer base;
    char *s;
    size_t len;
} prepend_norm;

static tp_status prepend_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                                   tp_error *err)
{
    const prepend_norm *p = (const prepend_norm *)self;
    if (!n->len) return TP_OK;
    tmp->len = 0;
    TP_TRY(tp__nstr_append(tmp, p->s, p->len, NULL, n->al[0], err));
    TP_TRY(tp__nstr_append(tmp, n->s, n->len, n->al, (tp__span){0, 0}, err));
    swap_nstr(n, tmp);
    return TP_OK;
}

static void prepend_free(tp__normalizer *self)
{
    prepend_norm *p = (prepend_norm *)self;
    free(p->s);
    free(p);
}

static const tp__normalizer_ops prepend_ops = {"Prepend", prepend_normalize, prepend_free};

tp_status tp__prepend_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                tp_error *err)
{
    const char *s;
    TP_TRY(tp__json_string(j, "prepend", NULL, &s, what, err));
    if (!s) return tp__error(err, TP_ERR_FORMAT, "%s: missing key 'normalizer.prepend'", what);
    prepend_norm *p = calloc(1, sizeof *p);
    if (!p || !(p->s = strdup(s))) {
        free(p);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    p->base.ops = &prepend_ops;
    p->len = strlen(s);
    *out = &p->base;
    return TP_OK;
}

/* ------------------------------------------------------------ Replace */

typedef struct replace_norm {
    tp__normalizer base;
    tp__pattern *pat;
    char *content;
    size_t content_len;
} replace_norm;

typedef struct repl_ctx {
    const replace_norm *r;
    const tp__nstr *in;
    tp__nstr *out;
    size_t last;
} repl_ctx;

static tp_status repl_match(void *ctx, size_t a, size_t b, tp_error *err)
{
    repl_ctx *c = ctx;
    const tp__nstr *in = c->in;
    TP_TRY(tp__nstr_append(c->out, in->s + c->last, a - c->last, in->al + c->last, (tp__span){0, 0},
                           err));
    tp__span sp = b > 0 ? in->al[b - 1] : (tp__span){0, 0};
    TP_TRY(tp__nstr_append(c->out, c->r->content, c->r->content_len, NULL, sp, err));
    c->last = b;
    return TP_OK;
}

static tp_status replace_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                                   tp_error *err)
{
    const replace_norm *r = (const replace_norm *)self;
    tmp->len = 0;
    TP_TRY(tp__nstr_reserve(tmp, n->len + 16, err));
    repl_ctx c = {r, n, tmp, 0};
    TP_TRY(tp__pattern_each(r->pat, n->s, n->len, repl_match, &c, err));
    TP_TRY(tp__nstr_append(tmp, n->s + c.last, n->len - c.last, n->al + c.last, (tp__span){0, 0},
                           err));
    swap_nstr(n, tmp);
    return TP_OK;
}

static void replace_free(tp__normalizer *self)
{
    replace_norm *r = (replace_norm *)self;
    tp__pattern_free(r->pat);
    free(r->content);
    free(r);
}

static const tp__normalizer_ops replace_ops = {"Replace", replace_normalize, replace_free};

tp_status tp__replace_norm_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                     tp_error *err)
{
    const char *content;
    TP_TRY(tp__json_string(j, "content", NULL, &content, what, err));
    if (!content) return tp__error(err, TP_ERR_FORMAT, "%s: missing key 'normalizer.content'", what);
    replace_norm *r = calloc(1, sizeof *r);
    if (!r || !(r->content = strdup(content))) {
        free(r);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    r->base.ops = &replace_ops;
    r->content_len = strlen(content);
    tp_status st = tp__pattern_parse(cJSON_GetObjectItemCaseSensitive(j, "pattern"),
                                     "normalizer.pattern", what, &r->pat, err);
    if (st != TP_OK) {
        replace_free(&r->base);
        return st;
    }
    *out = &r->base;
    return TP_OK;
}
