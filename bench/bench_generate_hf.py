#!/usr/bin/env python3
"""Times transformers' generate() (PyTorch, fp32) on the inputs `tpipe bench --generate`
uses: one prompt (for an encoder-decoder, one source text) of exactly P tokens, one
common word repeated, special tokens included, and generate(max_new_tokens=N,
min_new_tokens=N, do_sample=False, num_beams=B), so that every run makes exactly N
new tokens, as tpipe's runs do.

Under torch.inference_mode() with torch.set_num_threads(T); the model's own
generation_config otherwise (Marian: bad_words_ids, forced EOS). For each beam count:
--warmup untimed runs, then --iters timed ones; reported: the median, min and max in
ms, new tokens/s (N over the median) and ms per new token. Pin the process to T cores
yourself (taskset -c ...) to compare with tpipe there.

usage: bench_generate_hf.py --model DIR --out FILE [--prompt-tokens 16]
                            [--new-tokens 128] [--beams 1,4] [--threads 2]
                            [--iters 3] [--warmup 1]
"""
import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

# the words tpipe bench tries, in its order (tools/tpipe.c build_bench_input)
WORDS = ("the", "hello", "and", "a", "of", "is", "it", "x")


def log(msg):
    print(f"bench_generate_hf: {msg}", flush=True)


def make_prompt(tok, n):
    """input_ids [1, n] as tpipe builds them: the first word of WORDS the tokenizer keeps
    as one known token, repeated, with the tokenizer's special tokens."""
    word = None
    for w in WORDS:
        ids = tok(w, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] != tok.unk_token_id:
            word = w
            break
    if word is None:
        raise SystemExit("no single-token word for the synthetic prompt")
    specials = len(tok(word)["input_ids"]) - 1
    k = n - specials
    for _ in range(4):
        enc = tok(" ".join([word] * k), return_tensors="pt")
        got = enc["input_ids"].shape[1]
        if got == n:
            return enc, word
        k += n - got
    raise SystemExit(f"the synthetic prompt encodes to {got} tokens, not {n}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--beams", default="1", help="beam counts, comma-separated (default 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    name = os.path.basename(os.path.normpath(a.model))

    config = AutoConfig.from_pretrained(a.model)
    cls = getattr(transformers, config.architectures[0])
    t0 = time.perf_counter()
    model = cls.from_pretrained(a.model, dtype=torch.float32).eval()
    load_ms = (time.perf_counter() - t0) * 1e3
    tok = AutoTokenizer.from_pretrained(a.model)
    enc_dec = bool(getattr(model.config, "is_encoder_decoder", False))
    enc, word = make_prompt(tok, a.prompt_tokens)
    attn = getattr(model.config, "_attn_implementation", None)
    log(f"{name}: {cls.__name__} loaded in {load_ms:.0f} ms, attention {attn}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}; prompt '{word}' x {a.prompt_tokens} tokens")

    n = a.new_tokens
    extra = {}
    if not enc_dec and tok.pad_token_id is None and model.generation_config.pad_token_id is None:
        extra["pad_token_id"] = tok.eos_token_id  # what generate() falls back to, minus the warning
    results = {}
    for beams in (int(b) for b in a.beams.split(",")):
        def run():
            out = model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                 num_beams=beams, **extra)
            made = out.shape[1] - (1 if enc_dec else a.prompt_tokens)
            if made != n:
                raise SystemExit(f"generate made {made} new tokens, not {n}")

        ts = []
        with torch.inference_mode():
            for i in range(a.warmup + a.iters):
                t0 = time.perf_counter()
                run()
                if i >= a.warmup:
                    ts.append((time.perf_counter() - t0) * 1e3)
        med = statistics.median(ts)
        r = {"new_tokens": n, "num_beams": beams, "median_ms": med, "min_ms": min(ts),
             "max_ms": max(ts), "iters": a.iters, "warmup": a.warmup,
             "tokens_per_s": n * 1e3 / med, "ms_per_token": med / n}
        results[str(beams)] = r
        log(f"{name} beams {beams}: {n} new tokens, median {med:.0f} ms, "
            f"{r['tokens_per_s']:.1f} tokens/s ({a.iters} iters)")

    doc = {
        "model": a.model, "name": name, "architecture": cls.__name__,
        "encoder_decoder": enc_dec, "prompt_tokens": a.prompt_tokens, "prompt_word": word,
        "threads": a.threads, "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "attn_implementation": attn,
        "load_ms": load_ms,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "results": results,
    }
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
