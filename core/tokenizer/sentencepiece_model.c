/* sentencepiece_model.c: a reader for SentencePiece .model files (a serialized
 * ModelProto, protobuf wire format), written from the public .proto: pieces {piece,
 * score, type}, trainer_spec {model_type, unk/bos/eos/pad ids, byte_fallback,
 * treat_whitespace_as_suffix, unk_surface} and normalizer_spec {name,
 * precompiled_charsmap, add_dummy_prefix, remove_extra_whitespaces,
 * escape_whitespaces}. Every varint, length and wire type is checked against the
 * bytes that remain, so any input either parses or gives TP_ERR_FORMAT naming the
 * byte offset and the field. Unknown fields are skipped as protobuf requires.
 * Thread-safety: reentrant; the result is owned by the caller. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/spm_internal.h"

typedef struct pb {
    const unsigned char *base; /* start of the file, for offsets in errors */
    const unsigned char *p, *end;
    const char *what;
} pb;

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

static size_t pb_off(const pb *b) { return (size_t)(b->p - b->base); }

static tp_status pb_varint(pb *b, uint64_t *v, const char *field, tp_error *err)
{
    uint64_t r = 0;
    size_t at = pb_off(b);
    for (int shift = 0; shift < 70; shift += 7) {
        if (b->p >= b->end)
            return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: %s: truncated varint", b->what,
                             at, field);
        unsigned char c = *b->p++;
        if (shift == 63 && c > 1)
            return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: %s: varint overflows 64 bits",
                             b->what, at, field);
        r |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return TP_OK;
        }
    }
    return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: %s: varint longer than 10 bytes",
                     b->what, at, field);
}

/* Reads a length-delimited payload into a sub-reader. */
static tp_status pb_len(pb *b, pb *sub, const char *field, tp_error *err)
{
    uint64_t n = 0;
    size_t at = pb_off(b);
    TP_TRY(pb_varint(b, &n, field, err));
    size_t left = (size_t)(b->end - b->p);
    if (n > left)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: byte %zu: field '%s' has length %llu but only %zu bytes remain",
                         b->what, at, field, (unsigned long long)n, left);
    sub->base = b->base;
    sub->p = b->p;
    sub->end = b->p + n;
    sub->what = b->what;
    b->p += n;
    return TP_OK;
}

static tp_status pb_skip(pb *b, int wt, uint64_t field_no, tp_error *err)
{
    size_t at = pb_off(b);
    uint64_t v;
    pb sub;
    switch (wt) {
    case WT_VARINT:
        return pb_varint(b, &v, "field value", err);
    case WT_I64:
    case WT_I32: {
        size_t n = wt == WT_I64 ? 8 : 4;
        if ((size_t)(b->end - b->p) < n)
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: byte %zu: field %llu: fixed-size value runs past the end",
                             b->what, at, (unsigned long long)field_no);
        b->p += n;
        return TP_OK;
    }
    case WT_LEN: {
        char name[48];
        snprintf(name, sizeof name, "field %llu", (unsigned long long)field_no);
        return pb_len(b, &sub, name, err);
    }
    default:
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: byte %zu: field %llu: unsupported wire type %d", b->what, at,
                         (unsigned long long)field_no, wt);
    }
}

static tp_status pb_tag(pb *b, uint64_t *field_no, int *wt, tp_error *err)
{
    uint64_t t;
    size_t at = pb_off(b);
    TP_TRY(pb_varint(b, &t, "tag", err));
    *field_no = t >> 3;
    *wt = (int)(t & 7);
    if (*field_no == 0)
        return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: field number 0 is invalid", b->what,
                         at);
    return TP_OK;
}

static tp_status want_wt(const pb *b, size_t at, int wt, int want, const char *field,
                         tp_error *err)
{
    if (wt == want) return TP_OK;
    return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: field '%s' has wire type %d, expected %d",
                     b->what, at, field, wt, want);
}

static tp_status pb_int32(pb *b, size_t at, int wt, const char *field, int32_t *out,
                          tp_error *err)
{
    uint64_t v;
    TP_TRY(want_wt(b, at, wt, WT_VARINT, field, err));
    TP_TRY(pb_varint(b, &v, field, err));
    *out = (int32_t)(uint32_t)v; /* int32 negatives are sign-extended to 64 bits */
    return TP_OK;
}

