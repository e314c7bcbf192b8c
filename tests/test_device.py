"""The paths that run on an accelerator, on the device --device names (cpu by default).

`bench/gpu_check.sh` runs this file with `--device cuda`: the same checks as on the CPU, there. One test
needs no GPU at all: it runs the models on a pretend one, whose device rules it checks (tests/pretend_gpu.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from pretend_gpu import PRETEND_GPU, DeviceMismatch, pretend_gpu
from torch import nn

from minillm.cli import main
from minillm.config import ModelConfig, TrainConfig, apply_overrides, preset, replace_train_configs
from minillm.model import GPT, Bert
from minillm.pipeline import run_pipeline
from minillm.stage1_pretrain.clm import clm_loss
from minillm.train import train


def micro_config(**changes) -> ModelConfig:
    return ModelConfig(**{"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, **changes})


@contextmanager
def devices_of_the_weights_that_run() -> Iterator[set[str]]:
    """A set that fills, inside the `with`, with the device type of every module's weights as the
    module runs its forward pass (a global forward pre-hook; removed on the way out)."""
    seen: set[str] = set()

    def note_weights_device(module: nn.Module, args: tuple) -> None:
        seen.update(p.device.type for p in module.parameters(recurse=False))

    hook = nn.modules.module.register_module_forward_pre_hook(note_weights_device)
    try:
        yield seen
    finally:
        hook.remove()


def test_gpt_forward_backward_on_the_device_equals_the_cpu(device):
    torch.manual_seed(0)
    cpu_model = GPT(micro_config(position="rope", attention="sdpa"))
    model = GPT(micro_config(position="rope", attention="sdpa")).to(device)
    model.load_state_dict(cpu_model.state_dict())
    ids = torch.randint(0, 64, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[0, :5] = False  # a left-padded row
    logits = model(ids.to(device), attention_mask=mask.to(device))
    torch.testing.assert_close(logits.cpu(), cpu_model(ids, attention_mask=mask), rtol=1e-3, atol=1e-3)
    clm_loss(model, ids.to(device)).backward()
    assert all(p.grad is not None and p.grad.device.type == device.type for p in model.parameters())


def test_kv_cache_generation_equals_recomputation_on_the_device(device):
    torch.manual_seed(1)
    model = GPT(micro_config()).to(device).eval()
    prompt = torch.randint(0, 64, (4, 6), device=device)
    cached = model.generate(prompt, 12, temperature=0, use_cache=True)
    recomputed = model.generate(prompt, 12, temperature=0, use_cache=False)
    assert torch.equal(cached.new_ids, recomputed.new_ids)


def test_bert_runs_on_the_device(device):
    model = Bert(micro_config()).to(device)
    logits = model(torch.randint(0, 64, (2, 16), device=device))
    assert logits.shape == (2, 16, 64) and logits.device.type == device.type


def test_on_a_pretend_gpu_the_models_make_every_tensor_on_their_device():
    """Without a GPU (tests/pretend_gpu.py): a tensor made without the inputs' device, or a CPU generator
    drawing on the GPU, fails here as on CUDA. Forward, backward and generation (sampled with the CPU
    generator the callers pass, rows that end early, prompts that repeat, with and without the KV cache)."""
    with pretend_gpu():
        with pytest.raises(DeviceMismatch):  # the check itself: what CUDA refuses is refused
            torch.ones(3).to(PRETEND_GPU) + torch.ones(3)
        with pytest.raises(DeviceMismatch):
            torch.rand(3, generator=torch.Generator(), device=PRETEND_GPU)
        torch.manual_seed(3)
        prompts = torch.randint(1, 64, (2, 8)).repeat(2, 1).to(PRETEND_GPU)  # rows 2 and 3 repeat rows 0 and 1
        mask = (torch.arange(8) >= torch.tensor([[0], [3], [0], [3]])).to(PRETEND_GPU)  # rows 1 and 3 left-padded
        for config in (micro_config(), micro_config(position="rope", attention="sdpa", n_kv_head=1)):
            model = GPT(config).to(PRETEND_GPU)
            clm_loss(model, prompts).backward()
            assert all(p.grad.device == PRETEND_GPU for p in model.parameters())
            first = int(model.generate(prompts, 1, temperature=0, attention_mask=mask).new_ids[0, 0])
            for use_cache in (True, False):
                model.generate(prompts, 6, temperature=0.9, top_k=20, top_p=0.9, eos_id=first, attention_mask=mask,
                               generator=torch.Generator().manual_seed(0), use_cache=use_cache)
        Bert(micro_config()).to(PRETEND_GPU)(prompts, attention_mask=mask).sum().backward()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])  # float16 with the grad scaler
def test_the_training_loop_learns_on_the_device(device, dtype, tmp_path):
    """Mixed precision too: on a GPU, autocast and the grad scaler run their CUDA kernels only here."""
    torch.manual_seed(2)
    model = GPT(micro_config())
    pattern = torch.arange(33) % 8  # a repeating sequence: easy to learn

    def get_batch(split, generator):
        return {"ids": pattern.repeat(8, 1)}

    def loss_fn(net, batch):
        loss = clm_loss(net, batch["ids"])
        return loss, {}

    cfg = TrainConfig(max_steps=30, batch_size=8, lr=3e-3, warmup_steps=0, eval_every=30, save_every=30,
                      eval_batches=1, log_every=10, device=device.type, dtype=dtype)
    result = train(model, cfg, tmp_path, get_batch=get_batch, loss_fn=loss_fn, run_config={}, desc="device")
    losses = [row["loss"] for row in result["history"] if "loss" in row]
    assert losses[-1] < 0.5 * losses[0]


def test_every_stage_of_the_micro_journey_runs_its_models_on_the_device(device, tmp_path):
    """The journey with device=<device> for every stage: each model that runs a forward pass, from
    MLM to the stage-3 scoreboard, has its weights there. A stage that loads a checkpoint and leaves
    it on the CPU would crash on a GPU's batches, or run its part of the journey slowly on the CPU."""
    if device.type == "cpu":
        pytest.skip("on the CPU every model is there anyway; tests/test_pipeline.py runs the micro journey")
    cfg = replace_train_configs(apply_overrides(preset("micro"), [f"device={device.type}"]), device=device.type)
    with devices_of_the_weights_that_run() as seen:
        report = run_pipeline(cfg, tmp_path / "run")
    assert report["device"] == device.type and set(report["stages"]) >= {"mlm", "clm", "sft", "ppo", "dpo", "grpo"}
    assert seen == {device.type}


@pytest.mark.parametrize("argv", (["fill-mask", "--ckpt", "RUNS/bert", "Rain all [MASK].", "--plot", "TMP/p.png"],
                                  ["generate", "--ckpt", "RUNS/gpt", "The river", "--max-new-tokens", "4"]))
def test_the_model_commands_run_the_model_on_the_device(argv, device, untrained_runs, tmp_path):
    """`minillm fill-mask/generate --device D`: the trained model runs there, not on the CPU."""
    argv = [arg.replace("RUNS", str(untrained_runs)).replace("TMP", str(tmp_path)) for arg in argv]
    with devices_of_the_weights_that_run() as seen:
        assert main([*argv, "--device", str(device)]) == 0
    assert seen == {device.type}
