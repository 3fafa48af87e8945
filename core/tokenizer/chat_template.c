/* chat_template.c: the Jinja subset that chat_template strings use, rendered as
 * transformers' apply_chat_template(..., tokenize=False) does (jinja2's
 * ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks).
 *
 * Three steps: the lexer splits the source into text and tags and applies the
 * whitespace rules ('-' and '+' markers, trim_blocks, lstrip_blocks); the parser
 * builds an AST; the evaluator walks it over values that borrow the caller's
 * cJSON (messages) or live in the render's arena. Every render is bounded: output
 * size, arena memory and evaluation steps are capped and nesting depth is capped
 * at parse time, so a hostile template fails with an error instead of hanging.
 * docs/chat-templates.md lists the subset.
 *
 * Thread-safety: a compiled template is immutable; each render owns its state. */
#include "tokenizer/chat_template.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json_util.h"

#define CT_OUTPUT_MAX (1u << 20)        /* rendered text */
#define CT_ARENA_MAX (64u << 20)        /* render working memory */
#define CT_STEPS_MAX 2000000L           /* evaluation steps (loop bodies, expressions) */
#define CT_DEPTH_MAX 128                /* nesting of blocks and expressions */
#define CT_SOURCE_MAX (1u << 20)

/* ------------------------------------------------------------------ arena */

typedef struct ct_chunk {
    struct ct_chunk *next;
    size_t used, size;
    _Alignas(16) unsigned char data[];
} ct_chunk;

typedef struct {
    ct_chunk *head;
    size_t total, cap;
    int capped; /* an allocation was refused by the cap (not by malloc) */
} ct_arena;

