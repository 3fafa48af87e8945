/* test_chat_template.c: the chat template engine (core/tokenizer/chat_template.c)
 * and tp_tokenizer_apply_chat_template: SmolLM2's template on its fixture cases,
 * ChatML, a Llama-2 template with raise_exception, whitespace control, and the
 * errors and limits. Expected strings come from jinja2 3.1 with transformers'
 * settings (trim_blocks, lstrip_blocks). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <tpipe/tpipe.h>

#include "check.h"
#include "core/json_util.h"
#include "tokenizer/chat_template.h"

static const char MSGS[] =
    "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\" Hi \"},"
    "{\"role\":\"assistant\",\"content\":\"Hello! \"},{\"role\":\"user\",\"content\":\"Bye\"}]";

static const char CHATML[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' "
    "}}{% endif %}";

static const char LLAMA2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == "
    "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
    "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
    "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
    "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% "
    "endfor %}";

static const char WS[] =
    "{% for m in messages %}\n  {% if loop.first %}\n[first]\n  {% endif %}\n{{- m.role -}}  :  {{ "
    "m.content|trim }}\n{# note #}\n{% endfor %}\n{%- if add_generation_prompt +%}\nGO {%+ if true "
    "%}x{% endif %}\n{% endif %}";

/* Renders `tpl` over `messages` (JSON text) with add_generation_prompt and <s>, </s>. */
static tp_status render(const char *tpl, const char *messages, int agp, char **out, tp_error *err)
{
    cJSON *m = cJSON_Parse(messages);
    cJSON *extra = cJSON_CreateObject();
    cJSON_AddBoolToObject(extra, "add_generation_prompt", agp);
    cJSON_AddStringToObject(extra, "bos_token", "<s>");
    cJSON_AddStringToObject(extra, "eos_token", "</s>");
    tp_status st = tp__chat_template_render(tpl, m, extra, out, err);
    cJSON_Delete(m);
    cJSON_Delete(extra);
    return st;
}

static void check_render(const char *tpl, const char *messages, const char *want)
{
    char *out = NULL;
    tp_error err = {0};
    tp_status st = render(tpl, messages, 1, &out, &err);
    CHECK_MSG(st == TP_OK, "%s", err.message);
    if (st == TP_OK) CHECK_MSG(strcmp(out, want) == 0, "got \"%s\", want \"%s\"", out, want);
    free(out);
}

static void check_error(const char *tpl, tp_status want, const char *needle)
{
    char *out = NULL;
    tp_error err = {0};
    tp_status st = render(tpl, MSGS, 1, &out, &err);
    CHECK_MSG(st == want, "%s: got %s (%s), want %s", tpl, tp_strerror(st), err.message,
              tp_strerror(want));
    CHECK(out == NULL);
    CHECK_CONTAINS(err.message, needle);
    free(out);
}

