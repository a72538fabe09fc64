"""Linear layers that compute in bfloat16 inside a float32 model (``--dtype bf16-matmul``).

On a CPU with AVX-512 BF16 (or AMX), oneDNN's bfloat16 matrix product is much faster than MKL's
float32 one at the row counts of decoding, while a whole-bfloat16 model is slower than float32
from 16 rows on, because its attention kernel is. Keeping only the products in bfloat16 takes the
first and leaves the second: attention, norms, rotary embeddings and the KV cache stay float32.
SmolLM2-135M's decode step: 1.8-2.4x faster at 2-64 rows (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import torch


class BF16Linear(torch.nn.Module):
    """A copy of ``linear`` whose weight is stored in bfloat16: the input is cast to bfloat16 and
    the output back to the input's dtype (products in bfloat16, sums accumulated in float32)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)