static void *arena_alloc(ct_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->size - a->head->used < n) {
        size_t size = n > 65536 ? n : 65536;
        if (a->total + size > a->cap) {
            a->capped = 1;
            return NULL;
        }
        ct_chunk *c = malloc(sizeof *c + size);
        if (!c)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->size = size;
        a->head = c;
        a->total += size;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(ct_arena *a)
{
    for (ct_chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    a->head = NULL;
    a->total = 0;
}

/* ------------------------------------------------------------------ lexer */

typedef enum {
    T_TEXT, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME, T_STRING, T_INT,
    T_FLOAT, T_OP, T_EOF
} ct_tok_kind;

typedef struct {
    ct_tok_kind kind;
    int line;
    const char *s; /* T_TEXT, T_NAME, T_OP: into the source; T_STRING: decoded copy */
    size_t len;
    int64_t i;
    double f;
} ct_tok;

typedef struct {
    ct_tok *v;
    size_t n, cap;
} ct_toks;

typedef struct {
    const char *src;
    size_t len, pos;
    int line;
    ct_toks toks;
    ct_arena *arena;
    tp_error *err;
} ct_lexer;

static tp_status lex_push(ct_lexer *lx, ct_tok t)
{
    if (lx->toks.n == lx->toks.cap) {
        size_t cap = lx->toks.cap ? lx->toks.cap * 2 : 64;
        ct_tok *v = realloc(lx->toks.v, cap * sizeof *v);
        if (!v)
            return tp__error(lx->err, TP_ERR_NOMEM, "chat_template: out of memory");
        lx->toks.v = v;
        lx->toks.cap = cap;
    }
    lx->toks.v[lx->toks.n++] = t;
    return TP_OK;
}

static int count_lines(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == '\n';
    return k;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Appends a code point as UTF-8. */
static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A string literal as Python reads it (jinja2 evaluates literals with Python's
 * rules): \n \t \r \\ \' \" \xNN \uNNNN \UNNNNNNNN; unknown escapes stay as is. */
static tp_status lex_string(ct_lexer *lx)
{
    char q = lx->src[lx->pos];
    int line = lx->line;
    size_t start = ++lx->pos;
    size_t end = start;
    while (end < lx->len && lx->src[end] != q) {
        if (lx->src[end] == '\\' && end + 1 < lx->len)
            end++;
        end++;
    }
    if (end >= lx->len)
        return tp__error(lx->err, TP_ERR_FORMAT, "chat_template: line %d: unterminated string",
                         line);
    char *o = arena_alloc(lx->arena, end - start + 1);
    if (!o)
        return tp__error(lx->err, TP_ERR_NOMEM, "chat_template: out of memory");
    size_t n = 0;
    for (size_t i = start; i < end; i++) {
        char c = lx->src[i];
        if (c != '\\') {
            o[n++] = c;
            continue;
        }
        char e = lx->src[++i];
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (digits) {
            uint32_t cp = 0;
            int ok = i + (size_t)digits < end;
            for (int d = 0; ok && d < digits; d++) {
                int h = hexval(lx->src[i + 1 + d]);
                if (h < 0) ok = 0; else cp = cp * 16 + (uint32_t)h;
            }
            if (!ok || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return tp__error(lx->err, TP_ERR_FORMAT,
                                 "chat_template: line %d: bad \\%c escape in string", line, e);
            n += put_utf8(o + n, cp); /* never longer than the escape itself */
            i += (size_t)digits;
            continue;
        }
        switch (e) {
        case 'n': o[n++] = '\n'; break;
        case 't': o[n++] = '\t'; break;
        case 'r': o[n++] = '\r'; break;
        case '0': o[n++] = '\0'; break;
        case 'a': o[n++] = '\a'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'v': o[n++] = '\v'; break;
        case '\\': case '\'': case '"': o[n++] = e; break;
        case '\n': lx->line++; break; /* line continuation */
        default: o[n++] = '\\'; o[n++] = e; break;
        }
    }
    lx->line += count_lines(lx->src + start, end - start);
    lx->pos = end + 1;
    return lex_push(lx, (ct_tok){.kind = T_STRING, .line = line, .s = o, .len = n});
}

static const char *const OPS3[] = {"//", "**", "==", "!=", "<=", ">="};

/* Tokens of one tag, up to its closing delimiter ("}}" or "%}"), honouring
 * strings so "%}" inside a literal does not close the tag. Sets *strip_after
 * ('-') and *keep_after ('+'). */
static tp_status lex_tag(ct_lexer *lx, char close, int *strip_after, int *keep_after)
{
    int open_line = lx->line;
    for (;;) {
        while (lx->pos < lx->len && is_ws(lx->src[lx->pos])) {
            if (lx->src[lx->pos] == '\n') lx->line++;
            lx->pos++;
        }
        if (lx->pos >= lx->len)
            return tp__error(lx->err, TP_ERR_FORMAT,
                             "chat_template: line %d: unterminated '%s' tag", open_line,
                             close == '}' ? "{{" : "{%");
        const char *p = lx->src + lx->pos;
        size_t rest = lx->len - lx->pos;
        /* closing: [-+]?X} */
        size_t mark = (p[0] == '-' || p[0] == '+') ? 1 : 0;
        if (rest >= mark + 2 && p[mark] == close && p[mark + 1] == '}') {
            *strip_after = p[0] == '-';
            *keep_after = p[0] == '+';
            lx->pos += mark + 2;
            return TP_OK;
        }
        ct_tok t = {.line = lx->line, .s = p};
        if (*p == '\'' || *p == '"') {
            tp_status st = lex_string(lx);
            if (st) return st;
            continue;
        }
        if (is_name_start(*p)) {
            size_t n = 1;
            while (n < rest && (is_name_start(p[n]) || is_digit(p[n]))) n++;
            t.kind = T_NAME;
            t.len = n;
        } else if (is_digit(*p)) {
            size_t n = 0;
            while (n < rest && (is_digit(p[n]) || p[n] == '_')) n++;
            int is_float = n + 1 < rest && p[n] == '.' && is_digit(p[n + 1]);
            if (is_float) {
                n++;
                while (n < rest && is_digit(p[n])) n++;
            }
            char buf[64];
            size_t k = 0;
            for (size_t j = 0; j < n && k < sizeof buf - 1; j++)
                if (p[j] != '_') buf[k++] = p[j];
            buf[k] = 0;
            errno = 0;
            if (is_float) {
                t.kind = T_FLOAT;
                t.f = strtod(buf, NULL);
            } else {
                t.kind = T_INT;
                t.i = strtoll(buf, NULL, 10);
                if (errno == ERANGE)
                    return tp__error(lx->err, TP_ERR_UNSUPPORTED,
                                     "chat_template: line %d: integer literal too large", t.line);
            }
            t.len = n;
        } else {
            t.kind = T_OP;
            t.len = 1;
            for (size_t j = 0; j < sizeof OPS3 / sizeof *OPS3; j++)
                if (rest >= 2 && memcmp(p, OPS3[j], 2) == 0) t.len = 2;
            if (t.len == 1 && !strchr("+-*/%~()[]{}.,:|=<>!", *p))
                return tp__error(lx->err, TP_ERR_FORMAT,
                                 "chat_template: line %d: unexpected character '%c'", t.line,
                                 *p);
        }
        lx->pos += t.len;
        tp_status st = lex_push(lx, t);
        if (st) return st;
    }
}

/* Text between tags, then the tags. Whitespace rules, as jinja2 applies them:
 * '-' on a tag strips all whitespace on that side; lstrip_blocks removes spaces
 * and tabs between a line start and a block or comment tag (unless '{%+');
 * trim_blocks removes the first newline after a block or comment tag (unless
 * '+%}'). Variable tags ({{ }}) only follow the '-' markers. */
static tp_status lex_all(ct_lexer *lx)
{
    int strip_next = 0, trim_next = 0;
    while (lx->pos <= lx->len) {
        const char *p = lx->src + lx->pos;
        size_t rest = lx->len - lx->pos;
        /* the next tag start */
        size_t k = 0;
        while (k + 1 < rest && !(p[k] == '{' && (p[k + 1] == '{' || p[k + 1] == '%' || p[k + 1] == '#')))
            k++;
        int has_tag = k + 1 < rest;
        size_t text_len = has_tag ? k : rest;
        const char *text = p;
        int text_line = lx->line;
        char kind = has_tag ? p[k + 1] : 0;
        char marker = has_tag && k + 2 < rest ? p[k + 2] : 0;
        /* leading side of the text: the previous tag's markers */
        if (strip_next) {
            while (text_len && is_ws(*text)) {
                if (*text == '\n') text_line++;
                text++, text_len--;
            }
        } else if (trim_next) {
            if (text_len && *text == '\n') text++, text_len--, text_line++;
            else if (text_len >= 2 && text[0] == '\r' && text[1] == '\n') text += 2, text_len -= 2, text_line++;
        }
        /* trailing side: this tag's markers */
        if (has_tag && marker == '-') {
            while (text_len && is_ws(text[text_len - 1])) text_len--;
        } else if (has_tag && (kind == '%' || kind == '#') && marker != '+') {
            size_t j = text_len;
            while (j && (text[j - 1] == ' ' || text[j - 1] == '\t')) j--;
            const char *q = text + j;
            if (q == lx->src || q[-1] == '\n')
                text_len = j;
        }
        if (text_len) {
            tp_status st = lex_push(lx, (ct_tok){.kind = T_TEXT, .line = text_line, .s = text, .len = text_len});
            if (st) return st;
        }
        lx->line += count_lines(p, has_tag ? k : rest);
        if (!has_tag)
            break;
        lx->pos += k + 2 + (marker == '-' || marker == '+');
        int tag_line = lx->line;
        strip_next = trim_next = 0;
        if (kind == '#') {
            const char *end = NULL;
            for (size_t j = lx->pos; j + 1 < lx->len; j++)
                if (lx->src[j] == '#' && lx->src[j + 1] == '}') { end = lx->src + j; break; }
            if (!end)
                return tp__error(lx->err, TP_ERR_FORMAT,
                                 "chat_template: line %d: unterminated comment", tag_line);
            strip_next = end > lx->src + lx->pos && end[-1] == '-';
            trim_next = !(end > lx->src + lx->pos && end[-1] == '+');
            lx->line += count_lines(lx->src + lx->pos, (size_t)(end - (lx->src + lx->pos)));
            lx->pos = (size_t)(end - lx->src) + 2;
            continue;
        }
        tp_status st = lex_push(lx, (ct_tok){.kind = kind == '{' ? T_VAR_BEGIN : T_BLOCK_BEGIN,
                                             .line = tag_line});
        if (st) return st;
        int strip_after = 0, keep_after = 0;
        st = lex_tag(lx, kind == '{' ? '}' : '%', &strip_after, &keep_after);
        if (st) return st;
        st = lex_push(lx, (ct_tok){.kind = kind == '{' ? T_VAR_END : T_BLOCK_END, .line = lx->line});
        if (st) return st;
        strip_next = strip_after;
        trim_next = kind == '%' && !keep_after;
        /* {% raw %} would need the lexer to stop tokenizing: out of the subset */
        ct_tok *b = &lx->toks.v[lx->toks.n - 2];
        if (kind == '%' && b->kind == T_NAME && b->len == 3 && memcmp(b->s, "raw", 3) == 0 &&
            b[-1].kind == T_BLOCK_BEGIN)
            return tp__error(lx->err, TP_ERR_UNSUPPORTED,
                             "chat_template: line %d: tag 'raw' is not supported", tag_line);
    }
    return lex_push(lx, (ct_tok){.kind = T_EOF, .line = lx->line});
}

/* ------------------------------------------------------------------ AST */

typedef enum {
    /* statements */
    S_TEXT, S_OUTPUT, S_IF, S_FOR, S_SET, S_BREAK, S_CONTINUE,
    /* expressions */
    E_LIT_STR, E_LIT_INT, E_LIT_FLOAT, E_LIT_BOOL, E_LIT_NONE, E_NAME, E_ATTR, E_INDEX,
    E_SLICE, E_CALL, E_FILTER, E_TEST, E_BIN, E_NEG, E_POS, E_AND, E_OR, E_NOT, E_COND,
    E_LIST, E_DICT
} ct_kind;

typedef struct ct_node ct_node;
struct ct_node {
    ct_kind kind;
    int line;
    int op;           /* E_BIN: operator code; E_TEST: negated */
    const char *s;    /* names, string literal bytes */
    size_t n;
    const char *s2;   /* S_FOR second target, S_SET attribute */
    size_t n2;
    int64_t i;
    double f;
    ct_node *a, *b, *c, *d;
    ct_node **args;   /* E_CALL/E_FILTER/E_TEST positional args, E_LIST/E_DICT items */
    int nargs;
    const char **kw;  /* keyword argument names (nargs_kw of them, after args) */
    size_t *kwlen;
    ct_node **kwv;
    int nkw;
    ct_node *next;    /* next statement */
};

enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CONCAT, OP_EQ, OP_NE,
       OP_LT, OP_GT, OP_LE, OP_GE, OP_IN, OP_NOTIN };

struct tp__chat_template {
    ct_arena arena;
    ct_node *body;
    char *src; /* token strings point into it */
};

typedef struct {
    ct_tok *t;
    size_t pos;
    ct_arena *arena;
    tp_error *err;
    int depth;
} ct_parser;

static ct_tok *peek(ct_parser *p) { return &p->t[p->pos]; }

static int tok_is(const ct_tok *t, ct_tok_kind k, const char *s)
{
    if (t->kind != k) return 0;
    if (!s) return 1;
    return strlen(s) == t->len && memcmp(t->s, s, t->len) == 0;
}

static int accept(ct_parser *p, ct_tok_kind k, const char *s)
{
    if (!tok_is(peek(p), k, s)) return 0;
    p->pos++;
    return 1;
}

static const char *tok_desc(const ct_tok *t, char *buf, size_t size)
{
    switch (t->kind) {
    case T_EOF: return "end of template";
    case T_TEXT: return "text";
    case T_VAR_END: return "'}}'";
    case T_BLOCK_END: return "'%}'";
    case T_VAR_BEGIN: return "'{{'";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_STRING: return "a string";
    case T_INT: case T_FLOAT: return "a number";
    default:
        snprintf(buf, size, "'%.*s'", (int)(t->len > 40 ? 40 : t->len), t->s);
        return buf;
    }
}

static tp_status syntax(ct_parser *p, const char *what)
{
    char buf[64];
    ct_tok *t = peek(p);
    return tp__error(p->err, TP_ERR_FORMAT, "chat_template: line %d: expected %s, got %s",
                     t->line, what, tok_desc(t, buf, sizeof buf));
}

static tp_status expect(ct_parser *p, ct_tok_kind k, const char *s, const char *what)
{
    return accept(p, k, s) ? TP_OK : syntax(p, what);
}

static ct_node *node_new(ct_parser *p, ct_kind kind, int line)
{
    ct_node *n = arena_alloc(p->arena, sizeof *n);
    if (n) {
        n->kind = kind;
        n->line = line;
    } else {
        tp__error(p->err, TP_ERR_NOMEM, "chat_template: out of memory");
    }
    return n;
}

static tp_status parse_expr(ct_parser *p, ct_node **out);
static tp_status parse_or(ct_parser *p, ct_node **out);
static tp_status parse_unary(ct_parser *p, ct_node **out);

#define TRY(x) do { tp_status st_ = (x); if (st_ != TP_OK) return st_; } while (0)
#define NEW(var, kind, line) do { if (!((var) = node_new(p, (kind), (line)))) return TP_ERR_NOMEM; } while (0)

static tp_status enter(ct_parser *p, int line)
{
    if (++p->depth > CT_DEPTH_MAX)
        return tp__error(p->err, TP_ERR_UNSUPPORTED,
                         "chat_template: line %d: nesting deeper than %d", line, CT_DEPTH_MAX);
    return TP_OK;
}

/* (args, name=value, ...) after the '(' */
static tp_status parse_args(ct_parser *p, ct_node *n)
{
    ct_node *args[32], *kwv[32];
    const char *kw[32];
    size_t kwlen[32];
    int na = 0, nk = 0;
    while (!accept(p, T_OP, ")")) {
        if (na + nk)
            TRY(expect(p, T_OP, ",", "',' or ')'"));
        if (accept(p, T_OP, ")")) break;
        if (na + nk >= 32)
            return tp__error(p->err, TP_ERR_UNSUPPORTED,
                             "chat_template: line %d: more than 32 arguments", peek(p)->line);
        if (peek(p)->kind == T_NAME && tok_is(&p->t[p->pos + 1], T_OP, "=")) {
            kw[nk] = peek(p)->s;
            kwlen[nk] = peek(p)->len;
            p->pos += 2;
            TRY(parse_expr(p, &kwv[nk]));
            nk++;
        } else {
            if (nk)
                return syntax(p, "a keyword argument");
            TRY(parse_expr(p, &args[na]));
            na++;
        }
    }
    n->nargs = na;
    n->nkw = nk;
    n->args = arena_alloc(p->arena, sizeof *args * (size_t)(na + 1));
    n->kwv = arena_alloc(p->arena, sizeof *kwv * (size_t)(nk + 1));
    n->kw = arena_alloc(p->arena, sizeof *kw * (size_t)(nk + 1));
    n->kwlen = arena_alloc(p->arena, sizeof *kwlen * (size_t)(nk + 1));
    if (!n->args || !n->kwv || !n->kw || !n->kwlen)
        return tp__error(p->err, TP_ERR_NOMEM, "chat_template: out of memory");
    memcpy(n->args, args, sizeof *args * (size_t)na);
    memcpy(n->kwv, kwv, sizeof *kwv * (size_t)nk);
    memcpy(n->kw, kw, sizeof *kw * (size_t)nk);
    memcpy(n->kwlen, kwlen, sizeof *kwlen * (size_t)nk);
    return TP_OK;
}

static tp_status parse_primary(ct_parser *p, ct_node **out)
{
    ct_tok *t = peek(p);
    ct_node *n;
    TRY(enter(p, t->line));
    switch (t->kind) {
    case T_STRING:
        NEW(n, E_LIT_STR, t->line);
        n->s = t->s;
        n->n = t->len;
        p->pos++;
        /* adjacent literals concatenate, as in Python */
        while (peek(p)->kind == T_STRING) {
            ct_tok *u = peek(p);
            char *s = arena_alloc(p->arena, n->n + u->len + 1);
            if (!s) return tp__error(p->err, TP_ERR_NOMEM, "chat_template: out of memory");
            memcpy(s, n->s, n->n);
            memcpy(s + n->n, u->s, u->len);
            n->s = s;
            n->n += u->len;
            p->pos++;
        }
        break;
    case T_INT:
        NEW(n, E_LIT_INT, t->line);
        n->i = t->i;
        p->pos++;
        break;
    case T_FLOAT:
        NEW(n, E_LIT_FLOAT, t->line);
        n->f = t->f;
        p->pos++;
        break;
    case T_NAME:
        if (tok_is(t, T_NAME, "true") || tok_is(t, T_NAME, "True") ||
            tok_is(t, T_NAME, "false") || tok_is(t, T_NAME, "False")) {
            NEW(n, E_LIT_BOOL, t->line);
            n->i = t->s[0] == 't' || t->s[0] == 'T';
        } else if (tok_is(t, T_NAME, "none") || tok_is(t, T_NAME, "None")) {
            NEW(n, E_LIT_NONE, t->line);
        } else {
            NEW(n, E_NAME, t->line);
            n->s = t->s;
            n->n = t->len;
        }
        p->pos++;
        break;
    case T_OP:
        if (accept(p, T_OP, "(")) {
            if (accept(p, T_OP, ")"))
                return tp__error(p->err, TP_ERR_UNSUPPORTED,
                                 "chat_template: line %d: tuples are not supported", t->line);
            TRY(parse_expr(p, &n));
            if (tok_is(peek(p), T_OP, ","))
                return tp__error(p->err, TP_ERR_UNSUPPORTED,
                                 "chat_template: line %d: tuples are not supported", t->line);
            TRY(expect(p, T_OP, ")", "')'"));
            break;
        }
        if (accept(p, T_OP, "[") || accept(p, T_OP, "{")) {
            int dict = t->s[0] == '{';
            const char *close = dict ? "}" : "]";
            ct_node *items[256];
            int k = 0;
            NEW(n, dict ? E_DICT : E_LIST, t->line);
            while (!accept(p, T_OP, close)) {
                if (k)
                    TRY(expect(p, T_OP, ",", dict ? "',' or '}'" : "',' or ']'"));
                if (accept(p, T_OP, close)) break;
                if (k + 2 > 256)
                    return tp__error(p->err, TP_ERR_UNSUPPORTED,
                                     "chat_template: line %d: literal with over 128 items",
                                     t->line);
                TRY(parse_expr(p, &items[k++]));
                if (dict) {
                    TRY(expect(p, T_OP, ":", "':'"));
                    TRY(parse_expr(p, &items[k++]));
                }
            }
            n->nargs = k;
            n->args = arena_alloc(p->arena, sizeof *items * (size_t)(k + 1));
            if (!n->args) return tp__error(p->err, TP_ERR_NOMEM, "chat_template: out of memory");
            memcpy(n->args, items, sizeof *items * (size_t)k);
            break;
        }
        /* fall through */
    default:
        return syntax(p, "an expression");
    }
    /* postfix: .name, [index], [a:b:c], (args) */
    for (;;) {
        ct_tok *u = peek(p);
        ct_node *m;
        if (accept(p, T_OP, ".")) {
            ct_tok *name = peek(p);
            if (name->kind == T_INT) {
                NEW(m, E_INDEX, u->line);
                ct_node *idx;
                NEW(idx, E_LIT_INT, u->line);
                idx->i = name->i;
                m->b = idx;
            } else {
                if (name->kind != T_NAME) return syntax(p, "an attribute name");
                NEW(m, E_ATTR, u->line);
                m->s = name->s;
                m->n = name->len;
            }
            p->pos++;
            m->a = n;
            n = m;
        } else if (accept(p, T_OP, "[")) {
            ct_node *parts[3] = {0};
            int k = 0, colon = 0;
            for (;;) {
                if (tok_is(peek(p), T_OP, ":")) {
                    if (++k > 2) return syntax(p, "']'");
                    colon = 1;
                    p->pos++;
                    continue;
                }
                if (accept(p, T_OP, "]")) break;
                if (parts[k]) return syntax(p, "':' or ']'");
                TRY(parse_expr(p, &parts[k]));
            }
            if (!colon && !parts[0]) return syntax(p, "an index");
            NEW(m, colon ? E_SLICE : E_INDEX, u->line);
            m->a = n;
            m->b = parts[0];
            m->c = parts[1];
            m->d = parts[2];
            n = m;
        } else if (accept(p, T_OP, "(")) {
            NEW(m, E_CALL, u->line);
            m->a = n;
            TRY(parse_args(p, m));
            n = m;
        } else {
            break;
        }
    }
    p->depth--;
    *out = n;
    return TP_OK;
}

/* filters ('|name(args)') and tests ('is [not] name [arg]') after a primary */
static tp_status parse_filters(ct_parser *p, ct_node *n, ct_node **out)
{
    for (;;) {
        ct_tok *t = peek(p);
        ct_node *m;
        if (accept(p, T_OP, "|")) {
            ct_tok *name = peek(p);
            if (name->kind != T_NAME) return syntax(p, "a filter name");
            p->pos++;
            NEW(m, E_FILTER, name->line);
            m->s = name->s;
            m->n = name->len;
            m->a = n;
            if (accept(p, T_OP, "("))
                TRY(parse_args(p, m));
            n = m;
        } else if (accept(p, T_NAME, "is")) {
            int neg = accept(p, T_NAME, "not");
            ct_tok *name = peek(p);
            if (name->kind != T_NAME) return syntax(p, "a test name");
            p->pos++;
            NEW(m, E_TEST, t->line);
            m->s = name->s;
            m->n = name->len;
            m->op = neg;
            m->a = n;
            if (accept(p, T_OP, "(")) {
                TRY(parse_args(p, m));
            } else {
                ct_tok *u = peek(p);
                /* jinja allows one bare argument: `x is divisibleby 3` */
                if (u->kind == T_STRING || u->kind == T_INT || u->kind == T_FLOAT ||
                    (u->kind == T_NAME && !tok_is(u, T_NAME, "and") && !tok_is(u, T_NAME, "or") &&
                     !tok_is(u, T_NAME, "else") && !tok_is(u, T_NAME, "if") &&
                     !tok_is(u, T_NAME, "in") && !tok_is(u, T_NAME, "not") &&
                     !tok_is(u, T_NAME, "is"))) {
                    ct_node *arg;
                    TRY(parse_primary(p, &arg));
                    m->args = arena_alloc(p->arena, sizeof arg);
                    if (!m->args) return tp__error(p->err, TP_ERR_NOMEM, "chat_template: out of memory");
                    m->args[0] = arg;
                    m->nargs = 1;
                }
            }
            n = m;
        } else {
            *out = n;
            return TP_OK;
        }
    }
}

static tp_status parse_unary(ct_parser *p, ct_node **out)
{
    ct_tok *t = peek(p);
    TRY(enter(p, t->line));
    ct_node *n;
    if (accept(p, T_OP, "-") || accept(p, T_OP, "+")) {
        NEW(n, t->s[0] == '-' ? E_NEG : E_POS, t->line);
        TRY(parse_unary(p, &n->a));
    } else {
        TRY(parse_primary(p, &n));
        TRY(parse_filters(p, n, &n));
    }
    p->depth--;
    *out = n;
    return TP_OK;
}

static tp_status binary(ct_parser *p, int op, int line, ct_node *a, ct_node *b, ct_node **out)
{
    ct_node *n;
    NEW(n, E_BIN, line);
    n->op = op;
    n->a = a;
    n->b = b;
    *out = n;
    return TP_OK;
}

static tp_status parse_pow(ct_parser *p, ct_node **out)
{
    ct_node *a, *b;
    TRY(parse_unary(p, &a));
    while (tok_is(peek(p), T_OP, "**")) {
        int line = peek(p)->line;
        p->pos++;
        TRY(parse_unary(p, &b));
        TRY(binary(p, OP_POW, line, a, b, &a));
    }
    *out = a;
    return TP_OK;
}

static tp_status parse_math2(ct_parser *p, ct_node **out)
{
    ct_node *a, *b;
    TRY(parse_pow(p, &a));
    for (;;) {
        ct_tok *t = peek(p);
        int op = tok_is(t, T_OP, "*") ? OP_MUL : tok_is(t, T_OP, "/") ? OP_DIV
               : tok_is(t, T_OP, "//") ? OP_FDIV : tok_is(t, T_OP, "%") ? OP_MOD : 0;
        if (!op) break;
        p->pos++;
        TRY(parse_pow(p, &b));
        TRY(binary(p, op, t->line, a, b, &a));
    }
    *out = a;
    return TP_OK;
}

static tp_status parse_concat(ct_parser *p, ct_node **out)
{
    ct_node *a, *b;
    TRY(parse_math2(p, &a));
    while (tok_is(peek(p), T_OP, "~")) {
        int line = peek(p)->line;
        p->pos++;
        TRY(parse_math2(p, &b));
        TRY(binary(p, OP_CONCAT, line, a, b, &a));
    }
    *out = a;
    return TP_OK;
}

static tp_status parse_math1(ct_parser *p, ct_node **out)
{
    ct_node *a, *b;
    TRY(parse_concat(p, &a));
    for (;;) {
        ct_tok *t = peek(p);
        int op = tok_is(t, T_OP, "+") ? OP_ADD : tok_is(t, T_OP, "-") ? OP_SUB : 0;
        if (!op) break;
        p->pos++;
        TRY(parse_concat(p, &b));
        TRY(binary(p, op, t->line, a, b, &a));
    }
    *out = a;
    return TP_OK;
}

static tp_status parse_compare(ct_parser *p, ct_node **out)
{
    ct_node *a, *b;
    TRY(parse_math1(p, &a));
    for (int chained = 0;; chained = 1) {
        ct_tok *t = peek(p);
        int op = tok_is(t, T_OP, "==") ? OP_EQ : tok_is(t, T_OP, "!=") ? OP_NE
               : tok_is(t, T_OP, "<") ? OP_LT : tok_is(t, T_OP, ">") ? OP_GT
               : tok_is(t, T_OP, "<=") ? OP_LE : tok_is(t, T_OP, ">=") ? OP_GE
               : tok_is(t, T_NAME, "in") ? OP_IN : 0;
        if (!op && tok_is(t, T_NAME, "not") && tok_is(t + 1, T_NAME, "in")) {
            op = OP_NOTIN;
            p->pos++;
        }
        if (!op) break;
        p->pos++;
        TRY(parse_math1(p, &b));
        /* jinja chains comparisons (a < b < c); templates do not use it */
        if (chained)
            return tp__error(p->err, TP_ERR_UNSUPPORTED,
                             "chat_template: line %d: chained comparisons are not supported",
                             t->line);
        TRY(binary(p, op, t->line, a, b, &a));
    }
    *out = a;
    return TP_OK;
}

static tp_status parse_not(ct_parser *p, ct_node **out)
{
    ct_tok *t = peek(p);
    if (tok_is(t, T_NAME, "not")) {
        p->pos++;
        TRY(enter(p, t->line));
        ct_node *n;
        NEW(n, E_NOT, t->line);
        TRY(parse_not(p, &n->a));
        p->depth--;
        *out = n;
        return TP_OK;
    }
    return parse_compare(p, out);
}

static tp_status parse_and(ct_parser *p, ct_node **out)
{
    ct_node *a, *n;
    TRY(parse_not(p, &a));
    while (tok_is(peek(p), T_NAME, "and")) {
        NEW(n, E_AND, peek(p)->line);
        p->pos++;
        n->a = a;
        TRY(parse_not(p, &n->b));
        a = n;
    }
    *out = a;
    return TP_OK;
}

static tp_status parse_or(ct_parser *p, ct_node **out)
{
    ct_node *a, *n;
    TRY(parse_and(p, &a));
    while (tok_is(peek(p), T_NAME, "or")) {
        NEW(n, E_OR, peek(p)->line);
        p->pos++;
        n->a = a;
        TRY(parse_and(p, &n->b));
        a = n;
    }
    *out = a;
    return TP_OK;
}

/* `a if cond else b` (the else part is optional: undefined) */
static tp_status parse_expr(ct_parser *p, ct_node **out)
{
    ct_tok *t = peek(p);
    TRY(enter(p, t->line));
    ct_node *a;
    TRY(parse_or(p, &a));
    while (tok_is(peek(p), T_NAME, "if")) {
        ct_node *n;
        NEW(n, E_COND, peek(p)->line);
        p->pos++;
        n->a = a;
        TRY(parse_or(p, &n->b));
        if (accept(p, T_NAME, "else"))
            TRY(parse_expr(p, &n->c));
        a = n;
    }
    p->depth--;
    *out = a;
    return TP_OK;
}

/* ---- statements */

static const char *const UNSUPPORTED_TAGS[] = {"macro", "call", "filter", "block", "extends",
                                               "include", "import", "from", "with", "autoescape",
                                               "do", "endmacro", "endcall", "endfilter",
                                               "endblock", "endwith", "endautoescape", "endset"};

/* Statements up to a block tag named in `ends` (left unconsumed: `{%` and its
 * name are the next tokens) or the end of the template (when ends is NULL). */
static tp_status parse_body(ct_parser *p, const char *const *ends, ct_node **out);

static tp_status block_end(ct_parser *p)
{
    return expect(p, T_BLOCK_END, NULL, "'%}'");
}

static tp_status parse_tag(ct_parser *p, ct_node **out)
{
    ct_tok *t = peek(p);
    ct_node *n = NULL;
    if (t->kind != T_NAME) return syntax(p, "a tag name");
    int line = t->line;
    if (tok_is(t, T_NAME, "if")) {
        p->pos++;
        NEW(n, S_IF, line);
        TRY(parse_expr(p, &n->a));
        TRY(block_end(p));
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        TRY(parse_body(p, ends, &n->b));
        ct_node *cur = n;
        for (;;) {
            ct_tok *e = &p->t[p->pos + 1];
            p->pos += 2;
            if (tok_is(e, T_NAME, "endif")) break;
            if (tok_is(e, T_NAME, "elif")) {
                ct_node *m;
                NEW(m, S_IF, e->line);
                TRY(parse_expr(p, &m->a));
                TRY(block_end(p));
                TRY(parse_body(p, ends, &m->b));
                cur->c = m;
                cur = m;
                continue;
            }
            TRY(block_end(p));
            static const char *const end_only[] = {"endif", NULL};
            ct_node *m; /* else: an S_IF without a condition */
            NEW(m, S_IF, e->line);
            TRY(parse_body(p, end_only, &m->b));
            cur->c = m;
            cur = m;
        }
        TRY(block_end(p));
    } else if (tok_is(t, T_NAME, "for")) {
        p->pos++;
        NEW(n, S_FOR, line);
        if (peek(p)->kind != T_NAME) return syntax(p, "a loop variable");
        n->s = peek(p)->s;
        n->n = peek(p)->len;
        p->pos++;
        if (accept(p, T_OP, ",")) {
            if (peek(p)->kind != T_NAME) return syntax(p, "a loop variable");
            n->s2 = peek(p)->s;
            n->n2 = peek(p)->len;
            p->pos++;
            if (tok_is(peek(p), T_OP, ","))
                return tp__error(p->err, TP_ERR_UNSUPPORTED,
                                 "chat_template: line %d: more than two loop variables", line);
        }
        TRY(expect(p, T_NAME, "in", "'in'"));
        TRY(parse_or(p, &n->a));
        if (accept(p, T_NAME, "if"))
            TRY(parse_or(p, &n->d));
        if (tok_is(peek(p), T_NAME, "recursive"))
            return tp__error(p->err, TP_ERR_UNSUPPORTED,
                             "chat_template: line %d: recursive loops are not supported", line);
        TRY(block_end(p));
        static const char *const ends[] = {"else", "endfor", NULL};
        TRY(parse_body(p, ends, &n->b));
        if (tok_is(&p->t[p->pos + 1], T_NAME, "else")) {
            p->pos += 2;
            TRY(block_end(p));
            static const char *const end_only[] = {"endfor", NULL};
            TRY(parse_body(p, end_only, &n->c));
        }
        p->pos += 2;
        TRY(block_end(p));
    } else if (tok_is(t, T_NAME, "set")) {
        p->pos++;
        NEW(n, S_SET, line);
        if (peek(p)->kind != T_NAME) return syntax(p, "a variable name");
        n->s = peek(p)->s;
        n->n = peek(p)->len;
        p->pos++;
        if (accept(p, T_OP, ".")) {
            if (peek(p)->kind != T_NAME) return syntax(p, "an attribute name");
            n->s2 = peek(p)->s;
            n->n2 = peek(p)->len;
            p->pos++;
        }
        if (tok_is(peek(p), T_BLOCK_END, NULL))
            return tp__error(p->err, TP_ERR_UNSUPPORTED,
                             "chat_template: line %d: block 'set' is not supported", line);
        if (tok_is(peek(p), T_OP, ","))
            return tp__error(p->err, TP_ERR_UNSUPPORTED,
                             "chat_template: line %d: tuple assignment is not supported", line);
        TRY(expect(p, T_OP, "=", "'='"));
        TRY(parse_expr(p, &n->a));
        TRY(block_end(p));
    } else if (tok_is(t, T_NAME, "break") || tok_is(t, T_NAME, "continue")) {
        p->pos++;
        NEW(n, t->s[0] == 'b' ? S_BREAK : S_CONTINUE, line);
        TRY(block_end(p));
    } else if (tok_is(t, T_NAME, "generation")) {
        /* transformers' {% generation %} marks assistant text; it renders its body */
        p->pos++;
        TRY(block_end(p));
        static const char *const ends[] = {"endgeneration", NULL};
        TRY(parse_body(p, ends, &n));
        p->pos += 2;
        TRY(block_end(p));
        if (!n) NEW(n, S_TEXT, line); /* empty body: an empty text node */
    } else {
        for (size_t i = 0; i < sizeof UNSUPPORTED_TAGS / sizeof *UNSUPPORTED_TAGS; i++)
            if (tok_is(t, T_NAME, UNSUPPORTED_TAGS[i]))
                return tp__error(p->err, TP_ERR_UNSUPPORTED,
                                 "chat_template: line %d: tag '%s' is not supported", line,
                                 UNSUPPORTED_TAGS[i]);
        char buf[64];
        return tp__error(p->err, TP_ERR_FORMAT, "chat_template: line %d: unknown tag %s", line,
                         tok_desc(t, buf, sizeof buf));
    }
    *out = n;
    return TP_OK;
}

static tp_status parse_body(ct_parser *p, const char *const *ends, ct_node **out)
{
    ct_node *head = NULL, **tail = &head;
    int line = peek(p)->line;
    TRY(enter(p, line));
    for (;;) {
        ct_tok *t = peek(p);
        ct_node *n = NULL;
        if (t->kind == T_EOF) {
            if (ends) {
                char want[96] = "";
                for (int i = 0; ends[i]; i++)
                    snprintf(want + strlen(want), sizeof want - strlen(want), "%s'%s'",
                             i ? " or " : "", ends[i]);
                return tp__error(p->err, TP_ERR_FORMAT,
                                 "chat_template: line %d: block opened here never closed "
                                 "(expected %s before the end)", line, want);
            }
            break;
        }
        if (t->kind == T_TEXT) {
            NEW(n, S_TEXT, t->line);
            n->s = t->s;
            n->n = t->len;
            p->pos++;
        } else if (t->kind == T_VAR_BEGIN) {
            p->pos++;
            NEW(n, S_OUTPUT, t->line);
            TRY(parse_expr(p, &n->a));
            TRY(expect(p, T_VAR_END, NULL, "'}}'"));
        } else if (t->kind == T_BLOCK_BEGIN) {
            ct_tok *name = t + 1;
            int is_end = 0;
            for (int i = 0; ends && ends[i]; i++)
                is_end |= tok_is(name, T_NAME, ends[i]);
            if (is_end) break;
            if (tok_is(name, T_NAME, "endif") || tok_is(name, T_NAME, "endfor") ||
                tok_is(name, T_NAME, "else") || tok_is(name, T_NAME, "elif") ||
                tok_is(name, T_NAME, "endgeneration")) {
                return tp__error(p->err, TP_ERR_FORMAT, "chat_template: line %d: unexpected '%.*s'",
                                 t->line, (int)name->len, name->s);
            }
            p->pos++;
            TRY(parse_tag(p, &n));
        } else {
            return syntax(p, "text or a tag");
        }
        *tail = n;
        while (n->next) n = n->next;
        tail = &n->next;
    }
    p->depth--;
    *out = head;
    return TP_OK;
}

tp_status tp__chat_template_compile(const char *src, tp__chat_template **out, tp_error *err)
{
    if (!out)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "chat_template: out is NULL");
    *out = NULL;
    if (!src)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "chat_template: template is NULL");
    size_t len = strlen(src);
    if (len > CT_SOURCE_MAX)
        return tp__error(err, TP_ERR_UNSUPPORTED, "chat_template: template over %u bytes",
                         CT_SOURCE_MAX);
    tp__chat_template *t = calloc(1, sizeof *t);
    if (!t)
        return tp__error(err, TP_ERR_NOMEM, "chat_template: out of memory");
    t->arena.cap = 64u * len + (1u << 20);
    t->src = malloc(len + 1);
    if (!t->src) {
        free(t);
        return tp__error(err, TP_ERR_NOMEM, "chat_template: out of memory");
    }
    /* jinja2 reads "\r\n" and "\r" as "\n", and (keep_trailing_newline=False)
     * drops one final newline */
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            t->src[k++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            t->src[k++] = src[i];
        }
    }
    if (k && t->src[k - 1] == '\n') k--;
    t->src[k] = 0;
    len = k;
    ct_lexer lx = {.src = t->src, .len = len, .line = 1, .arena = &t->arena, .err = err};
    tp_status st = lex_all(&lx);
    if (st == TP_OK) {
        ct_parser p = {.t = lx.toks.v, .arena = &t->arena, .err = err};
        st = parse_body(&p, NULL, &t->body);
    }
    free(lx.toks.v);
    if (st != TP_OK) {
        tp__chat_template_free(t);
        return st;
    }
    *out = t;
    return TP_OK;
}

