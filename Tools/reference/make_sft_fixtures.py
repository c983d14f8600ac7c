#!/usr/bin/env python3
"""Token ids and label masks for SFT packing, made by transformers and by LongLoRA's preprocessing.

Writes Tests/DatasetsTests/Fixtures/sft/:
  smollm2/, llama3/, llama3.1/, mistral/   tokenizer.json (the small byte-level fixtures of Tests/DatasetsTests/Fixtures with
                                 the chat format's special tokens added) and tokenizer_config.json (the real
                                 chat template, its BOS and EOS)
  cases.json                     per tokenizer and record: the record, --train-on, and the expected ids and labels

Chat records: ids = apply_chat_template(messages) (tokenized whole); the trained tokens are transformers' assistant
mask (`return_assistant_tokens_mask`) from the same template with each trained reply and its end-of-turn token inside
{% generation %} (the rendered text is asserted equal to the real template's). `--train-on last` tags the last reply
only; `all` trains every token.
Instruction records with --format alpaca: LongLoRA's supervised-fine-tune.py preprocessing (after Stanford Alpaca):
source = PROMPT_DICT prompt_input / prompt_no_input filled in, target = output + eos_token, ids = tokenizer(source +
target), labels = ids with the first len(tokenizer(source)) set to -100.

  /tmp/ref/bin/python Tools/reference/make_sft_fixtures.py
"""
import json, os, shutil
from transformers import PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "Tests/DatasetsTests/Fixtures")
OUT = os.path.join(FIX, "sft")

PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.\n\n"
                   "### Instruction:\n{instruction}\n\n### Response:")

# The assistant turn of each template, with the trained part inside {% generation %} when `trained` holds.
TAGGED = {
    "smollm2": ("{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
                "{% if trained[loop.index0] %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
                "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}"
                "{% else %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endif %}"),
    "llama3": ("{% if message['role'] == 'assistant' %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
               "{% if trained[loop.index0] %}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
               "{% endgeneration %}{% else %}{{ message['content'] | trim + '<|eot_id|>' }}{% endif %}"
               "{% else %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
               " + '<|eot_id|>' }}{% endif %}"),
}

MISTRAL_TAGGED = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                  "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
                  "{% if trained[loop.index0] %}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
                  "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endif %}{% endfor %}")

SPECIALS = {"smollm2": ["<|im_start|>", "<|im_end|>"], "mistral": ["<s>", "</s>"],
            "llama3": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}

RECORDS = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"},
                  {"role": "assistant", "content": "Paris is the capital."}]},
    {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi there"},
                  {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "2 + 2?"},
                  {"role": "assistant", "content": "  4\n"}]},
    {"conversations": [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Blue, the sea."}]},
    {"prompt": "Translate 'chat' to English.", "completion": "cat"},
    {"instruction": "Summarize the text.", "input": "A very long text about the sea and its tides.",
     "output": "The sea has tides."},
    {"instruction": "Write a haiku.", "output": "Waves fold into foam\nthe moon pulls and lets them go"},
]


def messages_of(r):
    if "messages" in r:
        return r["messages"]
    if "conversations" in r:
        names = {"human": "user", "gpt": "assistant", "system": "system"}
        return [{"role": names[c["from"]], "content": c["value"]} for c in r["conversations"]]
    if "prompt" in r:
        return [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]
    inp = r.get("input", "")
    return [{"role": "user", "content": r["instruction"] + ("\n\n" + inp if inp else "")},
            {"role": "assistant", "content": r["output"]}]


def tokenizer_dir(name, base, template, bos, eos):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    tok = json.load(open(os.path.join(FIX, "smollm2" if base == "mistral" else base, "tokenizer.json")))
    next_id = max(max(tok["model"]["vocab"].values()), max((a["id"] for a in tok["added_tokens"]), default=0)) + 1
    for content in SPECIALS[base]:
        if not any(a["content"] == content for a in tok["added_tokens"]):
            tok["added_tokens"].append({"id": next_id, "content": content, "single_word": False, "lstrip": False,
                                        "rstrip": False, "normalized": False, "special": True})
            next_id += 1
    json.dump(tok, open(os.path.join(d, "tokenizer.json"), "w"), ensure_ascii=False)
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
               "chat_template": template}, open(os.path.join(d, "tokenizer_config.json"), "w"), ensure_ascii=False)
    t = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"), bos_token=bos, eos_token=eos)
    return d, t


