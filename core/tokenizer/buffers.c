/* buffers.c: the growable buffers of the tokenizer (normalized strings with their
 * alignment, POD vectors, token lists) and the per-call work area. Thread-safety:
 * a buffer belongs to one call at a time. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tok_internal.h"

static size_t grow_to(size_t cap, size_t need)
{
    size_t c = cap ? cap : 16;
    while (c < need) c *= 2;
    return c;
}

tp_status tp__nstr_reserve(tp__nstr *n, size_t cap, tp_error *err)
{
    if (cap <= n->cap) return TP_OK;
    size_t c = grow_to(n->cap, cap);
    char *s = realloc(n->s, c + 1);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    n->s = s;
    tp__span *al = realloc(n->al, c * sizeof *al);
    if (!al) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    n->al = al;
    n->cap = c;
    return TP_OK;
}

tp_status tp__nstr_push(tp__nstr *n, uint32_t cp, tp__span sp, tp_error *err)
{
    if (n->len + 4 > n->cap) TP_TRY(tp__nstr_reserve(n, n->len + 4, err));
    int k = tp__utf8_encode(cp, n->s + n->len);
    for (int i = 0; i < k; i++) n->al[n->len + (size_t)i] = sp;
    n->len += (size_t)k;
    return TP_OK;
}

tp_status tp__nstr_append(tp__nstr *n, const char *s, size_t len, const tp__span *al,
                          tp__span sp, tp_error *err)
{
    if (n->len + len > n->cap) TP_TRY(tp__nstr_reserve(n, n->len + len, err));
    memcpy(n->s + n->len, s, len);
    if (al) {
        memcpy(n->al + n->len, al, len * sizeof *al);
    } else {
        for (size_t i = 0; i < len; i++) n->al[n->len + i] = sp;
    }
    n->len += len;
    return TP_OK;
}

void tp__nstr_free(tp__nstr *n)
{
    free(n->s);
    free(n->al);
    memset(n, 0, sizeof *n);
}

tp_status tp__vec_reserve(tp__vec *v, size_t n, tp_error *err)
{
    if (n <= v->cap) return TP_OK;
    size_t c = grow_to(v->cap, n);
    void *d = realloc(v->data, c * v->elem);
    if (!d) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    v->data = d;
    v->cap = c;
    return TP_OK;
}

void *tp__vec_push(tp__vec *v, tp_error *err)
{
    if (v->len == v->cap && tp__vec_reserve(v, v->len + 1, err) != TP_OK) return NULL;
    return (char *)v->data + v->elem * v->len++;
}

void tp__vec_free(tp__vec *v)
{
    free(v->data);
    v->data = NULL;
    v->len = v->cap = 0;
}

tp_status tp__toklist_add(tp__toklist *l, const char *s, size_t len, tp_error *err)
{
    l->buf.elem = 1;
    l->items.elem = 2 * sizeof(uint32_t);
    TP_TRY(tp__vec_reserve(&l->buf, l->buf.len + len + 1, err));
    uint32_t *it = tp__vec_push(&l->items, err);
    if (!it) return err ? err->status : TP_ERR_NOMEM;
    it[0] = (uint32_t)l->buf.len;
    it[1] = (uint32_t)len;
    if (len) memcpy((char *)l->buf.data + l->buf.len, s, len);
    l->buf.len += len;
    return TP_OK;
}

void tp__toklist_free(tp__toklist *l)
{
    tp__vec_free(&l->buf);
    tp__vec_free(&l->items);
}

void tp__work_free(tp__work *w)
{
    tp__nstr_free(&w->arena);
    tp__nstr_free(&w->n1);
    tp__nstr_free(&w->n2);
    tp__vec_free(&w->splits);
    tp__vec_free(&w->splits2);
    tp__vec_free(&w->toks);
    tp__vec_free(&w->char_at);
    for (int i = 0; i < 2; i++) {
        tp__vec_free(&w->seq[i].ids);
        tp__vec_free(&w->seq[i].offs);
        tp__vec_free(&w->seq[i].words);
    }
    free(w->scratch);
    memset(w, 0, sizeof *w);
}

tp_status tp__work_scratch(tp__work *w, size_t need, tp_error *err)
{
    if (need <= w->scratch_cap) return TP_OK;
    size_t c = grow_to(w->scratch_cap, need);
    char *s = realloc(w->scratch, c);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    w->scratch = s;
    w->scratch_cap = c;
    return TP_OK;
}

/* ------------------------------------------------------------ vocab */

/* FNV-1a, folded: fast for the short keys of vocabularies, and incremental, so
 * WordPiece hashes all prefixes of a word in one pass (tp__vocab_prefix_hashes). */
#define FNV_START 2166136261u
#define FNV_STEP(h, c) (((h) ^ (unsigned char)(c)) * 16777619u)
#define FNV_FOLD(h) ((h) ^ ((h) >> 15))

static uint32_t hash_bytes(const char *s, size_t len)
{
    uint32_t h = FNV_START;
    for (size_t i = 0; i < len; i++) h = FNV_STEP(h, s[i]);
    return FNV_FOLD(h);
}

void tp__vocab_prefix_hashes(const char *s, size_t len, uint32_t *out)
{
    uint32_t h = FNV_START;
    out[0] = FNV_FOLD(h);
    for (size_t i = 0; i < len; i++) {
        h = FNV_STEP(h, s[i]);
        out[i + 1] = FNV_FOLD(h);
    }
}