void tp__chat_template_free(tp__chat_template *t)
{
    if (!t) return;
    arena_free(&t->arena);
    free(t->src);
    free(t);
}

/* ------------------------------------------------------------------ values */

typedef enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_JSON, V_LIST, V_DICT, V_LOOP,
               V_NS } ct_vkind;

typedef struct ct_val ct_val;
typedef struct ct_dict ct_dict;
typedef struct ct_loop ct_loop;
struct ct_val {
    ct_vkind t;
    int64_t i;        /* V_BOOL, V_INT */
    double f;
    const char *s;    /* V_STR bytes (not NUL-terminated); V_UNDEF: the missing name */
    size_t n;         /* V_STR length; V_LIST count */
    const cJSON *j;   /* V_JSON: an array or object owned by the caller */
    ct_val *items;    /* V_LIST */
    ct_dict *d;       /* V_DICT, V_NS */
    ct_loop *loop;
};

struct ct_dict { /* insertion-ordered, as Python dicts */
    size_t n, cap;
    ct_val *keys, *vals;
};

struct ct_loop {
    ct_val *items;
    size_t n, index0;
};

typedef struct ct_frame ct_frame;
struct ct_frame {
    ct_frame *parent;
    ct_dict vars;
};

typedef struct {
    ct_arena arena;
    char *out;
    size_t out_len, out_cap;
    long steps;
    int brk; /* 1 break, 2 continue pending */
    tp_error *err;
} ct_render;

