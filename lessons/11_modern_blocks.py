# %% [markdown]
# # Lesson 11: from GPT-2 to Llama, one switch at a time, then LoRA
#
# Our GPT is GPT-2's design (2019). The models a learner meets today (Llama, Mistral, Qwen) are
# the same stack of blocks with a few pieces swapped, each a switch of `ModelConfig`:
#
# - `norm_type=rmsnorm`: RMSNorm divides by the root mean square of a token's channels; no mean is
#   subtracted and there is no bias. One statistic instead of two.
# - `mlp=swiglu`: the MLP's hidden layer becomes SiLU(x W_gate) * (x W_up), a gate that decides
#   channel by channel how much of the "up" projection passes. Three matrices instead of two, so
#   the hidden width shrinks to 2/3 (`blocks.mlp_width`) to keep the parameter count.
# - `n_kv_head`: grouped-query attention. Keys and values get fewer heads than queries; each
#   key/value head serves a group of query heads. The point is the KV cache: generation stores
#   and reads n_kv_head heads per token instead of n_head.
# - `position=rope`, `bias=false`, `tie_embeddings=false`: rotary positions (what the tiny preset
#   already uses; lesson 3's Try this 4), no bias vectors, and an LM head with its own table.
#   `arch=llama` sets all of these but n_kv_head at once: how many key/value heads is a size, like
#   n_head, and is set beside it.
#
# What you will see:
# 1. The five models side by side, built only by switches: GPT-2, + RMSNorm, + SwiGLU, + GQA,
#    + RoPE (with no biases and an untied head) = Llama.
# 2. Each trained the same number of steps on the tiny CLM: validation perplexity, parameters,
#    training-step time, generation speed and KV-cache bytes per token in one table.
# 3. `minillm compare` on the five runs: their curves in one PNG, and the settings that differ.
# 4. SFT with LoRA (rank 8: a few percent of the weights train) against full SFT: exact match on
#    seen tasks, trainable parameters, time; and why LoRA falls short on a model this small.
#
# That the switches are right is checked elsewhere: `GPT.from_llama_state_dict` loads Hugging
# Face Llama weights (grouped-query attention included) and gives the same logits within 1e-4
# (tests/test_weight_import.py).
#
# Run it:  python lessons/11_modern_blocks.py [CLM_RUN_DIR]    (6-8 minutes on a quiet 2-core CPU)
# Outputs: runs/lessons/11/ (clm/<model>/ runs, compare.png, sft/<run>/, table.json).

# %%
from __future__ import annotations

import dataclasses
import shutil
import time

import torch

from minillm.compare import compare_runs
from minillm.config import apply_overrides, preset
from minillm.datasets.corpus import read_corpus, split_documents
from minillm.datasets.instructions import read_jsonl
from minillm.lessons import DATA, earlier_run, lesson_args, lesson_dir, use_threads
from minillm.model import GPT, KVCache
from minillm.model.lora import count_parameters
from minillm.stage1_pretrain.clm import train_clm
from minillm.stage2_sft.evaluate import evaluate_model, select_test_records
from minillm.stage2_sft.sft import train_sft
from minillm.tokenizer import train_tokenizer
from minillm.train import load_model, load_model_and_tokenizer
from minillm.train.loop import METRICS_NAME, read_metrics
from minillm.utils import write_json

LESSON_STARTED = time.perf_counter()
use_threads(1)  # the tiny models gain little from a second thread, and the times are steadier
ARGS = lesson_args("Lesson 11: modern blocks and LoRA", inputs=["clm_run"], reuses_runs=False)
OUT = lesson_dir(11)
shutil.rmtree(OUT, ignore_errors=True)  # a fresh run each time the lesson is run
CFG = preset("tiny")
CLM_STEPS = 200  # every model gets the same steps (the tiny preset gives its CLM 800)
SFT_STEPS = 800  # full SFT and LoRA alike (the tiny preset gives SFT 1200)

train_docs, val_docs = split_documents(read_corpus(DATA / "corpus.txt"))
tokenizer = train_tokenizer(train_docs, CFG.tokenizer.vocab_size, progress=False)
print(f"tokenizer: {tokenizer.vocab_size} tokens; {len(train_docs)} training documents")

