/* chat_template.h: chat templates (the Jinja subset real chat_template strings
 * use), rendered as transformers' apply_chat_template(..., tokenize=False) does.
 * Internal to libtpipe.
 *
 * Compile once (lexer with trim_blocks and lstrip_blocks, parser to an AST), render
 * any number of times. Rendering works in an arena of its own, bounded in memory,
 * output size and evaluation steps, so a hostile template fails with an error
 * instead of hanging or exhausting memory. Syntax errors are TP_ERR_FORMAT, a
 * construct outside the subset TP_ERR_UNSUPPORTED (naming it and its line),
 * raise_exception() and render-time type errors TP_ERR_INVALID_ARGUMENT.
 *
 * Thread-safety: a compiled template is read-only; renders may run concurrently. */
#ifndef TP_CORE_CHAT_TEMPLATE_H
#define TP_CORE_CHAT_TEMPLATE_H

#include <cjson/cJSON.h>
#include <tpipe/tpipe.h>

typedef struct tp__chat_template tp__chat_template;

tp_status tp__chat_template_compile(const char *template_src, tp__chat_template **out,
                                    tp_error *err);
void tp__chat_template_free(tp__chat_template *t);

/* Renders with `vars` (a JSON object: each member is a template variable). The
 * variables tools, documents (None) and add_generation_prompt (False) are defined
 * unless `vars` sets them. `*out` is malloc'd. */
tp_status tp__chat_template_run(const tp__chat_template *t, const cJSON *vars, char **out,
                                tp_error *err);

/* Compile + run: `messages` is bound as `messages`, the members of `extra_vars`
 * (add_generation_prompt, bos_token, ...; may be NULL) as themselves. */
tp_status tp__chat_template_render(const char *template_src, const cJSON *messages,
                                   const cJSON *extra_vars, char **out, tp_error *err);

/* Renders the tokenizer's chat_template with its special tokens (bos_token,
 * eos_token, ...), as apply_chat_template does. TP_ERR_NOT_FOUND when the
 * tokenizer has no chat_template. */
tp_status tp__tokenizer_chat_render(tp_tokenizer *tok, const cJSON *messages,
                                    int add_generation_prompt, char **out, tp_error *err);

/* Loader part (chat.c): the chat template of a model directory into
 * tok->chat_template: chat_template.jinja, else chat_template.json's
 * "chat_template", else tokenizer_config.json's "chat_template" (a string, or a
 * list of {name, template} whose "default" entry is used). None is not an error. */
tp_status tp__tokenizer_load_chat_template(tp_tokenizer *tok, const char *model_dir,
                                           const cJSON *config, tp_error *err);

#endif