static tp_status pb_bool(pb *b, size_t at, int wt, const char *field, int *out, tp_error *err)
{
    uint64_t v;
    TP_TRY(want_wt(b, at, wt, WT_VARINT, field, err));
    TP_TRY(pb_varint(b, &v, field, err));
    *out = v != 0;
    return TP_OK;
}

/* A string field copied into a malloc'ed NUL-terminated buffer. */
static tp_status pb_string(pb *b, size_t at, int wt, const char *field, char **out,
                           size_t *out_len, tp_error *err)
{
    pb sub = {0};
    TP_TRY(want_wt(b, at, wt, WT_LEN, field, err));
    TP_TRY(pb_len(b, &sub, field, err));
    size_t n = (size_t)(sub.end - sub.p);
    char *s = malloc(n + 1);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "%s: out of memory", b->what);
    memcpy(s, sub.p, n);
    s[n] = '\0';
    free(*out);
    *out = s;
    if (out_len) *out_len = n;
    return TP_OK;
}

/* ------------------------------------------------------------ messages */

static tp_status arena_add(tp__spm_model *m, size_t *cap, const unsigned char *s, size_t n,
                           uint32_t *off, const char *what, tp_error *err)
{
    if (m->arena_len + n + 1 > UINT32_MAX)
        return tp__error(err, TP_ERR_FORMAT, "%s: pieces too large", what);
    if (m->arena_len + n + 1 > *cap) {
        size_t nc = *cap ? *cap * 2 : 4096;
        while (nc < m->arena_len + n + 1) nc *= 2;
        char *a = realloc(m->arena, nc);
        if (!a) return tp__error(err, TP_ERR_NOMEM, "%s: out of memory", what);
        m->arena = a;
        *cap = nc;
    }
    *off = (uint32_t)m->arena_len;
    memcpy(m->arena + m->arena_len, s, n);
    m->arena[m->arena_len + n] = '\0';
    m->arena_len += n + 1;
    return TP_OK;
}

static tp_status parse_piece(pb *b, tp__spm_model *m, size_t *arena_cap, tp_error *err)
{
    size_t idx = m->n_pieces;
    char field[64];
    tp__spm_piece pc = {0, 0, 0.0f, TP__SPM_NORMAL};
    int have_piece = 0;
    size_t start = pb_off(b);
    while (b->p < b->end) {
        uint64_t fno;
        int wt;
        size_t at = pb_off(b);
        TP_TRY(pb_tag(b, &fno, &wt, err));
        if (fno == 1) {
            pb sub;
            snprintf(field, sizeof field, "pieces[%zu].piece", idx);
            TP_TRY(want_wt(b, at, wt, WT_LEN, field, err));
            TP_TRY(pb_len(b, &sub, field, err));
            size_t n = (size_t)(sub.end - sub.p);
            size_t bad = tp__utf8_invalid_at((const char *)sub.p, n);
            if (bad < n)
                return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: field '%s' is not valid UTF-8",
                                 b->what, at, field);
            if (memchr(sub.p, 0, n))
                return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: field '%s' contains NUL",
                                 b->what, at, field);
            TP_TRY(arena_add(m, arena_cap, sub.p, n, &pc.off, b->what, err));
            pc.len = (uint32_t)n;
            have_piece = 1;
        } else if (fno == 2) {
            snprintf(field, sizeof field, "pieces[%zu].score", idx);
            TP_TRY(want_wt(b, at, wt, WT_I32, field, err));
            if (b->end - b->p < 4)
                return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: field '%s' runs past the end",
                                 b->what, at, field);
            uint32_t u = (uint32_t)b->p[0] | (uint32_t)b->p[1] << 8 | (uint32_t)b->p[2] << 16 |
                         (uint32_t)b->p[3] << 24;
            memcpy(&pc.score, &u, 4);
            b->p += 4;
        } else if (fno == 3) {
            int32_t t;
            snprintf(field, sizeof field, "pieces[%zu].type", idx);
            TP_TRY(pb_int32(b, at, wt, field, &t, err));
            if (t < TP__SPM_NORMAL || t > TP__SPM_BYTE)
                return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: field '%s' = %d is not a type",
                                 b->what, at, field, (int)t);
            pc.type = t;
        } else {
            TP_TRY(pb_skip(b, wt, fno, err));
        }
    }
    if (!have_piece || pc.len == 0)
        return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: pieces[%zu] has an empty 'piece'",
                         b->what, start, idx);
    if (pc.score != pc.score)
        return tp__error(err, TP_ERR_FORMAT, "%s: byte %zu: pieces[%zu].score is NaN", b->what,
                         start, idx);
    m->pieces[m->n_pieces++] = pc;
    return TP_OK;
}

