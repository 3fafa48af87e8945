/* precompiled.c: SentencePiece's precompiled_charsmap (a darts-clone double-array
 * trie over UTF-8 byte strings whose values index a pool of NUL-terminated
 * replacements) and the normalizers built on it:
 *  - Precompiled (tokenizers): per extended grapheme cluster, a cluster shorter than
 *    6 bytes is replaced by the first (shortest) rule matching a prefix of it;
 *    otherwise each character is replaced by its own rule; alignment follows
 *    tokenizers' NormalizedString::transform (a replaced character keeps the span of
 *    the one it replaces, extra characters take the span before them, removed ones
 *    are absorbed by the previous output character).
 *  - the sentencepiece normalizer (Marian's slow path): user-defined symbols kept,
 *    else the longest rule at each position, else one character; leading, trailing
 *    and repeated spaces removed, a dummy U+2581 prefix, spaces escaped to U+2581.
 * Also NFC / NFKC / NFKD (utf8proc) and Strip. Every trie access is bounds-checked:
 * a corrupt charsmap can make rules miss, never read out of bounds.
 * Thread-safety: immutable after construction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/spm_internal.h"

/* ------------------------------------------------------------ base64 */

tp_status tp__base64_decode(const char *s, size_t len, unsigned char **out, size_t *out_len,
                            const char *what, tp_error *err)
{
    unsigned char *o = malloc(len / 4 * 3 + 4);
    if (!o) return tp__error(err, TP_ERR_NOMEM, "%s: out of memory", what);
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0, i = 0, pad = 0;
    for (; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int v;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '+') v = 62;
        else if (c == '/') v = 63;
        else if (c == '=') { pad++; continue; }
        else {
            free(o);
            return tp__error(err, TP_ERR_FORMAT, "%s: invalid base64 character at position %zu",
                             what, i);
        }
        if (pad) {
            free(o);
            return tp__error(err, TP_ERR_FORMAT, "%s: base64 data after padding at position %zu",
                             what, i);
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[n++] = (unsigned char)(acc >> bits);
        }
    }
    if (pad > 2 || bits >= 6) {
        free(o);
        return tp__error(err, TP_ERR_FORMAT, "%s: truncated base64 data", what);
    }
    *out = o;
    *out_len = n;
    return TP_OK;
}

/* ------------------------------------------------------------ charsmap */

typedef struct charsmap {
    uint32_t *units;
    size_t n_units;
    char *norm; /* replacement pool */
    size_t norm_len;
} charsmap;

static void charsmap_free(charsmap *c)
{
    free(c->units);
    free(c->norm);
    memset(c, 0, sizeof *c);
}

static tp_status charsmap_parse(const unsigned char *b, size_t len, const char *what,
                                charsmap *c, tp_error *err)
{
    memset(c, 0, sizeof *c);
    if (len <= 4)
        return tp__error(err, TP_ERR_FORMAT, "%s: precompiled_charsmap is %zu bytes, too short",
                         what, len);
    uint32_t tsize = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                     (uint32_t)b[3] << 24;
    if (tsize > len - 4 || tsize % 4 || tsize == 0)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: precompiled_charsmap: trie size %u does not fit its %zu bytes",
                         what, tsize, len);
    size_t nl = len - 4 - tsize;
    const char *pool = (const char *)b + 4 + tsize;
    size_t bad = tp__utf8_invalid_at(pool, nl);
    if (bad < nl)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: precompiled_charsmap: replacement pool not valid UTF-8 at byte %zu",
                         what, bad);
    c->n_units = tsize / 4;
    c->units = malloc(tsize);
    c->norm = malloc(nl + 1);
    if (!c->units || !c->norm) {
        charsmap_free(c);
        return tp__error(err, TP_ERR_NOMEM, "%s: out of memory", what);
    }
    for (size_t i = 0; i < c->n_units; i++) {
        const unsigned char *u = b + 4 + 4 * i;
        c->units[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 |
                      (uint32_t)u[3] << 24;
    }
    memcpy(c->norm, pool, nl);
    c->norm[nl] = '\0';
    c->norm_len = nl;
    return TP_OK;
}

static inline uint32_t du_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static inline uint32_t du_label(uint32_t u) { return u & ((1u << 31) | 0xFFu); }
static inline int du_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static inline uint32_t du_value(uint32_t u) { return u & 0x7FFFFFFFu; }

typedef struct cm_hit {
    size_t len;   /* key bytes matched */
    size_t rep;   /* replacement: pool offset */
    size_t rep_len;
} cm_hit;

/* A replacement at pool offset v: up to NUL; invalid offsets (out of range or not
 * on a character boundary) make the rule unusable. */
