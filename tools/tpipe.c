/*
 * tpipe.c: the `tpipe` command-line tool, a thin front end over the public API
 * (tpipe.h) and nothing else.
 *
 *   tpipe run TASK --model DIR [...] [TEXT...]   one request, JSON on stdout
 *   tpipe plugins | backends                     what the runtime loaded or refused
 *   tpipe tokenize | detokenize                  the model's tokenizer alone
 *   tpipe bench --model DIR [...]                latency and throughput of a model
 *   tpipe bench --tokenizer --model DIR --corpus FILE   encode throughput of a tokenizer
 *   tpipe bench --generate --model DIR [...]     generation speed (new tokens/s)
 *   tpipe serve --pipeline NAME=TASK:DIR [...]   HTTP server (tools/serve/, docs/server.md)
 *
 * Contract: stdout carries only the result (JSON for run/tokenize); a failure prints
 * one line "tpipe: <message>" on stderr, nothing on stdout, and exits 1 (2 for a
 * malformed command line). Single-threaded.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <tpipe/tpipe.h>

#include "hub_model.h"

enum { EXIT_ERROR = 1, EXIT_USAGE = 2 };

typedef enum command {
    CMD_NONE = 0, CMD_RUN, CMD_PLUGINS, CMD_BACKENDS, CMD_TOKENIZE, CMD_DETOKENIZE, CMD_BENCH,
    CMD_COUNT
} command;

static const char *const command_names[CMD_COUNT] = {
    "", "run", "plugins", "backends", "tokenize", "detokenize", "bench",
};

/* Everything the command line said, parsed in one place (parse_args). */
typedef struct cli {
    command cmd;
    int help, version;
    const char *model, *backend, *json, *pair;
    int threads;
    tp_dtype dtype; /* --dtype: compute type of the dense layers (run, bench) */
    int no_special, keep_special;
    int stream; /* run --stream */
    const char **params; /* "KEY=VALUE", in order */
    size_t n_params;
    const char **inputs; /* "KEY=VALUE", in order */
    size_t n_inputs;
    const char **args;   /* positional arguments after the subcommand */
    size_t n_args;
    /* bench */
    const char *task;
    int batch, seq, iters, warmup, warmup_given, json_out, profile;
    /* bench --tokenizer */
    int tokenizer_bench, repeat_to_bytes;
    const char *corpus, *output_ids;
    /* bench --generate */
    int generate_bench, prompt_tokens, beams;
    int new_tokens[8]; /* --new-tokens N[,N...] */
    int n_new_tokens;
} cli;

/* ------------------------------------------------------------------ help */

static const char main_help[] =
    "tpipe: Hugging Face transformers pipelines, in C.\n"
    "\n"
    "A *task* is what you want done with text: \"text-classification\" (alias\n"
    "\"sentiment-analysis\"), \"token-classification\", \"question-answering\", ... Each task is\n"
    "served by a plugin (see `tpipe plugins`). A *model* is a directory laid out like a\n"
    "Hugging Face Hub repository: config.json, model.safetensors and the tokenizer files\n"
    "(tokenizer.json, or vocab.txt / vocab.json + merges.txt / a SentencePiece model),\n"
    "or a Hub model id org/name[@revision], fetched into the Hugging Face cache that Python\n"
    "shares (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE; docs/hub.md).\n"
    "Without --model, `tpipe run` uses the task's default model, as transformers does.\n"
    "The JSON printed is what transformers' pipeline(TASK)(...) returns for the same input.\n"
    "\n"
    "Usage:\n"
    "  tpipe run TASK --model DIR [options] [TEXT...]   run a task, print the result as JSON\n"
    "  tpipe tokenize --model DIR [--pair TEXT] [--no-special] TEXT\n"
    "                                                  show how a text is tokenized\n"
    "  tpipe detokenize --model DIR [--keep-special] ID...\n"
    "                                                  turn token ids back into text\n"
    "  tpipe plugins                                   list task plugins (and refused ones)\n"
    "  tpipe backends                                  list compute backends (and refused ones)\n"
    "  tpipe bench --model DIR [options]               measure a model's latency and throughput\n"
    "  tpipe serve --pipeline NAME=TASK:DIR [...]      serve pipelines over HTTP (tpipe serve --help)\n"
    "  tpipe --version                                 print the version\n"
    "  tpipe COMMAND --help                            help on one command\n"
    "\n"
    "Examples (from the source tree; models/spam-filter is a small DistilBERT trained to\n"
    "tell spam from ham in e-mails, labels HAM and SPAM):\n"
    "  tpipe run text-classification --model models/spam-filter \\\n"
    "      \"Congratulations! You have been selected to receive a FREE cruise. Click here!\"\n"
    "  tpipe run sentiment-analysis --model models/spam-filter --param top_k=null \\\n"
    "      \"The build failed on the ARM machines again; the Makefile misses a dependency.\"\n"
    "  tpipe tokenize --model models/spam-filter \"Hello world\"\n"
    "\n"
    "Environment: TPIPE_PLUGIN_PATH and TPIPE_BACKEND_PATH (':'-separated directories) are\n"
    "searched for plugins and backends besides the ones installed with tpipe.\n"
    "Exit status: 0 success, 1 error (one line on stderr), 2 bad command line.\n";

static const char run_help[] =
    "Usage: tpipe run TASK --model DIR [options] [TEXT...]\n"
    "\n"
    "Runs one request through TASK's pipeline and prints the JSON transformers'\n"
    "pipeline(TASK, model=DIR)(inputs, **parameters) would return.\n"
    "\n"
    "  TASK                 a task name or alias: text-classification, sentiment-analysis, ...\n"
    "                       (`tpipe plugins` lists them)\n"
    "  TEXT...              the input: one TEXT is a single input, several TEXTs are one\n"
    "                       batch (a list in, a list out)\n"
    "\n"
    "Options:\n"
    "  --model DIR          model directory (config.json, model.safetensors, tokenizer files)\n"
    "                       or Hub model id org/name[@revision] (downloaded into the Hugging\n"
    "                       Face cache); omitted: the task's default model, as in\n"
    "                       transformers' pipeline(TASK)\n"
    "  --backend NAME       compute backend (`tpipe backends`); default: the fastest loaded\n"
    "  --threads N          compute threads; 0 (default) uses every core\n"
    "  --dtype T            fp32 (default), bf16 or int8: compute type of the dense layers\n"
    "                       (weights converted once; bf16/int8 need the onednn backend)\n"
    "  --param KEY=VALUE    a pipeline parameter; VALUE is read as JSON when it parses\n"
    "                       (top_k=null, top_k=3, truncation=true, labels=[\"a\",\"b\"]),\n"
    "                       else as a string (function_to_apply=sigmoid). Repeatable.\n"
    "  --input KEY=VALUE    one part of a structured input, VALUE always a string:\n"
    "                       --input text=... --input text_pair=... (text-classification),\n"
    "                       --input question=... --input context=... (question-answering)\n"
    "  --json FILE          read the Inference API body {\"inputs\": ..., \"parameters\": {...}}\n"
    "                       from FILE, or from stdin with '-'; --param entries override its\n"
    "                       parameters; TEXT may supply inputs when the body has none\n"
    "  --stream             text-generation: print the new text as it is generated (no\n"
    "                       prompt, no JSON), then a newline. One prompt (a TEXT or one\n"
    "                       conversation), one sequence (num_return_sequences 1)\n"
    "  -h, --help           this help\n"
    "\n"
    "Examples (models/spam-filter: a small DistilBERT spam filter, labels HAM and SPAM):\n"
    "  tpipe run text-classification --model models/spam-filter \\\n"
    "      \"Congratulations! You have been selected to receive a FREE cruise. Click here!\"\n"
    "      [{\"label\":\"SPAM\",\"score\":0.9994...}]\n"
    "  tpipe run text-classification --model models/spam-filter \"FIRST TEXT\" \"SECOND TEXT\"\n"
    "      (a batch: one result per text)\n"
    "  tpipe run text-classification --model models/spam-filter --param top_k=null \"TEXT\"\n"
    "      (every label, best first)\n"
    "  tpipe run text-classification --model models/spam-filter \\\n"
    "      --input text=\"Is the build fixed?\" --input text_pair=\"Yes, since last night.\"\n"
    "  echo '{\"inputs\": [\"TEXT\"], \"parameters\": {\"truncation\": true}}' |\n"
    "      tpipe run text-classification --model models/spam-filter --json -\n";

static const char tokenize_help[] =
    "Usage: tpipe tokenize --model DIR [--pair TEXT] [--no-special] TEXT\n"
    "\n"
    "Encodes TEXT (and the second sequence given by --pair) with the model's tokenizer and\n"
    "prints {\"ids\": [...], \"tokens\": [...], \"offsets\": [[start, end], ...], \"type_ids\": [...]}.\n"
    "Offsets count Unicode code points of the text (or pair) each token came from, as\n"
    "transformers reports them; special tokens get [0, 0].\n"
    "\n"
    "  --model DIR     directory with tokenizer.json or legacy vocabulary files\n"
    "  --pair TEXT     a second sequence (as text_pair in transformers)\n"
    "  --no-special    do not add [CLS]/[SEP]-style special tokens (add_special_tokens=False)\n"
    "\n"
    "Example:\n"
    "  tpipe tokenize --model models/spam-filter \"Hello world\"\n";

static const char detokenize_help[] =
    "Usage: tpipe detokenize --model DIR [--keep-special] ID...\n"
    "\n"
    "Decodes token ids to text with the model's tokenizer (skip_special_tokens=True unless\n"
    "--keep-special) and prints it followed by a newline.\n"
    "\n"
    "Example:\n"
    "  tpipe detokenize --model models/spam-filter 101 7592 2088 102\n";

static const char plugins_help[] =
    "Usage: tpipe plugins\n"
    "\n"
    "Lists the task plugins the runtime found: name, version, the tasks and aliases each\n"
    "serves, and the file it came from. Plugins the loader refused are listed with the\n"
    "reason. Searched: the installed plugin directory and TPIPE_PLUGIN_PATH.\n";

static const char backends_help[] =
    "Usage: tpipe backends\n"
    "\n"
    "Lists the compute backends the runtime found: name, version, library version and CPU\n"
    "features, the file it came from, and which one `tpipe run` uses by default (marked\n"
    "with *). Refused backends are listed with the reason (a missing library, an ABI\n"
    "mismatch...). Searched: the installed backend directory and TPIPE_BACKEND_PATH.\n";