tp_status tp__vocab_init(tp__vocab *v, size_t expected, tp_error *err)
{
    memset(v, 0, sizeof *v);
    size_t n = 64;
    while (n < expected * 2) n *= 2;
    v->slots = calloc(n, sizeof *v->slots);
    v->slot_hash = calloc(n, sizeof *v->slot_hash);
    if (!v->slots || !v->slot_hash) {
        tp__vocab_free(v);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    v->n_slots = n;
    return TP_OK;
}

static int slot_matches(const tp__vocab *v, uint32_t slot_id, const char *tok, size_t len)
{
    uint32_t id = slot_id - 1;
    return v->tok_len[id] == len && memcmp(v->arena + v->tok_off[id], tok, len) == 0;
}

static tp_status vocab_rehash(tp__vocab *v, tp_error *err)
{
    size_t n = v->n_slots * 2;
    uint32_t *slots = calloc(n, sizeof *slots), *hashes = calloc(n, sizeof *hashes);
    if (!slots || !hashes) {
        free(slots);
        free(hashes);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (size_t i = 0; i < v->n_slots; i++) {
        if (!v->slots[i]) continue;
        size_t j = v->slot_hash[i] & (n - 1);
        while (slots[j]) j = (j + 1) & (n - 1);
        slots[j] = v->slots[i];
        hashes[j] = v->slot_hash[i];
    }
    free(v->slots);
    free(v->slot_hash);
    v->slots = slots;
    v->slot_hash = hashes;
    v->n_slots = n;
    return TP_OK;
}

tp_status tp__vocab_add(tp__vocab *v, const char *tok, size_t len, int32_t id, tp_error *err)
{
    if (id < 0 || len > UINT32_MAX / 2)
        return tp__error(err, TP_ERR_FORMAT, "tokenizer: invalid vocabulary entry (id %d)",
                         (int)id);
    if ((v->count + 1) * 2 > v->n_slots) TP_TRY(vocab_rehash(v, err));
    if ((size_t)id >= v->n_ids) {
        size_t n = (size_t)id + 1, cap = 16;
        while (cap < n) cap *= 2;
        /* grow the reverse table to a power of two; entries past n_ids are holes */
        uint32_t *off = realloc(v->tok_off, cap * sizeof *off);
        if (!off) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        v->tok_off = off;
        uint32_t *ln = realloc(v->tok_len, cap * sizeof *ln);
        if (!ln) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        v->tok_len = ln;
        for (size_t i = v->n_ids; i < n; i++) {
            v->tok_off[i] = UINT32_MAX;
            v->tok_len[i] = 0;
        }
        v->n_ids = n;
    }
    if (v->arena_len + len + 1 > v->arena_cap) {
        size_t c = grow_to(v->arena_cap, v->arena_len + len + 1);
        if (c > UINT32_MAX) return tp__error(err, TP_ERR_FORMAT, "tokenizer: vocabulary too large");
        char *a = realloc(v->arena, c);
        if (!a) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        v->arena = a;
        v->arena_cap = c;
    }
    uint32_t h = hash_bytes(tok, len);
    size_t j = h & (v->n_slots - 1);
    while (v->slots[j]) {
        if (v->slot_hash[j] == h && slot_matches(v, v->slots[j], tok, len)) {
            /* Duplicate: the later id wins, the earlier one becomes a hole. */
            uint32_t old = v->slots[j] - 1;
            if (old != (uint32_t)id) {
                v->tok_off[id] = v->tok_off[old];
                v->tok_len[id] = v->tok_len[old];
                v->tok_off[old] = UINT32_MAX;
                v->tok_len[old] = 0;
                v->slots[j] = (uint32_t)id + 1;
            }
            return TP_OK;
        }
        j = (j + 1) & (v->n_slots - 1);
    }
    /* When the id already names another token, that token loses it: its slot
     * stays behind but can no longer match (slot_matches reads the id's token). */
    memcpy(v->arena + v->arena_len, tok, len);
    v->arena[v->arena_len + len] = '\0';
    v->tok_off[id] = (uint32_t)v->arena_len;
    v->tok_len[id] = (uint32_t)len;
    v->arena_len += len + 1;
    v->slots[j] = (uint32_t)id + 1;
    v->slot_hash[j] = h;
    v->count++;
    if (len > v->max_tok_len) v->max_tok_len = len;
    return TP_OK;
}

int32_t tp__vocab_find(const tp__vocab *v, const char *tok, size_t len)
{
    return tp__vocab_find_hashed(v, tok, len, hash_bytes(tok, len));
}

int32_t tp__vocab_find_hashed(const tp__vocab *v, const char *tok, size_t len, uint32_t h)
{
    if (!v->n_slots) return -1;
    size_t j = h & (v->n_slots - 1);
    while (v->slots[j]) {
        if (v->slot_hash[j] == h && slot_matches(v, v->slots[j], tok, len))
            return (int32_t)(v->slots[j] - 1);
        j = (j + 1) & (v->n_slots - 1);
    }
    return -1;
}

const char *tp__vocab_token(const tp__vocab *v, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= v->n_ids || v->tok_off[id] == UINT32_MAX) return NULL;
    if (len) *len = v->tok_len[id];
    return v->arena + v->tok_off[id];
}

void tp__vocab_free(tp__vocab *v)
{
    free(v->arena);
    free(v->tok_off);
    free(v->tok_len);
    free(v->slots);
    free(v->slot_hash);
    memset(v, 0, sizeof *v);
}