static int cm_replacement(const charsmap *c, uint32_t v, cm_hit *h)
{
    if (v > c->norm_len) return 0;
    if (v < c->norm_len && ((unsigned char)c->norm[v] & 0xC0) == 0x80) return 0;
    const char *e = memchr(c->norm + v, 0, c->norm_len - v);
    h->rep = v;
    h->rep_len = e ? (size_t)(e - (c->norm + v)) : c->norm_len - v;
    return 1;
}

/* Common-prefix search of key[0..len): the shortest hit (first = 1) or the longest
 * among the first 32 (sentencepiece's result buffer). Returns whether one was found. */
static int cm_search(const charsmap *c, const unsigned char *key, size_t len, int first,
                     cm_hit *out)
{
    if (!c->units) return 0;
    size_t pos = du_offset(c->units[0]);
    int found = 0, hits = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = key[i];
        if (ch == 0) break;
        pos ^= ch;
        if (pos >= c->n_units) break;
        uint32_t u = c->units[pos];
        if (du_label(u) != ch) break;
        pos ^= du_offset(u);
        if (du_has_leaf(u)) {
            if (pos >= c->n_units) break;
            if (++hits > 32) break;
            cm_hit h;
            if (cm_replacement(c, du_value(c->units[pos]), &h)) {
                h.len = i + 1;
                *out = h;
                found = 1;
                if (first) return 1;
            } else if (first) {
                return 0; /* tokenizers takes results[0] whatever it is */
            }
        }
    }
    return found;
}

static void swap_nstr(tp__nstr *a, tp__nstr *b)
{
    tp__nstr t = *a;
    *a = *b;
    *b = t;
}

/* ------------------------------------------------------------ transformations */

typedef struct xf {
    uint32_t cp;
    int32_t change;
} xf;

typedef struct xf_list {
    xf *v;
    size_t n, cap;
} xf_list;

static tp_status xf_push(xf_list *l, uint32_t cp, int32_t change, tp_error *err)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        xf *v = realloc(l->v, nc * sizeof *v);
        if (!v) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        l->v = v;
        l->cap = nc;
    }
    l->v[l->n].cp = cp;
    l->v[l->n].change = change;
    l->n++;
    return TP_OK;
}

/* tokenizers' `replace(transformations, old_part, new_part)`. */
static tp_status xf_replace(xf_list *l, size_t old_chars, const char *rep, size_t rep_len,
                            tp_error *err)
{
    size_t first = l->n, i = 0;
    while (i < rep_len) {
        uint32_t cp;
        i += (size_t)tp__utf8_decode(rep + i, rep_len - i, &cp);
        TP_TRY(xf_push(l, cp, 0, err));
    }
    long diff = (long)(l->n - first) - (long)old_chars;
    if (diff > 0) {
        for (size_t k = l->n - (size_t)diff; k < l->n; k++) l->v[k].change = 1;
    } else if (diff < 0 && l->n > 0) {
        l->v[l->n - 1].change += (int32_t)diff;
    }
    return TP_OK;
}

/* NormalizedString::transform over the whole string: builds `out` from `in`. */
static tp_status xf_apply(const xf_list *l, const tp__nstr *in, tp__nstr *out, tp_error *err)
{
    out->len = 0;
    TP_TRY(tp__nstr_reserve(out, in->len + l->n + 8, err));
    size_t off = 0;
    for (size_t k = 0; k < l->n; k++) {
        tp__span sp = {0, 0};
        int32_t ch = l->v[k].change;
        if (ch > 0) {
            if (off >= 1 && off - 1 < in->len) sp = in->al[off - 1];
            else if (in->len) sp = (tp__span){in->al[0].start, in->al[0].start};
        } else {
            if (off < in->len) sp = in->al[off];
            else if (in->len) sp = (tp__span){in->al[in->len - 1].end, in->al[in->len - 1].end};
            long eat = 1 + (ch < 0 ? -(long)ch : 0);
            for (long e = 0; e < eat && off < in->len; e++) {
                uint32_t cp;
                off += (size_t)tp__utf8_decode(in->s + off, in->len - off, &cp);
            }
        }
        TP_TRY(tp__nstr_push(out, l->v[k].cp, sp, err));
    }
    return TP_OK;
}

/* ------------------------------------------------------------ Precompiled (tokenizers) */

typedef struct precompiled {
    tp__normalizer base;
    charsmap cm;
    int empty;
} precompiled;

