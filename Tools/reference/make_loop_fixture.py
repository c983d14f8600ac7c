#!/usr/bin/env python3
"""Golden fixture for a complete LoRA training run: 10 optimizer steps of transformers + peft (LoRA on
q/k/v/o, modules_to_save embeddings and norms) with gradient accumulation 2, global-norm clipping,
AdamW with two parameter groups (adapters with weight decay, extras without) and transformers'
cosine schedule with linear warmup. Records per-step loss, pre-clip grad norm and learning rates,
and the trainable tensors before and after.

  /tmp/ref/bin/python Tools/reference/make_loop_fixture.py Tests/TrainingTests/Fixtures/loop
"""
import json, os, shutil, sys
import h5py, peft, torch, transformers
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, get_cosine_schedule_with_warmup

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/TrainingTests/Fixtures/loop"
ROWS, T, VOCAB, USED = 20, 64, 128, 8
STEPS, ACCUM, WARMUP = 10, 2, 3
LR, LR_EXTRAS, WD = 2e-3, 5e-4, 0.1
# Chosen from a dry run without clipping (pre-clip norms 5.9-9.5, median ~7.4): a round number inside
# that range, so clipping engages on some steps and not on others.
MAX_GRAD_NORM = 7.5


def ours(name):   # peft name -> LongTune/HF name
    return name.replace("base_model.model.", "", 1).replace(".default", "").replace(".modules_to_save", "")


def markov_rows():
    """A Markov chain over 8 of the 128 ids: ids[t] = nxt[ids[t-1]] (a fixed random cycle) with probability
    0.9, else a random one of the 8. (A chain over the whole vocabulary is too varied row to row for the
    loss to visibly fall in 10 steps at these learning rates.)"""
    g = torch.Generator().manual_seed(3)
    used = torch.randperm(VOCAB, generator=g)[:USED]
    nxt = torch.arange(VOCAB); nxt[used] = used.roll(-1)
    ids = used[torch.randint(0, USED, (ROWS, T), generator=g)]
    keep = torch.rand(ROWS, T, generator=g) < 0.9
    for t in range(1, T):
        ids[:, t] = torch.where(keep[:, t], nxt[ids[:, t - 1]], ids[:, t])
    return ids


def main():
    shutil.rmtree(OUT, ignore_errors=True); os.makedirs(OUT)
    torch.manual_seed(7)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000,
                      tie_word_embeddings=False)
    base = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        for n, p in base.named_parameters():
            p.copy_(torch.randn_like(p) * 0.15 if p.dim() == 2 else torch.rand_like(p) + 0.5)
    bdir = os.path.join(OUT, "base")
    base.save_pretrained(bdir)
    for f in os.listdir(bdir):
        if f not in ("config.json", "model.safetensors", "generation_config.json"):
            os.remove(os.path.join(bdir, f))
    save_file({k: v.float().contiguous() for k, v in base.state_dict().items()}, os.path.join(bdir, "model.safetensors"),
              metadata={"format": "pt"})
    base.config._attn_implementation = "eager"

    ids = markov_rows()
    with h5py.File(os.path.join(OUT, "data.h5"), "w") as f:
        f["input_ids"] = ids.numpy().astype("int32")

    lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      modules_to_save=["embed_tokens", "norm"], task_type="CAUSAL_LM")
    model = get_peft_model(base, lcfg)
    with torch.no_grad():   # B = 0 would make every A gradient zero at the start: random adapters
        for n, p in model.named_parameters():
            if "lora_A" in n: p.copy_(torch.randn_like(p) * 0.2)
            if "lora_B" in n: p.copy_(torch.randn_like(p) * 0.05)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    expect = {f"model.layers.{i}.self_attn.{m}_proj.lora_{ab}.weight" for i in range(2) for m in "qkvo" for ab in "AB"}
    expect |= {f"model.layers.{i}.{n}.weight" for i in range(2) for n in ("input_layernorm", "post_attention_layernorm")}
    expect |= {"model.embed_tokens.weight", "model.norm.weight"}
    assert {ours(n) for n in trainable} == expect, sorted(ours(n) for n in trainable)
    save_file({ours(n): p.detach().float().contiguous() for n, p in trainable.items()}, os.path.join(OUT, "start.safetensors"))

    lora = [p for n, p in trainable.items() if "lora_" in n]
    extras = [p for n, p in trainable.items() if "lora_" not in n]
    opt = torch.optim.AdamW([{"params": lora, "lr": LR, "weight_decay": WD},
                             {"params": extras, "lr": LR_EXTRAS, "weight_decay": 0.0}], betas=(0.9, 0.999), eps=1e-8)
    # transformers' warmup is current_step / num_warmup_steps, so the first step runs at lr 0.
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=WARMUP, num_training_steps=STEPS)
    model.train()
    steps = []
    print(f"{'step':>4} {'loss':>10} {'grad_norm':>10} {'lr':>12} {'lr_extras':>12}")
    for s in range(STEPS):
        total = 0.0
        for j in range(ACCUM):
            row = ids[ACCUM * s + j][None]
            out = model(input_ids=row, labels=row)
            (out.loss / ACCUM).backward()
            total += out.loss.item()
        norm = torch.nn.utils.clip_grad_norm_(list(trainable.values()), max_norm=MAX_GRAD_NORM).item()
        lr, lr_extras = sched.get_last_lr()
        steps.append({"step": s + 1, "loss": total / ACCUM, "grad_norm": norm, "lr": lr, "lr_extras": lr_extras})
        print(f"{s + 1:>4} {total / ACCUM:>10.6f} {norm:>10.6f} {lr:>12.6e} {lr_extras:>12.6e}")
        opt.step(); sched.step(); opt.zero_grad()

    save_file({ours(n): p.detach().float().contiguous() for n, p in trainable.items()}, os.path.join(OUT, "final.safetensors"))
    clipped = [e["step"] for e in steps if e["grad_norm"] > MAX_GRAD_NORM]
    print("clipped steps:", clipped)
    json.dump({"steps": steps, "max_grad_norm": MAX_GRAD_NORM, "rank": 4, "alpha": 8, "learning_rate": LR,
               "extras_learning_rate": LR_EXTRAS, "weight_decay": WD, "warmup_steps": WARMUP, "steps_total": STEPS,
               "gradient_accumulation": ACCUM, "context_length": T, "clipped_steps": clipped,
               "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}},
              open(os.path.join(OUT, "expected.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
