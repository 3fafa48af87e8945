/* fuzz_chat_template.c: libFuzzer target for the chat template engine: the input
 * is the template source (NUL-terminated copy), rendered over a fixed list of
 * messages with add_generation_prompt and special tokens. Any status is fine; a
 * crash, leak, hang or sanitizer report is not. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <tpipe/tpipe.h>

#include "tokenizer/chat_template.h"

static const char MESSAGES[] =
    "[{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":\"Hi \\u00e9t\\u00e9 <b>\"},"
    "{\"role\":\"assistant\",\"content\":\"Hello!\",\"tool_calls\":[{\"name\":\"f\",\"arguments\":{\"x\":1}}]},"
    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"two\"}]}]";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cJSON *messages, *extra;
    if (!messages) {
        messages = cJSON_Parse(MESSAGES);
        extra = cJSON_Parse("{\"add_generation_prompt\":true,\"bos_token\":\"<s>\","
                            "\"eos_token\":\"</s>\",\"n\":3,\"f\":0.5,\"nothing\":null}");
        if (!messages || !extra) abort();
    }
    char *src = malloc(size + 1);
    if (!src) return 0;
    memcpy(src, data, size);
    src[size] = 0;
    char *out = NULL;
    tp_error err = {0};
    if (tp__chat_template_render(src, messages, extra, &out, &err) == TP_OK && !out) abort();
    free(out);
    free(src);
    return 0;
}
