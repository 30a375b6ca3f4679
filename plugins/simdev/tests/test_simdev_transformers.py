"""End to end: a tiny transformers causal LM trains on simdev bit for bit as on cpu."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("USE_HUB_KERNELS", "0")  # transformers' hub kernels refuse unknown device types
transformers = pytest.importorskip("transformers")


def _model():
    config = transformers.Qwen2Config(
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_hidden_layers=2,
        intermediate_size=128,
        vocab_size=97,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config)


def _steps(model, device, attn):
    model = model.to(device)
    model.set_attn_implementation(attn)
    model.train()
    # SGD, not Adam: k_proj's bias gets a zero gradient in exact arithmetic (softmax ignores
    # a per-query constant), and Adam would scale its float noise up to full-size steps.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    losses, grads = [], {}
    for _ in range(2):
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=ids.to(device))
        opt.zero_grad()
        out.loss.backward()
        if not grads:
            grads = {n: p.grad.cpu() for n, p in model.named_parameters()}
            assert all(p.grad.device.type == torch.device(device).type for p in model.parameters())
        opt.step()
        losses.append(out.loss.item())
    return losses, grads, {k: v.detach().cpu() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_qwen2_forward_backward_matches_cpu(attn):
    base = _model()
    state = {k: v.clone() for k, v in base.state_dict().items()}
    cpu_losses, cpu_grads, cpu_state = _steps(base, "cpu", attn)
    dev_model = _model()
    dev_model.load_state_dict(state)
    dev_losses, dev_grads, dev_state = _steps(dev_model, "simdev", attn)
    # Bit-equal: the device runs the host's kernels, and takes the host's kernel choices (SDPA's
    # flash kernel for cpu, silu_backward's CPU kernel) where torch would decompose for a new device.
    assert dev_losses == cpu_losses
    assert dev_losses[1] < dev_losses[0]
    for k, v in cpu_grads.items():
        assert torch.equal(dev_grads[k], v), k
    for k, v in cpu_state.items():
        assert torch.equal(dev_state[k], v), k
    with torch.no_grad():
        dev_model.eval()
        out = dev_model.generate(
            torch.tensor([[1, 2, 3]], device="simdev"), max_new_tokens=4, do_sample=False
        )
    assert out.device.type == "simdev" and out.shape == (1, 7)