static const char bench_help[] =
    "Usage: tpipe bench --model DIR [--task TASK] [--backend NAME] [--threads N]\n"
    "                   [--batch B] [--seq T] [--iters N] [--warmup N] [--profile]\n"
    "                   [--json]\n"
    "       tpipe bench --tokenizer --model DIR --corpus FILE [--repeat-to-bytes N]\n"
    "                   [--iters N] [--warmup N] [--output-ids FILE] [--json]\n"
    "       tpipe bench --generate --model DIR [--backend NAME] [--threads N] [--batch B]\n"
    "                   [--prompt-tokens P] [--new-tokens N[,N...]] [--beams K]\n"
    "                   [--iters N] [--warmup N] [--profile] [--json]\n"
    "\n"
    "Measures a model on B synthetic texts of exactly T tokens each (one common word\n"
    "repeated; for question-answering a short question and a long context, for\n"
    "fill-mask one [MASK]-style token in the middle):\n"
    "  forward    the model alone (tp_model_forward on the padded batch)\n"
    "  pipeline   the whole task pipeline (tp_pipeline_run with the B texts as one\n"
    "             request: tokenization, forward and post-processing)\n"
    "Each is run N times after the warm-up runs; reported: median and p90 latency per\n"
    "iteration, sequences/s and tokens/s (from the median), the model load time\n"
    "(tp_model_new: config, mapping and checks of the weights), the size of\n"
    "model.safetensors and the peak resident memory of the process.\n"
    "\n"
    "  --model DIR      model directory\n"
    "  --task TASK      the pipeline to time; default: the model's own (text-classification\n"
    "                   for a sequence-classification head, token-classification,\n"
    "                   question-answering, fill-mask, or feature-extraction for a base model)\n"
    "  --backend NAME   compute backend (`tpipe backends`); default: the fastest loaded\n"
    "  --threads N      compute threads of the backend; 0 (default) uses every core\n"
    "  --dtype T        fp32 (default), bf16 or int8: compute type of the dense layers\n"
    "  --batch B        texts per iteration (default 1)\n"
    "  --seq T          tokens per text, special tokens included (default 128)\n"
    "  --iters N        timed iterations of each measurement (default 10)\n"
    "  --warmup N       untimed iterations first (default 2)\n"
    "  --profile        also where the timed forwards' (or generations') time went:\n"
    "                   products of more than 8 rows and of at most 8, attention, layer\n"
    "                   norms and the rest, ms per iteration (means) and the products'\n"
    "                   GFLOP/s (tp_profile_read)\n"
    "  --json           print one JSON object instead of a table\n"
    "\n"
    "When no --task is given and no plugin serves the model's own task, the forward is\n"
    "still measured and the pipeline row says why (\"pipeline\": null and\n"
    "\"pipeline_error\" in JSON).\n"
    "\n"
    "With --tokenizer, the tokenizer of DIR alone: FILE is read as Python reads text\n"
    "(\"\\r\\n\" and \"\\r\" become \"\\n\"), repeated as text = (corpus + \"\\n\") * k with\n"
    "k = N // len(corpus) + 1 (N from --repeat-to-bytes, default 1048576), and split into\n"
    "lines as str.splitlines() does. The lines are encoded as one batch (one\n"
    "tp_tokenizer_encode call, special tokens added, no padding or truncation), --iters\n"
    "times (default 3) after --warmup calls (default 1). Reported: the median time, MB/s\n"
    "(bytes of the repeated text, line breaks included, over 10^6) and tokens/s, the token\n"
    "count and the sum of the ids (a checksum). --output-ids FILE writes the ids of the\n"
    "last run, one line per input line, space-separated.\n"
    "\n"
    "With --generate, generation with a language model (decoder-only or\n"
    "encoder-decoder): B prompts (for an encoder-decoder, source texts) of exactly P\n"
    "tokens (default 16), one tp_model_generate call with {\"max_new_tokens\": N,\n"
    "\"min_new_tokens\": N, \"do_sample\": false, \"num_beams\": K}, so that every run\n"
    "generates exactly N new tokens per row (default 64; K default 1), --iters times\n"
    "(default 3) after --warmup runs (default 1). Reported for each N: the median time,\n"
    "new tokens/s (B x N over the median) and the median ms per new token; with two\n"
    "or more N (--new-tokens 16,256), the flatness: ms per new token at the last N over\n"
    "that at the first (near 1 when a KV cache keeps each step's cost flat).\n"
    "\n"
    "Examples:\n"
    "  tpipe bench --model models/spam-filter --backend openblas --threads 2 --batch 16\n"
    "  tpipe bench --tokenizer --model tests/data/fixtures/tokenizers/gpt2 \\\n"
    "      --corpus bench/corpus/corpus_en.txt\n"
    "  tpipe bench --generate --model tests/data/fixtures/models/gpt2 --new-tokens 16,64\n";

static const char *const command_help[CMD_COUNT] = {
    main_help, run_help, plugins_help, backends_help, tokenize_help, detokenize_help, bench_help,
};

/* ------------------------------------------------------------------ errors */

/* Prints "tpipe: <message>" as a single line on stderr. */
static void say_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *c = msg; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    fprintf(stderr, "tpipe: %s\n", msg);
}

static int fail(const tp_error *err)
{
    say_error("%s", err->message[0] ? err->message : tp_strerror(err->status));
    return EXIT_ERROR;
}

/* Writes `text` and a newline to stdout; a failed write is an error too. */
static int print_result(const char *text)
{
    fputs(text, stdout);
    fputc('\n', stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        say_error("cannot write the result: %s", strerror(errno));
        return EXIT_ERROR;
    }
    return 0;
}

/* ------------------------------------------------------------------ parsing */

enum { OPT_VALUE = 1 };

typedef struct option_spec {
    const char *name;
    int flags;
    unsigned commands; /* bit (1 << command) for each subcommand that takes it */
} option_spec;

#define ON(c) (1u << (c))

static const option_spec options[] = {
    {"--model", OPT_VALUE, ON(CMD_RUN) | ON(CMD_TOKENIZE) | ON(CMD_DETOKENIZE) | ON(CMD_BENCH)},
    {"--backend", OPT_VALUE, ON(CMD_RUN) | ON(CMD_BENCH)},
    {"--threads", OPT_VALUE, ON(CMD_RUN) | ON(CMD_BENCH)},
    {"--dtype", OPT_VALUE, ON(CMD_RUN) | ON(CMD_BENCH)},
    {"--param", OPT_VALUE, ON(CMD_RUN)},
    {"--input", OPT_VALUE, ON(CMD_RUN)},
    {"--json", OPT_VALUE, ON(CMD_RUN)},
    {"--stream", 0, ON(CMD_RUN)},
    {"--pair", OPT_VALUE, ON(CMD_TOKENIZE)},
    {"--no-special", 0, ON(CMD_TOKENIZE)},
    {"--keep-special", 0, ON(CMD_DETOKENIZE)},
    /* bench; its --json is a flag, unlike run's (parse_args picks the entry that
     * applies to the command) */
    {"--task", OPT_VALUE, ON(CMD_BENCH)},
    {"--batch", OPT_VALUE, ON(CMD_BENCH)},
    {"--seq", OPT_VALUE, ON(CMD_BENCH)},
    {"--iters", OPT_VALUE, ON(CMD_BENCH)},
    {"--warmup", OPT_VALUE, ON(CMD_BENCH)},
    {"--json", 0, ON(CMD_BENCH)},
    {"--tokenizer", 0, ON(CMD_BENCH)},
    {"--corpus", OPT_VALUE, ON(CMD_BENCH)},
    {"--repeat-to-bytes", OPT_VALUE, ON(CMD_BENCH)},
    {"--output-ids", OPT_VALUE, ON(CMD_BENCH)},
    {"--generate", 0, ON(CMD_BENCH)},
    {"--profile", 0, ON(CMD_BENCH)},
    {"--prompt-tokens", OPT_VALUE, ON(CMD_BENCH)},
    {"--new-tokens", OPT_VALUE, ON(CMD_BENCH)},
    {"--beams", OPT_VALUE, ON(CMD_BENCH)},
};

static int usage_error(char *msg, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, cap, fmt, ap);
    va_end(ap);
    return EXIT_USAGE;
}

static int parse_count(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > INT_MAX) return 0;
    *out = (int)v;
    return 1;
}

/* --dtype as tp_model_options (a static: the CLI is single-threaded). */
static const tp_model_options *model_options(const cli *c)
{
    static tp_model_options o;
    tp_model_options_init(&o);
    o.dtype = c->dtype;
    return &o;
}

static const char *dtype_label(tp_dtype t)
{
    return t == TP_BF16 ? "bf16" : t == TP_I8 ? "int8" : "fp32";
}

