/* attention.h: multi-head scaled dot-product attention for one row of a batch, the
 * step every model graph shares (encoder self-attention, decoder causal
 * self-attention over a KV cache, cross-attention over an encoder output), computed
 * in fp32 by the core's own kernels (attention.c says why) on the backend's thread
 * count. Pure function on caller memory: thread-safe. */
#ifndef TP_CORE_MODELS_ATTENTION_H
#define TP_CORE_MODELS_ATTENTION_H

#include "../backend.h"

/* Q, K and V hold heads side by side: head h of token t is the D floats at
 * column h*D of row t (row stride ld*), as the q/k/v projections write them, so
 * no transposed copy is needed. */
typedef struct tp__attn_args {
    int n_heads, head_dim;      /* NH, D */
    int kv_heads;               /* heads of K and V; 0: NH. Fewer (grouped-query
                                   attention): query head h reads head h / (NH / kv_heads) */
    int tq, tk;                 /* query tokens, key tokens */
    const float *q; int ldq;    /* [tq, ldq] */
    const float *k; int ldk;    /* [tk, ldk] */
    const float *v; int ldv;    /* [tk, ldv] */
    size_t head_stride;         /* floats from one K/V head to the next; 0: head_dim (heads
                                   side by side in each row, as above). head_stride tk·D
                                   with ldk = ldv = D: each head's keys one contiguous
                                   block, which a step streams instead of taking 256
                                   bytes from each of tk rows */
    const float *key_mask;      /* [tk] additive (0 or -FLT_MAX per key), or NULL */
    int causal_past;            /* < 0: none; else query i sees keys j <= causal_past + i
                                   (causal_past = tokens already in a KV cache) */
    float scale;                /* usually 1/sqrt(D) */
    float *out; int ldo;        /* [tq, ldo]: softmax(q·kᵀ·scale + bias + mask)·v per head */
    const float *bias;          /* [NH, tq, tk] added to the scaled scores before the masks
                                   (T5's relative position bias), or NULL */
    int bf16;                   /* nonzero: a model computing in bf16 or int8: q·kᵀ and p·v may
                                   run in bf16 (fp32 sums) on the backend's matmul_bf16,
                                   as torch's bf16 attention does; the masks and softmax
                                   stay fp32. Taken for tq >= 4 query rows (not rows_apart)
                                   with as many K/V heads as query heads */
    float *scores;              /* that path's scratch: n_heads·tq·tk floats, or NULL
                                   (allocated per call) */
    int rows_apart;             /* nonzero: every query row on its own (the step path) for
                                   any tq: the rows of several decoders sharing keys (a beam
                                   search's beams cross-attending together), whose results
                                   must not depend on how many share them; 4 beams also took
                                   20% less time there than in half-empty 8-row tiles */
} tp__attn_args;

tp_status tp__attention(const tp__backend *be, const tp__attn_args *a, tp_error *err);

/* The attention of n rows (a batch's, a beam search's) in one go: their work items
 * are shared out among the threads together, so a decoding step whose rows are each
 * too small to split (a few heads over a few dozen keys) still runs on all of them. */
tp_status tp__attention_rows(const tp__backend *be, const tp__attn_args *rows, int n,
                             tp_error *err);

/* x [S, NH·D] (heads side by side, as a projection writes them) as out [NH, S, D],
 * the head_stride = S·D layout above. */
void tp__heads_major(const float *x, int S, int NH, int D, float *out);

/* out = x·wᵀ + b (b may be NULL) for nsrc sources of S rows of k inputs, each source's
 * [S, NH·D] result stored head-major (tp__heads_major) at out + source·S·NH·D: the
 * cross-attention K or V of an encoder output. scratch: nsrc·S·NH·D floats. */
tp_status tp__project_heads_major(const tp__backend *be, const float *x, int nsrc, int S, int k,
                                  const float *w, const float *b, int NH, int D, float *scratch,
                                  float *out, tp_error *err);

/* The end of the run of decoder rows from b on (of B) that cross-attend to the same
 * encoded source (src[r]: row r's source; NULL: row r reads source r). A run is one
 * attention row of all its queries, so that a beam search reads each source's keys
 * and values once a step instead of once per beam. */
int tp__source_run(const int *src, int b, int B);

/* Cross-attention of B decoder rows of n tokens each, row r over encoded source src[r]
 * (NULL: source r). `first` describes row 0 over source 0: heads, scale, q and out
 * (ldq / ldo apart per token), and source 0's K/V stored head-major (head_stride,
 * ldk = ldv = head_dim) with its key_mask; sources follow one another in K, V and
 * key_mask, tk keys each. Each run of rows on one source (tp__source_run) becomes one
 * attention row of all its queries, kept apart (rows_apart). rows: B entries of
 * scratch. */
tp_status tp__cross_attention(const tp__backend *be, const tp__attn_args *first, const int *src,
                              int B, int n, tp__attn_args *rows, tp_error *err);

#endif