def tagged_template(template, base):
    """The real template with its per-message body swapped for the tagged one (same text rendered)."""
    if base == "mistral":
        return MISTRAL_TAGGED
    start = template.index("{% for message in messages %}") if "{% for message in messages %}" in template \
        else template.index("{%- for message in messages %}")
    head, body = template[:start], template[start:]
    loop_open = body[: body.index("%}") + 2]
    rest = body[len(loop_open):]
    prefix = ""
    if base == "smollm2":   # keep the default system turn
        cut = rest.index("{% endif %}") + len("{% endif %}")
        prefix, rest = rest[:cut], rest[cut:]
    elif "loop.index0 == 0" in rest:   # Llama 3.0 writes BOS before the first message
        prefix = "{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    end = rest.index("{%- endfor %}") if "{%- endfor %}" in rest else rest.index("{% endfor %}")
    return head + loop_open + prefix + TAGGED[base] + rest[end:]


def chat_case(tok, template, base, record, train_on):
    msgs = messages_of(record)
    plain = tok.apply_chat_template(msgs, chat_template=template, tokenize=False)
    replies = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    offset = 1 if (base != "smollm2" and msgs[0]["role"] == "system" and "Cutting Knowledge" in template) else 0
    chosen = set(replies[-1:] if train_on == "last" else replies)
    tagged = tagged_template(template, base)
    flags = [(i + offset) in chosen for i in range(len(msgs))]
    out = tok.apply_chat_template(msgs, chat_template=tagged, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True, trained=flags)
    assert tok.apply_chat_template(msgs, chat_template=tagged, tokenize=False, trained=flags) == plain, base
    ids = list(out["input_ids"])
    assert ids == tok(plain, add_special_tokens=False)["input_ids"]
    mask = out["assistant_masks"]
    labels = ids if train_on == "all" else [t if m else -100 for t, m in zip(ids, mask)]
    return ids, labels


def alpaca_case(tok, record, eos):
    fill = dict(record)
    fill.setdefault("input", "")
    source = (PROMPT_INPUT if fill["input"] else PROMPT_NO_INPUT).format_map(fill)
    target = f"{record['output']}{eos}"
    ids = tok(source + target)["input_ids"]
    source_len = len(tok(source)["input_ids"])
    return ids, [-100] * source_len + ids[source_len:]


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    formats = {c["name"]: c for c in json.load(open(os.path.join(FIX, "chat/formats.json")))}
    cases = []
    for name, base, eos in (("smollm2", "smollm2", "<|im_end|>"), ("llama3", "llama3", "<|eot_id|>"),
                            ("llama3.1", "llama3", "<|eot_id|>"), ("mistral", "mistral", "</s>")):
        template, bos = formats[name]["template"], formats[name]["bos_token"]
        d, tok = tokenizer_dir(name, base, template, bos, eos)
        for record in RECORDS:
            for train_on in ("assistant", "last", "all"):
                ids, labels = chat_case(tok, template, base, record, train_on)
                cases.append({"tokenizer": name, "format": "chat", "train_on": train_on, "record": record,
                              "ids": ids, "labels": labels})
            if "instruction" in record or "prompt" in record:
                r = record if "instruction" in record else {"instruction": record["prompt"], "output": record["completion"]}
                ids, labels = alpaca_case(tok, r, eos)
                cases.append({"tokenizer": name, "format": "alpaca", "train_on": "assistant", "record": record,
                              "ids": ids, "labels": labels})
    json.dump(cases, open(os.path.join(OUT, "cases.json"), "w"), indent=1, ensure_ascii=False)
    print(f"{len(cases)} cases")


if __name__ == "__main__":
    main()
