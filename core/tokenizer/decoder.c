/* decoder.c: decoders (WordPiece) and the "clean up tokenization spaces" pass
 * that both tokenizers' WordPiece decoder and transformers' decode apply.
 * Thread-safety: immutable after construction. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/bpe_family.h"
#include "tokenizer/spm_internal.h"

void tp__decoder_free(tp__decoder *d)
{
    if (d) d->ops->free(d);
}

/* Replaces every `from` by the shorter-or-equal `to`, left to right, in place. */
static size_t replace_all(char *s, size_t len, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), r = 0, w = 0;
    while (r < len) {
        if (r + fl <= len && s[r] == from[0] && memcmp(s + r, from, fl) == 0) {
            memcpy(s + w, to, tl);
            w += tl;
            r += fl;
        } else {
            s[w++] = s[r++];
        }
    }
    return w;
}

size_t tp__cleanup_spaces(char *s, size_t len, int with_do_not)
{
    static const char *const pairs[][2] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
        {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (!with_do_not && strcmp(pairs[i][0], " do not") == 0) continue;
        if (memchr(s, ' ', len) == NULL) break;
        len = replace_all(s, len, pairs[i][0], pairs[i][1]);
    }
    return len;
}

/* ------------------------------------------------------------ WordPiece */

typedef struct wp_dec {
    tp__decoder base;
    char *prefix;
    size_t prefix_len;
    int cleanup;
} wp_dec;

static tp_status wp_decode_chain(const tp__decoder *self, const tp__toklist *in,
                                 tp__toklist *out, tp_error *err)
{
    const wp_dec *d = (const wp_dec *)self;
    const uint32_t *it = in->items.data;
    const char *buf = in->buf.data;
    char *tmp = NULL;
    size_t tmp_cap = 0;
    tp_status st = TP_OK;
    for (size_t i = 0; i < in->items.len && st == TP_OK; i++) {
        const char *t = buf + it[2 * i];
        size_t len = it[2 * i + 1];
        size_t need = len + 2;
        if (need > tmp_cap) {
            char *n = realloc(tmp, need * 2);
            if (!n) {
                st = tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
                break;
            }
            tmp = n;
            tmp_cap = need * 2;
        }
        size_t tl = 0;
        if (i != 0) {
            if (len >= d->prefix_len && memcmp(t, d->prefix, d->prefix_len) == 0) {
                memcpy(tmp, t + d->prefix_len, len - d->prefix_len);
                tl = len - d->prefix_len;
            } else {
                tmp[0] = ' ';
                memcpy(tmp + 1, t, len);
                tl = len + 1;
            }
        } else {
            memcpy(tmp, t, len);
            tl = len;
        }
        if (d->cleanup) tl = tp__cleanup_spaces(tmp, tl, 1);
        st = tp__toklist_add(out, tmp, tl, err);
    }
    free(tmp);
    return st;
}

static void wp_free(tp__decoder *self)
{
    wp_dec *d = (wp_dec *)self;
    free(d->prefix);
    free(d);
}

static const tp__decoder_ops wp_ops = {"WordPiece", wp_decode_chain, wp_free};

tp_status tp__wordpiece_decoder_new(const char *prefix, int cleanup, tp__decoder **out,
                                    tp_error *err)
{
    wp_dec *d = calloc(1, sizeof *d);
    if (!d || !(d->prefix = strdup(prefix))) {
        free(d);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    d->base.ops = &wp_ops;
    d->prefix_len = strlen(prefix);
    d->cleanup = cleanup;
    *out = &d->base;
    return TP_OK;
}

static tp_status wp_from_json(const cJSON *j, const char *what, tp__decoder **out,
                              tp_error *err)
{
    const char *prefix;
    int cleanup;
    TP_TRY(tp__json_string(j, "prefix", "##", &prefix, what, err));
    TP_TRY(tp__json_bool(j, "cleanup", 1, &cleanup, what, err));
    return tp__wordpiece_decoder_new(prefix, cleanup, out, err);
}

typedef tp_status (*dec_parse_fn)(const cJSON *, const char *, tp__decoder **, tp_error *);
static const struct {
    const char *type;
    dec_parse_fn parse;
} kinds[] = {
    {"WordPiece", wp_from_json},
    {"ByteLevel", tp__byte_level_decoder_from_json},
    {"Replace", tp__replace_dec_from_json},
    {"ByteFallback", tp__byte_fallback_dec_from_json},
    {"Fuse", tp__fuse_dec_from_json},
    {"Strip", tp__strip_dec_from_json},
    {"Sequence", tp__sequence_dec_from_json},
    {"Metaspace", tp__metaspace_dec_from_json},
    {"BPEDecoder", tp__bpe_decoder_from_json},
    {"CTC", tp__ctc_decoder_from_json},
};

tp_status tp__decoder_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                tp_error *err)
{
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return TP_OK;
    if (!cJSON_IsObject(j))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'decoder' must be an object, got %s", what,
                         tp__json_type_name(j));
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'decoder.type' must be a string", what);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i].type, type->valuestring) == 0) return kinds[i].parse(j, what, out, err);
    return tp__error(err, TP_ERR_UNSUPPORTED, "%s: decoder type '%s' is not supported", what,
                     type->valuestring);
}
