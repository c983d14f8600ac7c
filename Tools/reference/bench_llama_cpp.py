#!/usr/bin/env python3
"""llama.cpp's prefill and decode speed on the same model and threads as `longtune bench decode`.

llama.cpp (PyPI llama-cpp-python, built from source for this CPU) runs the GGUF file as it is (e.g. Q4_1)
and an F32 copy of it made here with the `gguf` package (every tensor dequantized by gguf's own
dequantize), which reads as many weight bytes per token as LongTune's fp32 decoding. Prompt: random
ids; decoding feeds one token per call, as greedy generation does.

Run:  CMAKE_ARGS="-DGGML_NATIVE=ON" /tmp/ref/bin/pip install llama-cpp-python gguf
      /tmp/ref/bin/python Tools/reference/bench_llama_cpp.py FILE.gguf [--threads 2] [--prompt 512] [--tokens 128]
"""
import argparse, os, random, tempfile, time

import gguf
import numpy as np
from llama_cpp import Llama


def f32_copy(path, out):
    reader = gguf.GGUFReader(path)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(out, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType.ALL_F32)
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub)
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        writer.add_tensor(t.name, data.reshape([int(n) for n in reversed(t.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def bench(path, threads, prompt_len, tokens):
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=prompt_len + tokens + 16,
                n_batch=512, verbose=False)
    rng = random.Random(4)
    vocab = llm.n_vocab()
    prompt = [rng.randrange(vocab) for _ in range(prompt_len)]
    decode = [rng.randrange(vocab) for _ in range(tokens)]
    llm.eval(prompt[:16]); llm.reset()   # warm-up
    t0 = time.perf_counter(); llm.eval(prompt); prefill = prompt_len / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for tok in decode:
        llm.eval([tok])
    return prefill, tokens / (time.perf_counter() - t0), os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=128)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "f32.gguf")
        f32_copy(a.gguf, f32)
        for name, path in [("as shipped", a.gguf), ("F32 copy", f32)]:
            prefill, decode, size = bench(path, a.threads, a.prompt, a.tokens)
            print(f"llama.cpp {name} ({size / 1e6:.0f} MB): prefill {prefill:.0f} tokens/s, decode {decode:.1f} tokens/s "
                  f"({a.threads} threads, prompt {a.prompt}, {a.tokens} decoded)")


if __name__ == "__main__":
    main()
