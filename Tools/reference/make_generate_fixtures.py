#!/usr/bin/env python3
"""Golden fixtures for `longtune generate`, produced by Hugging Face transformers.

1. Greedy generation on the tiny Llama fixtures (Tests/LlamaTests/Fixtures/<name>): transformers'
   generate(do_sample=False) from a random prompt, no stop token, 40 new tokens (past the models'
   32-token original window). Also the smallest gap between the two largest logits at any step, so a
   test can tell a real disagreement from a near tie.
2. With a SmolLM2-135M-Instruct directory (as `longtune import-gguf` writes it) as the second argument:
   greedy generation of 64 tokens for three prompts (a chat turn through the model's own template, a
   code prompt, a ~1500-token prompt that the prefill takes in several chunks), written to
   Tests/LlamaTests/Fixtures/generate/smollm2.json.
3. Chat formats: transformers' apply_chat_template(add_generation_prompt=True) for SmolLM2's template
   and for Llama 3, Llama 3.1-style and Mistral [INST] templates written here in the shape of the
   official ones, written to Tests/DatasetsTests/Fixtures/chat/formats.json.

Run:  /tmp/ref/bin/python Tools/reference/make_generate_fixtures.py [models/smollm2-135m [data/stdlib/eval.jsonl]]
"""
import json, os, sys

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
LLAMA = os.path.join(ROOT, "Tests/LlamaTests/Fixtures")
OUT = os.path.join(LLAMA, "generate")


def greedy(model, prompt, new_tokens):
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=0)
    tokens = out.sequences[0, len(prompt):].tolist()
    gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
    return tokens, min(gaps)


def tiny():
    cases = []
    for name in ["default_gqa", "yarn", "qwen2", "bias_headdim_untied", "llama3", "linear_v4", "qwen3", "mistral_window", "phi3",
                 "longrope", "dynamic", "gemma3"]:
        model = AutoModelForCausalLM.from_pretrained(os.path.join(LLAMA, name), dtype=torch.float32).eval()
        model.generation_config.eos_token_id = None   # no stop token: compare all 40 tokens
        g = torch.Generator().manual_seed(11)
        # Phi-3's longrope: a prompt past the original window of 32 (its frequencies are the long ones only if the
        # prompt is prefilled as one pass); the Llama longrope and dynamic ones cross the window while generating,
        # where transformers switches frequencies for the new keys only (docs/CONVENTIONS.md §2).
        length = 36 if name == "phi3" else 20
        prompt = torch.randint(0, model.config.vocab_size, (length,), generator=g).tolist()
        tokens, gap = greedy(model, prompt, 40)
        cases.append({"model": name, "prompt": prompt, "tokens": tokens, "min_top2_gap": gap})
    return cases


def smollm2(directory, long_text):
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json")) as f:
        template = json.load(f)["chat_template"]
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   chat_template=template, tokenize=False, add_generation_prompt=True)
    prompts = [
        ("chat", chat),
        ("code", "def merge_sorted(a, b):\n    \"\"\"Merge two sorted lists.\"\"\"\n"),
        ("long", long_text),
    ]
    cases = []
    for name, text in prompts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        tokens, gap = greedy(model, ids, 64)
        cases.append({"name": name, "text": text, "prompt": ids, "tokens": tokens, "min_top2_gap": gap,
                      "eos_token_id": model.generation_config.eos_token_id})
        print(f"{name}: {len(ids)} prompt tokens -> {tok.decode(tokens)!r}")
    return cases


TEMPLATES = {
    # Llama 3 instruct: BOS, then header-delimited turns with trimmed content.
    "llama3": ("{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
               "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
               "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}", "<|begin_of_text|>"),
    # Llama 3.1 style: a system turn with the knowledge cutoff and a default date opens every prompt.
    "llama3.1": ("{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}"
                 "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
                 "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}"
                 "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{- 'Cutting Knowledge Date: December 2023\\n' }}"
                 "{{- 'Today Date: ' + date_string + '\\n\\n' }}{{- system_message }}{{- '<|eot_id|>' }}"
                 "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
                 " + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}"
                 "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}", "<|begin_of_text|>"),
    # Mistral / Llama 2 instruct.
    "mistral": ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
                "{{ message['content'] + eos_token }}{% endif %}{% endfor %}", "<s>"),
    # Qwen2-style ChatML with a default system turn.
    "qwen2": ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
              "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
              "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", ""),
}


def chat_formats(smollm2_dir):
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(ROOT, "Tests/DatasetsTests/Fixtures/gpt2/tokenizer.json"))
    templates = dict(TEMPLATES)
    if smollm2_dir:
        with open(os.path.join(smollm2_dir, "tokenizer_config.json")) as f:
            cfg = json.load(f)
        templates["smollm2"] = (cfg["chat_template"], cfg.get("bos_token", ""))
    cases = []
    for name, (template, bos) in templates.items():
        tok.bos_token, tok.eos_token = bos or None, "</s>"
        for user in ["What is the capital of France?", "  Two lines\nof text.  "]:
            rendered = tok.apply_chat_template([{"role": "user", "content": user}], chat_template=template,
                                               tokenize=False, add_generation_prompt=True)
            cases.append({"name": name, "template": template, "bos_token": bos, "user": user, "rendered": rendered})
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tiny.json"), "w") as f:
        json.dump(tiny(), f, indent=1)
    smollm2_dir = sys.argv[1] if len(sys.argv) > 1 else None
    if smollm2_dir:
        source = sys.argv[2] if len(sys.argv) > 2 else None
        long_text = ""
        if source:
            with open(source) as f:
                long_text = json.loads(f.readline())["text"][:6000]
        else:
            long_text = open(os.path.join(ROOT, "README.md")).read()[:6000]
        with open(os.path.join(OUT, "smollm2.json"), "w") as f:
            json.dump(smollm2(smollm2_dir, long_text), f, indent=1)
    chat_dir = os.path.join(ROOT, "Tests/DatasetsTests/Fixtures/chat")
    os.makedirs(chat_dir, exist_ok=True)
    with open(os.path.join(chat_dir, "formats.json"), "w") as f:
        json.dump(chat_formats(smollm2_dir), f, indent=1)


if __name__ == "__main__":
    main()
