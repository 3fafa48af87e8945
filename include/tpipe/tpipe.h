/*
 * tpipe.h: the public host API of libtpipe.
 *
 * Hugging Face pipeline() tasks in C: a runtime loads compute backends and task
 * plugins, a pipeline binds a task to a model directory in the Hub layout, and a
 * request (the Inference API body {"inputs": ..., "parameters": {...}}) comes back as
 * the JSON transformers' pipeline would return. The building blocks under the
 * pipelines (tokenizer, model forward, config values) are public too.
 *
 * Conventions
 *  - Every fallible function returns a tp_status and, when `err` is not NULL, fills
 *    it with the same status and a one-line message naming the file, key, position
 *    or parameter at fault. A synchronous failure never also calls a callback.
 *  - Handles are opaque; every _new has a _free, and _free accepts NULL.
 *  - Strings returned through `char **` are malloc'd: release them with tp_free().
 *  - The library never prints and never exits.
 *
 * Threading
 *  - tp_runtime: create and free on one thread. tp_runtime_set_backend() and the
 *    query functions may be called from any thread at any time; a request already
 *    running finishes on the backend it started on.
 *  - tp_pipeline: tp_pipeline_run() and tp_submit() may be called from any thread
 *    concurrently; tp_pipeline_free() only once no request on it is pending.
 *  - tp_tokenizer, tp_model: read-only after creation; encode, decode and forward may
 *    run concurrently on one handle from several threads.
 *  - tp_encoding, tp_tensor: plain values; one thread at a time.
 */
#ifndef TPIPE_H
#define TPIPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TP_API __attribute__((visibility("default")))
#else
#define TP_API
#endif

#define TPIPE_VERSION_MAJOR 0
#define TPIPE_VERSION_MINOR 1
#define TPIPE_VERSION_PATCH 0

/* ---------------------------------------------------------------- errors */

typedef enum tp_status {
    TP_OK = 0,
    TP_ERR_INVALID_ARGUMENT, /* a parameter, input or option is wrong */
    TP_ERR_NOT_FOUND,        /* a file, task, backend, plugin, key or token is absent */
    TP_ERR_IO,               /* reading or mapping a file failed */
    TP_ERR_FORMAT,           /* a file or document is malformed */
    TP_ERR_UNSUPPORTED,      /* well-formed, but not something tpipe implements */
    TP_ERR_NOMEM,            /* an allocation failed */
    TP_ERR_ABI,              /* a plugin or backend was refused by the loader */
    TP_ERR_BACKEND,          /* a compute backend failed */
    TP_ERR_BUSY,             /* a queue is full, or something still in use */
    TP_ERR_CANCELLED,        /* the request was cancelled */
    TP_ERR_TIMEOUT,          /* the request passed its deadline */
    TP_ERR_INTERNAL          /* a bug in tpipe: please report it */
} tp_status;

#define TP_ERROR_MESSAGE_MAX 512

/* Filled by a failing call. Stack-allocate one per call site; no cleanup needed. */
typedef struct tp_error {
    tp_status status;
    char message[TP_ERROR_MESSAGE_MAX];
} tp_error;

/* A short, static description of a status ("invalid argument"). Thread-safe. */
TP_API const char *tp_strerror(tp_status status);

/* "0.1.0". Thread-safe. */
TP_API const char *tp_version(void);

/* Releases a string or buffer the library returned through a `char **`. */
TP_API void tp_free(void *ptr);

/* The checks JSON (RFC 8259) makes inside strings that lenient parsers such as cJSON
 * skip: a bad \u escape (cJSON cuts the string there) and raw control characters.
 * The library applies them to every request body; a front end that parses a body
 * with cJSON itself calls this too, so both refuse the same bodies. One pass, no
 * allocation; the rest of the syntax is the caller's parser's job. TP_ERR_FORMAT
 * with "invalid JSON at line L, column C: <why> in a string". Thread-safe. */
TP_API tp_status tp_json_check(const char *text, size_t len, tp_error *err);

typedef enum tp_dtype { TP_F32 = 0, TP_F16, TP_BF16, TP_I8, TP_I32, TP_I64 } tp_dtype;

/* ---------------------------------------------------------------- runtime */

typedef struct tp_runtime tp_runtime;
typedef struct tp_pipeline tp_pipeline;
typedef struct tp_tokenizer tp_tokenizer;
typedef struct tp_encoding tp_encoding;
typedef struct tp_model tp_model;
typedef struct tp_tensor tp_tensor;
typedef struct tp_request tp_request;