static tp_status parse_trainer(pb *b, tp__spm_model *m, tp_error *err)
{
    while (b->p < b->end) {
        uint64_t fno;
        int wt;
        size_t at = pb_off(b);
        TP_TRY(pb_tag(b, &fno, &wt, err));
        switch (fno) {
        case 3: {
            int32_t t;
            TP_TRY(pb_int32(b, at, wt, "trainer_spec.model_type", &t, err));
            m->model_type = t;
            break;
        }
        case 40: TP_TRY(pb_int32(b, at, wt, "trainer_spec.unk_id", &m->unk_id, err)); break;
        case 41: TP_TRY(pb_int32(b, at, wt, "trainer_spec.bos_id", &m->bos_id, err)); break;
        case 42: TP_TRY(pb_int32(b, at, wt, "trainer_spec.eos_id", &m->eos_id, err)); break;
        case 43: TP_TRY(pb_int32(b, at, wt, "trainer_spec.pad_id", &m->pad_id, err)); break;
        case 35:
            TP_TRY(pb_bool(b, at, wt, "trainer_spec.byte_fallback", &m->byte_fallback, err));
            break;
        case 24:
            TP_TRY(pb_bool(b, at, wt, "trainer_spec.treat_whitespace_as_suffix",
                           &m->treat_whitespace_as_suffix, err));
            break;
        case 44:
            TP_TRY(pb_string(b, at, wt, "trainer_spec.unk_surface", &m->unk_surface, NULL, err));
            break;
        default: TP_TRY(pb_skip(b, wt, fno, err)); break;
        }
    }
    return TP_OK;
}

static tp_status parse_normalizer(pb *b, tp__spm_model *m, tp_error *err)
{
    while (b->p < b->end) {
        uint64_t fno;
        int wt;
        size_t at = pb_off(b);
        TP_TRY(pb_tag(b, &fno, &wt, err));
        switch (fno) {
        case 1:
            TP_TRY(pb_string(b, at, wt, "normalizer_spec.name", &m->norm_name, NULL, err));
            break;
        case 2:
            TP_TRY(pb_string(b, at, wt, "normalizer_spec.precompiled_charsmap",
                             (char **)&m->charsmap, &m->charsmap_len, err));
            break;
        case 3:
            TP_TRY(pb_bool(b, at, wt, "normalizer_spec.add_dummy_prefix", &m->add_dummy_prefix,
                           err));
            break;
        case 4:
            TP_TRY(pb_bool(b, at, wt, "normalizer_spec.remove_extra_whitespaces",
                           &m->remove_extra_whitespaces, err));
            break;
        case 5:
            TP_TRY(pb_bool(b, at, wt, "normalizer_spec.escape_whitespaces",
                           &m->escape_whitespaces, err));
            break;
        default: TP_TRY(pb_skip(b, wt, fno, err)); break;
        }
    }
    return TP_OK;
}

void tp__spm_model_free(tp__spm_model *m)
{
    if (!m) return;
    free(m->pieces);
    free(m->arena);
    free(m->unk_surface);
    free(m->norm_name);
    free(m->charsmap);
    memset(m, 0, sizeof *m);
}