static tp_status pc_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *tmp,
                              tp_error *err)
{
    const precompiled *p = (const precompiled *)self;
    if (p->empty || !n->len) return TP_OK;
    xf_list l = {0};
    tp_status st = TP_OK;
    int modified = 0;
    size_t i = 0;
    utf8proc_int32_t state = 0;
    const unsigned char *s = (const unsigned char *)n->s;
    while (i < n->len && st == TP_OK) {
        /* one extended grapheme cluster [i, g) */
        uint32_t c0;
        size_t g = i + (size_t)tp__utf8_decode(n->s + i, n->len - i, &c0);
        size_t nch = 1;
        uint32_t prev = c0;
        state = 0;
        while (g < n->len) {
            uint32_t c;
            int k = tp__utf8_decode(n->s + g, n->len - g, &c);
            if (utf8proc_grapheme_break_stateful((utf8proc_int32_t)prev, (utf8proc_int32_t)c,
                                                 &state))
                break;
            prev = c;
            g += (size_t)k;
            nch++;
        }
        cm_hit h;
        if (g - i < 6 && cm_search(&p->cm, s + i, g - i, 1, &h)) {
            modified = 1;
            st = xf_replace(&l, nch, p->cm.norm + h.rep, h.rep_len, err);
            i = g;
            continue;
        }
        while (i < g && st == TP_OK) {
            uint32_t c;
            int k = tp__utf8_decode(n->s + i, g - i, &c);
            if (cm_search(&p->cm, s + i, (size_t)k, 1, &h)) {
                modified = 1;
                st = xf_replace(&l, 1, p->cm.norm + h.rep, h.rep_len, err);
            } else {
                st = xf_push(&l, c, 0, err);
            }
            i += (size_t)k;
        }
    }
    if (st == TP_OK && modified) {
        st = xf_apply(&l, n, tmp, err);
        if (st == TP_OK) swap_nstr(n, tmp);
    }
    free(l.v);
    return st;
}

static void pc_free(tp__normalizer *self)
{
    precompiled *p = (precompiled *)self;
    charsmap_free(&p->cm);
    free(p);
}

static const tp__normalizer_ops pc_ops = {"Precompiled", pc_normalize, pc_free};

tp_status tp__precompiled_new(const unsigned char *cmap, size_t len, const char *what,
                              tp__normalizer **out, tp_error *err)
{
    precompiled *p = calloc(1, sizeof *p);
    if (!p) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    p->base.ops = &pc_ops;
    if (len == 0) {
        p->empty = 1;
    } else {
        tp_status st = charsmap_parse(cmap, len, what, &p->cm, err);
        if (st != TP_OK) {
            free(p);
            return st;
        }
    }
    *out = &p->base;
    return TP_OK;
}

tp_status tp__precompiled_from_json(const cJSON *j, const char *what, tp__normalizer **out,
                                    tp_error *err)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "precompiled_charsmap");
    if (!c || cJSON_IsNull(c)) return tp__precompiled_new(NULL, 0, what, out, err);
    if (!cJSON_IsString(c))
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: key 'normalizer.precompiled_charsmap' must be a base64 string", what);
    unsigned char *b = NULL;
    size_t bl = 0;
    char where[512];
    snprintf(where, sizeof where, "%s: key 'normalizer.precompiled_charsmap'", what);
    TP_TRY(tp__base64_decode(c->valuestring, strlen(c->valuestring), &b, &bl, where, err));
    tp_status st = tp__precompiled_new(b, bl, where, out, err);
    free(b);
    return st;
}

/* ------------------------------------------------------------ sentencepiece normalizer */

typedef struct spm_norm {
    tp__normalizer base;
    charsmap cm;
    int have_cm;
    int add_dummy_prefix, remove_extra_ws, escape_ws, ws_suffix;
    char **user;       /* user-defined symbols: matched first, kept verbatim */
    size_t *user_len;
    size_t n_user;
    char *user_arena;
} spm_norm;

/* NormalizePrefix: the replacement of the longest unit at s[0..len) and its length. */
static size_t spm_prefix(const spm_norm *p, const char *s, size_t len, const char **rep,
                         size_t *rep_len)
{
    size_t best = 0;
    for (size_t u = 0; u < p->n_user; u++)
        if (p->user_len[u] > best && p->user_len[u] <= len &&
            memcmp(s, p->user[u], p->user_len[u]) == 0)
            best = p->user_len[u];
    if (best) {
        *rep = s;
        *rep_len = best;
        return best;
    }
    cm_hit h;
    if (p->have_cm && cm_search(&p->cm, (const unsigned char *)s, len, 0, &h)) {
        *rep = p->cm.norm + h.rep;
        *rep_len = h.rep_len;
        return h.len;
    }
    uint32_t cp;
    size_t k = (size_t)tp__utf8_decode(s, len, &cp);
    if (cp == 0xFFFD && !(k == 3 && (unsigned char)s[0] == 0xEF)) {
        *rep = "\xEF\xBF\xBD";
        *rep_len = 3;
        return 1;
    }
    *rep = s;
    *rep_len = k;
    return k;
}