typedef struct tp_runtime_options {
    size_t struct_size;       /* sizeof(tp_runtime_options) */
    const char *backend;      /* initial backend; NULL: the fastest that loaded */
    const char *backend_path; /* ':'-separated dirs searched before TPIPE_BACKEND_PATH */
    const char *plugin_path;  /* ':'-separated dirs searched before TPIPE_PLUGIN_PATH */
    int num_threads;          /* compute threads of a backend; 0: all cores */
    int num_workers;          /* scheduler worker threads; 0: 1 */
    int ignore_environment;   /* 1: do not read TPIPE_BACKEND_PATH / TPIPE_PLUGIN_PATH */
    int no_default_dirs;      /* 1: search only the paths given here and in the env */
    /* Added in 0.2 (read only when struct_size covers them; 0 means the default). */
    int max_batch_size;       /* encoder requests of one pipeline with equal parameters
                                 run as one padded batch of at most this many; default
                                 16; 1: batching off */
    int max_wait_ms;          /* how long a request may wait for others to join its
                                 batch while a worker is free; default 0: batch only
                                 what queued up while the workers were busy */
    int max_queue;            /* requests accepted and not yet running, per runtime,
                                 before tp_submit answers TP_ERR_BUSY; default 1024 */
    int max_generate_batch;   /* sequences one continuous generation batch decodes
                                 together; default 8; 1: off */
} tp_runtime_options;

/* Sets every field to its default, struct_size included. */
TP_API void tp_runtime_options_init(tp_runtime_options *opts);

/* Loads every backend and plugin it finds. A module that is refused (wrong ABI,
 * duplicate name, missing symbol...) does not fail the runtime: it is listed with
 * the reason by tp_runtime_module_info(). Fails only if `opts->backend` names a
 * backend that did not load, or the scheduler cannot start. */
TP_API tp_status tp_runtime_new(const tp_runtime_options *opts, tp_runtime **out, tp_error *err);
/* Drains pending requests, then frees. NULL is fine. */
TP_API void tp_runtime_free(tp_runtime *rt);

typedef enum tp_shutdown_mode {
    TP_SHUTDOWN_DRAIN = 0,   /* every accepted request runs to its completion */
    TP_SHUTDOWN_CANCEL = 1   /* queued requests complete with TP_ERR_CANCELLED at once;
                                running ones are asked to stop (generation stops at its
                                next step) and complete with TP_ERR_CANCELLED */
} tp_shutdown_mode;

/* Stops accepting requests (tp_submit answers TP_ERR_BUSY), finishes the accepted ones
 * as `mode` says, and returns when every callback has returned. The runtime and its
 * pipelines stay valid (free them afterwards). Idempotent. Any thread except the
 * loop thread (not from a completion callback). */
TP_API void tp_runtime_shutdown(tp_runtime *rt, tp_shutdown_mode mode);

/* Switches the backend used by requests started from now on. */
TP_API tp_status tp_runtime_set_backend(tp_runtime *rt, const char *name, tp_error *err);
/* The current backend's name; valid until the runtime is freed. */
TP_API const char *tp_runtime_backend(tp_runtime *rt);

typedef enum tp_module_kind { TP_MODULE_TASK = 1, TP_MODULE_BACKEND = 2 } tp_module_kind;

typedef struct tp_module_info {
    tp_module_kind kind;
    const char *name;        /* "openblas", "text-classification"; the file name if refused */
    const char *version;     /* the module's own version */
    const char *license;
    const char *path;        /* the .so, or "(built in)" */
    const char *detail;      /* backend: library version and ISA; task: tasks and aliases */
    int loaded;              /* 1: usable; 0: refused, see `reason` */
    const char *reason;      /* one line, when refused */
} tp_module_info;

/* Modules found when the runtime was created, loaded or refused, in load order.
 * Strings stay valid until the runtime is freed. Returns TP_ERR_NOT_FOUND past the end. */
TP_API size_t tp_runtime_module_count(tp_runtime *rt);
TP_API tp_status tp_runtime_module_info(tp_runtime *rt, size_t index, tp_module_info *out);

/* ---------------------------------------------------------------- pipelines */