# %% [markdown]
# ## 1. Five models, built by switches only
#
# Each row adds one change to the row above it. The last row is what `--set clm.model.arch=llama`
# gives (plus the n_kv_head of the GQA row). Every model has 3 layers, 4 query heads and width 128,
# the tiny preset's CLM.

# %%
VARIANTS = {  # name -> the ModelConfig fields that differ from GPT-2's
    "gpt2": {"position": "learned"},
    "+rmsnorm": {"position": "learned", "norm_type": "rmsnorm"},
    "+swiglu": {"position": "learned", "norm_type": "rmsnorm", "mlp": "swiglu"},
    "+gqa": {"position": "learned", "norm_type": "rmsnorm", "mlp": "swiglu", "n_kv_head": 2},
    "llama": {"arch": "llama", "n_kv_head": 2},  # + RoPE, no biases, untied head
}
configs = {name: dataclasses.replace(CFG.clm.model, vocab_size=tokenizer.vocab_size, **fields)
           for name, fields in VARIANTS.items()}
for name, config in configs.items():
    block = GPT(config).blocks[0]
    print(f"{name:>9}: norm {type(block.ln_1).__name__:9} MLP {config.mlp:6} hidden {block.mlp.proj.in_features:3}  "
          f"kv heads {config.kv_heads}  qkv {tuple(block.attn.qkv.weight.shape)}  position {config.position:7} "
          f"bias {config.bias}  tied head {config.tie_embeddings}")

# %% [markdown]
# ## 2. The same training for each, and what each switch costs and buys
#
# Generation speed is measured with the KV cache, greedy, 8 prompts of 16 tokens continued by 64
# tokens. The KV-cache bytes per token are read off a real cache after a forward pass: 2 (keys and
# values) x layers x kv heads x head_dim x 4 bytes.