static tp_status spm_emit_ws(const spm_norm *p, tp__nstr *o, tp__span sp, tp_error *err)
{
    if (p->escape_ws) return tp__nstr_append(o, "\xE2\x96\x81", 3, NULL, sp, err);
    return tp__nstr_append(o, " ", 1, NULL, sp, err);
}

static tp_status spm_normalize(const tp__normalizer *self, tp__nstr *n, tp__nstr *o,
                               tp_error *err)
{
    const spm_norm *p = (const spm_norm *)self;
    o->len = 0;
    size_t i = 0, len = n->len;
    const char *rep;
    size_t rl;
    if (p->remove_extra_ws) {
        while (i < len) {
            size_t k = spm_prefix(p, n->s + i, len - i, &rep, &rl);
            if (!(rl == 1 && rep[0] == ' ')) break;
            i += k;
        }
    }
    if (i >= len) {
        n->len = 0;
        return TP_OK;
    }
    TP_TRY(tp__nstr_reserve(o, (len - i) * 3 + 8, err));
    if (!p->ws_suffix && p->add_dummy_prefix) TP_TRY(spm_emit_ws(p, o, n->al[i], err));
    int prev_space = p->remove_extra_ws;
    while (i < len) {
        size_t k = spm_prefix(p, n->s + i, len - i, &rep, &rl);
        tp__span sp = {n->al[i].start, n->al[i + k - 1].end};
        if (prev_space)
            while (rl && rep[0] == ' ') {
                rep++;
                rl--;
            }
        if (rl) {
            for (size_t b = 0; b < rl; b++) {
                if (rep[b] == ' ' && p->escape_ws) {
                    TP_TRY(tp__nstr_append(o, "\xE2\x96\x81", 3, NULL, sp, err));
                } else {
                    if (o->len + 1 > o->cap) TP_TRY(tp__nstr_reserve(o, o->len + 1, err));
                    o->s[o->len] = rep[b];
                    o->al[o->len++] = sp;
                }
            }
            prev_space = rep[rl - 1] == ' ';
        }
        i += k;
        if (!p->remove_extra_ws) prev_space = 0;
    }
    if (p->remove_extra_ws) {
        const char *ws = p->escape_ws ? "\xE2\x96\x81" : " ";
        size_t wl = p->escape_ws ? 3 : 1;
        while (o->len >= wl && memcmp(o->s + o->len - wl, ws, wl) == 0) o->len -= wl;
    }
    if (p->ws_suffix && p->add_dummy_prefix && o->len) {
        tp__span sp = o->al[o->len - 1];
        TP_TRY(spm_emit_ws(p, o, sp, err));
    }
    swap_nstr(n, o);
    return TP_OK;
}

static void spm_norm_free(tp__normalizer *self)
{
    spm_norm *p = (spm_norm *)self;
    charsmap_free(&p->cm);
    free(p->user);
    free(p->user_len);
    free(p->user_arena);
    free(p);
}

static const tp__normalizer_ops spm_norm_ops = {"SentencePieceNormalizer", spm_normalize,
                                                spm_norm_free};

tp_status tp__spm_normalizer_new(const tp__spm_model *spm, const char *what,
                                 tp__normalizer **out, tp_error *err)
{
    spm_norm *p = calloc(1, sizeof *p);
    if (!p) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    p->base.ops = &spm_norm_ops;
    p->add_dummy_prefix = spm->add_dummy_prefix;
    p->remove_extra_ws = spm->remove_extra_whitespaces;
    p->escape_ws = spm->escape_whitespaces;
    p->ws_suffix = spm->treat_whitespace_as_suffix;
    if (spm->charsmap_len) {
        char where[512];
        snprintf(where, sizeof where, "%s: normalizer_spec", what);
        tp_status st = charsmap_parse(spm->charsmap, spm->charsmap_len, where, &p->cm, err);
        if (st != TP_OK) {
            free(p);
            return st;
        }
        p->have_cm = 1;
    }
    size_t nu = 0;
    for (size_t i = 0; i < spm->n_pieces; i++) nu += spm->pieces[i].type == TP__SPM_USER_DEFINED;
    if (nu) {
        p->user = calloc(nu, sizeof *p->user);
        p->user_len = calloc(nu, sizeof *p->user_len);
        p->user_arena = malloc(spm->arena_len ? spm->arena_len : 1);
        if (!p->user || !p->user_len || !p->user_arena) {
            spm_norm_free(&p->base);
            return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        }
        memcpy(p->user_arena, spm->arena, spm->arena_len);
        for (size_t i = 0; i < spm->n_pieces; i++)
            if (spm->pieces[i].type == TP__SPM_USER_DEFINED) {
                p->user[p->n_user] = p->user_arena + spm->pieces[i].off;
                p->user_len[p->n_user++] = spm->pieces[i].len;
            }
    }
    *out = &p->base;
    return TP_OK;
}