/* Stores one option's value in `c`. */
static int set_option(cli *c, const char *name, const char *value, char *msg, size_t cap)
{
    if (strcmp(name, "--model") == 0) c->model = value;
    else if (strcmp(name, "--backend") == 0) c->backend = value;
    else if (strcmp(name, "--json") == 0 && !value) c->json_out = 1; /* bench's flag */
    else if (strcmp(name, "--json") == 0) c->json = value;
    else if (strcmp(name, "--task") == 0) c->task = value;
    else if (strcmp(name, "--batch") == 0 || strcmp(name, "--seq") == 0 ||
             strcmp(name, "--iters") == 0) {
        int *dst = name[2] == 'b' ? &c->batch : name[2] == 's' ? &c->seq : &c->iters;
        if (!parse_count(value, dst) || *dst == 0)
            return usage_error(msg, cap, "%s wants a number >= 1, got '%s'", name, value);
    } else if (strcmp(name, "--warmup") == 0) {
        if (!parse_count(value, &c->warmup))
            return usage_error(msg, cap, "--warmup wants a number >= 0, got '%s'", value);
        c->warmup_given = 1;
    }
    else if (strcmp(name, "--tokenizer") == 0) c->tokenizer_bench = 1;
    else if (strcmp(name, "--corpus") == 0) c->corpus = value;
    else if (strcmp(name, "--output-ids") == 0) c->output_ids = value;
    else if (strcmp(name, "--repeat-to-bytes") == 0) {
        if (!parse_count(value, &c->repeat_to_bytes) || c->repeat_to_bytes == 0)
            return usage_error(msg, cap, "--repeat-to-bytes wants a number >= 1, got '%s'", value);
    }
    else if (strcmp(name, "--generate") == 0) c->generate_bench = 1;
    else if (strcmp(name, "--profile") == 0) c->profile = 1;
    else if (strcmp(name, "--prompt-tokens") == 0 || strcmp(name, "--beams") == 0) {
        int *dst = name[2] == 'p' ? &c->prompt_tokens : &c->beams;
        if (!parse_count(value, dst) || *dst == 0)
            return usage_error(msg, cap, "%s wants a number >= 1, got '%s'", name, value);
    } else if (strcmp(name, "--new-tokens") == 0) {
        /* N or N,N,... (each >= 1) */
        const int max = (int)(sizeof c->new_tokens / sizeof c->new_tokens[0]);
        c->n_new_tokens = 0;
        for (const char *at = value;; at++) {
            const char *comma = strchr(at, ',');
            size_t len = comma ? (size_t)(comma - at) : strlen(at);
            char num[16];
            int n;
            if (c->n_new_tokens == max)
                return usage_error(msg, cap, "--new-tokens takes at most %d counts", max);
            if (len == 0 || len >= sizeof num)
                n = 0;
            else {
                memcpy(num, at, len);
                num[len] = '\0';
                if (!parse_count(num, &n)) n = 0;
            }
            if (n == 0)
                return usage_error(msg, cap, "--new-tokens wants numbers >= 1 separated by "
                                             "commas, got '%s'", value);
            c->new_tokens[c->n_new_tokens++] = n;
            if (!comma) break;
            at = comma;
        }
    }
    else if (strcmp(name, "--stream") == 0) c->stream = 1;
    else if (strcmp(name, "--pair") == 0) c->pair = value;
    else if (strcmp(name, "--no-special") == 0) c->no_special = 1;
    else if (strcmp(name, "--keep-special") == 0) c->keep_special = 1;
    else if (strcmp(name, "--dtype") == 0) {
        if (strcmp(value, "fp32") == 0 || strcmp(value, "f32") == 0) c->dtype = TP_F32;
        else if (strcmp(value, "bf16") == 0) c->dtype = TP_BF16;
        else if (strcmp(value, "int8") == 0 || strcmp(value, "i8") == 0) c->dtype = TP_I8;
        else return usage_error(msg, cap, "--dtype wants fp32, bf16 or int8, got '%s'", value);
    } else if (strcmp(name, "--threads") == 0) {
        if (!parse_count(value, &c->threads))
            return usage_error(msg, cap, "--threads wants a number >= 0, got '%s'", value);
    } else if (strcmp(name, "--param") == 0 || strcmp(name, "--input") == 0) {
        const char *eq = strchr(value, '=');
        if (!eq || eq == value)
            return usage_error(msg, cap, "%s wants KEY=VALUE, got '%s'", name, value);
        if (name[2] == 'p') c->params[c->n_params++] = value;
        else c->inputs[c->n_inputs++] = value;
    }
    return 0;
}

/* The whole command line -> `c`. Options may come before or after positional
 * arguments; `--` ends options; `--name=value` is the same as `--name value`.
 * Returns 0, or EXIT_USAGE with the reason in `msg`. */
static int parse_args(int argc, char **argv, cli *c, char *msg, size_t cap)
{
    memset(c, 0, sizeof *c);
    size_t n = argc > 0 ? (size_t)argc : 1;
    c->params = calloc(n, sizeof *c->params);
    c->inputs = calloc(n, sizeof *c->inputs);
    c->args = calloc(n, sizeof *c->args);
    if (!c->params || !c->inputs || !c->args) return usage_error(msg, cap, "out of memory");

    int i = 1;
    if (i < argc && argv[i][0] != '-') {
        for (int k = 1; k < CMD_COUNT; k++)
            if (strcmp(argv[i], command_names[k]) == 0) c->cmd = (command)k;
        if (strcmp(argv[i], "help") == 0) {
            c->help = 1;
            if (i + 1 < argc)
                for (int k = 1; k < CMD_COUNT; k++)
                    if (strcmp(argv[i + 1], command_names[k]) == 0) c->cmd = (command)k;
            return 0;
        }
        if (c->cmd == CMD_NONE)
            return usage_error(msg, cap, "unknown command '%s' (try tpipe --help)", argv[i]);
        i++;
    }
    int options_done = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-' || strcmp(a, "-") == 0) {
            c->args[c->n_args++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            c->help = 1;
            continue;
        }
        if (strcmp(a, "--version") == 0 && c->cmd == CMD_NONE) {
            c->version = 1;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
        const option_spec *spec = NULL;
        for (size_t k = 0; k < sizeof options / sizeof options[0]; k++)
            if (strlen(options[k].name) == name_len && strncmp(options[k].name, a, name_len) == 0 &&
                (!spec || (options[k].commands & ON(c->cmd))))
                spec = &options[k];
        if (!spec || c->cmd == CMD_NONE)
            return usage_error(msg, cap, "unknown option '%.*s'%s%s (try tpipe %s%s--help)",
                               (int)name_len, a, c->cmd ? " for " : "", command_names[c->cmd],
                               command_names[c->cmd], c->cmd ? " " : "");
        if (!(spec->commands & ON(c->cmd)))
            return usage_error(msg, cap, "option %s does not apply to '%s'", spec->name,
                               command_names[c->cmd]);
        const char *value = NULL;
        if (spec->flags & OPT_VALUE) {
            if (eq) value = eq + 1;
            else if (i + 1 < argc) value = argv[++i];
            else return usage_error(msg, cap, "option %s needs a value", spec->name);
        } else if (eq) {
            return usage_error(msg, cap, "option %s takes no value", spec->name);
        }
        int rc = set_option(c, spec->name, value, msg, cap);
        if (rc) return rc;
    }
    if (c->help || c->version) return 0;
    if (c->cmd == CMD_NONE) return usage_error(msg, cap, "no command given (try tpipe --help)");

    /* what each command needs */
    /* run without --model takes its task's default model (resolve_hub_model) */
    if ((c->cmd == CMD_TOKENIZE || c->cmd == CMD_DETOKENIZE || c->cmd == CMD_BENCH) && !c->model)
        return usage_error(msg, cap, "%s needs --model DIR (try tpipe %s --help)",
                           command_names[c->cmd], command_names[c->cmd]);
    if ((c->cmd == CMD_PLUGINS || c->cmd == CMD_BACKENDS || c->cmd == CMD_BENCH) && c->n_args)
        return usage_error(msg, cap, "%s takes no arguments, got '%s'", command_names[c->cmd],
                           c->args[0]);
    if (c->cmd == CMD_BENCH && !c->tokenizer_bench &&
        (c->corpus || c->output_ids || c->repeat_to_bytes))
        return usage_error(msg, cap, "%s only applies to bench --tokenizer",
                           c->corpus ? "--corpus" : c->output_ids ? "--output-ids"
                                                                  : "--repeat-to-bytes");
    if (c->cmd == CMD_BENCH && !c->generate_bench &&
        (c->prompt_tokens || c->n_new_tokens || c->beams))
        return usage_error(msg, cap, "%s only applies to bench --generate",
                           c->prompt_tokens ? "--prompt-tokens" : c->n_new_tokens ? "--new-tokens"
                                                                                  : "--beams");
    if (c->cmd == CMD_BENCH && c->generate_bench) {
        if (c->tokenizer_bench)
            return usage_error(msg, cap, "--generate and --tokenizer are different benchmarks; "
                                         "give one");
        if (c->task || c->seq)
            return usage_error(msg, cap, "%s does not apply to bench --generate%s",
                               c->task ? "--task" : "--seq",
                               c->task ? "" : " (the prompt length is --prompt-tokens)");
    }
    if (c->cmd == CMD_BENCH && c->tokenizer_bench) {
        if (!c->corpus)
            return usage_error(msg, cap, "bench --tokenizer needs --corpus FILE");
        if (c->task || c->backend || c->batch || c->seq)
            return usage_error(msg, cap, "%s does not apply to bench --tokenizer",
                               c->task ? "--task" : c->backend ? "--backend"
                                                  : c->batch ? "--batch" : "--seq");
    }
    if (c->cmd == CMD_RUN && c->n_args == 0)
        return usage_error(msg, cap, "run needs a TASK (try tpipe run --help)");
    if (c->cmd == CMD_RUN && c->n_args > 1 && c->n_inputs)
        return usage_error(msg, cap, "give the input either as TEXT arguments or as --input "
                                     "KEY=VALUE, not both");
    if (c->cmd == CMD_RUN && c->n_args == 1 && !c->n_inputs && !c->json)
        return usage_error(msg, cap, "no input: give TEXT, --input KEY=VALUE or --json FILE "
                                     "(try tpipe run --help)");
    if (c->cmd == CMD_TOKENIZE && c->n_args != 1)
        return usage_error(msg, cap, "tokenize takes exactly one TEXT, got %zu", c->n_args);
    if (c->cmd == CMD_DETOKENIZE && c->n_args == 0)
        return usage_error(msg, cap, "detokenize needs at least one token ID");
    return 0;
}

/* ------------------------------------------------------------------ run */

