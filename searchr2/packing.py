"""Linear layers with their weights packed once for oneDNN, for bfloat16 inference on a CPU.

On a CPU, torch multiplies bfloat16 activations by a bfloat16 weight through oneDNN, which reorders the
weight into its blocked layout at every call. Packing each weight once
(``torch.ops.mkldnn._reorder_linear_weight``, the op torch's compiler uses when it freezes a model for
CPU inference) and calling the packed product (``torch.ops.mkldnn._linear_pointwise``) takes that
reorder out of every decoding step: measured on SmolLM2, a step is 8–23% faster at 1 and 15 rows and
2–7% at 64 (docs/measurements.md#packed-weights-for-bf16-decoding-issue-17). For at most
:data:`MAX_PACKED_ROWS` rows a call the result is bit-identical to the plain product; longer inputs take
the plain product.

Only inference models are packed: the evaluated models, the RL stage's frozen reference and the
bfloat16 copy that generates its rollouts (:class:`searchr2.rl.Generator`, which calls :func:`repack`
after refreshing the copy from the trained weights). A training model is never packed: the packed
product has no backward. Float32 weights and other devices are left alone. Hand-written because
transformers has no such option; ``torch.compile`` with weight freezing packs weights the same way, but
compiles the model first and recompiles as the cache grows unless told its shapes are dynamic (not
tried here).
"""
from __future__ import annotations

import torch


def packing_available(device: str | torch.device = "cpu") -> bool:
    """Whether bfloat16 linear weights can be packed for ``device``: a CPU on which oneDNN runs bfloat16
    (AVX-512 or AMX; not an AVX2-only one, where torch computes bf16 products itself), and a torch that
    has the ops."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    if not all(hasattr(ops, op) for op in ("_reorder_linear_weight", "_linear_pointwise", "_is_mkldnn_bf16_supported")):
        return False
    return bool(ops._is_mkldnn_bf16_supported())     # oneDNN's bf16 path: false on AVX2-only CPUs


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """A bfloat16 weight ``(out, in)`` in oneDNN's packed layout, for :func:`packed_product`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def packed_product(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` with the weight as :func:`pack_weight` returned it."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


#: the packed product is used for at most this many rows (tokens) a call: decoding batches, where the
#: reorder it saves weighs most. Above it oneDNN picks other kernels for the packed and the plain weight, whose sums can
#: differ in the last bit (measured for some row counts between 96 and 1,000 on SmolLM2's shapes), and a
#: prefill gains nothing from packing; so larger inputs take the plain product.
MAX_PACKED_ROWS = 64


class PackedLinear(torch.nn.Module):
    """A frozen ``nn.Linear`` whose product uses a packed copy of its weight.

    It holds the linear layer's own ``weight`` and ``bias`` parameters (so tied weights stay tied and a
    state dict is unchanged) plus the packed copy, which :meth:`repack` rebuilds after the weight was
    overwritten in place.
    """

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.repack()

    @torch.no_grad()
    def repack(self) -> None:
        self._packed = pack_weight(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 activations (under autocast) and long inputs (MAX_PACKED_ROWS) take the plain product
        if x.dtype != self.weight.dtype or x.numel() > MAX_PACKED_ROWS * self.in_features:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        return packed_product(x, self._packed, self.bias)

    def __deepcopy__(self, memo):
        """A copy with copied parameters and its own packed weight (the packed tensor itself cannot be copied)."""
        import copy

        twin = copy.copy(self)                   # a shallow module copy; its parameter dict is replaced below
        twin._parameters = {k: copy.deepcopy(v, memo) for k, v in self._parameters.items()}
        twin.repack()
        return twin

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linears(model: torch.nn.Module) -> int:
    """Replace every ``nn.Linear`` of a bfloat16 CPU ``model`` by a :class:`PackedLinear`, in place; returns
    how many were replaced (0 when the model is not bfloat16 on a CPU, or the ops are missing).

    The model must be used for inference only: its linear weights are set not to require gradients.
    """
    first = next(model.parameters(), None)
    if first is None or first.dtype != torch.bfloat16 or not packing_available(first.device):
        return 0
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if type(child) is torch.nn.Linear and child.weight.dtype == torch.bfloat16]
    for parent, name, child in swaps:
        child.requires_grad_(False)
        setattr(parent, name, PackedLinear(child))
    return len(swaps)


def repack(model: torch.nn.Module, weights=None) -> None:
    """Rebuild the packed copies of a model's :class:`PackedLinear` layers after their weights changed:
    all of them, or only those whose weight is one of ``weights`` (the parameters that were overwritten)."""
    changed = None if weights is None else {id(w) for w in weights}
    for module in model.modules():
        if isinstance(module, PackedLinear) and (changed is None or id(module.weight) in changed):
            module.repack()
