#!/usr/bin/env python3
"""Creates full-size benchmark checkpoints with transformers (random weights, fixed
seed, fp32, model.safetensors) from configurations written here, so that no network
is needed:

  OUT/distilbert-sst2   DistilBertForSequenceClassification with the configuration of
                        distilbert-base-uncased-finetuned-sst-2-english (dim 768,
                        6 layers, 12 heads, hidden 3072, vocab 30522, 2 labels)
  OUT/bert-base-ner     BertForTokenClassification with the configuration of
                        bert-base-cased fine-tuned for CoNLL-2003 NER (12 layers,
                        hidden 768, 12 heads, intermediate 3072, 9 labels)

Both get the bert-base-uncased tokenizer files of tests/data/fixtures. The real NER
checkpoint is cased with a 28996-token vocabulary; here its vocab_size is 30522 so
that every id of the uncased tokenizer is valid (the embedding table is 1526 rows
larger: 4.7 MB of 431 MB, no effect on the compute). Weights are random: the
benchmark measures speed, not answers.

usage: make_models.py OUT [--force]
A model directory that already has model.safetensors and config.json is kept unless
--force is given.
"""
import argparse
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_DIR = os.path.join(REPO, "tests", "data", "fixtures", "tokenizers", "bert-base-uncased")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
SEED = 0

SST2_LABELS = ["NEGATIVE", "POSITIVE"]
NER_LABELS = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def labels(names):
    return {i: n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}


def distilbert_sst2():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification
    id2label, label2id = labels(SST2_LABELS)
    config = DistilBertConfig(
        vocab_size=30522, max_position_embeddings=512, sinusoidal_pos_embds=False,
        n_layers=6, n_heads=12, dim=768, hidden_dim=3072, dropout=0.1,
        attention_dropout=0.1, activation="gelu", initializer_range=0.02,
        qa_dropout=0.1, seq_classif_dropout=0.2, pad_token_id=0,
        id2label=id2label, label2id=label2id, finetuning_task="sst-2",
        architectures=["DistilBertForSequenceClassification"])
    return DistilBertForSequenceClassification(config)


def bert_base_ner():
    from transformers import BertConfig, BertForTokenClassification
    id2label, label2id = labels(NER_LABELS)
    config = BertConfig(
        vocab_size=30522,  # bert-base-cased has 28996; see the module docstring
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, max_position_embeddings=512,
        type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
        pad_token_id=0, id2label=id2label, label2id=label2id,
        architectures=["BertForTokenClassification"])
    return BertForTokenClassification(config)


MODELS = {"distilbert-sst2": distilbert_sst2, "bert-base-ner": bert_base_ner}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="directory to create the model directories in")
    ap.add_argument("--force", action="store_true", help="re-create existing models")
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    for name, build in MODELS.items():
        d = os.path.join(a.out, name)
        weights = os.path.join(d, "model.safetensors")
        if not a.force and os.path.exists(weights) and os.path.exists(os.path.join(d, "config.json")):
            print(f"make_models: {d}: present, kept ({os.path.getsize(weights) / 1e6:.0f} MB)")
            continue
        import torch
        torch.set_default_dtype(torch.float32)
        t0 = time.perf_counter()
        torch.manual_seed(SEED)
        model = build().eval()
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d)
        for f in TOKENIZER_FILES:
            shutil.copyfile(os.path.join(TOKENIZER_DIR, f), os.path.join(d, f))
        if not os.path.exists(weights):
            sys.exit(f"make_models: {d}: save_pretrained wrote no model.safetensors "
                     f"(files: {sorted(os.listdir(d))})")
        n = sum(p.numel() for p in model.parameters())
        print(f"make_models: {d}: {type(model).__name__}, {n / 1e6:.1f}M parameters, "
              f"{os.path.getsize(weights) / 1e6:.0f} MB, {time.perf_counter() - t0:.1f} s")
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