static void test_smollm2_fixture(void)
{
    tp_tokenizer *tok = NULL;
    tp_error err = {0};
    CHECK_STATUS(tp_tokenizer_new(TP_TEST_DATA "/fixtures/models/smollm2", TP_TOKENIZER_AUTO, &tok, &err),
                 TP_OK);
    cJSON *ref = NULL;
    CHECK_STATUS(tp__json_load(TP_TEST_DATA "/fixtures/models/smollm2/reference.json", &ref, &err),
                 TP_OK);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(ref, "chat"), *c;
    CHECK(cJSON_GetArraySize(cases) >= 2);
    cJSON_ArrayForEach(c, cases) {
        char *json = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "messages"));
        char *text = NULL;
        int agp = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "add_generation_prompt"));
        CHECK_STATUS(tp_tokenizer_apply_chat_template(tok, json, agp, &text, &err), TP_OK);
        const char *want = cJSON_GetObjectItemCaseSensitive(c, "text")->valuestring;
        CHECK_MSG(text && strcmp(text, want) == 0, "got \"%s\"", text ? text : "(null)");
        tp_free(text);
        cJSON_free(json);
    }
    /* bad input */
    char *text = NULL;
    CHECK_STATUS(tp_tokenizer_apply_chat_template(tok, "{\"role\":\"user\"}", 1, &text, &err),
                 TP_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(tp_tokenizer_apply_chat_template(tok, "[{\"content\":\"x\"}]", 1, &text, &err),
                 TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "messages[0]");
    CHECK_STATUS(tp_tokenizer_apply_chat_template(tok, "[", 1, &text, &err), TP_ERR_FORMAT);
    CHECK(text == NULL);
    CHECK_STATUS(tp_tokenizer_apply_chat_template(NULL, "[]", 1, &text, &err), TP_ERR_INVALID_ARGUMENT);
    cJSON_Delete(ref);
    tp_tokenizer_free(tok);

    /* a tokenizer without a chat template */
    CHECK_STATUS(tp_tokenizer_new(TP_TEST_DATA "/fixtures/models/distilbert-sst2", TP_TOKENIZER_AUTO, &tok, &err),
                 TP_OK);
    CHECK_STATUS(tp_tokenizer_apply_chat_template(tok, "[]", 1, &text, &err), TP_ERR_NOT_FOUND);
    tp_tokenizer_free(tok);
}

static void test_templates(void)
{
    check_render(CHATML, MSGS,
                 "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n"
                 "<|im_start|>assistant\nHello! <|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                 "<|im_start|>assistant\n");
    check_render(LLAMA2, MSGS,
                 "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] Hello! </s><s>[INST] Bye [/INST]");
    char *out = NULL;
    tp_error err = {0};
    CHECK_STATUS(render(LLAMA2, "[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"}]",
                        1, &out, &err),
                 TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "Conversation roles must alternate user/assistant/user/assistant/...");
    CHECK(out == NULL);
    check_render(WS, MSGS, "[first]\nsystem:  Be brief.\nuser:  Hi\nassistant:  Hello!\nuser:  Bye\n\nGO x");

    /* expressions and filters */
    check_render("{{ messages|length }}|{{ messages[-1].content }}|{{ messages[1:3]|length }}|"
                 "{{ 'abc'[::-1] }}|{{ 'a,b'.split(',')[1] }}|{{ 'X' ~ 3 ~ none }}|{{ 7 // 2 }}",
                 MSGS, "4|Bye|2|cba|b|X3None|3");
    check_render("{{ messages[0]|tojson }}|{{ {'a': [1, 2.5, true, none]}|tojson }}", MSGS,
                 "{\"role\": \"system\", \"content\": \"Be brief.\"}|{\"a\": [1, 2.5, true, null]}");
    check_render("{{ x is defined }}{{ x is not defined }}{{ none is none }}{{ 'a' is string }}"
                 "{{ x|default('d') }}{{ 'b' in 'abc' }}{{ 'z' not in ['a'] }}{{ 'Ab'.upper() }}"
                 "{{ 'Ab'|lower }}{{ ' s '.strip() }}{{ 'ab'.startswith('a') }}{{ 'ab'.endswith('a') }}",
                 MSGS, "FalseTrueTrueTruedTrueTrueABabsTrueFalse");
    check_render("{% set ns = namespace(n=0) %}{% for m in messages if m.role == 'user' %}"
                 "{% set ns.n = ns.n + 1 %}{{ loop.index }}/{{ loop.length }}{% if loop.last %}!{% endif %}"
                 "{% endfor %}{{ ns.n }}{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}"
                 "{% for m in [] %}x{% else %}empty{% endfor %}",
                 MSGS, "1/22/2!2a=1empty");
    check_render("{% set ns = namespace(s='ab', d={'k': 'value'}) %}{% set ns.s = ns.s + ns.s %}"
                 "{{ ns.s }}{{ ns.d.k }}{{ ns.d['k'] }}{{ ns.d.get('k') }}{{ ns.missing is defined }}",
                 MSGS, "ababvaluevaluevalueFalse");
    check_render("{% if false %}a{% elif 1 > 2 %}b{% else %}{% if true %}c{% endif %}{% endif %}", MSGS, "c");
}

