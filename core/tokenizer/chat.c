/* chat.c: the tokenizer's chat template: finding it in a model directory at load
 * time, and tp_tokenizer_apply_chat_template, which renders it with the
 * tokenizer's special tokens as transformers' apply_chat_template(...,
 * tokenize=False) does. The template engine is chat_template.c.
 * Thread-safety: loading writes the tokenizer being built; rendering only reads
 * the tokenizer, so it may run concurrently on one handle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tok_internal.h"

/* tokenizer_config.json "chat_template": a string, or named templates */
static tp_status template_from_value(const cJSON *v, const char *file, char **out, tp_error *err)
{
    if (!v || cJSON_IsNull(v)) return TP_OK;
    if (cJSON_IsString(v)) {
        if (!(*out = strdup(v->valuestring)))
            return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        return TP_OK;
    }
    if (cJSON_IsArray(v)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (!cJSON_IsString(name) || !cJSON_IsString(tpl))
                return tp__error(err, TP_ERR_FORMAT,
                                 "%s: key 'chat_template' entries need string 'name' and 'template'",
                                 file);
            if (strcmp(name->valuestring, "default") == 0) {
                if (!(*out = strdup(tpl->valuestring)))
                    return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
                return TP_OK;
            }
        }
        return TP_OK; /* only named templates (tool_use, rag...): no default one */
    }
    return tp__error(err, TP_ERR_FORMAT,
                     "%s: key 'chat_template' must be a string or a list of {name, template}", file);
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

tp_status tp__tokenizer_load_chat_template(tp_tokenizer *tok, const char *model_dir,
                                           const cJSON *config, tp_error *err)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/chat_template.jinja", model_dir) >= sizeof path)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "%s: path too long", model_dir);
    if (is_file(path)) {
        size_t size;
        return tp__read_file(path, &tok->chat_template, &size, err);
    }
    snprintf(path, sizeof path, "%s/chat_template.json", model_dir);
    if (is_file(path)) {
        cJSON *j = NULL;
        TP_TRY(tp__json_load(path, &j, err));
        tp_status st = template_from_value(cJSON_GetObjectItemCaseSensitive(j, "chat_template"),
                                           "chat_template.json", &tok->chat_template, err);
        cJSON_Delete(j);
        if (st != TP_OK || tok->chat_template) return st;
    }
    return template_from_value(cJSON_GetObjectItemCaseSensitive(config, "chat_template"),
                               "tokenizer_config.json", &tok->chat_template, err);
}

static const char *const ROLE_VARS[TP__ROLE_COUNT] = {"pad_token", "unk_token", "cls_token",
                                                      "sep_token", "mask_token", "bos_token",
                                                      "eos_token"};

tp_status tp__tokenizer_chat_render(tp_tokenizer *tok, const cJSON *messages,
                                    int add_generation_prompt, char **out, tp_error *err)
{
    if (!tok->chat_template)
        return tp__error(err, TP_ERR_NOT_FOUND,
                         "tokenizer: no chat_template (chat_template.jinja or "
                         "tokenizer_config.json 'chat_template')");
    cJSON *vars = cJSON_CreateObject();
    if (!vars) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    int ok = cJSON_AddBoolToObject(vars, "add_generation_prompt", add_generation_prompt != 0) != NULL;
    for (int r = 0; r < TP__ROLE_COUNT && ok; r++)
        if (tok->role_token[r])
            ok = cJSON_AddStringToObject(vars, ROLE_VARS[r], tok->role_token[r]) != NULL;
    tp_status st = ok ? tp__chat_template_render(tok->chat_template, messages, vars, out, err)
                      : tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    cJSON_Delete(vars);
    return st;
}

tp_status tp_tokenizer_apply_chat_template(tp_tokenizer *tok, const char *messages_json,
                                           int add_generation_prompt, char **text, tp_error *err)
{
    if (text) *text = NULL;
    if (!tok || !messages_json || !text)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "tp_tokenizer_apply_chat_template: %s is NULL",
                         !tok ? "tok" : !messages_json ? "messages_json" : "text");
    cJSON *messages = NULL;
    TP_TRY(tp__json_parse(messages_json, strlen(messages_json), "messages", &messages, err));
    tp_status st = TP_OK;
    if (!cJSON_IsArray(messages)) {
        st = tp__error(err, TP_ERR_INVALID_ARGUMENT,
                       "messages: must be a JSON list of {\"role\", \"content\"} objects");
    } else {
        int i = 0;
        const cJSON *m;
        cJSON_ArrayForEach(m, messages)
        {
            if (!cJSON_IsObject(m) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "role"))) {
                st = tp__error(err, TP_ERR_INVALID_ARGUMENT,
                               "messages[%d]: must be an object with a string 'role'", i);
                break;
            }
            i++;
        }
    }
    if (st == TP_OK) st = tp__tokenizer_chat_render(tok, messages, add_generation_prompt, text, err);
    cJSON_Delete(messages);
    return st;
}