/* Binds `task` (a task name or alias such as "sentiment-analysis") to the model in
 * `model_dir` (config.json, model.safetensors, tokenizer files). Checks that the
 * model's head fits the task. */
TP_API tp_status tp_pipeline_new(tp_runtime *rt, const char *task, const char *model_dir,
                                 tp_pipeline **out, tp_error *err);
/* How a model computes (tp_pipeline_new_ex, tp_model_new_ex). */
typedef struct tp_model_options {
    size_t struct_size;       /* sizeof(tp_model_options) */
    tp_dtype dtype;           /* compute type of the large matrix products: TP_F32
                                 (default: weights used in place from the mmap), TP_BF16
                                 or TP_I8 (int8 weights with per-output-channel scales,
                                 activations quantized per row at run time); weights are
                                 converted once at load. TP_ERR_UNSUPPORTED when no
                                 loaded backend computes that type on this CPU. */
} tp_model_options;

/* Sets every field to its default, struct_size included. */
TP_API void tp_model_options_init(tp_model_options *opts);

/* tp_pipeline_new with model options; opts NULL: defaults. */
TP_API tp_status tp_pipeline_new_ex(tp_runtime *rt, const char *task, const char *model_dir,
                                    const tp_model_options *opts, tp_pipeline **out,
                                    tp_error *err);
TP_API void tp_pipeline_free(tp_pipeline *p);
/* The canonical task name ("text-classification" for "sentiment-analysis"). */
TP_API const char *tp_pipeline_task(const tp_pipeline *p);
TP_API tp_model *tp_pipeline_model(tp_pipeline *p);
TP_API tp_tokenizer *tp_pipeline_tokenizer(tp_pipeline *p);

/* Runs one request through the scheduler and waits for it. `request_json` is
 * {"inputs": ..., "parameters": {...}}; `*response_json` is what transformers'
 * pipeline returns for it, as JSON (free with tp_free). */
TP_API tp_status tp_pipeline_run(tp_pipeline *p, const char *request_json, char **response_json,
                                 tp_error *err);

/* Called exactly once per submitted request, on the scheduler's loop thread.
 * `response_json` is NULL unless status is TP_OK; `err` is NULL when status is TP_OK.
 * Both are valid only during the call. */
typedef void (*tp_completion_fn)(void *user_data, tp_status status, const char *response_json,
                                 const tp_error *err);

/* Queues a request; returns at once. On TP_OK the callback will be called exactly
 * once; on failure it is never called. */
TP_API tp_status tp_submit(tp_pipeline *p, const char *request_json, tp_completion_fn callback,
                           void *user_data, tp_error *err);

/* Options of one request (tp_submit_ex). */
typedef struct tp_request_options {
    size_t struct_size;       /* sizeof(tp_request_options) */
    int64_t timeout_ms;       /* completes with TP_ERR_TIMEOUT this long after submission
                                 if not done by then (queued: at once; running: at the
                                 next point where the task can stop, e.g. a generation
                                 step); 0: no deadline */
    int priority;             /* higher runs first among queued requests; default 0 */
    /* a tp_stream_fn (below) for generated text, with its user data; NULL: none */
    void (*on_text)(void *user_data, const char *text_delta);
    void *stream_user;
} tp_request_options;

/* Sets every field to its default, struct_size included. */
TP_API void tp_request_options_init(tp_request_options *opts);

/* tp_submit with options, and a handle to the request when `handle` is not NULL:
 * tp_request_cancel() through it, tp_request_free() when done with it (the handle
 * outlives the completion until freed; freeing it does not cancel). Same contract
 * as tp_submit otherwise: on TP_OK the callback runs exactly once, on the loop
 * thread, with TP_OK, an error, TP_ERR_CANCELLED or TP_ERR_TIMEOUT; on failure
 * (TP_ERR_BUSY when the queue is full or the runtime is shutting down) it never
 * runs and no handle is returned. Any thread. */
TP_API tp_status tp_submit_ex(tp_pipeline *p, const char *request_json,
                              const tp_request_options *opts, tp_completion_fn callback,
                              void *user_data, tp_request **handle, tp_error *err);

/* Asks the request to stop: a queued request completes with TP_ERR_CANCELLED at once
 * (on the loop thread), a running one at the next point where its task can stop; one
 * already complete is left as it is. Any thread, any number of times, until
 * tp_request_free. */