static const ct_val UNDEF = {.t = V_UNDEF};

static tp_status oom(ct_render *r)
{
    if (r->arena.capped)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                         "chat_template: rendering needs over %u MiB of memory", CT_ARENA_MAX >> 20);
    return tp__error(r->err, TP_ERR_NOMEM, "chat_template: out of memory");
}

static void *ralloc(ct_render *r, size_t n) { return arena_alloc(&r->arena, n); }

static ct_val vstr(const char *s, size_t n) { return (ct_val){.t = V_STR, .s = s, .n = n}; }
static ct_val vint(int64_t i) { return (ct_val){.t = V_INT, .i = i}; }
static ct_val vbool(int b) { return (ct_val){.t = V_BOOL, .i = !!b}; }

static ct_val from_json(const cJSON *j)
{
    if (!j) return UNDEF;
    if (cJSON_IsString(j)) return vstr(j->valuestring, strlen(j->valuestring));
    if (cJSON_IsBool(j)) return vbool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9.0e15) return vint((int64_t)d);
        return (ct_val){.t = V_FLOAT, .f = d};
    }
    if (cJSON_IsArray(j) || cJSON_IsObject(j)) return (ct_val){.t = V_JSON, .j = j};
    return (ct_val){.t = V_NONE};
}

static int is_list(const ct_val *v) { return v->t == V_LIST || (v->t == V_JSON && cJSON_IsArray(v->j)); }
static int is_dict(const ct_val *v) { return v->t == V_DICT || v->t == V_NS || (v->t == V_JSON && cJSON_IsObject(v->j)); }

static tp_status dict_set(ct_render *r, ct_dict *d, ct_val key, ct_val val)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].n == key.n && memcmp(d->keys[i].s, key.s, key.n) == 0) {
            d->vals[i] = val;
            return TP_OK;
        }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        ct_val *k = ralloc(r, cap * sizeof *k), *v = ralloc(r, cap * sizeof *v);
        if (!k || !v) return oom(r);
        if (d->n) {
            memcpy(k, d->keys, d->n * sizeof *k);
            memcpy(v, d->vals, d->n * sizeof *v);
        }
        d->keys = k;
        d->vals = v;
        d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = val;
    return TP_OK;
}

static const ct_val *dict_get(const ct_dict *d, const char *s, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].t == V_STR && d->keys[i].n == n && memcmp(d->keys[i].s, s, n) == 0)
            return &d->vals[i];
    return NULL;
}

static const char *type_name(const ct_val *v)
{
    switch (v->t) {
    case V_UNDEF: return "undefined";
    case V_NONE: return "none";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "string";
    case V_LIST: return "list";
    case V_DICT: return "dict";
    case V_LOOP: return "loop";
    case V_NS: return "namespace";
    case V_JSON: return cJSON_IsArray(v->j) ? "list" : "dict";
    }
    return "?";
}

static size_t json_count(const cJSON *j)
{
    size_t n = 0;
    for (const cJSON *c = j->child; c; c = c->next) n++;
    return n;
}

static int truthy(const ct_val *v)
{
    switch (v->t) {
    case V_UNDEF: case V_NONE: return 0;
    case V_BOOL: case V_INT: return v->i != 0;
    case V_FLOAT: return v->f != 0;
    case V_STR: return v->n != 0;
    case V_LIST: return v->n != 0;
    case V_DICT: return v->d->n != 0;
    case V_JSON: return v->j->child != NULL;
    default: return 1;
    }
}

/* Code points of UTF-8 text (Python indexes strings by code point). */
static size_t utf8_len(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* byte offset of code point `cp` (n when past the end) */
static size_t utf8_offset(const char *s, size_t n, size_t cp)
{
    size_t i = 0;
    while (i < n && cp) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
        cp--;
    }
    return i;
}

/* Materializes a sequence (list, string as chars, dict as keys). */
static tp_status to_items(ct_render *r, const ct_val *v, int line, ct_val **items, size_t *n)
{
    *items = NULL;
    *n = 0;
    if (v->t == V_LIST) {
        *items = v->items;
        *n = v->n;
        return TP_OK;
    }
    if (v->t == V_UNDEF) return TP_OK; /* jinja iterates an undefined as empty */
    if (v->t == V_JSON) {
        size_t k = json_count(v->j), i = 0;
        ct_val *a = ralloc(r, (k + 1) * sizeof *a);
        if (!a) return oom(r);
        for (const cJSON *c = v->j->child; c; c = c->next)
            a[i++] = cJSON_IsArray(v->j) ? from_json(c) : vstr(c->string, strlen(c->string));
        *items = a;
        *n = k;
        return TP_OK;
    }
    if (v->t == V_DICT || v->t == V_NS) {
        *items = v->d->keys;
        *n = v->d->n;
        return TP_OK;
    }
    if (v->t == V_STR) {
        size_t k = utf8_len(v->s, v->n), i = 0, at = 0;
        ct_val *a = ralloc(r, (k + 1) * sizeof *a);
        if (!a) return oom(r);
        while (at < v->n) {
            size_t e = at + 1;
            while (e < v->n && ((unsigned char)v->s[e] & 0xC0) == 0x80) e++;
            a[i++] = vstr(v->s + at, e - at);
            at = e;
        }
        *items = a;
        *n = k;
        return TP_OK;
    }
    return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                     "chat_template: line %d: a %s is not iterable", line, type_name(v));
}

/* ---- text building */

typedef struct {
    ct_render *r;
    char *s;
    size_t n, cap;
    int failed;
} ct_buf;

