"""Sigmoid focal loss (Lin et al. 2017): the fused op torch.ops.retdet.sigmoid_focal_loss, its
autograd and fake kernels, and the pure-PyTorch reference it is tested against and falls back to.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _extension

__all__ = ["sigmoid_focal_loss", "sigmoid_focal_loss_reference", "REDUCTIONS"]

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def _reduction_code(reduction: str) -> int:
    try:
        return REDUCTIONS[reduction]
    except KeyError:
        raise ValueError(f"reduction must be one of {sorted(REDUCTIONS)}, got {reduction!r}") from None


def sigmoid_focal_loss_reference(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Plain PyTorch focal loss with the op's exact semantics (see :func:`sigmoid_focal_loss`).

    Computed in float32 (float64 for double inputs), returned in the logits' dtype.
    """
    _reduction_code(reduction)
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    n, k = logits.shape
    compute = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(compute)
    valid = None
    if targets.is_floating_point():
        t = targets.to(compute)
    else:
        if targets.shape != (n,):
            raise ValueError(f"class-index targets must be ({n},), got shape {tuple(targets.shape)}")
        if targets.numel() and (targets.min() < -1 or targets.max() > k):
            raise ValueError(f"class indices must lie in [-1, {k}] (K = background, -1 = ignore)")
        # K (background) and -1 (ignore) give all-zero rows; ignored rows are zeroed below.
        t = torch.nn.functional.one_hot(targets.clamp(min=0), k + 1)[:, :k].to(compute)
        valid = (targets >= 0).to(compute).unsqueeze(1)
    p = torch.sigmoid(x)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    if valid is not None:
        loss = loss * valid
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(logits.dtype)


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Sigmoid focal loss in one fused pass.

    Args:
        logits: (N, K) float32, float16, bfloat16 or float64 class logits.
        targets: either (N,) int64 class indices in [-1, K] (K = background: all K targets 0;
            -1 = ignore: the row contributes 0 loss and 0 gradient), so no one-hot tensor is built;
            or (N, K) float targets (0/1 or soft).
        alpha: weight of positives (1 - alpha for negatives); negative disables weighting.
        gamma: focusing parameter (>= 0).
        reduction: "none" -> (N, K); "sum" -> scalar; "mean" -> sum / (N * K).

    Returns the loss in the logits' dtype; arithmetic is float32 (float64 for double inputs).
    Gradients flow to ``logits`` only.
    """
    code = _reduction_code(reduction)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if _extension.has_extension():
        if torch.is_grad_enabled() and logits.requires_grad:
            # Loss and gradient in one pass; backward is then one multiplication.
            return torch.ops.retdet.sigmoid_focal_loss_with_grad(logits, targets, float(alpha), float(gamma), code)[0]
        return torch.ops.retdet.sigmoid_focal_loss(logits, targets, float(alpha), float(gamma), code)
    _extension.warn_fallback()
    return sigmoid_focal_loss_reference(logits, targets, alpha, gamma, reduction)


if _extension.has_extension():

    @torch.library.register_fake("retdet::sigmoid_focal_loss")
    def _focal_fake(logits, targets, alpha, gamma, reduction):
        torch._check(logits.dim() == 2, lambda: "logits must be (N, K)")
        return logits.new_empty(logits.shape) if reduction == 0 else logits.new_empty(())

    @torch.library.register_fake("retdet::sigmoid_focal_loss_with_grad")
    def _focal_with_grad_fake(logits, targets, alpha, gamma, reduction):
        return _focal_fake(logits, targets, alpha, gamma, reduction), torch.empty_like(logits)

    @torch.library.register_fake("retdet::sigmoid_focal_loss_backward")
    def _focal_backward_fake(grad_output, logits, targets, alpha, gamma, reduction):
        return torch.empty_like(logits)

    def _focal_setup_context(ctx, inputs, output):
        logits, targets, alpha, gamma, reduction = inputs
        ctx.save_for_backward(logits, targets)
        ctx.hyper = (alpha, gamma, reduction)

    def _focal_backward(ctx, grad_output):
        logits, targets = ctx.saved_tensors
        alpha, gamma, reduction = ctx.hyper
        grad = torch.ops.retdet.sigmoid_focal_loss_backward(grad_output, logits, targets, alpha, gamma, reduction)
        return grad, None, None, None, None

    torch.library.register_autograd(
        "retdet::sigmoid_focal_loss", _focal_backward, setup_context=_focal_setup_context
    )

    def _with_grad_setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])

    def _with_grad_backward(ctx, grad_loss, _grad_of_grad):
        # grad_loss is a scalar for sum/mean (broadcast) and (N, K) for none.
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(grad.dtype), None, None, None, None

    torch.library.register_autograd(
        "retdet::sigmoid_focal_loss_with_grad", _with_grad_backward, setup_context=_with_grad_setup_context
    )