/* Reads FILE (or stdin for "-") entirely. */
static char *read_all(const char *path, tp_error *err)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        snprintf(err->message, sizeof err->message, "--json %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    if (f != stdin) fclose(f);
    if (!buf || bad) {
        snprintf(err->message, sizeof err->message, "--json %s: %s", path,
                 buf ? "read error" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* Parses the --json body; a syntax error names the line and column. */
static cJSON *load_request(const char *path, tp_error *err)
{
    char *text = read_all(path, err);
    if (!text) return NULL;
    const char *end = NULL;
    tp_error strict;
    cJSON *root = NULL;
    if (tp_json_check(text, strlen(text), &strict) != TP_OK) {
        snprintf(err->message, sizeof err->message, "--json %.200s: %.300s",
                 strcmp(path, "-") == 0 ? "(stdin)" : path, strict.message);
        free(text);
        return NULL;
    }
    root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        int line = 1, col = 1;
        for (const char *p = text; end && p < end && *p; p++) {
            if (*p == '\n') line++, col = 1;
            else col++;
        }
        snprintf(err->message, sizeof err->message, "--json %s: invalid JSON at line %d, column %d",
                 strcmp(path, "-") == 0 ? "(stdin)" : path, line, col);
    } else if (!cJSON_IsObject(root)) {
        snprintf(err->message, sizeof err->message,
                 "--json %s: the body must be an object {\"inputs\": ..., \"parameters\": {...}}",
                 strcmp(path, "-") == 0 ? "(stdin)" : path);
        cJSON_Delete(root);
        root = NULL;
    }
    free(text);
    return root;
}

/* A --param VALUE: JSON when it parses as JSON, else the string itself. */
static cJSON *param_value(const char *text)
{
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithOpts(text, &end, 1);
    return v ? v : cJSON_CreateString(text);
}

/* Sets obj[key] = value, replacing an earlier value. KEY=VALUE is split at the
 * first '='. */
static int put_kv(cJSON *obj, const char *kv, int value_as_json)
{
    const char *eq = strchr(kv, '=');
    size_t klen = (size_t)(eq - kv);
    char *key = malloc(klen + 1);
    if (!key) return 0;
    memcpy(key, kv, klen);
    key[klen] = '\0';
    cJSON *v = value_as_json ? param_value(eq + 1) : cJSON_CreateString(eq + 1);
    int ok = v != NULL;
    if (ok) {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
        ok = cJSON_AddItemToObject(obj, key, v);
        if (!ok) cJSON_Delete(v);
    }
    free(key);
    return ok;
}

/* The request {"inputs": ..., "parameters": {...}} from --json, TEXT, --input and
 * --param. NULL with err->message set on failure. */
static cJSON *build_request(const cli *c, tp_error *err)
{
    const char *const *texts = c->args + 1; /* args[0] is the TASK */
    size_t n_texts = c->n_args - 1;
    cJSON *inputs = NULL;
    cJSON *req = c->json ? load_request(c->json, err) : cJSON_CreateObject();
    if (!req) {
        if (!c->json) snprintf(err->message, sizeof err->message, "out of memory");
        return NULL;
    }
    int has_inputs = cJSON_HasObjectItem(req, "inputs");
    if (has_inputs && (n_texts || c->n_inputs)) {
        snprintf(err->message, sizeof err->message,
                 "--json %s already has \"inputs\": drop the TEXT/--input arguments", c->json);
        goto fail;
    }
    if (!has_inputs && !n_texts && !c->n_inputs) {
        snprintf(err->message, sizeof err->message, "--json %s: the body has no \"inputs\"",
                 c->json);
        goto fail;
    }
    if (c->n_inputs) {
        inputs = cJSON_CreateObject();
        for (size_t i = 0; inputs && i < c->n_inputs; i++)
            if (!put_kv(inputs, c->inputs[i], 0)) goto nomem;
    } else if (n_texts == 1) {
        inputs = cJSON_CreateString(texts[0]);
    } else if (n_texts > 1) {
        inputs = cJSON_CreateArray();
        for (size_t i = 0; inputs && i < n_texts; i++)
            cJSON_AddItemToArray(inputs, cJSON_CreateString(texts[i]));
    }
    if (inputs && !cJSON_AddItemToObject(req, "inputs", inputs)) {
        cJSON_Delete(inputs);
        goto nomem;
    }
    if (!has_inputs && !inputs) goto nomem;

    if (c->n_params) {
        cJSON *params = cJSON_GetObjectItemCaseSensitive(req, "parameters");
        if (params && cJSON_IsNull(params)) {
            cJSON_DeleteItemFromObjectCaseSensitive(req, "parameters");
            params = NULL;
        }
        if (!params) {
            params = cJSON_AddObjectToObject(req, "parameters");
            if (!params) goto nomem;
        } else if (!cJSON_IsObject(params)) {
            snprintf(err->message, sizeof err->message,
                     "--json %s: \"parameters\" must be an object", c->json);
            goto fail;
        }
        for (size_t i = 0; i < c->n_params; i++)
            if (!put_kv(params, c->params[i], 1)) goto nomem;
    }
    return req;
nomem:
    snprintf(err->message, sizeof err->message, "out of memory building the request");
fail:
    cJSON_Delete(req);
    return NULL;
}

static tp_status open_runtime(const cli *c, tp_runtime **rt, tp_error *err)
{
    tp_runtime_options opts;
    tp_runtime_options_init(&opts);
    opts.backend = c->backend;
    opts.num_threads = c->threads;
    return tp_runtime_new(&opts, rt, err);
}

/* --stream's tp_stream_fn: runs on the runtime's worker thread while the main
 * thread waits in tp_pipeline_run_stream, so stdout has one user at a time. */
static void print_delta(void *user_data, const char *text_delta)
{
    int *printed = user_data;
    fputs(text_delta, stdout);
    fflush(stdout);
    *printed = 1;
}

/* --stream streams one sequence of one prompt; anything else would print nothing. */
static const char *stream_refusal(const cJSON *req)
{
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(req, "inputs");
    if (!cJSON_IsString(in) && !(cJSON_IsArray(in) && cJSON_IsObject(cJSON_GetArrayItem(in, 0))))
        return "--stream takes one prompt (one TEXT, or one conversation with --json)";
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(req, "parameters");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(params, "num_return_sequences");
    if (cJSON_IsNumber(n) && n->valuedouble != 1)
        return "--stream streams one sequence: num_return_sequences must be 1";
    return NULL;
}

static int cmd_run(const cli *c)
{
    tp_error err = {0};
    cJSON *req = build_request(c, &err);
    if (!req) {
        say_error("%s", err.message);
        return EXIT_ERROR;
    }
    const char *refusal = c->stream ? stream_refusal(req) : NULL;
    if (refusal) {
        cJSON_Delete(req);
        say_error("%s", refusal);
        return EXIT_USAGE;
    }
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    if (!body) {
        say_error("out of memory building the request");
        return EXIT_ERROR;
    }
    tp_runtime *rt = NULL;
    tp_pipeline *p = NULL;
    char *response = NULL;
    int rc = 0;
    int printed = 0;
    if (open_runtime(c, &rt, &err) != TP_OK ||
        tp_pipeline_new_ex(rt, c->args[0], c->model, model_options(c), &p, &err) != TP_OK) {
        rc = fail(&err);
    } else if (c->stream && strcmp(tp_pipeline_task(p), "text-generation") != 0) {
        say_error("--stream applies to text-generation, not %s", tp_pipeline_task(p));
        rc = EXIT_USAGE;
    } else if ((c->stream ? tp_pipeline_run_stream(p, body, print_delta, &printed, &response, &err)
                          : tp_pipeline_run(p, body, &response, &err)) != TP_OK) {
        if (printed) fputc('\n', stdout); /* end the partial line; the error goes to stderr */
        rc = fail(&err);
    } else {
        rc = c->stream ? print_result("") : print_result(response);
    }
    tp_free(response);
    tp_pipeline_free(p);
    tp_runtime_free(rt);
    cJSON_free(body);
    return rc;
}

/* ------------------------------------------------------------------ modules */

/* Flushes stdout; a failed write (a closed pipe, a full disk) is an error. */
static int finish_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        say_error("cannot write the result: %s", strerror(errno));
        return EXIT_ERROR;
    }
    return 0;
}

/* One module as two or three lines: name, version and detail; its file; and for a
 * refused one, why. `mark` flags the default backend. */
static void print_module(const tp_module_info *m, const char *mark)
{
    if (m->loaded)
        printf("%s%-20s %-8s %s\n", mark, m->name ? m->name : "?", m->version ? m->version : "",
               m->detail ? m->detail : "");
    else
        printf("%srefused: %s\n", mark, m->name ? m->name : "?");
    printf("%s    path: %s\n", mark[0] ? "  " : "", m->path ? m->path : "?");
    if (!m->loaded)
        printf("%s    reason: %s\n", mark[0] ? "  " : "", m->reason ? m->reason : "(none given)");
}

static int list_modules(const cli *c, tp_module_kind kind)
{
    tp_error err = {0};
    tp_runtime *rt = NULL;
    if (open_runtime(c, &rt, &err) != TP_OK) return fail(&err);
    int backends = kind == TP_MODULE_BACKEND;
    const char *current = backends ? tp_runtime_backend(rt) : NULL;
    size_t count = tp_runtime_module_count(rt), shown = 0;
    for (int pass = 0; pass < 2; pass++) { /* loaded ones first, then the refused */
        for (size_t i = 0; i < count; i++) {
            tp_module_info m;
            if (tp_runtime_module_info(rt, i, &m) != TP_OK) continue;
            /* a module refused before its kind was known shows up in both lists */
            int other_kind = (m.kind == TP_MODULE_TASK || m.kind == TP_MODULE_BACKEND) &&
                             m.kind != kind;
            if (other_kind || (m.loaded != 0) != (pass == 0)) continue;
            const char *mark = "";
            if (backends)
                mark = m.loaded && current && m.name && strcmp(m.name, current) == 0 ? "* " : "  ";
            print_module(&m, mark);
            shown++;
        }
    }
    if (!shown) printf("no %s found\n", backends ? "backends" : "task plugins");
    if (backends && current) printf("default: %s (marked *)\n", current);
    tp_runtime_free(rt);
    return finish_stdout();
}

/* ------------------------------------------------------------------ tokenizer */

static int cmd_tokenize(const cli *c)
{
    tp_error err = {0};
    tp_tokenizer *tok = NULL;
    tp_encoding *enc = NULL;
    if (tp_tokenizer_new(c->model, TP_TOKENIZER_AUTO, &tok, &err) != TP_OK) return fail(&err);
    tp_encode_options opts;
    tp_encode_options_init(&opts);
    opts.add_special_tokens = !c->no_special;
    const char *text = c->args[0], *pair = c->pair;
    int rc = 0;
    if (tp_tokenizer_encode(tok, &text, pair ? &pair : NULL, 1, &opts, &enc, &err) != TP_OK) {
        rc = fail(&err);
        goto done;
    }
    size_t n = tp_encoding_length(enc, 0);
    const int32_t *ids = tp_encoding_ids(enc, 0);
    const int32_t *offsets = tp_encoding_offsets(enc, 0);
    const int32_t *types = tp_encoding_type_ids(enc, 0);
    cJSON *o = cJSON_CreateObject();
    cJSON *j_ids = cJSON_AddArrayToObject(o, "ids");
    cJSON *j_tokens = cJSON_AddArrayToObject(o, "tokens");
    cJSON *j_offsets = cJSON_AddArrayToObject(o, "offsets");
    cJSON *j_types = cJSON_AddArrayToObject(o, "type_ids");
    for (size_t i = 0; i < n && j_types; i++) {
        const char *t = tp_tokenizer_id_to_token(tok, ids[i]);
        cJSON_AddItemToArray(j_ids, cJSON_CreateNumber(ids[i]));
        cJSON_AddItemToArray(j_tokens, t ? cJSON_CreateString(t) : cJSON_CreateNull());
        if (offsets) {
            int pairv[2] = {offsets[2 * i], offsets[2 * i + 1]};
            cJSON_AddItemToArray(j_offsets, cJSON_CreateIntArray(pairv, 2));
        }
        if (types) cJSON_AddItemToArray(j_types, cJSON_CreateNumber(types[i]));
    }
    char *s = j_types ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) {
        say_error("out of memory printing the encoding");
        rc = EXIT_ERROR;
        goto done;
    }
    rc = print_result(s);
    cJSON_free(s);