static void buf_put(ct_buf *b, const char *s, size_t n)
{
    if (b->failed) return;
    if (b->n + n > CT_OUTPUT_MAX) {
        b->failed = 2;
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *s2 = ralloc(b->r, cap);
        if (!s2) {
            b->failed = 1;
            return;
        }
        if (b->n) memcpy(s2, b->s, b->n);
        b->s = s2;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void buf_puts(ct_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static tp_status buf_done(ct_buf *b, ct_val *out)
{
    if (b->failed == 2)
        return tp__error(b->r->err, TP_ERR_INVALID_ARGUMENT,
                         "chat_template: a string grew over %u bytes", CT_OUTPUT_MAX);
    if (b->failed) return oom(b->r);
    *out = vstr(b->s ? b->s : "", b->n);
    return TP_OK;
}

static void fmt_float(double f, char *buf, size_t size)
{
    if (isnan(f)) { snprintf(buf, size, "nan"); return; }
    if (isinf(f)) { snprintf(buf, size, f < 0 ? "-inf" : "inf"); return; }
    tp__shortest_double(f, buf, size); /* as Python's repr */
    if (!strpbrk(buf, ".eninf")) strncat(buf, ".0", size - strlen(buf) - 1);
}

static void write_repr(ct_buf *b, const ct_val *v, int depth);

static void write_str_repr(ct_buf *b, const char *s, size_t n)
{
    int q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    char c = (char)q;
    buf_put(b, &c, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch == '\\' || ch == q) { esc[0] = '\\'; esc[1] = (char)ch; buf_put(b, esc, 2); }
        else if (ch == '\n') buf_puts(b, "\\n");
        else if (ch == '\r') buf_puts(b, "\\r");
        else if (ch == '\t') buf_puts(b, "\\t");
        else if (ch < 0x20 || ch == 0x7f) { snprintf(esc, sizeof esc, "\\x%02x", ch); buf_puts(b, esc); }
        else buf_put(b, (const char *)&s[i], 1);
    }
    buf_put(b, &c, 1);
}

/* str(v) as Python prints it */
static void write_str(ct_buf *b, const ct_val *v, int depth)
{
    char num[40];
    switch (v->t) {
    case V_UNDEF: break;
    case V_NONE: buf_puts(b, "None"); break;
    case V_BOOL: buf_puts(b, v->i ? "True" : "False"); break;
    case V_INT: snprintf(num, sizeof num, "%lld", (long long)v->i); buf_puts(b, num); break;
    case V_FLOAT: fmt_float(v->f, num, sizeof num); buf_puts(b, num); break;
    case V_STR: buf_put(b, v->s, v->n); break;
    case V_LOOP: buf_puts(b, "<LoopContext>"); break;
    case V_NS: buf_puts(b, "<Namespace>"); break;
    default: write_repr(b, v, depth); break;
    }
}

static void write_repr(ct_buf *b, const ct_val *v, int depth)
{
    if (depth > CT_DEPTH_MAX) { b->failed = 2; return; }
    if (v->t == V_STR) { write_str_repr(b, v->s, v->n); return; }
    if (v->t == V_LIST || (v->t == V_JSON && cJSON_IsArray(v->j))) {
        buf_puts(b, "[");
        if (v->t == V_LIST) {
            for (size_t i = 0; i < v->n; i++) {
                if (i) buf_puts(b, ", ");
                write_repr(b, &v->items[i], depth + 1);
            }
        } else {
            for (const cJSON *c = v->j->child; c; c = c->next) {
                ct_val e = from_json(c);
                write_repr(b, &e, depth + 1);
                if (c->next) buf_puts(b, ", ");
            }
        }
        buf_puts(b, "]");
        return;
    }
    if (v->t == V_DICT || (v->t == V_JSON && cJSON_IsObject(v->j))) {
        buf_puts(b, "{");
        if (v->t == V_DICT) {
            for (size_t i = 0; i < v->d->n; i++) {
                if (i) buf_puts(b, ", ");
                write_repr(b, &v->d->keys[i], depth + 1);
                buf_puts(b, ": ");
                write_repr(b, &v->d->vals[i], depth + 1);
            }
        } else {
            for (const cJSON *c = v->j->child; c; c = c->next) {
                write_str_repr(b, c->string, strlen(c->string));
                buf_puts(b, ": ");
                ct_val e = from_json(c);
                write_repr(b, &e, depth + 1);
                if (c->next) buf_puts(b, ", ");
            }
        }
        buf_puts(b, "}");
        return;
    }
    write_str(b, v, depth);
}

/* json.dumps(v, ensure_ascii=False) with its default separators, or with `indent`
 * (transformers' tojson). */
static void write_json_str(ct_buf *b, const char *s, size_t n)
{
    buf_puts(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch == '"') buf_puts(b, "\\\"");
        else if (ch == '\\') buf_puts(b, "\\\\");
        else if (ch == '\n') buf_puts(b, "\\n");
        else if (ch == '\r') buf_puts(b, "\\r");
        else if (ch == '\t') buf_puts(b, "\\t");
        else if (ch == '\b') buf_puts(b, "\\b");
        else if (ch == '\f') buf_puts(b, "\\f");
        else if (ch < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", ch); buf_puts(b, esc); }
        else buf_put(b, &s[i], 1);
    }
    buf_puts(b, "\"");
}

static void json_newline(ct_buf *b, int indent, int level)
{
    buf_puts(b, "\n");
    for (int i = 0; i < indent * level && !b->failed; i++) buf_puts(b, " ");
}

static void write_json(ct_buf *b, const ct_val *v, int indent, int level)
{
    char num[40];
    if (level > CT_DEPTH_MAX) { b->failed = 2; return; }
    switch (v->t) {
    case V_UNDEF: case V_NONE: buf_puts(b, "null"); return;
    case V_BOOL: buf_puts(b, v->i ? "true" : "false"); return;
    case V_INT: snprintf(num, sizeof num, "%lld", (long long)v->i); buf_puts(b, num); return;
    case V_FLOAT:
        if (isnan(v->f)) buf_puts(b, "NaN");
        else if (isinf(v->f)) buf_puts(b, v->f < 0 ? "-Infinity" : "Infinity");
        else { fmt_float(v->f, num, sizeof num); buf_puts(b, num); }
        return;
    case V_STR: write_json_str(b, v->s, v->n); return;
    default: break;
    }
    const char *sep = indent >= 0 ? "," : ", ";
    if (is_list(v)) {
        buf_puts(b, "[");
        size_t k = 0;
        const cJSON *c = v->t == V_JSON ? v->j->child : NULL;
        size_t n = v->t == V_JSON ? json_count(v->j) : v->n;
        for (; k < n; k++) {
            ct_val e = v->t == V_JSON ? from_json(c) : v->items[k];
            if (c) c = c->next;
            if (k) buf_puts(b, sep);
            if (indent >= 0) json_newline(b, indent, level + 1);
            write_json(b, &e, indent, level + 1);
        }
        if (indent >= 0 && n) json_newline(b, indent, level);
        buf_puts(b, "]");
        return;
    }
    if (v->t == V_DICT || (v->t == V_JSON && cJSON_IsObject(v->j))) {
        buf_puts(b, "{");
        size_t k = 0;
        const cJSON *c = v->t == V_JSON ? v->j->child : NULL;
        size_t n = v->t == V_JSON ? json_count(v->j) : v->d->n;
        for (; k < n; k++) {
            ct_val key = v->t == V_JSON ? vstr(c->string, strlen(c->string)) : v->d->keys[k];
            ct_val e = v->t == V_JSON ? from_json(c) : v->d->vals[k];
            if (c) c = c->next;
            if (k) buf_puts(b, sep);
            if (indent >= 0) json_newline(b, indent, level + 1);
            if (key.t == V_STR) write_json_str(b, key.s, key.n);
            else { ct_buf kb = {.r = b->r}; write_str(&kb, &key, 0); write_json_str(b, kb.s ? kb.s : "", kb.n); }
            buf_puts(b, ": ");
            write_json(b, &e, indent, level + 1);
        }
        if (indent >= 0 && n) json_newline(b, indent, level);
        buf_puts(b, "}");
        return;
    }
    buf_puts(b, "null");
}

static tp_status to_string(ct_render *r, const ct_val *v, ct_val *out)
{
    if (v->t == V_STR) { *out = *v; return TP_OK; }
    ct_buf b = {.r = r};
    write_str(&b, v, 0);
    return buf_done(&b, out);
}

/* ------------------------------------------------------------------ evaluation */

static int is_num(const ct_val *v) { return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL; }
static double num_of(const ct_val *v) { return v->t == V_FLOAT ? v->f : (double)v->i; }

static int values_equal(const ct_val *a, const ct_val *b, int depth)
{
    if (depth > CT_DEPTH_MAX) return 0;
    if (is_num(a) && is_num(b)) return num_of(a) == num_of(b);
    if (a->t == V_STR && b->t == V_STR) return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
    if ((a->t == V_NONE && b->t == V_NONE) || (a->t == V_UNDEF && b->t == V_UNDEF)) return 1;
    if (is_list(a) && is_list(b)) {
        const cJSON *ca = a->t == V_JSON ? a->j->child : NULL, *cb = b->t == V_JSON ? b->j->child : NULL;
        size_t na = a->t == V_JSON ? json_count(a->j) : a->n, nb = b->t == V_JSON ? json_count(b->j) : b->n;
        if (na != nb) return 0;
        for (size_t i = 0; i < na; i++) {
            ct_val x = a->t == V_JSON ? from_json(ca) : a->items[i];
            ct_val y = b->t == V_JSON ? from_json(cb) : b->items[i];
            if (ca) ca = ca->next;
            if (cb) cb = cb->next;
            if (!values_equal(&x, &y, depth + 1)) return 0;
        }
        return 1;
    }
    if (a->t == V_JSON && b->t == V_JSON) return cJSON_Compare(a->j, b->j, 1);
    return 0;
}

static tp_status compare_order(ct_render *r, int line, const ct_val *a, const ct_val *b, int *cmp)
{
    if (is_num(a) && is_num(b)) {
        double x = num_of(a), y = num_of(b);
        *cmp = x < y ? -1 : x > y;
        return TP_OK;
    }
    if (a->t == V_STR && b->t == V_STR) {
        int c = memcmp(a->s, b->s, a->n < b->n ? a->n : b->n);
        *cmp = c ? c : (a->n < b->n ? -1 : a->n > b->n);
        return TP_OK;
    }
    return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                     "chat_template: line %d: cannot order a %s and a %s", line, type_name(a),
                     type_name(b));
}

static tp_status contains(ct_render *r, int line, const ct_val *hay, const ct_val *needle, int *out)
{
    if (hay->t == V_STR) {
        if (needle->t != V_STR)
            return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                             "chat_template: line %d: 'in <string>' needs a string, not a %s",
                             line, type_name(needle));
        *out = 0;
        if (needle->n == 0) { *out = 1; return TP_OK; }
        for (size_t i = 0; i + needle->n <= hay->n && !*out; i++)
            *out = memcmp(hay->s + i, needle->s, needle->n) == 0;
        return TP_OK;
    }
    if (is_dict(hay)) {
        *out = 0;
        if (needle->t != V_STR) return TP_OK;
        if (hay->t == V_JSON) {
            for (const cJSON *c = hay->j->child; c && !*out; c = c->next)
                *out = strlen(c->string) == needle->n && memcmp(c->string, needle->s, needle->n) == 0;
        } else {
            *out = dict_get(hay->d, needle->s, needle->n) != NULL;
        }
        return TP_OK;
    }
    if (is_list(hay)) {
        ct_val *items;
        size_t n;
        TRY(to_items(r, hay, line, &items, &n));
        *out = 0;
        for (size_t i = 0; i < n && !*out; i++) *out = values_equal(&items[i], needle, 0);
        return TP_OK;
    }
    if (hay->t == V_UNDEF)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                         "chat_template: line %d: 'in' on an undefined value", line);
    return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                     "chat_template: line %d: 'in' on a %s", line, type_name(hay));
}

static tp_status concat_values(ct_render *r, const ct_val *a, const ct_val *b, ct_val *out)
{
    ct_buf buf = {.r = r};
    write_str(&buf, a, 0);
    write_str(&buf, b, 0);
    return buf_done(&buf, out);
}

static tp_status eval(ct_render *r, ct_frame *f, const ct_node *n, ct_val *out);

static tp_status step(ct_render *r, int line)
{
    if (++r->steps > CT_STEPS_MAX)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                         "chat_template: line %d: rendering took over %ld steps", line,
                         CT_STEPS_MAX);
    return TP_OK;
}

static tp_status binop(ct_render *r, const ct_node *n, const ct_val *a, const ct_val *b, ct_val *out)
{
    int line = n->line;
    switch (n->op) {
    case OP_EQ: *out = vbool(values_equal(a, b, 0)); return TP_OK;
    case OP_NE: *out = vbool(!values_equal(a, b, 0)); return TP_OK;
    case OP_LT: case OP_GT: case OP_LE: case OP_GE: {
        int c = 0;
        TRY(compare_order(r, line, a, b, &c));
        *out = vbool(n->op == OP_LT ? c < 0 : n->op == OP_GT ? c > 0 : n->op == OP_LE ? c <= 0 : c >= 0);
        return TP_OK;
    }
    case OP_IN: case OP_NOTIN: {
        int in = 0;
        TRY(contains(r, line, b, a, &in));
        *out = vbool(n->op == OP_IN ? in : !in);
        return TP_OK;
    }
    case OP_CONCAT: return concat_values(r, a, b, out);
    default: break;
    }
    if (n->op == OP_ADD && a->t == V_STR && b->t == V_STR) return concat_values(r, a, b, out);
    if (n->op == OP_ADD && is_list(a) && is_list(b)) {
        ct_val *x, *y;
        size_t nx, ny;
        TRY(to_items(r, a, line, &x, &nx));
        TRY(to_items(r, b, line, &y, &ny));
        ct_val *z = ralloc(r, (nx + ny + 1) * sizeof *z);
        if (!z) return oom(r);
        if (nx) memcpy(z, x, nx * sizeof *z);
        if (ny) memcpy(z + nx, y, ny * sizeof *z);
        *out = (ct_val){.t = V_LIST, .items = z, .n = nx + ny};
        return TP_OK;
    }
    if (n->op == OP_MUL && ((a->t == V_STR && b->t == V_INT) || (a->t == V_INT && b->t == V_STR))) {
        const ct_val *s = a->t == V_STR ? a : b;
        int64_t k = a->t == V_INT ? a->i : b->i;
        ct_buf buf = {.r = r};
        for (int64_t i = 0; i < k && !buf.failed; i++) buf_put(&buf, s->s, s->n);
        return buf_done(&buf, out);
    }
    if (!is_num(a) || !is_num(b))
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                         "chat_template: line %d: unsupported operand types %s and %s", line,
                         type_name(a), type_name(b));
    int ints = a->t != V_FLOAT && b->t != V_FLOAT;
    double x = num_of(a), y = num_of(b);
    if ((n->op == OP_DIV || n->op == OP_FDIV || n->op == OP_MOD) && y == 0)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: division by zero",
                         line);
    if (ints && n->op != OP_DIV && n->op != OP_POW) {
        int64_t p = a->i, q = b->i, v = 0;
        int ovf = 0;
        switch (n->op) {
        case OP_ADD: ovf = __builtin_add_overflow(p, q, &v); break;
        case OP_SUB: ovf = __builtin_sub_overflow(p, q, &v); break;
        case OP_MUL: ovf = __builtin_mul_overflow(p, q, &v); break;
        case OP_FDIV: case OP_MOD:
            if (p == INT64_MIN && q == -1) { ovf = 1; break; }
            v = p / q;
            if ((p % q != 0) && ((p < 0) != (q < 0))) v--;
            if (n->op == OP_MOD) v = p - v * q;
            break;
        }
        if (ovf)
            return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: integer overflow",
                             line);
        *out = vint(v);
        return TP_OK;
    }
    double v = 0;
    switch (n->op) {
    case OP_ADD: v = x + y; break;
    case OP_SUB: v = x - y; break;
    case OP_MUL: v = x * y; break;
    case OP_DIV: v = x / y; break;
    case OP_FDIV: v = floor(x / y); break;
    case OP_MOD: v = fmod(x, y); if (v != 0 && ((v < 0) != (y < 0))) v += y; break;
    case OP_POW: v = pow(x, y); break;
    }
    if (ints && n->op == OP_POW && y >= 0 && fabs(v) < 9.0e15) *out = vint((int64_t)v);
    else *out = (ct_val){.t = V_FLOAT, .f = v};
    return TP_OK;
}

static tp_status lookup(ct_frame *f, const char *s, size_t n, ct_val *out)
{
    for (; f; f = f->parent) {
        const ct_val *v = dict_get(&f->vars, s, n);
        if (v) { *out = *v; return TP_OK; }
    }
    *out = UNDEF;
    out->s = s;
    out->n = n;
    return TP_OK;
}

static tp_status undefined_error(ct_render *r, int line, const ct_val *v, const char *what)
{
    if (v->s)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                         "chat_template: line %d: '%.*s' is undefined (%s)", line,
                         (int)(v->n > 60 ? 60 : v->n), v->s, what);
    return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                     "chat_template: line %d: %s of an undefined value", line, what);
}

