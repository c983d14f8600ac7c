#!/usr/bin/env python3
"""Small tokenizer.json files trained with the `tokenizers` package, and their encodings of
varied text (Unicode, code, whitespace runs, numbers), for the Swift tokenizer's golden tests.

Kinds: GPT-2 style byte-level BPE; SmolLM2 style (Digits + ByteLevel); Llama 3 style (Split regex +
ByteLevel without regex); Llama 2 style SentencePiece BPE with byte fallback (Prepend/Replace normalizers).

  /tmp/ref/bin/python Tools/reference/make_tokenizer_fixtures.py Tests/DatasetsTests/Fixtures
"""
import glob, json, os, sys, sysconfig
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/DatasetsTests/Fixtures"
os.makedirs(OUT, exist_ok=True)
corpus = []
for p in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:40]:
    corpus.append(open(p, errors="replace").read())
corpus += ["Ünïcödé façade naïve café — “quotes” 日本語のテキスト 한국어 emoji 🎉🚀 Ω≈ç√∫",
           "numbers 1234567890 3.14159 1e-5 0x1F 2026-11-22", "tabs\tand\n\nnew   lines    and     spaces"]
samples = [
    "Hello, world! This is LongTune.",
    "  leading and trailing spaces   ",
    "def f(x):\n    return x ** 2  # comment\n\n\tindented\twith\ttabs",
    "Unicode: café, naïve, Ærøskøbing, 日本語, 中文, 한국어, emoji 🎉🚀👍🏽, math ∑∫√≈",
    "numbers: 1 12 123 1234 12345 3.14159 -42 1e10 0xFF 2026-11-22",
    "whitespace\n\n\n   runs\t\t\tand\r\nwindows line ends",
    "it's they're we've I'm you'll he'd DON'T",
    "<|endoftext|>special tokens in text<|endoftext|>",
    "",
]
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def byte_level(name, pre):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return tok


def sentencepiece_bpe():
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)],
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return tok


kinds = {
    "gpt2": byte_level("gpt2", pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)),
    "smollm2": byte_level("smollm2", pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])),
    "llama3": byte_level("llama3", pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated"),
                                                            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])),
    "sentencepiece": sentencepiece_bpe(),
}
for name, tok in kinds.items():
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    expected = [{"text": s, "ids": tok.encode(s, add_special_tokens=False).ids} for s in samples]
    json.dump(expected, open(os.path.join(d, "expected.json"), "w"), ensure_ascii=False, indent=1)
    print(name, tok.get_vocab_size(), [len(e["ids"]) for e in expected])
