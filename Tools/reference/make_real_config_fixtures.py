#!/usr/bin/env python3
"""Real model configs read as transformers reads them: for each config.json under
Tests/LlamaTests/Fixtures/real_configs (copied from public sources, named in SOURCES), transformers' own config class
and RoPE initialisation give the rotary dimension, the sliding window, the original context and, for a sequence at the
original window and one token past it, the inverse frequencies and attention scaling (Phi-3's longrope switches from
its short to its long factors there). No weights are needed. Swift's RealConfigTests read the result.

  /tmp/ref/bin/python Tools/reference/make_real_config_fixtures.py Tests/LlamaTests/Fixtures/real_configs
"""
import json, os, sys
import transformers
from transformers import AutoConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

DIR = sys.argv[1] if len(sys.argv) > 1 else "Tests/LlamaTests/Fixtures/real_configs"
SOURCES = {   # where each file's text comes from
    "phi3-128k-config.json": "Phi-3-vision-128k-instruct's language-model config (v4 style, longrope as \"su\"), "
                             "as vendored in diffusers' tests/pipelines/omnigen/test_pipeline_omnigen.py",
    "gemma3-1b-it-config.json": "google/gemma-3-1b-it's config.json (transformers 4.52.4, v4 style: "
                                "sliding_window_pattern, rope_local_base_freq, no tie_word_embeddings), as quoted in "
                                "a public port's documentation of the model",
}


def frequencies(config, seq_len):
    params = config.rope_parameters
    kind = params.get("rope_type", "default")
    if kind == "default":
        inv, scale = ROPE_INIT_FUNCTIONS["default"](config, "cpu") if "default" in ROPE_INIT_FUNCTIONS else (None, 1.0)
    else:
        inv, scale = ROPE_INIT_FUNCTIONS[kind](config, "cpu", seq_len=seq_len)
    return [float(x) for x in inv.float()], float(scale)


def gemma3(config):
    """Gemma 3: the global and local layers' frequencies (transformers' own rotary module), layer kinds, tying."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding
    rotary = Gemma3RotaryEmbedding(config)
    return {"layer_types": config.layer_types, "tie_word_embeddings": config.tie_word_embeddings,
            "query_pre_attn_scalar": config.query_pre_attn_scalar, "sliding_window": config.sliding_window,
            "global_inv_freq": [float(x) for x in rotary.full_attention_inv_freq.float()],
            "local_inv_freq": [float(x) for x in rotary.sliding_attention_inv_freq.float()]}


def main():
    expected = {}
    for name, source in SOURCES.items():
        config = AutoConfig.from_pretrained(os.path.join(DIR, name))
        if "full_attention" in config.rope_parameters:
            expected[name] = dict(gemma3(config), source=source)
            continue
        original = config.rope_parameters.get("original_max_position_embeddings", config.max_position_embeddings)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        rotary = int(head_dim * config.rope_parameters.get("partial_rotary_factor", 1.0))
        cases = {}
        for seq_len in [original, original + 1]:
            inv, scale = frequencies(config, seq_len)
            cases[str(seq_len)] = {"inv_freq": inv, "attention_scaling": scale}
        expected[name] = {"source": source, "rope_type": config.rope_parameters["rope_type"], "rotary_dim": rotary,
                          "original_max_position_embeddings": original, "sliding_window": config.sliding_window,
                          "sequences": cases}
    expected["transformers"] = transformers.__version__
    with open(os.path.join(DIR, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