/* obj.name / obj['name'] */
static tp_status get_attr(ct_render *r, int line, const ct_val *obj, const char *s, size_t n, ct_val *out)
{
    *out = UNDEF;
    if (obj->t == V_UNDEF) return undefined_error(r, line, obj, "attribute access");
    if (obj->t == V_JSON && cJSON_IsObject(obj->j)) {
        for (const cJSON *c = obj->j->child; c; c = c->next)
            if (strlen(c->string) == n && memcmp(c->string, s, n) == 0) {
                *out = from_json(c);
                return TP_OK;
            }
    } else if (obj->t == V_DICT || obj->t == V_NS) {
        const ct_val *v = dict_get(obj->d, s, n);
        if (v) *out = *v;
    } else if (obj->t == V_LOOP) {
        const ct_loop *L = obj->loop;
#define IS(x) (n == strlen(x) && memcmp(s, x, n) == 0)
        if (IS("index")) *out = vint((int64_t)L->index0 + 1);
        else if (IS("index0")) *out = vint((int64_t)L->index0);
        else if (IS("revindex")) *out = vint((int64_t)(L->n - L->index0));
        else if (IS("revindex0")) *out = vint((int64_t)(L->n - L->index0 - 1));
        else if (IS("first")) *out = vbool(L->index0 == 0);
        else if (IS("last")) *out = vbool(L->index0 + 1 == L->n);
        else if (IS("length")) *out = vint((int64_t)L->n);
        else if (IS("previtem")) { if (L->index0) *out = L->items[L->index0 - 1]; }
        else if (IS("nextitem")) { if (L->index0 + 1 < L->n) *out = L->items[L->index0 + 1]; }
        else if (IS("depth")) *out = vint(1);
        else if (IS("depth0")) *out = vint(0);
        else
            return tp__error(r->err, TP_ERR_UNSUPPORTED,
                             "chat_template: line %d: loop.%.*s is not supported", line,
                             (int)(n > 40 ? 40 : n), s);
#undef IS
    }
    if (out->t == V_UNDEF) { /* names the attribute in a later error */
        out->s = s;
        out->n = n;
    }
    return TP_OK;
}

static tp_status index_int(ct_render *r, int line, const ct_val *obj, int64_t i, ct_val *out)
{
    *out = UNDEF;
    if (obj->t == V_STR) {
        int64_t len = (int64_t)utf8_len(obj->s, obj->n);
        if (i < 0) i += len;
        if (i < 0 || i >= len) return TP_OK;
        size_t a = utf8_offset(obj->s, obj->n, (size_t)i), b = utf8_offset(obj->s, obj->n, (size_t)i + 1);
        *out = vstr(obj->s + a, b - a);
        return TP_OK;
    }
    if (is_list(obj)) {
        ct_val *items;
        size_t n;
        if (obj->t == V_JSON) {
            int64_t len = (int64_t)json_count(obj->j);
            if (i < 0) i += len;
            if (i < 0 || i >= len) return TP_OK;
            *out = from_json(cJSON_GetArrayItem(obj->j, (int)i));
            return TP_OK;
        }
        TRY(to_items(r, obj, line, &items, &n));
        if (i < 0) i += (int64_t)n;
        if (i >= 0 && i < (int64_t)n) *out = items[i];
        return TP_OK;
    }
    if (obj->t == V_UNDEF) return undefined_error(r, line, obj, "indexing");
    return TP_OK;
}

static int64_t clamp_index(int64_t i, int64_t len, int step_neg)
{
    if (i < 0) i += len;
    if (i < 0) i = step_neg ? -1 : 0;
    if (i > len) i = step_neg ? len - 1 : len;
    if (step_neg && i >= len) i = len - 1;
    return i;
}

static tp_status eval_slice(ct_render *r, ct_frame *f, const ct_node *n, const ct_val *obj, ct_val *out)
{
    int64_t part[3] = {0, 0, 1};
    int given[3] = {0, 0, 0};
    const ct_node *pn[3] = {n->b, n->c, n->d};
    for (int k = 0; k < 3; k++) {
        if (!pn[k]) continue;
        ct_val v;
        TRY(eval(r, f, pn[k], &v));
        if (v.t == V_NONE) continue;
        if (v.t != V_INT)
            return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                             "chat_template: line %d: slice indices must be integers", n->line);
        part[k] = v.i;
        given[k] = 1;
    }
    int64_t st = part[2];
    if (st == 0)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                         "chat_template: line %d: slice step cannot be zero", n->line);
    ct_val *items;
    size_t cnt;
    if (obj->t == V_UNDEF) return undefined_error(r, n->line, obj, "slicing");
    if (obj->t != V_STR && !is_list(obj))
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: cannot slice a %s",
                         n->line, type_name(obj));
    TRY(to_items(r, obj, n->line, &items, &cnt));
    int64_t len = (int64_t)cnt;
    int neg = st < 0;
    int64_t a = given[0] ? clamp_index(part[0], len, neg) : (neg ? len - 1 : 0);
    int64_t b = given[1] ? clamp_index(part[1], len, neg) : (neg ? -1 : len);
    ct_val *res = ralloc(r, ((size_t)len + 1) * sizeof *res);
    if (!res) return oom(r);
    size_t k = 0;
    for (int64_t i = a; neg ? i > b : i < b; i += st) res[k++] = items[i];
    if (obj->t == V_STR) {
        ct_buf buf = {.r = r};
        for (size_t i = 0; i < k; i++) buf_put(&buf, res[i].s, res[i].n);
        return buf_done(&buf, out);
    }
    *out = (ct_val){.t = V_LIST, .items = res, .n = k};
    return TP_OK;
}

static int name_is(const ct_node *n, const char *s) { return n->n == strlen(s) && memcmp(n->s, s, n->n) == 0; }

static tp_status want_args(ct_render *r, const ct_node *n, const char *what, int lo, int hi)
{
    if (n->nargs < lo || n->nargs > hi)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                         "chat_template: line %d: %s takes %d to %d arguments, got %d", n->line,
                         what, lo, hi, n->nargs);
    return TP_OK;
}

static tp_status no_kwargs(ct_render *r, const ct_node *n, const char *what)
{
    if (n->nkw)
        return tp__error(r->err, TP_ERR_UNSUPPORTED,
                         "chat_template: line %d: keyword argument '%.*s' of %s is not supported",
                         n->line, (int)n->kwlen[0], n->kw[0], what);
    return TP_OK;
}

static tp_status want_str(ct_render *r, int line, const ct_val *v, const char *what)
{
    if (v->t != V_STR)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                         "chat_template: line %d: %s needs a string, not a %s", line, what,
                         type_name(v));
    return TP_OK;
}

/* Python's str.isspace for the characters templates meet */
static size_t space_at(const char *s, size_t n, size_t i)
{
    unsigned char c = (unsigned char)s[i];
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c == 0xC2 && i + 1 < n && ((unsigned char)s[i + 1] == 0x85 || (unsigned char)s[i + 1] == 0xA0)) return 2;
    return 0;
}

static size_t space_before(const char *s, size_t end)
{
    if (end && space_at(s, end, end - 1) == 1) return 1;
    if (end >= 2 && space_at(s, end, end - 2) == 2) return 2;
    return 0;
}

static int in_chars(const ct_val *chars, const char *s, size_t n, size_t i, size_t *len)
{
    size_t e = i + 1;
    while (e < n && ((unsigned char)s[e] & 0xC0) == 0x80) e++;
    *len = e - i;
    for (size_t k = 0; k + *len <= chars->n; k++)
        if (memcmp(chars->s + k, s + i, *len) == 0) return 1;
    return 0;
}

static tp_status do_strip(ct_render *r, int line, const ct_val *s, const ct_val *chars, int left, int right, ct_val *out)
{
    TRY(want_str(r, line, s, "strip"));
    size_t a = 0, b = s->n, k;
    if (chars && chars->t == V_STR) {
        while (left && a < b && in_chars(chars, s->s, b, a, &k)) a += k;
        while (right && b > a) {
            size_t st = b - 1;
            while (st > a && ((unsigned char)s->s[st] & 0xC0) == 0x80) st--;
            if (!in_chars(chars, s->s, b, st, &k)) break;
            b = st;
        }
    } else {
        while (left && a < b && (k = space_at(s->s, b, a))) a += k;
        while (right && b > a && (k = space_before(s->s, b))) b -= k;
    }
    *out = vstr(s->s + a, b - a);
    return TP_OK;
}

static tp_status change_case(ct_render *r, const ct_val *s, int mode, ct_val *out)
{
    /* ASCII case mapping: enough for role names and the usual template strings */
    char *o = ralloc(r, s->n + 1);
    if (!o) return oom(r);
    int start = 1;
    for (size_t i = 0; i < s->n; i++) {
        char c = s->s[i];
        int up = mode == 1 || ((mode == 2 || mode == 3) && start);
        if (up && c >= 'a' && c <= 'z') c = (char)(c - 32);
        else if (!up && c >= 'A' && c <= 'Z') c = (char)(c + 32);
        o[i] = c;
        if (mode == 3) start = !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
        else if (mode == 2) start = 0;
    }
    *out = vstr(o, s->n);
    return TP_OK;
}

static tp_status do_split(ct_render *r, int line, const ct_val *s, const ct_val *sep, ct_val *out)
{
    TRY(want_str(r, line, s, "split"));
    size_t cap = 8, k = 0;
    ct_val *items = ralloc(r, cap * sizeof *items);
    if (!items) return oom(r);
    size_t i = 0;
    for (;;) {
        size_t a, b;
        if (sep && sep->t == V_STR) {
            if (sep->n == 0)
                return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: empty separator", line);
            a = i;
            b = i;
            while (b + sep->n <= s->n && memcmp(s->s + b, sep->s, sep->n) != 0) b++;
            if (b + sep->n > s->n) b = s->n;
            i = b + sep->n;
        } else {
            size_t w;
            while (i < s->n && (w = space_at(s->s, s->n, i))) i += w;
            if (i >= s->n) break;
            a = b = i;
            while (b < s->n && !space_at(s->s, s->n, b)) b++;
            i = b;
        }
        if (k == cap) {
            ct_val *m = ralloc(r, cap * 2 * sizeof *m);
            if (!m) return oom(r);
            memcpy(m, items, cap * sizeof *m);
            items = m;
            cap *= 2;
        }
        items[k++] = vstr(s->s + a, b - a);
        if (sep && sep->t == V_STR && b >= s->n) break;
    }
    *out = (ct_val){.t = V_LIST, .items = items, .n = k};
    return TP_OK;
}

static tp_status do_replace(ct_render *r, int line, const ct_val *s, const ct_val *from, const ct_val *to, ct_val *out)
{
    TRY(want_str(r, line, s, "replace"));
    TRY(want_str(r, line, from, "replace"));
    TRY(want_str(r, line, to, "replace"));
    ct_buf b = {.r = r};
    size_t i = 0;
    if (from->n == 0) {
        /* Python inserts `to` between every character */
        buf_put(&b, to->s, to->n);
        while (i < s->n) {
            size_t e = i + 1;
            while (e < s->n && ((unsigned char)s->s[e] & 0xC0) == 0x80) e++;
            buf_put(&b, s->s + i, e - i);
            buf_put(&b, to->s, to->n);
            i = e;
        }
        return buf_done(&b, out);
    }
    while (i < s->n) {
        if (i + from->n <= s->n && memcmp(s->s + i, from->s, from->n) == 0) {
            buf_put(&b, to->s, to->n);
            i += from->n;
        } else {
            buf_put(&b, s->s + i, 1);
            i++;
        }
    }
    return buf_done(&b, out);
}

static tp_status length_of(ct_render *r, int line, const ct_val *v, ct_val *out)
{
    if (v->t == V_STR) *out = vint((int64_t)utf8_len(v->s, v->n));
    else if (v->t == V_LIST) *out = vint((int64_t)v->n);
    else if (v->t == V_JSON) *out = vint((int64_t)json_count(v->j));
    else if (v->t == V_DICT || v->t == V_NS) *out = vint((int64_t)v->d->n);
    else if (v->t == V_UNDEF) *out = vint(0);
    else
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                         "chat_template: line %d: a %s has no length", line, type_name(v));
    return TP_OK;
}

static tp_status dict_items(ct_render *r, int line, const ct_val *d, int which, ct_val *out)
{
    /* which: 0 items, 1 keys, 2 values */
    if (!is_dict(d))
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: a %s has no items()",
                         line, type_name(d));
    size_t n = d->t == V_JSON ? json_count(d->j) : d->d->n;
    ct_val *res = ralloc(r, (n + 1) * sizeof *res);
    if (!res) return oom(r);
    const cJSON *c = d->t == V_JSON ? d->j->child : NULL;
    for (size_t i = 0; i < n; i++) {
        ct_val k = c ? vstr(c->string, strlen(c->string)) : d->d->keys[i];
        ct_val v = c ? from_json(c) : d->d->vals[i];
        if (c) c = c->next;
        if (which == 0) {
            ct_val *pair = ralloc(r, 2 * sizeof *pair);
            if (!pair) return oom(r);
            pair[0] = k;
            pair[1] = v;
            res[i] = (ct_val){.t = V_LIST, .items = pair, .n = 2};
        } else {
            res[i] = which == 1 ? k : v;
        }
    }
    *out = (ct_val){.t = V_LIST, .items = res, .n = n};
    return TP_OK;
}

static tp_status eval_args(ct_render *r, ct_frame *f, const ct_node *n, ct_val *args, int max)
{
    for (int i = 0; i < n->nargs && i < max; i++) TRY(eval(r, f, n->args[i], &args[i]));
    return TP_OK;
}