# %%
def generation_speed(model: GPT, prompts: int = 8, prompt_len: int = 16, new_tokens: int = 64) -> float:
    """Generated tokens per second (greedy, KV cache, every row to full length): the best of 2 tries."""
    ids = torch.randint(4, model.config.vocab_size, (prompts, prompt_len), generator=torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        model.generate(ids, new_tokens, temperature=0)
        best = min(best, time.perf_counter() - started)
    return prompts * new_tokens / best


def kv_bytes_per_token(model: GPT, length: int = 64) -> float:
    cache = KVCache(model.config.n_layer)
    with torch.no_grad():
        model(torch.full((1, length), 5), cache=cache)
    return cache.nbytes() / length


clm_cfg = apply_overrides(CFG.clm, [f"train.max_steps={CLM_STEPS}", "train.eval_every=100",
                                    f"train.save_every={CLM_STEPS}", "train.log_every=10"])
rows = {}
for name, config in configs.items():
    run_dir = OUT / "clm" / name
    result = train_clm(dataclasses.replace(clm_cfg, model=config), tokenizer, train_docs, val_docs, run_dir)
    model, _ = load_model(run_dir, GPT)
    last = [r for r in read_metrics(run_dir / METRICS_NAME) if "loss" in r][-1]
    rows[name] = {"val_ppl": result["val_perplexity"], "params": count_parameters(model),
                  "ms_per_step": 1000 * last["elapsed_s"] / last["step"],
                  "gen_tokens_per_s": generation_speed(model), "kv_bytes_per_token": kv_bytes_per_token(model)}
    print(f"  {name}: trained {CLM_STEPS} steps, validation perplexity {rows[name]['val_ppl']:.2f}")

print(f"\n{'model':>9} {'val ppl':>8} {'params':>8} {'ms/step':>8} {'gen tok/s':>10} {'KV B/token':>11}")
for name, r in rows.items():
    print(f"{name:>9} {r['val_ppl']:8.2f} {r['params']:8,d} {r['ms_per_step']:8.0f} {r['gen_tokens_per_s']:10.0f} "
          f"{r['kv_bytes_per_token']:11,.0f}")
# In our runs (200 steps each, one thread). Perplexity, parameters and cache bytes at f8e0178 (GPT-2's
# and SwiGLU's the same at c20ad44); the two times at ecc53a3, on a 2-core CPU that other jobs
# shared, so they are rough (bench/model.py measures the step-time ratio properly; at f8e0178 a dozen
# jobs shared the CPU and every time came out 7 to 11 times longer, too distorted to quote):
#     model  val ppl   params  ms/step  gen tok/s  KV B/token
#      gpt2     5.36  808,064      153       7033       3,072
#  +rmsnorm     5.24  807,168      158       6106       3,072
#   +swiglu     6.66  820,032      154       6013       3,072
#      +gqa     5.93  770,496      165       5480       1,536
#     llama     2.97  947,072      161       5031       1,536
# At ecc53a3, 541 commits earlier, the perplexities were 4.93, 5.10, 6.00, 5.92 and 2.97. One commit
# moved GPT-2's and SwiGLU's: 58d97cc, which put the right river into 361 story sentences of
# data/corpus.txt (of its 18,493 lines). Just before it the two rows gave ecc53a3's 4.93 and 6.00, at
# it 5.36 and 6.66: so small a change of the text retrains the tokenizer and shifts every batch, as
# another seed does. With "train.seed=2" added to clm_cfg's settings (c20ad44) the five gave 5.87,
# 6.46, 6.94, 6.06 and 2.99.

# %% [markdown]
# How to read it (200 steps are noisy: another seed moved the first four rows by 0.1 to 1.2, and 361
# corrected sentences of the corpus moved two of them by 0.4 and 0.7; trust what holds at both seeds):
# - RMSNorm trains like LayerNorm, with one statistic fewer and no bias: which of the two is ahead
#   varies by seed (5.24 against 5.36; 6.46 against 5.87 at seed 2; 5.10 against 4.93 at ecc53a3).
# - SwiGLU holds about the same parameters as the GELU MLP by construction (hidden 352 instead of
#   512) and was behind after 200 steps at both seeds (6.66 and 6.94; 6.00 at ecc53a3). Whether it
#   catches up takes longer runs than this lesson spends (Try this, 2); its reported gains are from
#   models trained on billions of tokens.
# - GQA (2 key/value heads for 4 query heads) cost nothing measurable here (5.93, 6.06 at seed 2,
#   5.92 at ecc53a3: never behind the row above it) and halves the KV cache per token, 3,072 -> 1,536
#   bytes; the qkv matrix shrinks from (384, 128) to (256, 128). A large model's generation is
#   limited by reading that cache at every step, so this is the switch that makes a 70B model
#   servable. At our size the cache is tiny and GQA buys no speed we can measure (the table's 5,480
#   against 6,013 tokens/s is one shared-CPU run; another run gave 5,410 against 5,240, and
#   alternated the two tie): each step copies every key/value head to the query heads it serves
#   (`repeat_interleave`), which costs about what the smaller cache saves.
# - RoPE (with no biases and an untied head, i.e. arch=llama) helps most by far: 2.97 at both
#   commits, 2.99 at seed 2, the one gap far outside the noise. As lesson 4 found, our text rewards
#   finding words by their distance. The untied head adds a (V, C) table, 1536 x 128 = 197k
#   parameters.
# The tiny preset's full 800 steps with arch=llama and n_kv_head=2 reached perplexity 1.88 at
# ecc53a3, 1.85 at 71c1ccc and 1.85 at c20ad44, against 1.94 to 1.95 for the preset's GPT-2 + RoPE
# (1.94 at c20ad44).

# %% [markdown]
# ## 3. `minillm compare`: the five runs side by side
#
# `compare_runs` is what `minillm compare DIR DIR ...` calls: it overlays the curves the runs share in one
# PNG and lists the settings in which the runs differ, so an ablation shows exactly what it changed.

# %%
report = compare_runs([OUT / "clm" / name for name in VARIANTS], OUT / "compare.png")
print(report["report"])

# %% [markdown]
# ## 4. LoRA: fine-tune a few percent of the weights
#
# LoRA (minillm/model/lora.py) freezes every weight and adds, beside each chosen Linear W (out, in), two
# thin matrices B (out, r) A (r, in) whose product is the update: y = x W^T + (alpha / r) x A^T B^T.
# B starts at zero, so training starts exactly at the pretrained model. After training the update
# is merged into W (ckpt.pt is then a plain GPT, for any later stage); the adapters alone are a
# small file (adapters.pt) that `sft.load_adapted` puts back onto the base.
#
# The runs below start from the same pretrained model, train the same steps on the same batches,
# and are scored on the first 30 unseen examples of each trained task family (greedy, exact match).
# LoRA gets rank 8 on every Linear of the blocks (qkv, proj, fc) and a learning rate of 3e-3 (1e-3,
# full SFT's, reached 0.25 where 3e-3 reached 0.40, from the Llama-style CLM named below, at
# ecc53a3). The third row also trains the token table in full (`--set sft.lora.rank=8
# --set sft.lora.also_train=tok_emb`): the chat template's role tokens never occur in pretraining, so
# their vectors are still random, and no low-rank update of the blocks can give them meaning.
#
# The base is the GPT given on the command line (a CLM run folder), else lesson 4's, else the
# pipeline's (runs/tiny/03_clm), else the 200-step Llama-style model above (a weak base: every score
# below is then low).

# %%
records = read_jsonl(DATA / "instructions.jsonl")
seen_tests = select_test_records([r for r in records if r.get("split") == "test_seen"], CFG.sft.eval_per_family)
pretrained = earlier_run("clm", lesson_dir(4) / "clm", given=ARGS.clm_run, train_missing=False)
sft_init = pretrained.path if pretrained is not None else OUT / "clm" / "llama"
print(f"SFT starts from {sft_init}")
sft_base = apply_overrides(CFG.sft, [f"train.max_steps={SFT_STEPS}", f"train.eval_every={SFT_STEPS}",
                                     f"train.save_every={SFT_STEPS}"])
lora = ["lora.rank=8", "lora.alpha=16", "lora.targets=qkv,proj,fc", "train.lr=3e-3"]
SFT_RUNS = {
    "full SFT": sft_base,
    "LoRA r=8": apply_overrides(sft_base, lora),
    "+ tok_emb": apply_overrides(sft_base, [*lora, "lora.also_train=tok_emb"]),
}
sft_rows = {}
for name, cfg in SFT_RUNS.items():
    run_dir = OUT / "sft" / name.replace(" ", "_").replace("=", "").replace("+", "plus")
    result = train_sft(cfg, records, run_dir, init_dir=sft_init, pretrain_docs=train_docs)
    model, tok = load_model_and_tokenizer(run_dir, GPT)
    scores, _ = evaluate_model(model, tok, seen_tests, cfg)
    sft_rows[name] = {"exact_match_seen": scores["seen"]["exact_match"], "trainable": result["trainable_params"],
                      "params": result["params"], "seconds": result["seconds"]}

print(f"\n{'':>9} {'exact match (seen)':>19} {'trainable params':>17} {'time':>7}")
for name, r in sft_rows.items():
    print(f"{name:>9} {r['exact_match_seen']:19.2f} {r['trainable']:>10,d} ({r['trainable'] / r['params']:4.0%}) "
          f"{r['seconds']:6.0f}s")
write_json(OUT / "table.json", {"clm": rows, "sft": sft_rows, "sft_init": str(sft_init)})
print(f"\nthe whole lesson took {time.perf_counter() - LESSON_STARTED:.0f} s")
# In our runs, after the pipeline (so from its CLM, runs/tiny/03_clm: GPT-2 blocks with RoPE, 3
# layers). Exact match at f8e0178 (0.78 / 0.32 / 0.78 at 315569e: each moves by a few hundredths
# with the draw; 210 questions, a standard error of about 0.03); the times at 315569e, 464 s for the
# whole lesson on a 2-core CPU (at f8e0178, shared by a dozen jobs, it took 2,932 s, 502 s of CPU):
#            exact match (seen)  trainable params    time
#  full SFT                0.79    791,680 (100%)     73s
#  LoRA r=8                0.28     49,152 (  6%)     81s
# + tok_emb                0.76    245,760 ( 29%)     87s
# From the tiny preset's CLM with arch=llama and n_kv_head=2 instead (perplexity 1.88; `minillm
# pretrain clm --preset tiny --set clm.model.arch=llama --set clm.model.n_kv_head=2 --out
# runs/llama`, then `python lessons/11_modern_blocks.py runs/llama`), at ecc53a3: full 0.83, LoRA r=8
# 0.40, + tok_emb 0.65; rank 32 with the token table (384k trainable) reached 0.74. At c20ad44
# (perplexity 1.85, on the data 58d97cc regenerated; the same three runs made by Try this 3's
# `minillm sft` command with step 4's settings): full 0.76, LoRA r=8 0.34, + tok_emb 0.47.

# %% [markdown]
# LoRA at rank 8 alone does NOT match full SFT here. Two reasons, each measured: the role tokens'
# random vectors (training the token table too lifts it to full SFT's level from the pipeline's CLM,
# 0.28 -> 0.76 against 0.79, and part of the way from the Llama-style one: 0.40 -> 0.65 at ecc53a3,
# 0.34 -> 0.47 at c20ad44), and, from the Llama-style CLM, the rank itself: our model is 128 wide,
# and what SFT changes in it is not a rank-8 update there (rank 32, 187k parameters, reached 0.60
# against rank 8's 0.40 at ecc53a3, 0.55 against 0.34 at 71c1ccc and c20ad44: each figure moves by a
# few hundredths with the draw, the gap stays; from the pipeline's CLM, rank 8 with the token table
# was enough). LoRA's premise, that fine-tuning moves the weights along few directions, was measured
# on models 768 to 12,288 wide (RoBERTa-base to GPT-3 175B), where rank 8 is about 1% of the width at
# most, not 6%.
# Its steps are no faster on a model this small either (81 s against full SFT's 73 s at 315569e):
# the frozen weights still run forward and backward (their inputs need gradients); what it saves is
# the optimizer's state and the gradients of the frozen matrices, which for a 7B model is most of the
# memory.
#
# ## Try this
# 1. Multi-query attention: `minillm pretrain clm --preset tiny --set clm.model.arch=llama
#    --set clm.model.n_kv_head=1 --out runs/mqa`, and the same with n_kv_head=4 into runs/mha.
#    The KV cache is a quarter of full multi-head attention's; `minillm compare runs/mqa runs/mha`
#    shows what it cost.
# 2. One switch alone, for the preset's full 800 steps: `--set clm.model.mlp=swiglu` on the tiny
#    preset (GPT-2 with RoPE), against the preset itself; `minillm compare` lists exactly that one
#    setting as the difference, and shows whether SwiGLU catches up with more steps.
# 3. LoRA's rank, with step 4's other LoRA settings (alpha / rank 2, the blocks' Linears, lr 3e-3,
#    800 steps): `minillm sft --init runs/llama --preset tiny --no-baselines --set sft.lora.rank=2
#    --set sft.lora.alpha=4 --set sft.lora.targets=qkv,proj,fc --set sft.train.lr=3e-3
#    --set sft.train.max_steps=800 --out X`, and the same with rank=32 and alpha=64 (runs/llama: the
#    command under step 4's table). At 71c1ccc, and again to the digit at c20ad44 (runs/llama's
#    perplexity 1.85 at both), exact match on seen tasks followed the rank, far from in proportion:
#    rank 2, 11,712 trainable parameters, 0.11; rank 8, 46,848, 0.34; rank 32, 187,392, 0.55 (world
#    facts 0.40, 0.87, 0.90). Each adapted Linear (in, out) trains rank x (in + out) numbers, so 16
#    times the rank is 16 times the parameters: `minillm sft` prints their count as it starts ("sft:
#    46,848 of the model's ... parameters train (...): LoRA rank 8 on qkv,proj,fc"), X/metrics.json
#    records it (trainable_params, of params) and X/adapters.pt holds them. Even rank 32 stays below
#    full SFT from runs/llama: 0.76 at c20ad44 (item 3's command without its sft.lora and lr settings;
#    0.83 at ecc53a3, step 4).
# 4. LoRA on attention's qkv only: item 3's command with `--set sft.lora.rank=8 --set sft.lora.alpha=16
#    --set sft.lora.targets=qkv`. Fewer parameters still (the count `minillm sft` prints as it starts),
#    9,216 against 46,848 on every Linear, and the MLP, where much of a transformer's knowledge sits,
#    cannot change. At 71c1ccc, and again to the digit at c20ad44, that cost far more than the
#    parameters: seen 0.10 against 0.34, and world facts, which the frozen model still holds, 0.10
#    against 0.87. The answers come out half-formed ("A: A healer." asked for a river): in 800 steps,
#    attention alone did not learn the answer's format. (`proj` would not keep LoRA in attention: a
#    target matches every Linear whose name ends with it, attn.proj and mlp.proj alike.)