done:
    tp_encoding_free(enc);
    tp_tokenizer_free(tok);
    return rc;
}

static int cmd_detokenize(const cli *c)
{
    int32_t *ids = malloc(c->n_args * sizeof *ids);
    if (!ids) {
        say_error("out of memory");
        return EXIT_ERROR;
    }
    for (size_t i = 0; i < c->n_args; i++) {
        int v;
        if (!parse_count(c->args[i], &v)) {
            say_error("token ID '%s' is not a number >= 0", c->args[i]);
            free(ids);
            return EXIT_USAGE;
        }
        ids[i] = v;
    }
    tp_error err = {0};
    tp_tokenizer *tok = NULL;
    char *text = NULL;
    int rc;
    if (tp_tokenizer_new(c->model, TP_TOKENIZER_AUTO, &tok, &err) != TP_OK ||
        tp_tokenizer_decode(tok, ids, c->n_args, !c->keep_special, -1, &text, &err) != TP_OK)
        rc = fail(&err);
    else
        rc = print_result(text);
    tp_free(text);
    tp_tokenizer_free(tok);
    free(ids);
    return rc;
}

/* ------------------------------------------------------------------ bench */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Latencies of the timed iterations of one measurement, in milliseconds. */
typedef struct bench_stats {
    double median, p90, min, mean;
} bench_stats;

/* Sorts t[0..n) (n >= 1) and summarizes it; p90 is the nearest-rank percentile. */
static bench_stats summarize(double *t, int n)
{
    bench_stats s = {0};
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    s.median = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
    s.p90 = t[(9 * n + 9) / 10 - 1];
    s.min = t[0];
    for (int i = 0; i < n; i++) s.mean += t[i] / n;
    return s;
}

/* The synthetic batch: `n` texts (and, for question-answering, pairs) that encode to
 * exactly `seq` tokens each. */
typedef struct bench_input {
    char **texts, **pairs;
    int n;
    tp_encoding *enc; /* the padded encoding of the batch, for the forward */
} bench_input;

static void bench_input_free(bench_input *in)
{
    for (int i = 0; i < in->n; i++) {
        if (in->texts) free(in->texts[i]);
        if (in->pairs) free(in->pairs[i]);
    }
    free(in->texts);
    free(in->pairs);
    tp_encoding_free(in->enc);
}

/* `n` copies of `word` joined by spaces; `middle`, when set, replaces the middle one. */
static char *repeat_word(const char *word, int n, const char *middle)
{
    size_t w = strlen(word), m = middle ? strlen(middle) : 0;
    char *s = malloc((size_t)n * (w + m + 1) + 1), *p = s;
    if (!s) return NULL;
    for (int i = 0; i < n; i++) {
        const char *piece = middle && i == n / 2 ? middle : word;
        size_t len = strlen(piece);
        if (i) *p++ = ' ';
        memcpy(p, piece, len);
        p += len;
    }
    *p = '\0';
    return s;
}

/* Tokens in `text` (+ `pair`), special tokens included when `special`; -1 on error.
 * `*id` gets the first token's id. */
static int count_tokens(tp_tokenizer *tok, const char *text, const char *pair, int special,
                        int32_t *id, tp_error *err)
{
    tp_encode_options o;
    tp_encode_options_init(&o);
    o.add_special_tokens = special;
    tp_encoding *enc = NULL;
    if (tp_tokenizer_encode(tok, &text, pair ? &pair : NULL, 1, &o, &enc, err) != TP_OK) return -1;
    int n = (int)tp_encoding_length(enc, 0);
    if (id) *id = n ? tp_encoding_ids(enc, 0)[0] : -1;
    tp_encoding_free(enc);
    return n;
}

/* Builds `batch` inputs of exactly `seq` tokens for `task` from one word the
 * tokenizer keeps as one known token, and encodes them as a padded batch (`pad`;
 * unpadded rows need not be contiguous, and GPT-2 has no pad token).
 * Returns 0, or an exit status after printing why. */
static int build_bench_input(tp_tokenizer *tok, const char *task, int batch, int seq, int pad,
                             bench_input *in)
{
    static const char *const words[] = {"the", "hello", "and", "a", "of", "is", "it", "x"};
    tp_error err = {0};
    const char *word = NULL;
    int32_t unk = tp_tokenizer_special_id(tok, "unk");
    for (size_t i = 0; i < sizeof words / sizeof words[0] && !word; i++) {
        int32_t id;
        int n = count_tokens(tok, words[i], NULL, 0, &id, &err);
        if (n < 0) return fail(&err);
        if (n == 1 && id != unk) word = words[i];
    }
    if (!word) {
        say_error("bench: the tokenizer keeps none of the words 'the', 'hello', ... as one "
                  "token; cannot build a synthetic input");
        return EXIT_ERROR;
    }
    int qa = strcmp(task, "question-answering") == 0, mask = strcmp(task, "fill-mask") == 0;
    int specials = qa ? count_tokens(tok, word, word, 1, NULL, &err) - 2
                      : count_tokens(tok, word, NULL, 1, NULL, &err) - 1;
    if (specials < 0) return fail(&err);
    int words_left = seq - specials;
    if (words_left < (qa ? 2 : 1)) {
        say_error("bench: --seq %d leaves no room for text besides the %d special tokens", seq,
                  specials);
        return EXIT_USAGE;
    }
    const char *mask_token = NULL;
    if (mask) {
        mask_token = tp_tokenizer_id_to_token(tok, tp_tokenizer_special_id(tok, "mask"));
        if (!mask_token) {
            say_error("bench: task fill-mask but the tokenizer has no mask token");
            return EXIT_ERROR;
        }
    }
    int q_words = words_left / 4 < 16 ? (words_left / 4 > 0 ? words_left / 4 : 1) : 16;
    in->n = batch;
    in->texts = calloc((size_t)batch, sizeof *in->texts);
    in->pairs = qa ? calloc((size_t)batch, sizeof *in->pairs) : NULL;
    if (!in->texts || (qa && !in->pairs)) {
        say_error("out of memory building the synthetic input");
        return EXIT_ERROR;
    }
    tp_encode_options o;
    tp_encode_options_init(&o);
    o.padding = pad ? TP_PAD_LONGEST : TP_PAD_NONE;
    /* A word next to a mask token may merge with it or lose its space (RoBERTa's
     * <mask> takes the space before it): correct the word count by what the
     * encoding says, a few times at most. */
    for (int attempt = 0; attempt < 4; attempt++) {
        int nomem = 0;
        for (int i = 0; i < batch && !nomem; i++) {
            free(in->texts[i]);
            if (qa) {
                free(in->pairs[i]);
                in->texts[i] = repeat_word(word, q_words, NULL);
                in->pairs[i] = repeat_word(word, words_left - q_words, NULL);
                nomem = !in->texts[i] || !in->pairs[i];
            } else {
                in->texts[i] = repeat_word(word, words_left, mask_token);
                nomem = !in->texts[i];
            }
        }
        if (nomem) {
            say_error("out of memory building the synthetic input");
            return EXIT_ERROR;
        }
        tp_encoding_free(in->enc);
        in->enc = NULL;
        if (tp_tokenizer_encode(tok, (const char *const *)in->texts,
                                (const char *const *)in->pairs, (size_t)batch, &o, &in->enc,
                                &err) != TP_OK)
            return fail(&err);
        int got = (int)tp_encoding_length(in->enc, 0);
        if (got == seq) break;
        words_left += seq - got;
        if (words_left < (qa ? q_words + 1 : 1)) break;
    }
    for (size_t r = 0; r < tp_encoding_rows(in->enc); r++)
        if (tp_encoding_length(in->enc, r) != (size_t)seq) {
            say_error("bench: the synthetic text encodes to %zu tokens, not --seq %d",
                      tp_encoding_length(in->enc, r), seq);
            return EXIT_ERROR;
        }
    return 0;
}

/* The task a model's head is made for, as transformers' pipeline() would pick it. */
static const char *natural_task(const tp_model *m)
{
    switch (tp_model_head(m)) {
    case TP_HEAD_NONE: return "feature-extraction";
    case TP_HEAD_SEQUENCE_CLASSIFICATION: return "text-classification";
    case TP_HEAD_TOKEN_CLASSIFICATION: return "token-classification";
    case TP_HEAD_QUESTION_ANSWERING: return "question-answering";
    case TP_HEAD_MASKED_LM: return "fill-mask";
    default: return NULL;
    }
}

/* {"inputs": [...]} with every text of the batch (objects for question-answering). */
static char *bench_request(const bench_input *in)
{
    cJSON *req = cJSON_CreateObject();
    cJSON *inputs = cJSON_AddArrayToObject(req, "inputs");
    for (int i = 0; inputs && i < in->n; i++) {
        cJSON *item;
        if (in->pairs) {
            item = cJSON_CreateObject();
            cJSON_AddStringToObject(item, "question", in->texts[i]);
            cJSON_AddStringToObject(item, "context", in->pairs[i]);
        } else {
            item = cJSON_CreateString(in->texts[i]);
        }
        cJSON_AddItemToArray(inputs, item);
    }
    char *body = inputs ? cJSON_PrintUnformatted(req) : NULL;
    cJSON_Delete(req);
    return body;
}

/* Runs the forward (pipeline == NULL) or the pipeline `warmup + iters` times and
 * keeps the last `iters` latencies in t. */
static tp_status time_runs(tp_model *m, const tp_model_input *mi, tp_pipeline *p,
                           const char *body, int warmup, int iters, double *t, tp_error *err)
{
    for (int i = 0; i < warmup + iters; i++) {
        tp_tensor *out = NULL;
        char *response = NULL;
        if (i == warmup) tp_profile_read(NULL, 1); /* the timed runs' alone */
        double t0 = now_ms();
        tp_status s = p ? tp_pipeline_run(p, body, &response, err)
                        : tp_model_forward(m, mi, &out, err);
        double t1 = now_ms();
        tp_tensor_free(out);
        tp_free(response);
        if (s != TP_OK) return s;
        if (i >= warmup) t[i - warmup] = t1 - t0;
    }
    return TP_OK;
}

static cJSON *stats_json(const bench_stats *s, int batch, int seq)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "median_ms", s->median);
    cJSON_AddNumberToObject(o, "p90_ms", s->p90);
    cJSON_AddNumberToObject(o, "min_ms", s->min);
    cJSON_AddNumberToObject(o, "mean_ms", s->mean);
    cJSON_AddNumberToObject(o, "sequences_per_s", batch * 1e3 / s->median);
    cJSON_AddNumberToObject(o, "tokens_per_s", (double)batch * seq * 1e3 / s->median);
    return o;
}

