#!/usr/bin/env python3
"""Golden files for `longtune export-gguf`, made by llama.cpp itself.

Writes Tests/LlamaTests/Fixtures/gguf_export/:
  model/          a tiny Llama Hugging Face directory: hidden 256 (every K-quant fits its rows), head_dim 64 with
                  2 query heads and 1 KV head (q/k row permutation, o_proj rows of 128: a K-quant fallback),
                  intermediate 96 (ffn_down falls back too), 2 layers (llama-quantize's per-layer mix), tied
                  embeddings, vocab_size 264 over 262 tokens ([PAD] entries), YaRN ×2 of 64 positions, fp16
                  weights with zero rows, constant and one-signed blocks and outliers; a byte-level BPE tokenizer
                  with special, non-special and <|…|> added tokens and a chat template
  llama3-config.json  the same model under Llama 3.1's llama3 RoPE scaling (its factors become rope_freqs)
  expected.json   per type: llama.cpp's metadata (key → GGUF type, value) without provenance, and every tensor's
                  type, dims and SHA-256; f16 and q8_0 from convert_hf_to_gguf.py, q4_0, q4_k_m, q5_k_m and q6_k
                  from llama_model_quantize on the f16 file; and, with --smollm2 DIR, SmolLM2's token ids for the
                  converter's pre-tokenizer check text and their hash

Needs llama-cpp-python built from source (its sdist vendors convert_hf_to_gguf.py and gguf-py):

  /tmp/ref/bin/python Tools/reference/make_gguf_export_fixtures.py --llama-cpp /tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp \
      [--smollm2 models/smollm2-135m]

The converter does not know this tiny tokenizer's pre-tokenizer hash, so it is told "smollm" (as the Swift test tells
export-gguf with --tokenizer-pre).
"""
import argparse, ctypes, hashlib, json, os, shutil, subprocess, sys, tempfile
import numpy as np

OUT = "Tests/LlamaTests/Fixtures/gguf_export"
V, VOCAB_SIZE, C, I, L, H, KV, D = 262, 264, 256, 96, 2, 2, 1, 64
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                 "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def byte_alphabet():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def write_model(d):
    import torch
    from safetensors.torch import save_file
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(7)
    alphabet = byte_alphabet()
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["Ġt"], vocab["he"] = 256, 257
    added = [(258, "<|endoftext|>", True), (259, "<|im_start|>", True), (260, "<|im_end|>", True),
             (261, "<extra_0>", False)]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": not s, "special": s} for i, c, s in added],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [["Ġ", "t"], ["h", "e"]]},
    }
    json.dump(tokenizer, open(f"{d}/tokenizer.json", "w"), ensure_ascii=False)
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "model_max_length": 128,
               "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False},
              open(f"{d}/tokenizer_config.json", "w"))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": VOCAB_SIZE,
              "hidden_size": C, "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": H,
              "num_key_value_heads": KV, "head_dim": D, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu", "bos_token_id": 259,
              "eos_token_id": 260, "torch_dtype": "float16",
              "rope_scaling": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64}}
    json.dump(config, open(f"{d}/config.json", "w"), indent=2)

    def w(*shape, scale=0.05):
        x = rng.normal(0, scale, shape).astype(np.float32)
        if len(shape) == 2:
            x[0] = 0                                     # an all-zero row: every block type's zero path
            x[1, :32] = 0.5                              # a constant block
            x[2, :256 if shape[1] >= 256 else 32] = -np.abs(x[2, :256 if shape[1] >= 256 else 32])  # one sign
            x[3, 7] = 2.5                                # an outlier
        return torch.from_numpy(x).half()
    tensors = {"model.embed_tokens.weight": w(VOCAB_SIZE, C), "model.norm.weight": 1 + w(C, scale=0.1).float().half()}
    for l in range(L):
        p = f"model.layers.{l}."
        tensors.update({
            p + "input_layernorm.weight": 1 + w(C, scale=0.1), p + "post_attention_layernorm.weight": 1 + w(C, scale=0.1),
            p + "self_attn.q_proj.weight": w(H * D, C), p + "self_attn.k_proj.weight": w(KV * D, C),
            p + "self_attn.v_proj.weight": w(KV * D, C), p + "self_attn.o_proj.weight": w(C, H * D),
            p + "mlp.gate_proj.weight": w(I, C), p + "mlp.up_proj.weight": w(I, C), p + "mlp.down_proj.weight": w(C, I),
        })
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{d}/model.safetensors", metadata={"format": "pt"})