static tp_status parse_model(pb *b, tp__spm_model *m, tp_error *err)
{
    /* first pass: count pieces so the array is allocated once */
    size_t count = 0;
    pb scan = *b;
    while (scan.p < scan.end) {
        uint64_t fno;
        int wt;
        size_t at = pb_off(&scan);
        TP_TRY(pb_tag(&scan, &fno, &wt, err));
        if (fno == 1) {
            char field[48];
            pb sub;
            snprintf(field, sizeof field, "pieces[%zu]", count);
            TP_TRY(want_wt(&scan, at, wt, WT_LEN, field, err));
            TP_TRY(pb_len(&scan, &sub, field, err));
            count++;
        } else {
            TP_TRY(pb_skip(&scan, wt, fno, err));
        }
    }
    m->pieces = calloc(count ? count : 1, sizeof *m->pieces);
    if (!m->pieces) return tp__error(err, TP_ERR_NOMEM, "%s: out of memory", b->what);
    size_t arena_cap = 0;
    int seen_trainer = 0, seen_norm = 0;
    while (b->p < b->end) {
        uint64_t fno;
        int wt;
        size_t at = pb_off(b);
        pb sub;
        TP_TRY(pb_tag(b, &fno, &wt, err));
        if (fno == 1) {
            char field[48];
            snprintf(field, sizeof field, "pieces[%zu]", m->n_pieces);
            TP_TRY(want_wt(b, at, wt, WT_LEN, field, err));
            TP_TRY(pb_len(b, &sub, field, err));
            TP_TRY(parse_piece(&sub, m, &arena_cap, err));
        } else if (fno == 2) {
            TP_TRY(want_wt(b, at, wt, WT_LEN, "trainer_spec", err));
            TP_TRY(pb_len(b, &sub, "trainer_spec", err));
            TP_TRY(parse_trainer(&sub, m, err));
            seen_trainer = 1;
        } else if (fno == 3) {
            TP_TRY(want_wt(b, at, wt, WT_LEN, "normalizer_spec", err));
            TP_TRY(pb_len(b, &sub, "normalizer_spec", err));
            TP_TRY(parse_normalizer(&sub, m, err));
            seen_norm = 1;
        } else {
            TP_TRY(pb_skip(b, wt, fno, err)); /* self_test_data, denormalizer_spec, ... */
        }
    }
    (void)seen_trainer;
    (void)seen_norm;
    if (m->n_pieces == 0)
        return tp__error(err, TP_ERR_FORMAT, "%s: the model has no pieces", b->what);
    if (m->n_pieces > INT32_MAX)
        return tp__error(err, TP_ERR_FORMAT, "%s: too many pieces", b->what);
    /* sentencepiece's own load-time checks */
    int unk = -1;
    for (size_t i = 0; i < m->n_pieces; i++) {
        if (m->pieces[i].type == TP__SPM_UNKNOWN) {
            if (unk >= 0)
                return tp__error(err, TP_ERR_FORMAT,
                                 "%s: pieces[%zu] is a second UNKNOWN piece (pieces[%d] is one)",
                                 b->what, i, unk);
            unk = (int)i;
        }
        if (m->pieces[i].type == TP__SPM_BYTE && !m->byte_fallback)
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: pieces[%zu] is a BYTE piece but trainer_spec.byte_fallback is "
                             "false",
                             b->what, i);
    }
    if (unk < 0)
        return tp__error(err, TP_ERR_FORMAT, "%s: no piece has type UNKNOWN (unk is not defined)",
                         b->what);
    m->unk_id = unk; /* the piece typed UNKNOWN is what sentencepiece uses */
    if (!m->unk_surface && !(m->unk_surface = strdup(" \xE2\x81\x87 ")))
        return tp__error(err, TP_ERR_NOMEM, "%s: out of memory", b->what);
    return TP_OK;
}

tp_status tp__spm_model_parse(const unsigned char *data, size_t len, const char *what,
                              tp__spm_model *out, tp_error *err)
{
    memset(out, 0, sizeof *out);
    out->model_type = TP__SPM_UNIGRAM;
    out->unk_id = 0;
    out->bos_id = 1;
    out->eos_id = 2;
    out->pad_id = -1;
    out->add_dummy_prefix = out->remove_extra_whitespaces = out->escape_whitespaces = 1;
    pb b = {data, data, data + len, what};
    tp_status st = parse_model(&b, out, err);
    if (st != TP_OK) tp__spm_model_free(out);
    return st;
}

tp_status tp__spm_model_load(const char *path, tp__spm_model *out, tp_error *err)
{
    char *data = NULL;
    size_t size = 0;
    memset(out, 0, sizeof *out);
    TP_TRY(tp__read_file(path, &data, &size, err));
    tp_status st = tp__spm_model_parse((const unsigned char *)data, size, path, out, err);
    free(data);
    return st;
}