static void stats_row(const char *name, const bench_stats *s, int batch, int seq)
{
    printf("%-34s %10.3f %10.3f %10.1f %12.0f\n", name, s->median, s->p90,
           batch * 1e3 / s->median, (double)batch * seq * 1e3 / s->median);
}

/* The profile of `iters` timed iterations whose mean was mean_ms: each part's mean
 * ms per iteration, its share, calls per iteration and, for products, GFLOP/s; the
 * rest is the mean less the parts. */
static const char *const profile_names[TP_PROFILE_PARTS] = {
    "products <= 8 rows", "products > 8 rows", "attention", "layer norms"};
static const char *const profile_keys[TP_PROFILE_PARTS] = {
    "products_few_rows", "products", "attention", "layer_norms"};

static double profile_rest_ms(const tp_profile *p, double mean_ms, int iters)
{
    double parts = 0;
    for (int i = 0; i < TP_PROFILE_PARTS; i++) parts += p->seconds[i] * 1e3 / iters;
    return mean_ms - parts;
}

static void print_profile(const tp_profile *p, double mean_ms, int iters)
{
    printf("\nprofile   where the time went, ms per iteration (mean %.3f ms)\n", mean_ms);
    for (int i = 0; i < TP_PROFILE_PARTS; i++) {
        const double ms = p->seconds[i] * 1e3 / iters;
        printf("  %-20s %10.3f %6.1f%% %8.1f calls", profile_names[i], ms, 100 * ms / mean_ms,
               (double)p->calls[i] / iters);
        if (p->flops[i] > 0 && p->seconds[i] > 0)
            printf(" %8.1f GFLOP/s", p->flops[i] / p->seconds[i] * 1e-9);
        printf("\n");
    }
    const double rest = profile_rest_ms(p, mean_ms, iters);
    printf("  %-20s %10.3f %6.1f%%\n", "the rest", rest, 100 * rest / mean_ms);
}

static cJSON *profile_json(const tp_profile *p, double mean_ms, int iters)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "mean_ms", mean_ms);
    for (int i = 0; i < TP_PROFILE_PARTS; i++) {
        cJSON *part = cJSON_AddObjectToObject(o, profile_keys[i]);
        if (!part) continue;
        cJSON_AddNumberToObject(part, "ms", p->seconds[i] * 1e3 / iters);
        cJSON_AddNumberToObject(part, "calls", (double)p->calls[i] / iters);
        if (p->flops[i] > 0 && p->seconds[i] > 0)
            cJSON_AddNumberToObject(part, "gflops", p->flops[i] / p->seconds[i] * 1e-9);
    }
    cJSON_AddNumberToObject(o, "rest_ms", profile_rest_ms(p, mean_ms, iters));
    return o;
}

/* ------------------------------------------------------------------ bench --tokenizer */

/* The batch of bench --tokenizer, made as bench/bench_tokenizers_hf.py makes it:
 * the corpus read as Python's text mode reads it, text = (corpus + "\n") * k with
 * k = max(1, N // len(corpus) + 1), lines = text.splitlines(). */
typedef struct tok_corpus {
    char *text;          /* the repeated text; its line breaks are overwritten by NULs */
    size_t corpus_bytes; /* the corpus after newline translation */
    size_t bytes;        /* the repeated text, line breaks included */
    int repeat;          /* k */
    const char **lines;  /* into text */
    size_t n_lines;
} tok_corpus;

/* Length of the str.splitlines() line boundary at p (0 when none): \n \r \r\n \v \f
 * \x1c \x1d \x1e, and U+0085, U+2028, U+2029 in UTF-8. */
static size_t line_break_at(const unsigned char *p, const unsigned char *end)
{
    switch (p[0]) {
    case '\r': return p + 1 < end && p[1] == '\n' ? 2 : 1;
    case '\n': case '\v': case '\f': case 0x1c: case 0x1d: case 0x1e: return 1;
    case 0xc2: return p + 1 < end && p[1] == 0x85 ? 2 : 0;
    case 0xe2: return p + 2 < end && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9) ? 3 : 0;
    default: return 0;
    }
}

/* Reads and repeats the corpus to at least `min_bytes`; returns 0 or an exit status
 * after printing why. */
static int load_tok_corpus(const char *path, size_t min_bytes, tok_corpus *tc)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        say_error("--corpus %s: %s", path, strerror(errno));
        return EXIT_ERROR;
    }
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        say_error("--corpus %s: %s", path, buf ? "read error" : "out of memory");
        free(buf);
        return EXIT_ERROR;
    }
    /* Python's universal newlines: "\r\n" and a lone "\r" read as "\n" */
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n') continue;
        buf[n++] = buf[i] == '\r' ? '\n' : buf[i];
    }
    if (n == 0) {
        say_error("--corpus %s: the file is empty", path);
        free(buf);
        return EXIT_ERROR;
    }
    size_t k = min_bytes / n + 1;
    if (k > INT_MAX || (n + 1) > SIZE_MAX / 2 / k) {
        say_error("--corpus %s: repeating it to %zu bytes is too large", path, min_bytes);
        free(buf);
        return EXIT_ERROR;
    }
    tc->corpus_bytes = n;
    tc->repeat = (int)k;
    tc->bytes = (n + 1) * k;
    tc->text = malloc(tc->bytes + 1);
    if (!tc->text) {
        say_error("out of memory repeating the corpus to %zu bytes", tc->bytes);
        free(buf);
        return EXIT_ERROR;
    }
    for (size_t r = 0; r < k; r++) {
        memcpy(tc->text + r * (n + 1), buf, n);
        tc->text[r * (n + 1) + n] = '\n';
    }
    tc->text[tc->bytes] = '\0';
    free(buf);

    size_t breaks = 0;
    const unsigned char *p = (const unsigned char *)tc->text, *end = p + tc->bytes;
    for (const unsigned char *q = p; q < end;) {
        size_t b = line_break_at(q, end);
        breaks += b != 0;
        q += b ? b : 1;
    }
    tc->lines = malloc((breaks + 1) * sizeof *tc->lines);
    if (!tc->lines) {
        say_error("out of memory splitting the corpus into lines");
        return EXIT_ERROR;
    }
    const unsigned char *start = p;
    for (const unsigned char *q = p; q < end;) {
        size_t b = line_break_at(q, end);
        if (!b) {
            q++;
            continue;
        }
        tc->lines[tc->n_lines++] = (const char *)start;
        tc->text[q - p] = '\0';
        q += b;
        start = q;
    }
    if (start < end) tc->lines[tc->n_lines++] = (const char *)start; /* no final break */
    return 0;
}

/* The ids of every row, one line per row, space-separated. */
static int write_ids(const char *path, const tp_encoding *enc)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        say_error("--output-ids %s: %s", path, strerror(errno));
        return EXIT_ERROR;
    }
    for (size_t r = 0; r < tp_encoding_rows(enc); r++) {
        const int32_t *ids = tp_encoding_ids(enc, r);
        size_t len = tp_encoding_length(enc, r);
        for (size_t i = 0; i < len; i++) fprintf(f, i ? " %d" : "%d", (int)ids[i]);
        fputc('\n', f);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        say_error("--output-ids %s: write error", path);
        return EXIT_ERROR;
    }
    return 0;
}

/* Peak resident memory of this process so far, in bytes; -1 when unknown. */
static long long peak_rss_bytes(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (long long)ru.ru_maxrss * 1024 : -1;
}

/* Size of DIR/model.safetensors in bytes; -1 when it cannot be read. */
static long long weight_bytes_of(const char *model_dir)
{
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/model.safetensors", model_dir);
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Prints a bench's JSON object on stdout and frees it. */
static int print_json_object(cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) {
        say_error("out of memory printing the result");
        return EXIT_ERROR;
    }
    int rc = print_result(s);
    cJSON_free(s);
    return rc;
}

/* The fields every model bench (forward, generate) reports first. */
static cJSON *model_bench_json(const cli *c, tp_runtime *rt, const char *model_type,
                               const char *arch, int batch, int iters, int warmup,
                               double load_ms)
{
    const char *backend = tp_runtime_backend(rt);
    long long weight_bytes = weight_bytes_of(c->model);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "tpipe_version", tp_version());
    cJSON_AddStringToObject(o, "model", c->model);
    cJSON_AddStringToObject(o, "model_type", model_type);
    cJSON_AddStringToObject(o, "architecture", arch);
    cJSON_AddStringToObject(o, "backend", backend ? backend : "");
    cJSON_AddNumberToObject(o, "threads", c->threads);
    cJSON_AddStringToObject(o, "dtype", dtype_label(c->dtype));
    cJSON_AddNumberToObject(o, "batch", batch);
    cJSON_AddNumberToObject(o, "iters", iters);
    cJSON_AddNumberToObject(o, "warmup", warmup);
    cJSON_AddNumberToObject(o, "load_ms", load_ms);
    if (weight_bytes >= 0) cJSON_AddNumberToObject(o, "weight_bytes", (double)weight_bytes);
    else cJSON_AddNullToObject(o, "weight_bytes");
    cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)peak_rss_bytes());
    return o;
}

/* The load, weight-size and memory line of a model bench's table. */
static void print_load_line(const cli *c, double load_ms)
{
    long long weight_bytes = weight_bytes_of(c->model);
    printf("load      %.2f ms (tp_model_new); weights %.1f MB; peak RSS %.1f MB\n\n", load_ms,
           weight_bytes >= 0 ? weight_bytes / 1e6 : 0.0, peak_rss_bytes() / 1e6);
}

/* The lines every model bench's table starts with. */
static void print_model_header(const cli *c, tp_runtime *rt, const char *model_type,
                               const char *arch)
{
    const char *backend = tp_runtime_backend(rt);
    printf("model     %s (%s %s)\n", c->model, model_type, arch);
    printf("backend   %s, %d compute thread%s%s, dtype %s\n", backend ? backend : "?",
           c->threads, c->threads == 1 ? "" : "s", c->threads ? "" : " (0: every core)",
           dtype_label(c->dtype));
}