TP_API void tp_request_cancel(tp_request *r);
/* Releases the handle. NULL is fine. Any thread, also inside the callback. */
TP_API void tp_request_free(tp_request *r);

/* Counters of one pipeline since it was created, for monitoring. Any thread. */
typedef struct tp_pipeline_stats {
    size_t struct_size;       /* set by the caller: sizeof(tp_pipeline_stats) */
    uint64_t submitted;       /* accepted by tp_submit */
    uint64_t rejected;        /* refused with TP_ERR_BUSY (queue full) */
    uint64_t succeeded, failed, cancelled, timed_out; /* completions, by outcome */
    uint64_t queued;          /* waiting for a worker now */
    uint64_t running;         /* on a worker now */
    uint64_t batches;         /* runs of the task (a batch of one counts) */
    uint64_t batched_requests;/* requests in those runs: / batches = mean batch size */
    uint64_t batch_size_hist[8]; /* runs of 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65+ */
    uint64_t generated_tokens;/* tokens generated (generation tasks) */
} tp_pipeline_stats;

/* Fills `out` (out->struct_size must be set; members past it are left alone). */
TP_API tp_status tp_pipeline_stats_get(tp_pipeline *p, tp_pipeline_stats *out, tp_error *err);

/* Streaming: called with each new piece of generated text, in order, as it is
 * generated. `text_delta` is non-empty, valid UTF-8 (a character is never split
 * across two calls) and valid only during the call. It runs on the scheduler's
 * worker thread that runs the request (not the caller's thread, not the loop
 * thread): keep it short, make it thread-safe with whatever it touches, and do not
 * call tp_pipeline_run or tp_pipeline_free on the same runtime from it. */
typedef void (*tp_stream_fn)(void *user_data, const char *text_delta);

/* tp_pipeline_run, plus `on_text` (may be NULL: then exactly tp_pipeline_run) called
 * with the generated text as it comes. Tasks that generate text stream it for
 * single-sequence generation (one prompt, num_return_sequences 1, no beams): the
 * concatenation of the deltas equals the new text of the final response (the
 * generated text without the prompt). For other requests and tasks on_text is
 * never called; the response is the same as tp_pipeline_run's either way. Blocks
 * until the request completes; `*response_json` is freed with tp_free. */
TP_API tp_status tp_pipeline_run_stream(tp_pipeline *p, const char *request_json,
                                        tp_stream_fn on_text, void *user_data,
                                        char **response_json, tp_error *err);

/* ---------------------------------------------------------------- tokenizer */

typedef enum tp_tokenizer_source {
    TP_TOKENIZER_AUTO = 0,   /* tokenizer.json when present, else the legacy files */
    TP_TOKENIZER_JSON = 1,   /* tokenizer.json only */
    TP_TOKENIZER_LEGACY = 2  /* vocab.txt / vocab.json+merges.txt / SentencePiece only */
} tp_tokenizer_source;

/* Loads the tokenizer of a model directory, with tokenizer_config.json and
 * special_tokens_map.json when present. */
TP_API tp_status tp_tokenizer_new(const char *model_dir, tp_tokenizer_source source,
                                  tp_tokenizer **out, tp_error *err);
TP_API void tp_tokenizer_free(tp_tokenizer *tok);

typedef enum tp_truncation {
    TP_TRUNCATE_NONE = 0,
    TP_TRUNCATE_LONGEST_FIRST,
    TP_TRUNCATE_ONLY_FIRST,
    TP_TRUNCATE_ONLY_SECOND
} tp_truncation;

typedef enum tp_padding {
    TP_PAD_NONE = 0,     /* rows keep their own lengths */
    TP_PAD_LONGEST,      /* pad to the longest row of the batch */
    TP_PAD_MAX_LENGTH    /* pad to max_length */
} tp_padding;

typedef struct tp_encode_options {
    size_t struct_size;
    int add_special_tokens;    /* default 1 */
    tp_truncation truncation;  /* default NONE */
    int max_length;            /* 0: the tokenizer's model_max_length */
    int stride;                /* overlap of overflowing windows */
    int return_overflowing;    /* 1: keep the windows past max_length as extra rows */
    tp_padding padding;        /* default NONE */
    int pad_left;              /* -1: the tokenizer's padding_side; 0 right; 1 left */
    int pad_to_multiple_of;    /* 0: off */
} tp_encode_options;

TP_API void tp_encode_options_init(tp_encode_options *opts);