static tp_status call_method(ct_render *r, ct_frame *f, const ct_node *call, const ct_val *obj,
                             const ct_node *attr, ct_val *out)
{
    ct_val a[3] = {UNDEF, UNDEF, UNDEF};
    int line = call->line;
    char what[48];
    snprintf(what, sizeof what, "method '%.*s'", (int)(attr->n > 30 ? 30 : attr->n), attr->s);
    TRY(no_kwargs(r, call, what));
    if (call->nargs > 3)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: too many arguments to %s",
                         line, what);
    TRY(eval_args(r, f, call, a, 3));
    if (obj->t == V_STR) {
        if (name_is(attr, "strip") || name_is(attr, "lstrip") || name_is(attr, "rstrip")) {
            TRY(want_args(r, call, what, 0, 1));
            return do_strip(r, line, obj, call->nargs ? &a[0] : NULL, attr->s[0] != 'r', attr->s[0] != 'l', out);
        }
        if (name_is(attr, "lower") || name_is(attr, "upper") || name_is(attr, "capitalize") || name_is(attr, "title")) {
            TRY(want_args(r, call, what, 0, 0));
            return change_case(r, obj, attr->s[0] == 'l' ? 0 : attr->s[0] == 'u' ? 1 : attr->s[0] == 'c' ? 2 : 3, out);
        }
        if (name_is(attr, "startswith") || name_is(attr, "endswith")) {
            TRY(want_args(r, call, what, 1, 1));
            ct_val *opts = &a[0];
            size_t nopts = 1;
            if (is_list(&a[0])) TRY(to_items(r, &a[0], line, &opts, &nopts));
            int hit = 0;
            for (size_t i = 0; i < nopts && !hit; i++) {
                TRY(want_str(r, line, &opts[i], what));
                size_t k = opts[i].n;
                hit = k <= obj->n && memcmp(attr->s[0] == 's' ? obj->s : obj->s + obj->n - k, opts[i].s, k) == 0;
            }
            *out = vbool(hit);
            return TP_OK;
        }
        if (name_is(attr, "split")) {
            TRY(want_args(r, call, what, 0, 1));
            return do_split(r, line, obj, call->nargs && a[0].t != V_NONE ? &a[0] : NULL, out);
        }
        if (name_is(attr, "replace")) {
            TRY(want_args(r, call, what, 2, 2));
            return do_replace(r, line, obj, &a[0], &a[1], out);
        }
        if (name_is(attr, "find")) {
            TRY(want_args(r, call, what, 1, 1));
            TRY(want_str(r, line, &a[0], what));
            int64_t at = -1;
            for (size_t i = 0; i + a[0].n <= obj->n; i++)
                if (memcmp(obj->s + i, a[0].s, a[0].n) == 0) { at = (int64_t)utf8_len(obj->s, i); break; }
            *out = vint(at);
            return TP_OK;
        }
    } else if (is_dict(obj) && obj->t != V_NS) {
        if (name_is(attr, "items") || name_is(attr, "keys") || name_is(attr, "values")) {
            TRY(want_args(r, call, what, 0, 0));
            return dict_items(r, line, obj, attr->s[0] == 'i' ? 0 : attr->s[0] == 'k' ? 1 : 2, out);
        }
        if (name_is(attr, "get")) {
            TRY(want_args(r, call, what, 1, 2));
            TRY(want_str(r, line, &a[0], what));
            TRY(get_attr(r, line, obj, a[0].s, a[0].n, out));
            if (out->t == V_UNDEF) *out = call->nargs > 1 ? a[1] : (ct_val){.t = V_NONE};
            return TP_OK;
        }
    } else if (obj->t == V_UNDEF) {
        return undefined_error(r, line, obj, what);
    }
    return tp__error(r->err, TP_ERR_UNSUPPORTED,
                     "chat_template: line %d: %s of a %s is not supported", line, what, type_name(obj));
}

static tp_status call_function(ct_render *r, ct_frame *f, const ct_node *n, ct_val *out)
{
    const ct_node *fn = n->a;
    if (fn->kind == E_ATTR) {
        ct_val obj;
        TRY(eval(r, f, fn->a, &obj));
        return call_method(r, f, n, &obj, fn, out);
    }
    if (fn->kind == E_NAME && name_is(fn, "raise_exception")) {
        ct_val msg = UNDEF, s;
        TRY(want_args(r, n, "raise_exception", 1, 1));
        TRY(eval(r, f, n->args[0], &msg));
        TRY(to_string(r, &msg, &s));
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: %.*s", n->line,
                         (int)(s.n > 400 ? 400 : s.n), s.s);
    }
    if (fn->kind == E_NAME && name_is(fn, "namespace")) {
        TRY(want_args(r, n, "namespace", 0, 0));
        ct_dict *d = ralloc(r, sizeof *d);
        if (!d) return oom(r);
        for (int i = 0; i < n->nkw; i++) {
            ct_val v;
            TRY(eval(r, f, n->kwv[i], &v));
            TRY(dict_set(r, d, vstr(n->kw[i], n->kwlen[i]), v));
        }
        *out = (ct_val){.t = V_NS, .d = d};
        return TP_OK;
    }
    if (fn->kind == E_NAME && name_is(fn, "range")) {
        ct_val a[3] = {UNDEF, UNDEF, UNDEF};
        TRY(no_kwargs(r, n, "range"));
        TRY(want_args(r, n, "range", 1, 3));
        TRY(eval_args(r, f, n, a, 3));
        for (int i = 0; i < n->nargs; i++)
            if (a[i].t != V_INT)
                return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                                 "chat_template: line %d: range() needs integers", n->line);
        int64_t lo = n->nargs > 1 ? a[0].i : 0, hi = n->nargs > 1 ? a[1].i : a[0].i;
        int64_t st = n->nargs > 2 ? a[2].i : 1;
        if (st == 0)
            return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: range() step is 0",
                             n->line);
        int64_t count = st > 0 ? (hi > lo ? (hi - lo + st - 1) / st : 0) : (lo > hi ? (lo - hi - st - 1) / -st : 0);
        if (count > 100000)
            return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                             "chat_template: line %d: range() of over 100000 items", n->line);
        ct_val *items = ralloc(r, ((size_t)count + 1) * sizeof *items);
        if (!items) return oom(r);
        for (int64_t i = 0; i < count; i++) items[i] = vint(lo + i * st);
        *out = (ct_val){.t = V_LIST, .items = items, .n = (size_t)count};
        return TP_OK;
    }
    if (fn->kind == E_NAME) {
        ct_val v;
        TRY(lookup(f, fn->s, fn->n, &v));
        return tp__error(r->err, v.t == V_UNDEF ? TP_ERR_UNSUPPORTED : TP_ERR_INVALID_ARGUMENT,
                         "chat_template: line %d: function '%.*s' is not supported", n->line,
                         (int)(fn->n > 40 ? 40 : fn->n), fn->s);
    }
    return tp__error(r->err, TP_ERR_UNSUPPORTED, "chat_template: line %d: this call is not supported",
                     n->line);
}

static tp_status apply_filter(ct_render *r, ct_frame *f, const ct_node *n, ct_val *out)
{
    ct_val v, a[3] = {UNDEF, UNDEF, UNDEF};
    int line = n->line;
    char what[48];
    snprintf(what, sizeof what, "filter '%.*s'", (int)(n->n > 30 ? 30 : n->n), n->s);
    static const char *const known[] = {"tojson", "trim", "length", "count", "upper", "lower",
                                        "capitalize", "title", "default", "d", "string", "first",
                                        "last", "join", "items", "list", "int"};
    int is_known = 0;
    for (size_t i = 0; i < sizeof known / sizeof *known; i++) is_known |= name_is(n, known[i]);
    if (!is_known)
        return tp__error(r->err, TP_ERR_UNSUPPORTED, "chat_template: line %d: %s is not supported",
                         line, what);
    TRY(eval(r, f, n->a, &v));
    if (n->nargs > 3)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: too many arguments to %s",
                         line, what);
    TRY(eval_args(r, f, n, a, 3));
    if (name_is(n, "tojson")) {
        int indent = -1;
        TRY(want_args(r, n, what, 0, 1));
        for (int i = 0; i < n->nkw; i++) {
            if (n->kwlen[i] == 6 && memcmp(n->kw[i], "indent", 6) == 0) {
                ct_val iv;
                TRY(eval(r, f, n->kwv[i], &iv));
                if (iv.t == V_INT && iv.i >= 0 && iv.i <= 16) indent = (int)iv.i;
                else if (iv.t != V_NONE)
                    return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                                     "chat_template: line %d: tojson indent must be 0..16", line);
            } else {
                return tp__error(r->err, TP_ERR_UNSUPPORTED,
                                 "chat_template: line %d: keyword argument '%.*s' of %s is not supported",
                                 line, (int)n->kwlen[i], n->kw[i], what);
            }
        }
        if (n->nargs && a[0].t == V_INT) indent = (int)(a[0].i < 0 ? 0 : a[0].i > 16 ? 16 : a[0].i);
        ct_buf b = {.r = r};
        write_json(&b, &v, indent, 0);
        return buf_done(&b, out);
    }
    TRY(no_kwargs(r, n, what));
    if (name_is(n, "trim")) {
        TRY(want_args(r, n, what, 0, 1));
        ct_val s;
        TRY(to_string(r, &v, &s));
        return do_strip(r, line, &s, n->nargs ? &a[0] : NULL, 1, 1, out);
    }
    if (name_is(n, "length") || name_is(n, "count")) {
        TRY(want_args(r, n, what, 0, 0));
        return length_of(r, line, &v, out);
    }
    if (name_is(n, "upper") || name_is(n, "lower") || name_is(n, "capitalize") || name_is(n, "title")) {
        ct_val s;
        TRY(want_args(r, n, what, 0, 0));
        TRY(to_string(r, &v, &s));
        if (name_is(n, "capitalize")) { /* jinja: first upper, rest lower */
            ct_val low;
            TRY(change_case(r, &s, 0, &low));
            return change_case(r, &low, 2, out);
        }
        return change_case(r, &s, n->s[0] == 'l' ? 0 : n->s[0] == 'u' ? 1 : 3, out);
    }
    if (name_is(n, "default") || name_is(n, "d")) {
        TRY(want_args(r, n, what, 0, 2));
        int use = v.t == V_UNDEF || (n->nargs > 1 && truthy(&a[1]) && !truthy(&v));
        *out = use ? (n->nargs ? a[0] : vstr("", 0)) : v;
        return TP_OK;
    }
    if (name_is(n, "string")) {
        TRY(want_args(r, n, what, 0, 0));
        return to_string(r, &v, out);
    }
    if (name_is(n, "first") || name_is(n, "last")) {
        TRY(want_args(r, n, what, 0, 0));
        ct_val *items;
        size_t k;
        TRY(to_items(r, &v, line, &items, &k));
        *out = k ? items[n->s[0] == 'f' ? 0 : k - 1] : UNDEF;
        return TP_OK;
    }
    if (name_is(n, "join")) {
        TRY(want_args(r, n, what, 0, 1));
        ct_val *items;
        size_t k;
        TRY(to_items(r, &v, line, &items, &k));
        ct_buf b = {.r = r};
        for (size_t i = 0; i < k; i++) {
            if (i && n->nargs) write_str(&b, &a[0], 0);
            write_str(&b, &items[i], 0);
        }
        return buf_done(&b, out);
    }
    if (name_is(n, "items")) {
        TRY(want_args(r, n, what, 0, 0));
        return dict_items(r, line, &v, 0, out);
    }
    if (name_is(n, "list")) {
        TRY(want_args(r, n, what, 0, 0));
        ct_val *items;
        size_t k;
        TRY(to_items(r, &v, line, &items, &k));
        *out = (ct_val){.t = V_LIST, .items = items, .n = k};
        return TP_OK;
    }
    if (name_is(n, "int")) {
        TRY(want_args(r, n, what, 0, 1));
        if (v.t == V_INT || v.t == V_BOOL) *out = vint(v.i);
        else if (v.t == V_FLOAT && fabs(v.f) < 9.0e18) *out = vint((int64_t)v.f);
        else if (v.t == V_STR) {
            char buf[32];
            size_t k = v.n < sizeof buf - 1 ? v.n : sizeof buf - 1;
            memcpy(buf, v.s, k);
            buf[k] = 0;
            char *end;
            long long x = strtoll(buf, &end, 10);
            *out = *end == 0 && k ? vint(x) : (n->nargs ? a[0] : vint(0));
        } else *out = n->nargs ? a[0] : vint(0);
        return TP_OK;
    }
    return tp__error(r->err, TP_ERR_UNSUPPORTED, "chat_template: line %d: %s is not supported", line, what);
}