static int cmd_bench_tokenizer(const cli *c)
{
    const int iters = c->iters ? c->iters : 3, warmup = c->warmup_given ? c->warmup : 1;
    const size_t min_bytes = c->repeat_to_bytes ? (size_t)c->repeat_to_bytes : (size_t)1 << 20;
    tp_error err = {0};
    tp_tokenizer *tok = NULL;
    tp_encoding *enc = NULL;
    tok_corpus tc = {0};
    int rc = 0;
    double *t = malloc((size_t)iters * sizeof *t);
    if (!t) {
        say_error("out of memory");
        return EXIT_ERROR;
    }
    if ((rc = load_tok_corpus(c->corpus, min_bytes, &tc)) != 0) goto done;
    double t0 = now_ms();
    if (tp_tokenizer_new(c->model, TP_TOKENIZER_AUTO, &tok, &err) != TP_OK) {
        rc = fail(&err);
        goto done;
    }
    double load_ms = now_ms() - t0;

    tp_encode_options opts;
    tp_encode_options_init(&opts);
    for (int i = 0; i < warmup + iters; i++) {
        tp_encoding_free(enc);
        enc = NULL;
        double a = now_ms();
        tp_status s = tp_tokenizer_encode(tok, tc.lines, NULL, tc.n_lines, &opts, &enc, &err);
        double b = now_ms();
        if (s != TP_OK) {
            rc = fail(&err);
            goto done;
        }
        if (i >= warmup) t[i - warmup] = b - a;
    }
    bench_stats st = summarize(t, iters);
    double max_ms = t[iters - 1];

    size_t rows = tp_encoding_rows(enc), tokens = 0;
    unsigned long long ids_sum = 0;
    for (size_t r = 0; r < rows; r++) {
        const int32_t *ids = tp_encoding_ids(enc, r);
        size_t len = tp_encoding_length(enc, r);
        tokens += len;
        for (size_t i = 0; i < len; i++) ids_sum += (unsigned long long)ids[i];
    }
    if (c->output_ids && (rc = write_ids(c->output_ids, enc)) != 0) goto done;
    double mb_s = (double)tc.bytes / 1e6 / (st.median / 1e3);
    double tok_s = (double)tokens / (st.median / 1e3);
    long long peak_rss = peak_rss_bytes();

    if (c->json_out) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "tpipe_version", tp_version());
        cJSON_AddStringToObject(o, "tokenizer", c->model);
        cJSON_AddStringToObject(o, "corpus", c->corpus);
        cJSON_AddNumberToObject(o, "corpus_bytes", (double)tc.corpus_bytes);
        cJSON_AddNumberToObject(o, "repeat", tc.repeat);
        cJSON_AddNumberToObject(o, "bytes", (double)tc.bytes);
        cJSON_AddNumberToObject(o, "lines", (double)tc.n_lines);
        cJSON_AddNumberToObject(o, "rows", (double)rows);
        cJSON_AddNumberToObject(o, "tokens", (double)tokens);
        cJSON_AddNumberToObject(o, "ids_sum", (double)ids_sum);
        cJSON_AddNumberToObject(o, "iters", iters);
        cJSON_AddNumberToObject(o, "warmup", warmup);
        cJSON_AddNumberToObject(o, "load_ms", load_ms);
        cJSON_AddNumberToObject(o, "median_ms", st.median);
        cJSON_AddNumberToObject(o, "min_ms", st.min);
        cJSON_AddNumberToObject(o, "max_ms", max_ms);
        cJSON_AddNumberToObject(o, "mb_per_s", mb_s);
        cJSON_AddNumberToObject(o, "tokens_per_s", tok_s);
        cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)peak_rss);
        rc = print_json_object(o);
        goto done;
    }
    printf("tokenizer  %s (loaded in %.1f ms)\n", c->model, load_ms);
    printf("corpus     %s: (%zu bytes + \"\\n\") x %d = %zu bytes, %zu lines\n", c->corpus,
           tc.corpus_bytes, tc.repeat, tc.bytes, tc.n_lines);
    printf("encode     one batch of %zu lines, %d iterations after %d warm-up: median %.1f ms "
           "(min %.1f, max %.1f)\n", tc.n_lines, iters, warmup, st.median, st.min, max_ms);
    printf("throughput %.2f MB/s, %.0f tokens/s\n", mb_s, tok_s);
    printf("output     %zu rows, %zu tokens, ids sum %llu; peak RSS %.1f MB\n", rows, tokens,
           ids_sum, peak_rss / 1e6);
    rc = finish_stdout();
done:
    tp_encoding_free(enc);
    tp_tokenizer_free(tok);
    free(tc.lines);
    free(tc.text);
    free(t);
    return rc;
}

/* ------------------------------------------------------------------ bench --generate */

/* One generation measurement: `n_new` new tokens per row, `iters` runs. */
typedef struct gen_run {
    int n_new;
    bench_stats st;
} gen_run;

static cJSON *gen_run_json(const gen_run *r, int batch)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "new_tokens", r->n_new);
    cJSON_AddNumberToObject(o, "median_ms", r->st.median);
    cJSON_AddNumberToObject(o, "p90_ms", r->st.p90);
    cJSON_AddNumberToObject(o, "min_ms", r->st.min);
    cJSON_AddNumberToObject(o, "mean_ms", r->st.mean);
    cJSON_AddNumberToObject(o, "tokens_per_s", (double)batch * r->n_new * 1e3 / r->st.median);
    cJSON_AddNumberToObject(o, "ms_per_token", r->st.median / r->n_new);
    return o;
}

/* Times tp_model_generate producing exactly `n_new` tokens per row (min_new_tokens =
 * max_new_tokens keeps EOS out until then); a run that makes another count is an
 * error, since its timing would not be comparable. */
static int time_generate(const cli *c, tp_model *m, const tp_model_input *mi, int prompt,
                         int seq2seq, int n_new, int warmup, int iters, double *t)
{
    char params[256];
    snprintf(params, sizeof params,
             "{\"max_new_tokens\": %d, \"min_new_tokens\": %d, \"do_sample\": false, "
             "\"num_beams\": %d}", n_new, n_new, c->beams ? c->beams : 1);
    for (int i = 0; i < warmup + iters; i++) {
        tp_error err = {0};
        int32_t *seqs = NULL;
        int rows = 0, cols = 0;
        if (i == warmup) tp_profile_read(NULL, 1); /* the timed runs' alone */
        double t0 = now_ms();
        tp_status s = tp_model_generate(m, mi, params, &seqs, &rows, &cols, &err);
        double t1 = now_ms();
        tp_free(seqs);
        if (s != TP_OK) return fail(&err);
        int made = cols - (seq2seq ? 1 : prompt); /* seq2seq: decoder_start_token_id first */
        if (made != n_new) {
            say_error("bench: generate made %d new tokens, not the %d asked for (%s)", made,
                      n_new, params);
            return EXIT_ERROR;
        }
        if (i >= warmup) t[i - warmup] = t1 - t0;
    }
    return 0;
}

static int cmd_bench_generate(const cli *c)
{
    const int batch = c->batch ? c->batch : 1, prompt = c->prompt_tokens ? c->prompt_tokens : 16;
    const int iters = c->iters ? c->iters : 3, warmup = c->warmup_given ? c->warmup : 1;
    const int beams = c->beams ? c->beams : 1;
    const int n_runs = c->n_new_tokens ? c->n_new_tokens : 1;
    tp_error err = {0};
    tp_runtime *rt = NULL;
    tp_tokenizer *tok = NULL;
    tp_model *m = NULL;
    bench_input in = {0};
    gen_run runs[sizeof c->new_tokens / sizeof c->new_tokens[0]] = {{0}};
    int32_t *ids = NULL;
    int rc = 0;
    double *t = malloc((size_t)iters * sizeof *t);
    if (!t) {
        say_error("out of memory");
        return EXIT_ERROR;
    }
    if (open_runtime(c, &rt, &err) != TP_OK ||
        tp_tokenizer_new(c->model, TP_TOKENIZER_AUTO, &tok, &err) != TP_OK) {
        rc = fail(&err);
        goto done;
    }
    double t0 = now_ms();
    if (tp_model_new_ex(rt, c->model, model_options(c), &m, &err) != TP_OK) {
        rc = fail(&err);
        goto done;
    }
    double load_ms = now_ms() - t0;
    const tp_head head = tp_model_head(m);
    const char *arch = tp_model_architecture(m) ? tp_model_architecture(m) : "";
    const char *model_type = tp_model_type(m) ? tp_model_type(m) : "";
    if (head != TP_HEAD_CAUSAL_LM && head != TP_HEAD_SEQ2SEQ_LM) {
        say_error("bench --generate: %s (%s) is not a language model: generation needs a "
                  "causal-LM or seq2seq-LM head", c->model, arch[0] ? arch : model_type);
        rc = EXIT_ERROR;
        goto done;
    }
    const int seq2seq = head == TP_HEAD_SEQ2SEQ_LM;
    /* the synthetic text as for the encoders: one word repeated, special tokens
     * (Marian's </s>) included in P */
    if ((rc = build_bench_input(tok, seq2seq ? "translation" : "text-generation", batch, prompt,
                                0, &in)) != 0)
        goto done;
    /* every row is `prompt` tokens: no padding, no mask; copied into one block */
    ids = malloc((size_t)batch * prompt * sizeof *ids);
    if (!ids) {
        say_error("out of memory");
        rc = EXIT_ERROR;
        goto done;
    }
    for (int r = 0; r < batch; r++)
        memcpy(ids + (size_t)r * prompt, tp_encoding_ids(in.enc, (size_t)r),
               (size_t)prompt * sizeof *ids);
    tp_model_input mi = {.struct_size = sizeof mi, .batch = batch, .seq_len = prompt,
                         .input_ids = ids};
    tp_profile prof = {0};
    tp_profile_enable(c->profile);
    for (int r = 0; r < n_runs; r++) {
        runs[r].n_new = c->n_new_tokens ? c->new_tokens[r] : 64;
        if ((rc = time_generate(c, m, &mi, prompt, seq2seq, runs[r].n_new, warmup, iters, t)) != 0)
            goto done;
        runs[r].st = summarize(t, iters);
    }
    tp_profile_read(&prof, 1); /* the last run's (time_generate resets it) */
    tp_profile_enable(0);
    const gen_run *first = &runs[0], *last = &runs[n_runs - 1];
    const double flat = (last->st.median / last->n_new) / (first->st.median / first->n_new);

    if (c->json_out) {
        cJSON *o = model_bench_json(c, rt, model_type, arch, batch, iters, warmup, load_ms);
        cJSON_AddBoolToObject(o, "encoder_decoder", seq2seq);
        cJSON_AddNumberToObject(o, "prompt_tokens", prompt);
        cJSON_AddNumberToObject(o, "num_beams", beams);
        cJSON *arr = cJSON_AddArrayToObject(o, "runs");
        for (int r = 0; arr && r < n_runs; r++)
            cJSON_AddItemToArray(arr, gen_run_json(&runs[r], batch));
        /* the single-N figures at the top level too, from the last run */
        cJSON_AddNumberToObject(o, "new_tokens", last->n_new);
        cJSON_AddNumberToObject(o, "tokens_per_s", (double)batch * last->n_new * 1e3 /
                                                       last->st.median);
        cJSON_AddNumberToObject(o, "ms_per_token", last->st.median / last->n_new);
        if (n_runs > 1) cJSON_AddNumberToObject(o, "flatness", flat);
        else cJSON_AddNullToObject(o, "flatness");
        if (c->profile) cJSON_AddItemToObject(o, "profile", profile_json(&prof, last->st.mean, iters));
        rc = print_json_object(o);
        goto done;
    }
    print_model_header(c, rt, model_type, arch);
    printf("input     batch %d x %d %s tokens; %s; %d iterations after %d warm-up\n", batch,
           prompt, seq2seq ? "source" : "prompt",
           beams == 1 ? "greedy" : "beam search", iters, warmup);
    if (beams > 1) printf("          num_beams %d\n", beams);
    print_load_line(c, load_ms);
    printf("%-12s %12s %12s %12s\n", "new tokens", "median ms", "ms/token", "tokens/s");
    for (int r = 0; r < n_runs; r++)
        printf("%-12d %12.2f %12.3f %12.1f\n", runs[r].n_new, runs[r].st.median,
               runs[r].st.median / runs[r].n_new, batch * runs[r].n_new * 1e3 / runs[r].st.median);
    if (n_runs > 1)
        printf("\nflatness  ms per new token at %d / at %d: %.2f (near 1 with a KV cache)\n",
               last->n_new, first->n_new, flat);
    if (c->profile) print_profile(&prof, last->st.mean, iters);
    rc = finish_stdout();
done:
    free(ids);
    bench_input_free(&in);
    tp_model_free(m);
    tp_tokenizer_free(tok);
    tp_runtime_free(rt);
    free(t);
    return rc;
}