/* Encodes `n` texts (and, when `pairs` is not NULL, their pairs; a NULL entry in
 * `pairs` means no pair for that text). `opts` NULL means defaults. */
TP_API tp_status tp_tokenizer_encode(tp_tokenizer *tok, const char *const *texts,
                                     const char *const *pairs, size_t n,
                                     const tp_encode_options *opts, tp_encoding **out,
                                     tp_error *err);

/* Decodes ids to text. clean_up: -1 the tokenizer's clean_up_tokenization_spaces,
 * 0 off, 1 on. */
TP_API tp_status tp_tokenizer_decode(tp_tokenizer *tok, const int32_t *ids, size_t n,
                                     int skip_special_tokens, int clean_up, char **out,
                                     tp_error *err);

/* -1 when the token is not in the vocabulary. */
TP_API int32_t tp_tokenizer_token_to_id(tp_tokenizer *tok, const char *token);
/* NULL when out of range. Valid while the tokenizer lives. */
TP_API const char *tp_tokenizer_id_to_token(tp_tokenizer *tok, int32_t id);
TP_API size_t tp_tokenizer_vocab_size(tp_tokenizer *tok);
/* model_max_length from tokenizer_config.json; 0 when unbounded. */
TP_API int tp_tokenizer_model_max_length(tp_tokenizer *tok);
/* A special token by role: "pad", "unk", "cls", "sep", "mask", "bos", "eos".
 * -1 when the tokenizer has none. */
TP_API int32_t tp_tokenizer_special_id(tp_tokenizer *tok, const char *role);
/* Renders a chat with the model's chat_template (chat_template.jinja, or
 * tokenizer_config.json "chat_template"), as transformers'
 * apply_chat_template(messages, add_generation_prompt=..., tokenize=False):
 * `messages_json` is a JSON list of {"role", "content"} objects; the template also
 * sees add_generation_prompt and the special tokens (bos_token, eos_token, ...).
 * `*text` is malloc'd (free with tp_free). TP_ERR_NOT_FOUND when the tokenizer has
 * no chat_template; TP_ERR_INVALID_ARGUMENT for bad messages and for the
 * template's raise_exception() (its message in err); TP_ERR_UNSUPPORTED for a
 * template outside the supported Jinja subset (docs/chat-templates.md).
 * Thread-safe: may run concurrently with other calls on the same tokenizer. */
TP_API tp_status tp_tokenizer_apply_chat_template(tp_tokenizer *tok, const char *messages_json,
                                                  int add_generation_prompt, char **text,
                                                  tp_error *err);

/* An encoding is a batch of rows. With overflow, one text may give several rows
 * (tp_encoding_sample says which input each row came from). With padding, every row
 * has the same length and the arrays of consecutive rows are contiguous. */
TP_API size_t tp_encoding_rows(const tp_encoding *enc);
TP_API size_t tp_encoding_length(const tp_encoding *enc, size_t row);
TP_API const int32_t *tp_encoding_ids(const tp_encoding *enc, size_t row);
TP_API const int32_t *tp_encoding_attention_mask(const tp_encoding *enc, size_t row);
TP_API const int32_t *tp_encoding_type_ids(const tp_encoding *enc, size_t row);
TP_API const int32_t *tp_encoding_special_mask(const tp_encoding *enc, size_t row);
/* Pairs (start, end) in Unicode code points of the text (or pair) the token came
 * from; (0, 0) for special and padding tokens. 2 * length entries. */
TP_API const int32_t *tp_encoding_offsets(const tp_encoding *enc, size_t row);
/* Word index of each token in its sequence; -1 for special and padding tokens. */
TP_API const int32_t *tp_encoding_word_ids(const tp_encoding *enc, size_t row);
/* 0 first sequence, 1 pair, -1 special or padding. */
TP_API const int32_t *tp_encoding_sequence_ids(const tp_encoding *enc, size_t row);
TP_API size_t tp_encoding_sample(const tp_encoding *enc, size_t row);
TP_API void tp_encoding_free(tp_encoding *enc);

/* ---------------------------------------------------------------- models */

/* Maps config.json and model.safetensors (weights used in place) and checks every
 * tensor the architecture needs. The model computes on `rt`'s current backend. */
TP_API tp_status tp_model_new(tp_runtime *rt, const char *model_dir, tp_model **out,
                              tp_error *err);