static void test_errors(void)
{
    check_error("{% if true %}\n\n{{ messages|map(attribute='role') }}{% endif %}", TP_ERR_UNSUPPORTED,
                "chat_template: line 3: filter 'map' is not supported");
    check_error("{% macro f() %}{% endmacro %}", TP_ERR_UNSUPPORTED, "tag 'macro' is not supported");
    check_error("a {{ messages", TP_ERR_FORMAT, "line 1: unterminated '{{' tag");
    check_error("{% for m in messages %}", TP_ERR_FORMAT, "never closed");
    check_error("{% endif %}", TP_ERR_FORMAT, "unexpected 'endif'");
    check_error("{{ 'abc }}", TP_ERR_FORMAT, "unterminated string");
    check_error("{# open", TP_ERR_FORMAT, "unterminated comment");
    check_error("{{ x.y }}", TP_ERR_INVALID_ARGUMENT, "'x' is undefined");
    check_error("{{ 1 + 'a' }}", TP_ERR_INVALID_ARGUMENT, "unsupported operand types");
    check_error("{{ (((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
                "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((1 }}",
                TP_ERR_UNSUPPORTED, "nesting deeper");
    /* limits: a huge output, a long loop */
    check_error("{% for a in messages %}{% for b in messages %}{{ 'x' * 100000 }}{% endfor %}{% endfor %}",
                TP_ERR_INVALID_ARGUMENT, "output over");
    check_error("{% for a in range(100000) %}{% set x = ((a + 1) * 2 - 3) // 4 % 5 + a - a + a - a"
                " + a - a + a - a + a - a %}{% endfor %}",
                TP_ERR_INVALID_ARGUMENT, "steps");
    check_error("{% set ns = namespace(s='ab') %}{% for a in range(40) %}{% set ns.s = ns.s + ns.s %}"
                "{% endfor %}", TP_ERR_INVALID_ARGUMENT, "over");
    check_error("{{ range(1000000) }}", TP_ERR_INVALID_ARGUMENT, "range() of over");
}

/* Floats print as Python's repr() does, in templates and in every JSON response: the
 * fewest "%.Ng" digits that read back as the same double. The search for N must find
 * what trying N = 1, 2, ... finds. */
static void test_shortest_double(void)
{
    uint64_t state = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 20000; i++) {
        state = state * 6364136223846793005u + 1442695040888963407u;
        double x;
        if (i % 3 == 0) { /* a float32 score, as the pipelines print them */
            x = (double)(float)((double)(state >> 11) / 9007199254740992.0);
        } else { /* any finite double, any exponent */
            uint64_t bits = state & ~(0x7ffull << 52);
            bits |= (uint64_t)(1 + (state >> 40) % 2045) << 52;
            memcpy(&x, &bits, sizeof x);
        }
        char want[32], got[32];
        for (int p = 1; p <= 17; p++) {
            snprintf(want, sizeof want, "%.*g", p, x);
            if (strtod(want, NULL) == x) break;
        }
        tp__shortest_double(x, got, sizeof got);
        CHECK_MSG(strcmp(want, got) == 0, "shortest digits of %a: %s, want %s", x, got, want);
    }
    char text[32];
    tp__shortest_double(0.1, text, sizeof text);
    CHECK_MSG(strcmp(text, "0.1") == 0, "0.1 printed as %s", text);
    tp__shortest_double((double)0.9994292855f, text, sizeof text);
    CHECK_MSG(strcmp(text, "0.9994292855262756") == 0, "a float32 score printed as %s", text);
}

int main(void)
{
    test_shortest_double();
    test_smollm2_fixture();
    test_templates();
    test_errors();
    return CHECK_DONE();
}