static int cmd_bench(const cli *c)
{
    if (c->tokenizer_bench) return cmd_bench_tokenizer(c);
    if (c->generate_bench) return cmd_bench_generate(c);
    const int batch = c->batch ? c->batch : 1, seq = c->seq ? c->seq : 128;
    const int iters = c->iters ? c->iters : 10, warmup = c->warmup_given ? c->warmup : 2;
    tp_error err = {0}, pipe_err = {0};
    tp_runtime *rt = NULL;
    tp_tokenizer *tok = NULL;
    tp_model *m = NULL;
    tp_pipeline *p = NULL;
    bench_input in = {0};
    char *body = NULL;
    char model_type[64] = "", arch[128] = "";
    bench_stats fwd, pipe = {0};
    tp_profile prof = {0};
    double pipe_load_ms = 0;
    int rc = 0, have_pipe = 0;
    double *t = malloc((size_t)iters * sizeof *t);
    if (!t) {
        say_error("out of memory");
        return EXIT_ERROR;
    }
    if (open_runtime(c, &rt, &err) != TP_OK ||
        tp_tokenizer_new(c->model, TP_TOKENIZER_AUTO, &tok, &err) != TP_OK) {
        rc = fail(&err);
        goto done;
    }
    double t0 = now_ms();
    if (tp_model_new_ex(rt, c->model, model_options(c), &m, &err) != TP_OK) {
        rc = fail(&err);
        goto done;
    }
    double load_ms = now_ms() - t0;
    snprintf(model_type, sizeof model_type, "%s", tp_model_type(m) ? tp_model_type(m) : "");
    snprintf(arch, sizeof arch, "%s", tp_model_architecture(m) ? tp_model_architecture(m) : "");
    const char *task = c->task ? c->task : natural_task(m);
    if (!task) {
        say_error("bench: no default task for %s; give --task", arch[0] ? arch : c->model);
        rc = EXIT_USAGE;
        goto done;
    }
    if ((rc = build_bench_input(tok, task, batch, seq, 1, &in)) != 0) goto done;

    tp_model_input mi = {
        .struct_size = sizeof mi,
        .batch = (int)tp_encoding_rows(in.enc),
        .seq_len = seq,
        .input_ids = tp_encoding_ids(in.enc, 0),
        .attention_mask = tp_encoding_attention_mask(in.enc, 0),
        .token_type_ids = tp_encoding_type_ids(in.enc, 0),
    };
    tp_profile_enable(c->profile);
    if (time_runs(m, &mi, NULL, NULL, warmup, iters, t, &err) != TP_OK) {
        rc = fail(&err);
        goto done;
    }
    tp_profile_read(&prof, 1);
    tp_profile_enable(0);
    fwd = summarize(t, iters);
    /* the pipeline maps its own copy: free ours first so peak RSS counts one */
    tp_model_free(m);
    m = NULL;

    body = bench_request(&in);
    if (!body) {
        say_error("out of memory building the request");
        rc = EXIT_ERROR;
        goto done;
    }
    t0 = now_ms();
    if (tp_pipeline_new_ex(rt, task, c->model, model_options(c), &p, &pipe_err) != TP_OK &&
        c->task) {
        rc = fail(&pipe_err); /* a task asked for by name must exist */
        goto done;
    }
    if (p) {
        pipe_load_ms = now_ms() - t0;
        if (time_runs(NULL, NULL, p, body, warmup, iters, t, &pipe_err) == TP_OK) {
            pipe = summarize(t, iters);
            have_pipe = 1;
        }
    }
    const char *pipe_task = p ? tp_pipeline_task(p) : task;

    if (c->json_out) {
        cJSON *o = model_bench_json(c, rt, model_type, arch, batch, iters, warmup, load_ms);
        cJSON_AddStringToObject(o, "task", pipe_task);
        cJSON_AddNumberToObject(o, "seq", seq);
        cJSON_AddItemToObject(o, "forward", stats_json(&fwd, batch, seq));
        if (c->profile) cJSON_AddItemToObject(o, "profile", profile_json(&prof, fwd.mean, iters));
        if (have_pipe) {
            cJSON_AddItemToObject(o, "pipeline", stats_json(&pipe, batch, seq));
            cJSON_AddNumberToObject(o, "pipeline_load_ms", pipe_load_ms);
        } else {
            cJSON_AddNullToObject(o, "pipeline");
            cJSON_AddStringToObject(o, "pipeline_error", pipe_err.message[0]
                                                             ? pipe_err.message
                                                             : tp_strerror(pipe_err.status));
        }
        rc = print_json_object(o);
        goto done;
    }
    print_model_header(c, rt, model_type, arch);
    printf("input     batch %d x %d tokens; %d iterations after %d warm-up\n", batch, seq, iters,
           warmup);
    print_load_line(c, load_ms);
    printf("%-34s %10s %10s %10s %12s\n", "", "median ms", "p90 ms", "seq/s", "tokens/s");
    stats_row("forward", &fwd, batch, seq);
    char name[64];
    snprintf(name, sizeof name, "pipeline (%s)", pipe_task);
    if (have_pipe) stats_row(name, &pipe, batch, seq);
    else printf("%-34s not measured: %s\n", name, pipe_err.message);
    if (c->profile) print_profile(&prof, fwd.mean, iters);
    rc = finish_stdout();
done:
    free(body);
    bench_input_free(&in);
    tp_pipeline_free(p);
    tp_model_free(m);
    tp_tokenizer_free(tok);
    tp_runtime_free(rt);
    free(t);
    return rc;
}

/* ------------------------------------------------------------------ Hub models */

/* --model given as a Hub id "org/name[@revision]", or run without --model (the task's
 * default model, with the note transformers prints): c->model becomes the snapshot
 * directory in the Hugging Face cache, kept alive by *owned (docs/hub.md). */
static int resolve_hub_model(cli *c, char **owned)
{
    *owned = NULL;
    if (c->cmd != CMD_RUN && c->cmd != CMD_TOKENIZE && c->cmd != CMD_DETOKENIZE &&
        c->cmd != CMD_BENCH)
        return 0;
    const char *task = c->cmd == CMD_RUN ? c->args[0] : c->cmd == CMD_BENCH ? c->task : NULL;
    char id[512];
    const char *value = c->model;
    if (!value) {
        const char *def = tp_hub_default_model(task), *rev = tp_hub_default_revision(task);
        if (!def) {
            say_error("run needs --model DIR or --model org/name: task '%s' has no default "
                      "model (try tpipe run --help)", task);
            return EXIT_USAGE;
        }
        const char *ep = getenv("HF_ENDPOINT");
        fprintf(stderr,
                "No model was supplied, defaulted to %s and revision %s (%s/%s).\n"
                "Using a pipeline without specifying a model name and revision in production "
                "is not recommended.\n",
                def, rev, ep && ep[0] ? ep : "https://huggingface.co", def);
        snprintf(id, sizeof id, "%s@%s", def, rev);
        value = id;
    } else if (!tpipe_model_is_hub_id(value)) {
        return 0; /* a directory (or a path whose error the loader reports) */
    }
    char msg[1024];
    if (tpipe_model_resolve(value, task, owned, msg, sizeof msg) != 0) {
        say_error("%s", msg);
        return EXIT_ERROR;
    }
    c->model = *owned;
    return 0;
}

/* ------------------------------------------------------------------ main */

/* `tpipe serve` (tools/serve/, docs/server.md) parses its own options. */
int tpipe_serve_main(int argc, char **argv);

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "serve") == 0) return tpipe_serve_main(argc - 1, argv + 1);
    cli c;
    char msg[512];
    char *hub_dir = NULL; /* the model directory a Hub id resolved to */
    int rc = parse_args(argc, argv, &c, msg, sizeof msg);
    if (rc) {
        say_error("%s", msg);
    } else if (c.version) {
        printf("tpipe %s\n", tp_version());
    } else if (c.help) {
        fputs(command_help[c.cmd], stdout);
    } else if ((rc = resolve_hub_model(&c, &hub_dir)) == 0) {
        switch (c.cmd) {
        case CMD_RUN: rc = cmd_run(&c); break;
        case CMD_PLUGINS: rc = list_modules(&c, TP_MODULE_TASK); break;
        case CMD_BACKENDS: rc = list_modules(&c, TP_MODULE_BACKEND); break;
        case CMD_TOKENIZE: rc = cmd_tokenize(&c); break;
        case CMD_DETOKENIZE: rc = cmd_detokenize(&c); break;
        case CMD_BENCH: rc = cmd_bench(&c); break;
        default: rc = EXIT_USAGE; break;
        }
    }
    free(hub_dir);
    free(c.params);
    free(c.inputs);
    free(c.args);
    return rc;
}