/* tp_model_new with options; opts NULL: defaults. */
TP_API tp_status tp_model_new_ex(tp_runtime *rt, const char *model_dir,
                                 const tp_model_options *opts, tp_model **out, tp_error *err);
TP_API void tp_model_free(tp_model *m);

/* config.json's model_type ("distilbert") and architectures[0]. */
TP_API const char *tp_model_type(const tp_model *m);
TP_API const char *tp_model_architecture(const tp_model *m);

typedef enum tp_head {
    TP_HEAD_NONE = 0,                 /* base model: last hidden state */
    TP_HEAD_SEQUENCE_CLASSIFICATION,  /* logits [batch, num_labels] */
    TP_HEAD_TOKEN_CLASSIFICATION,     /* logits [batch, seq, num_labels] */
    TP_HEAD_QUESTION_ANSWERING,       /* logits [batch, seq, 2]: start, end */
    TP_HEAD_MASKED_LM,                /* logits [batch, seq, vocab] */
    TP_HEAD_CAUSAL_LM,
    TP_HEAD_SEQ2SEQ_LM
} tp_head;

TP_API tp_head tp_model_head(const tp_model *m);
/* Labels from config.json id2label; NULL past num_labels. */
TP_API int tp_model_num_labels(const tp_model *m);
TP_API const char *tp_model_label(const tp_model *m, int id);
/* config.json problem_type, NULL when absent. */
TP_API const char *tp_model_problem_type(const tp_model *m);
/* Any config.json value, by a dotted key path ("task_specific_params.summarization"),
 * as JSON text (free with tp_free). TP_ERR_NOT_FOUND when absent. */
TP_API tp_status tp_model_config_value(const tp_model *m, const char *key, char **json,
                                       tp_error *err);

typedef struct tp_model_input {
    size_t struct_size;
    int batch;                      /* rows */
    int seq_len;                    /* tokens per row (padded) */
    const int32_t *input_ids;       /* [batch * seq_len] */
    const int32_t *attention_mask;  /* [batch * seq_len]; NULL: all ones */
    const int32_t *token_type_ids;  /* [batch * seq_len]; NULL: all zeros */
    /* Members below were added after 0.1's first layout: read only when struct_size
     * covers them. */
    int output_hidden_states;       /* 1: return the encoder's last hidden state
                                       [batch, seq, hidden] whatever the head (what
                                       feature-extraction wants from any checkpoint) */
    const int32_t *decoder_input_ids; /* encoder-decoder models: [batch * decoder_seq_len];
                                         NULL: the head's own decoder input (BART
                                         classification: the input_ids) */
    int decoder_seq_len;
} tp_model_input;

/* Runs the encoder and the model's head; `*out` has the shape tp_head documents
 * (the last hidden state [batch, seq, hidden] for TP_HEAD_NONE). */
TP_API tp_status tp_model_forward(tp_model *m, const tp_model_input *in, tp_tensor **out,
                                  tp_error *err);
/* The same on a padded encoding (every row the same length). */
TP_API tp_status tp_model_forward_encoding(tp_model *m, const tp_encoding *enc, tp_tensor **out,
                                           tp_error *err);

/* Generation (decoder-only language models: TP_HEAD_CAUSAL_LM). `in` is a
 * left-padded batch (input_ids and attention_mask; NULL mask: all ones);
 * `params_json` a JSON object of transformers' generate() parameters (max_new_tokens,
 * num_beams, do_sample, top_p, ..., see docs/generation.md) over the model's
 * generation_config.json and config.json, or NULL. An unknown or invalid parameter
 * is TP_ERR_INVALID_ARGUMENT naming it. On TP_OK `*sequences` (free with tp_free)
 * holds *rows x *cols token ids: prompt + generated tokens, batch *
 * num_return_sequences rows, padded with pad_token_id (eos when unset).
 * Encoder-decoders (TP_HEAD_SEQ2SEQ_LM: BART, Marian, T5): `in` is the
 * right-padded encoder input and *sequences are the decoder's tokens,
 * decoder_start_token_id first (max_length counts them).
 * Thread-safe: several generations may run on one model at once. */
TP_API tp_status tp_model_generate(tp_model *m, const tp_model_input *in,
                                   const char *params_json, int32_t **sequences, int *rows,
                                   int *cols, tp_error *err);

/* ---------------------------------------------------------------- profile */

