"""DP-SGD clipping for heads made of linear layers, without per-sample gradients.

For a linear layer y = W a + b and a sample i with output gradient g_i, the per-sample gradient
is g_i a_iᵀ (and g_i for the bias), so its squared norm is |g_i|² |a_i|² (+ |g_i|²): the norm
of every sample's gradient comes from two vector norms ("book-keeping"), and the clipped sum
Σ_i c_i g_i a_iᵀ is one reweighted matrix product. The result equals Opacus' per-sample path (the
same clip factors, C / (|∇_i| + 1e-6) capped at 1, the same sum); Opacus still does the Poisson
sampling and the privacy accounting. Noise is added as Opacus does: N(0, (σC)²) per coordinate,
then the sum is divided by the expected batch size.

With ``units`` (``dp.unit: patient``) the clipped quantity is each unit's summed gradient
Σ_{i∈u} g_i a_iᵀ: its squared norm is Σ_{i,j∈u} (g_i·g_j)(a_i·a_j + 1), the within-unit part of
the Gram matrices of the output gradients and of the activations, so no per-sample (or per-unit)
gradient is formed either.
"""

from __future__ import annotations

import torch
from torch import nn

POINTWISE = (nn.LeakyReLU, nn.ReLU, nn.Identity, nn.GELU, nn.Tanh, nn.Sigmoid)


class BookKeepingDP:
    def __init__(
        self,
        module: nn.Module,
        max_grad_norm: float,
        noise_multiplier: float,
        expected_batch_size: float,
        generator: torch.Generator | None = None,
    ):
        self.linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        for m in module.modules():
            if m is module or isinstance(m, (nn.Linear, nn.Sequential)):
                continue
            if not isinstance(m, POINTWISE):
                raise ValueError(
                    f"book-keeping clipping supports linear layers and pointwise activations "
                    f"only, not {type(m).__name__}; use dp.clipping: opacus"
                )
        if not self.linears:
            raise ValueError("no linear layer to train")
        self.module = module
        self.max_grad_norm = max_grad_norm
        self.noise_multiplier = noise_multiplier
        self.expected_batch_size = expected_batch_size
        self.generator = generator
        self._noise: list[torch.Tensor] | None = None  # add_noise_and_scale's buffers
        self._inputs: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for m in self.linears]

    def _hook(self, layer, inputs, output):
        if not torch.is_grad_enabled():  # evaluation forwards are not training steps
            return
        if inputs[0].dim() != 2:
            raise ValueError("book-keeping clipping needs (batch, features) inputs")
        self._inputs.append(inputs[0].detach())
        self._outputs.append(output)

    def clipped_sum(self, loss_sum: torch.Tensor, units: torch.Tensor | None = None):
        """Set each parameter's ``.grad`` to the clipped sum of per-sample gradients of
        ``loss_sum`` (a sum over samples of the forward just run); return per-sample norms.
        ``units``: a unit id per sample; then each unit's summed gradient is clipped and the
        per-unit norms (in the order of ``units.unique()``) are returned."""
        grads = torch.autograd.grad(loss_sum, self._outputs)
        if units is None:
            norms = self._sample_sq_norms(grads).sqrt()
            clip = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        else:
            _, inverse = torch.unique(units, return_inverse=True)
            norms = self._unit_sq_norms(grads, inverse).sqrt()
            clip = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)[inverse]
        for a, g, layer in zip(self._inputs, grads, self.linears, strict=True):
            # Per unit, the sum over a patient's crops cancels terms far larger than C: summed
            # in float64, then rounded once (float32 sums exceeded C by up to 4e-5 relative).
            exact = units is not None
            weighted = (g.double() if exact else g) * clip[:, None]
            layer.weight.grad = (weighted.t() @ (a.double() if exact else a)).to(a.dtype)
            if layer.bias is not None:
                layer.bias.grad = weighted.sum(0).to(a.dtype)
        self._inputs.clear()
        self._outputs.clear()
        return norms

    def _bias(self, layer) -> float:
        return 1.0 if layer.bias is not None else 0.0

    def _sample_sq_norms(self, grads) -> torch.Tensor:
        sq = 0.0
        for a, g, layer in zip(self._inputs, grads, self.linears, strict=True):
            sq = sq + g.pow(2).sum(1) * (a.pow(2).sum(1) + self._bias(layer))
        return sq

    def _unit_sq_norms(self, grads, inverse: torch.Tensor) -> torch.Tensor:
        """|Σ_{i∈u} ∇_i|² per unit from the Gram matrices, summed over the layers. In float64:
        a patient's crop gradients can nearly cancel, and a float32 Gram sum then underestimates
        the norm (measured: clipped sums up to 1.000042 C); float64's error is ~1e-16 of the terms,
        below C for any |g||a| under ~1e7 (heads see |g| <= 1.5, |a| of a few thousand)."""
        same = inverse[:, None] == inverse[None, :]
        per_row = 0.0
        for a, g, layer in zip(self._inputs, grads, self.linears, strict=True):
            a, g = a.double(), g.double()
            pair = (g @ g.t()) * (a @ a.t() + self._bias(layer))
            per_row = per_row + (pair * same).sum(1)
        n_units = int(inverse.max()) + 1
        sq = torch.zeros(n_units, dtype=torch.float64, device=per_row.device)
        sq.index_add_(0, inverse, per_row)
        return sq.clamp(min=0.0)  # rounding can make a zero norm slightly negative

    def empty_step(self) -> None:
        """A Poisson batch can be empty: the gradient is zero and only noise is added."""
        for layer in self.linears:
            for p in layer.parameters():
                p.grad = torch.zeros_like(p)
        self._inputs.clear()
        self._outputs.clear()

    def add_noise_and_scale(self) -> None:
        """Add N(0, (σC)²) per coordinate and divide by the expected batch size. The noise is
        drawn per parameter as Opacus' DPOptimizer draws it (``torch.normal`` of the
        parameter's shape from the same generator: the same numbers), into buffers allocated
        once. The draw itself (~1.2 ms per step for the study's 296k head parameters, torch's
        CPU generator) is most of what DP adds to a step."""
        std = self.noise_multiplier * self.max_grad_norm
        if self._noise is None:
            self._noise = [torch.empty_like(p) for p in self._parameters()]
        for p, noise in zip(self._parameters(), self._noise, strict=True):
            if std > 0:
                p.grad.add_(noise.normal_(0.0, std, generator=self.generator))
            p.grad.div_(self.expected_batch_size)

    def _parameters(self):
        return [p for layer in self.linears for p in layer.parameters()]

    def close(self) -> None:
        for h in self._handles:
            h.remove()