static tp_status apply_test(ct_render *r, ct_frame *f, const ct_node *n, ct_val *out)
{
    ct_val v, a = UNDEF;
    TRY(eval(r, f, n->a, &v));
    TRY(no_kwargs(r, n, "a test"));
    if (n->nargs > 1)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: too many test arguments",
                         n->line);
    if (n->nargs) TRY(eval(r, f, n->args[0], &a));
    int res;
    if (name_is(n, "defined")) res = v.t != V_UNDEF;
    else if (name_is(n, "undefined")) res = v.t == V_UNDEF;
    else if (name_is(n, "none")) res = v.t == V_NONE;
    else if (name_is(n, "string")) res = v.t == V_STR;
    else if (name_is(n, "number")) res = is_num(&v) && v.t != V_BOOL;
    else if (name_is(n, "integer")) res = v.t == V_INT;
    else if (name_is(n, "float")) res = v.t == V_FLOAT;
    else if (name_is(n, "boolean")) res = v.t == V_BOOL;
    else if (name_is(n, "true")) res = v.t == V_BOOL && v.i;
    else if (name_is(n, "false")) res = v.t == V_BOOL && !v.i;
    else if (name_is(n, "mapping")) res = is_dict(&v) && v.t != V_NS;
    else if (name_is(n, "sequence")) res = is_list(&v) || v.t == V_STR || (is_dict(&v) && v.t != V_NS);
    else if (name_is(n, "iterable")) res = is_list(&v) || v.t == V_STR || (is_dict(&v) && v.t != V_NS);
    else if (name_is(n, "odd") || name_is(n, "even")) {
        if (v.t != V_INT)
            return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: odd/even need an integer",
                             n->line);
        res = (v.i & 1) == (n->s[0] == 'o');
    } else if (name_is(n, "eq") || name_is(n, "equalto") || name_is(n, "sameas")) res = values_equal(&v, &a, 0);
    else if (name_is(n, "ne")) res = !values_equal(&v, &a, 0);
    else
        return tp__error(r->err, TP_ERR_UNSUPPORTED, "chat_template: line %d: test '%.*s' is not supported",
                         n->line, (int)(n->n > 30 ? 30 : n->n), n->s);
    *out = vbool(n->op ? !res : res);
    return TP_OK;
}

static tp_status eval(ct_render *r, ct_frame *f, const ct_node *n, ct_val *out)
{
    TRY(step(r, n->line));
    ct_val a, b;
    switch (n->kind) {
    case E_LIT_STR: *out = vstr(n->s, n->n); return TP_OK;
    case E_LIT_INT: *out = vint(n->i); return TP_OK;
    case E_LIT_FLOAT: *out = (ct_val){.t = V_FLOAT, .f = n->f}; return TP_OK;
    case E_LIT_BOOL: *out = vbool((int)n->i); return TP_OK;
    case E_LIT_NONE: *out = (ct_val){.t = V_NONE}; return TP_OK;
    case E_NAME: return lookup(f, n->s, n->n, out);
    case E_ATTR:
        TRY(eval(r, f, n->a, &a));
        return get_attr(r, n->line, &a, n->s, n->n, out);
    case E_INDEX:
        TRY(eval(r, f, n->a, &a));
        TRY(eval(r, f, n->b, &b));
        if (b.t == V_STR) return get_attr(r, n->line, &a, b.s, b.n, out);
        if (b.t == V_INT || b.t == V_BOOL) return index_int(r, n->line, &a, b.i, out);
        if (a.t == V_UNDEF) return undefined_error(r, n->line, &a, "indexing");
        *out = UNDEF;
        return TP_OK;
    case E_SLICE:
        TRY(eval(r, f, n->a, &a));
        return eval_slice(r, f, n, &a, out);
    case E_CALL: return call_function(r, f, n, out);
    case E_FILTER: return apply_filter(r, f, n, out);
    case E_TEST: return apply_test(r, f, n, out);
    case E_BIN:
        TRY(eval(r, f, n->a, &a));
        TRY(eval(r, f, n->b, &b));
        return binop(r, n, &a, &b, out);
    case E_NEG: case E_POS:
        TRY(eval(r, f, n->a, &a));
        if (!is_num(&a))
            return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: bad operand type for unary %c: %s",
                             n->line, n->kind == E_NEG ? '-' : '+', type_name(&a));
        if (n->kind == E_POS) *out = a.t == V_BOOL ? vint(a.i) : a;
        else if (a.t == V_FLOAT) *out = (ct_val){.t = V_FLOAT, .f = -a.f};
        else if (a.i == INT64_MIN)
            return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: line %d: integer overflow", n->line);
        else *out = vint(-a.i);
        return TP_OK;
    case E_NOT:
        TRY(eval(r, f, n->a, &a));
        *out = vbool(!truthy(&a));
        return TP_OK;
    case E_AND: case E_OR:
        TRY(eval(r, f, n->a, &a));
        if ((n->kind == E_AND) != truthy(&a)) { *out = a; return TP_OK; }
        return eval(r, f, n->b, out);
    case E_COND:
        TRY(eval(r, f, n->b, &a));
        if (truthy(&a)) return eval(r, f, n->a, out);
        if (n->c) return eval(r, f, n->c, out);
        *out = UNDEF;
        return TP_OK;
    case E_LIST: {
        ct_val *items = ralloc(r, ((size_t)n->nargs + 1) * sizeof *items);
        if (!items) return oom(r);
        for (int i = 0; i < n->nargs; i++) TRY(eval(r, f, n->args[i], &items[i]));
        *out = (ct_val){.t = V_LIST, .items = items, .n = (size_t)n->nargs};
        return TP_OK;
    }
    case E_DICT: {
        ct_dict *d = ralloc(r, sizeof *d);
        if (!d) return oom(r);
        for (int i = 0; i + 1 < n->nargs; i += 2) {
            TRY(eval(r, f, n->args[i], &a));
            TRY(eval(r, f, n->args[i + 1], &b));
            if (a.t != V_STR)
                return tp__error(r->err, TP_ERR_UNSUPPORTED, "chat_template: line %d: dict keys must be strings",
                                 n->line);
            TRY(dict_set(r, d, a, b));
        }
        *out = (ct_val){.t = V_DICT, .d = d};
        return TP_OK;
    }
    default:
        return tp__error(r->err, TP_ERR_INTERNAL, "chat_template: line %d: bad expression node", n->line);
    }
}

/* ---- statements */

static tp_status emit(ct_render *r, const char *s, size_t n)
{
    if (r->out_len + n > CT_OUTPUT_MAX)
        return tp__error(r->err, TP_ERR_INVALID_ARGUMENT, "chat_template: output over %u bytes",
                         CT_OUTPUT_MAX);
    if (r->out_len + n + 1 > r->out_cap) {
        size_t cap = r->out_cap ? r->out_cap : 256;
        while (cap < r->out_len + n + 1) cap *= 2;
        char *o = realloc(r->out, cap);
        if (!o) return tp__error(r->err, TP_ERR_NOMEM, "chat_template: out of memory");
        r->out = o;
        r->out_cap = cap;
    }
    memcpy(r->out + r->out_len, s, n);
    r->out_len += n;
    r->out[r->out_len] = 0;
    return TP_OK;
}

static tp_status exec(ct_render *r, ct_frame *f, const ct_node *n);

static tp_status exec_for(ct_render *r, ct_frame *f, const ct_node *n)
{
    ct_val seq, *items;
    size_t count;
    TRY(eval(r, f, n->a, &seq));
    TRY(to_items(r, &seq, n->line, &items, &count));
    ct_frame fr = {.parent = f};
    if (n->d) { /* loop filter: loop.* counts the kept items only */
        ct_val *kept = ralloc(r, (count + 1) * sizeof *kept);
        if (!kept) return oom(r);
        size_t k = 0;
        for (size_t i = 0; i < count; i++) {
            ct_val c = UNDEF;
            fr.vars.n = 0;
            TRY(dict_set(r, &fr.vars, vstr(n->s, n->n), items[i]));
            TRY(eval(r, &fr, n->d, &c));
            if (truthy(&c)) kept[k++] = items[i];
        }
        items = kept;
        count = k;
    }
    ct_loop loop = {.items = items, .n = count};
    for (size_t i = 0; i < count; i++) {
        TRY(step(r, n->line));
        fr.vars.n = 0; /* a fresh scope per iteration, reusing its storage */
        loop.index0 = i;
        if (n->s2) {
            ct_val *pair;
            size_t np;
            TRY(to_items(r, &items[i], n->line, &pair, &np));
            if (np != 2)
                return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                                 "chat_template: line %d: cannot unpack %zu values into 2", n->line, np);
            TRY(dict_set(r, &fr.vars, vstr(n->s, n->n), pair[0]));
            TRY(dict_set(r, &fr.vars, vstr(n->s2, n->n2), pair[1]));
        } else {
            TRY(dict_set(r, &fr.vars, vstr(n->s, n->n), items[i]));
        }
        TRY(dict_set(r, &fr.vars, vstr("loop", 4), (ct_val){.t = V_LOOP, .loop = &loop}));
        for (const ct_node *s = n->b; s; s = s->next) {
            TRY(exec(r, &fr, s));
            if (r->brk) break;
        }
        int stop = r->brk == 1;
        r->brk = 0;
        if (stop) break;
    }
    if (count == 0)
        for (const ct_node *s = n->c; s && !r->brk; s = s->next) TRY(exec(r, f, s));
    return TP_OK;
}

static tp_status exec(ct_render *r, ct_frame *f, const ct_node *n)
{
    TRY(step(r, n->line));
    ct_val v;
    switch (n->kind) {
    case S_TEXT: return emit(r, n->s, n->n);
    case S_OUTPUT: {
        TRY(eval(r, f, n->a, &v));
        if (v.t == V_STR) return emit(r, v.s, v.n);
        ct_val s;
        TRY(to_string(r, &v, &s));
        return emit(r, s.s, s.n);
    }
    case S_IF:
        for (; n; n = n->c) {
            v = vbool(1);
            if (n->a) TRY(eval(r, f, n->a, &v));
            if (truthy(&v)) {
                for (const ct_node *s = n->b; s && !r->brk; s = s->next) TRY(exec(r, f, s));
                return TP_OK;
            }
        }
        return TP_OK;
    case S_FOR: return exec_for(r, f, n);
    case S_SET:
        TRY(eval(r, f, n->a, &v));
        if (n->s2) {
            ct_val ns;
            TRY(lookup(f, n->s, n->n, &ns));
            if (ns.t != V_NS)
                return tp__error(r->err, TP_ERR_INVALID_ARGUMENT,
                                 "chat_template: line %d: cannot assign an attribute of '%.*s', not a namespace",
                                 n->line, (int)(n->n > 40 ? 40 : n->n), n->s);
            return dict_set(r, ns.d, vstr(n->s2, n->n2), v);
        }
        return dict_set(r, &f->vars, vstr(n->s, n->n), v);
    case S_BREAK: r->brk = 1; return TP_OK;
    case S_CONTINUE: r->brk = 2; return TP_OK;
    default:
        return tp__error(r->err, TP_ERR_INTERNAL, "chat_template: line %d: bad statement node", n->line);
    }
}

tp_status tp__chat_template_run(const tp__chat_template *t, const cJSON *vars, char **out,
                                tp_error *err)
{
    if (!out)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "chat_template: out is NULL");
    *out = NULL;
    if (!t)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "chat_template: template is NULL");
    if (vars && !cJSON_IsObject(vars))
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "chat_template: variables must be a JSON object");
    ct_render r = {.arena = {.cap = CT_ARENA_MAX}, .err = err};
    ct_frame globals = {0};
    tp_status st = TP_OK;
    /* transformers always passes these; a caller's value wins */
    st = dict_set(&r, &globals.vars, vstr("add_generation_prompt", 21), vbool(0));
    if (st == TP_OK) st = dict_set(&r, &globals.vars, vstr("tools", 5), (ct_val){.t = V_NONE});
    if (st == TP_OK) st = dict_set(&r, &globals.vars, vstr("documents", 9), (ct_val){.t = V_NONE});
    for (const cJSON *c = vars ? vars->child : NULL; c && st == TP_OK; c = c->next)
        st = dict_set(&r, &globals.vars, vstr(c->string, strlen(c->string)), from_json(c));
    for (const ct_node *s = t->body; s && st == TP_OK; s = s->next) {
        st = exec(&r, &globals, s);
        if (r.brk) r.brk = 0; /* break outside a loop: jinja refuses it at compile time */
    }
    arena_free(&r.arena);
    if (st != TP_OK) {
        free(r.out);
        return st;
    }
    if (!r.out && !(r.out = calloc(1, 1)))
        return tp__error(err, TP_ERR_NOMEM, "chat_template: out of memory");
    *out = r.out;
    return TP_OK;
}

tp_status tp__chat_template_render(const char *template_src, const cJSON *messages,
                                   const cJSON *extra_vars, char **out, tp_error *err)
{
    if (out) *out = NULL;
    tp__chat_template *t = NULL;
    TRY(tp__chat_template_compile(template_src, &t, err));
    cJSON *vars = cJSON_CreateObject();
    tp_status st = TP_OK;
    if (!vars) st = tp__error(err, TP_ERR_NOMEM, "chat_template: out of memory");
    /* borrowed references: the caller keeps ownership */
    if (st == TP_OK && messages && !cJSON_AddItemReferenceToObject(vars, "messages", (cJSON *)messages))
        st = tp__error(err, TP_ERR_NOMEM, "chat_template: out of memory");
    for (const cJSON *c = extra_vars ? extra_vars->child : NULL; c && st == TP_OK; c = c->next)
        if (c->string && !cJSON_AddItemReferenceToObject(vars, c->string, (cJSON *)c))
            st = tp__error(err, TP_ERR_NOMEM, "chat_template: out of memory");
    if (st == TP_OK) st = tp__chat_template_run(t, vars, out, err);
    cJSON_Delete(vars);
    tp__chat_template_free(t);
    return st;
}