/* Where the computation's time goes (`tpipe bench --profile`): while profiling is on,
 * the library adds up the wall time of its matrix products, attentions and layer norms
 * as each call returns. The sums are process-wide and add every calling thread's time
 * (two forwards at once count twice); what the parts do not cover (embeddings,
 * activations outside the products, a generation's search) is the caller's total
 * less their sum. Off by default; while off, a timed call costs one atomic load.
 * Thread-safe: any function below from any thread at any time. */
typedef enum tp_profile_part {
    TP_PROFILE_PRODUCTS_FEW, /* products of at most 8 rows (decoding steps: bound by
                                the weights' bytes) */
    TP_PROFILE_PRODUCTS,     /* products of more rows (encoders, prompts: bound by the
                                arithmetic) */
    TP_PROFILE_ATTENTION,    /* softmax(q·kᵀ)·v of every head, masks and bias included */
    TP_PROFILE_NORMS,        /* layer norms, with the residual adds fused into them */
    TP_PROFILE_PARTS
} tp_profile_part;

typedef struct tp_profile {
    double seconds[TP_PROFILE_PARTS];
    uint64_t calls[TP_PROFILE_PARTS];
    double flops[TP_PROFILE_PARTS]; /* products: 2·m·n·k a call (batch included); else 0 */
} tp_profile;

TP_API void tp_profile_enable(int on);
/* The sums since the last reset into *p (p may be NULL); reset != 0 zeroes them. */
TP_API void tp_profile_read(tp_profile *p, int reset);

/* ---------------------------------------------------------------- Hub models */

typedef struct tp_hub_options {
    size_t struct_size;       /* sizeof(tp_hub_options) */
    const char *cache_dir;    /* NULL: $HF_HUB_CACHE, else $HF_HOME/hub, else
                                 ~/.cache/huggingface/hub (huggingface_hub's layout) */
    const char *endpoint;     /* NULL: $HF_ENDPOINT, else https://huggingface.co */
    const char *token;        /* NULL: $HF_TOKEN, else the file $HF_HOME/token */
    int offline;              /* 1 (or HF_HUB_OFFLINE=1): never touch the network */
    /* Called while a file downloads (may be NULL), on the calling thread: `total` is 0
     * when unknown. The library prints nothing; the CLI draws a bar from this. */
    void (*progress)(void *user, const char *file, uint64_t done, uint64_t total);
    void *progress_user;
} tp_hub_options;

/* Sets every field to its default, struct_size included. */
TP_API void tp_hub_options_init(tp_hub_options *opts);

/* Resolves a Hub model id "org/name" or "org/name@revision" (a branch, tag or
 * commit; default "main") to a local snapshot directory in the Hugging Face cache,
 * downloading the files a pipeline for `task` needs (task NULL: every file a
 * pipeline of any task could read) when they are missing. `*local_dir` is malloc'd
 * (free with tp_free). TP_ERR_NOT_FOUND for an unknown repository, revision or file,
 * or a file missing while offline; TP_ERR_IO for network failures, naming the URL.
 * Blocking; thread-safe (concurrent calls for one file are serialized by a lock file). */
TP_API tp_status tp_hub_resolve(const char *model_id, const char *task,
                                const tp_hub_options *opts, char **local_dir, tp_error *err);

/* transformers' default model id for a task or alias ("sentiment-analysis" ->
 * "distilbert/distilbert-base-uncased-finetuned-sst-2-english"); NULL when it has
 * none. Thread-safe. */
TP_API const char *tp_hub_default_model(const char *task);
/* The revision transformers pins for that default (a short commit such as "714eb0f");
 * NULL when the task has no default. Thread-safe. */
TP_API const char *tp_hub_default_revision(const char *task);

/* ---------------------------------------------------------------- tensors */

TP_API tp_dtype tp_tensor_dtype(const tp_tensor *t);
TP_API int tp_tensor_ndim(const tp_tensor *t);
TP_API int64_t tp_tensor_dim(const tp_tensor *t, int axis);
TP_API int64_t tp_tensor_numel(const tp_tensor *t);
/* Row-major fp32 data; NULL when the dtype is not TP_F32. */
TP_API const float *tp_tensor_f32(const tp_tensor *t);
TP_API void tp_tensor_free(tp_tensor *t);

#ifdef __cplusplus
}
#endif
#endif /* TPIPE_H */
