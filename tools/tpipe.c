/*
 * tpipe.c: the `tpipe` command-line tool, a thin front end over the public API
 * (tpipe.h) and nothing else.
 *
 *   tpipe run TASK --model DIR [...] [TEXT...]   one request, JSON on stdout
 *   tpipe plugins | backends                     what the runtime loaded or refused
 *   tpipe tokenize | detokenize                  the model's tokenizer alone
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

#include <cjson/cJSON.h>
#include <tpipe/tpipe.h>

enum { EXIT_ERROR = 1, EXIT_USAGE = 2 };

typedef enum command {
    CMD_NONE = 0, CMD_RUN, CMD_PLUGINS, CMD_BACKENDS, CMD_TOKENIZE, CMD_DETOKENIZE, CMD_COUNT
} command;

static const char *const command_names[CMD_COUNT] = {
    "", "run", "plugins", "backends", "tokenize", "detokenize",
};

/* Everything the command line said, parsed in one place (parse_args). */
typedef struct cli {
    command cmd;
    int help, version;
    const char *model, *backend, *json, *pair;
    int threads;
    int no_special, keep_special;
    const char **params; /* "KEY=VALUE", in order */
    size_t n_params;
    const char **inputs; /* "KEY=VALUE", in order */
    size_t n_inputs;
    const char **args;   /* positional arguments after the subcommand */
    size_t n_args;
} cli;

/* ------------------------------------------------------------------ help */

static const char main_help[] =
    "tpipe: Hugging Face transformers pipelines, in C.\n"
    "\n"
    "A *task* is what you want done with text: \"text-classification\" (alias\n"
    "\"sentiment-analysis\"), \"token-classification\", \"question-answering\", ... Each task is\n"
    "served by a plugin (see `tpipe plugins`). A *model* is a directory laid out like a\n"
    "Hugging Face Hub repository: config.json, model.safetensors and the tokenizer files\n"
    "(tokenizer.json, or vocab.txt / vocab.json + merges.txt / a SentencePiece model).\n"
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
    "  --backend NAME       compute backend (`tpipe backends`); default: the fastest loaded\n"
    "  --threads N          compute threads; 0 (default) uses every core\n"
    "  --param KEY=VALUE    a pipeline parameter; VALUE is read as JSON when it parses\n"
    "                       (top_k=null, top_k=3, truncation=true, labels=[\"a\",\"b\"]),\n"
    "                       else as a string (function_to_apply=sigmoid). Repeatable.\n"
    "  --input KEY=VALUE    one part of a structured input, VALUE always a string:\n"
    "                       --input text=... --input text_pair=... (text-classification),\n"
    "                       --input question=... --input context=... (question-answering)\n"
    "  --json FILE          read the Inference API body {\"inputs\": ..., \"parameters\": {...}}\n"
    "                       from FILE, or from stdin with '-'; --param entries override its\n"
    "                       parameters; TEXT may supply inputs when the body has none\n"
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

static const char *const command_help[CMD_COUNT] = {
    main_help, run_help, plugins_help, backends_help, tokenize_help, detokenize_help,
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
    {"--model", OPT_VALUE, ON(CMD_RUN) | ON(CMD_TOKENIZE) | ON(CMD_DETOKENIZE)},
    {"--backend", OPT_VALUE, ON(CMD_RUN)},
    {"--threads", OPT_VALUE, ON(CMD_RUN)},
    {"--param", OPT_VALUE, ON(CMD_RUN)},
    {"--input", OPT_VALUE, ON(CMD_RUN)},
    {"--json", OPT_VALUE, ON(CMD_RUN)},
    {"--pair", OPT_VALUE, ON(CMD_TOKENIZE)},
    {"--no-special", 0, ON(CMD_TOKENIZE)},
    {"--keep-special", 0, ON(CMD_DETOKENIZE)},
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

/* Stores one option's value in `c`. */
static int set_option(cli *c, const char *name, const char *value, char *msg, size_t cap)
{
    if (strcmp(name, "--model") == 0) c->model = value;
    else if (strcmp(name, "--backend") == 0) c->backend = value;
    else if (strcmp(name, "--json") == 0) c->json = value;
    else if (strcmp(name, "--pair") == 0) c->pair = value;
    else if (strcmp(name, "--no-special") == 0) c->no_special = 1;
    else if (strcmp(name, "--keep-special") == 0) c->keep_special = 1;
    else if (strcmp(name, "--threads") == 0) {
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
            if (strlen(options[k].name) == name_len && strncmp(options[k].name, a, name_len) == 0)
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
    if ((c->cmd == CMD_RUN || c->cmd == CMD_TOKENIZE || c->cmd == CMD_DETOKENIZE) && !c->model)
        return usage_error(msg, cap, "%s needs --model DIR (try tpipe %s --help)",
                           command_names[c->cmd], command_names[c->cmd]);
    if ((c->cmd == CMD_PLUGINS || c->cmd == CMD_BACKENDS) && c->n_args)
        return usage_error(msg, cap, "%s takes no arguments, got '%s'", command_names[c->cmd],
                           c->args[0]);
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
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
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

static int cmd_run(const cli *c)
{
    tp_error err = {0};
    cJSON *req = build_request(c, &err);
    if (!req) {
        say_error("%s", err.message);
        return EXIT_ERROR;
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
    if (open_runtime(c, &rt, &err) != TP_OK ||
        tp_pipeline_new(rt, c->args[0], c->model, &p, &err) != TP_OK ||
        tp_pipeline_run(p, body, &response, &err) != TP_OK)
        rc = fail(&err);
    else
        rc = print_result(response);
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

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    cli c;
    char msg[512];
    int rc = parse_args(argc, argv, &c, msg, sizeof msg);
    if (rc) {
        say_error("%s", msg);
    } else if (c.version) {
        printf("tpipe %s\n", tp_version());
    } else if (c.help) {
        fputs(command_help[c.cmd], stdout);
    } else {
        switch (c.cmd) {
        case CMD_RUN: rc = cmd_run(&c); break;
        case CMD_PLUGINS: rc = list_modules(&c, TP_MODULE_TASK); break;
        case CMD_BACKENDS: rc = list_modules(&c, TP_MODULE_BACKEND); break;
        case CMD_TOKENIZE: rc = cmd_tokenize(&c); break;
        case CMD_DETOKENIZE: rc = cmd_detokenize(&c); break;
        default: rc = EXIT_USAGE; break;
        }
    }
    free(c.params);
    free(c.inputs);
    free(c.args);
    return rc;
}