def convert(llama_cpp, model, out, outtype):
    code = f"""
import sys
sys.path.insert(0, {llama_cpp!r}); sys.path.insert(0, {llama_cpp + '/gguf-py'!r})
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "smollm"
sys.argv = ["convert_hf_to_gguf.py", {model!r}, "--outfile", {out!r}, "--outtype", {outtype!r}]
import runpy
runpy.run_path({llama_cpp + '/convert_hf_to_gguf.py'!r}, run_name="__main__")
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def quantize(src, dst, ftype):
    import llama_cpp
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 1
    assert llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) == 0


def describe(path, llama_cpp):
    sys.path.insert(0, llama_cpp + "/gguf-py")
    from gguf import GGUFReader, GGUFValueType
    r = GGUFReader(path)
    meta = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or (name.startswith("general.") and name not in (
                "general.architecture", "general.type", "general.file_type", "general.quantization_version")):
            continue
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            elem = f.types[1]
            items = [f.parts[i] for i in f.data]
            value = [bytes(x).decode() if elem == GGUFValueType.STRING else x.tolist()[0] for x in items]
            meta[name] = {"type": int(t), "elem": int(elem), "value": value}
        else:
            x = f.parts[f.data[0]]
            value = bytes(x).decode() if t == GGUFValueType.STRING else x.tolist()[0]
            meta[name] = {"type": int(t), "value": value}
    tensors = {t.name: {"type": int(t.tensor_type), "dims": [int(n) for n in t.shape],
                        "sha256": hashlib.sha256(np.asarray(t.data).tobytes()).hexdigest()} for t in r.tensors}
    return {"metadata": meta, "tensors": tensors}


def pre_check(smollm2, llama_cpp):
    from transformers import AutoTokenizer
    src = open(llama_cpp + "/conversion/base.py").read()
    line = next(l for l in src.splitlines() if l.strip().startswith("chktxt ="))
    text = eval(line.split("=", 1)[1])
    ids = AutoTokenizer.from_pretrained(smollm2).encode(text)
    return {"text": text, "ids": ids, "sha256": hashlib.sha256(str(ids).encode()).hexdigest(), "name": "smollm"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", required=True)
    ap.add_argument("--smollm2")
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args()
    model = os.path.join(a.out, "model")
    write_model(model)
    expected = {}
    with tempfile.TemporaryDirectory() as tmp:
        for outtype in ("f16", "q8_0"):
            convert(a.llama_cpp, model, f"{tmp}/{outtype}.gguf", outtype)
            expected[outtype] = describe(f"{tmp}/{outtype}.gguf", a.llama_cpp)
        for name, ftype in (("q4_0", 2), ("q4_k_m", 15), ("q5_k_m", 17), ("q6_k", 18)):
            quantize(f"{tmp}/f16.gguf", f"{tmp}/{name}.gguf", ftype)
            expected[name] = describe(f"{tmp}/{name}.gguf", a.llama_cpp)
        # llama3 scaling travels as the rope_freqs tensor: the same weights under a Llama 3.1-style config
        llama3 = f"{tmp}/llama3"
        shutil.copytree(model, llama3)
        config = json.load(open(f"{model}/config.json"))
        config.update({"rope_theta": 500000.0, "max_position_embeddings": 131072, "rope_scaling": {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}})
        json.dump(config, open(f"{a.out}/llama3-config.json", "w"), indent=2)
        shutil.copy(f"{a.out}/llama3-config.json", f"{llama3}/config.json")
        convert(a.llama_cpp, llama3, f"{tmp}/llama3.gguf", "f16")
        expected["llama3_f16"] = describe(f"{tmp}/llama3.gguf", a.llama_cpp)
    if a.smollm2:
        expected["pre_check"] = pre_check(a.smollm2, a.llama_cpp)
    json.dump(expected, open(os.path.join(a.out, "expected.json"), "w"), indent=1, ensure_ascii=False)
    for k, v in expected.items():
        if "tensors" in v:
            kinds = sorted({t["type"] for t in v["tensors"].values()})
            print(f"{k}: {len(v['metadata'])} keys, {len(v['tensors'])} tensors, ggml types {kinds}")


if __name__ == "__main__":
    main()
