#include <ATen/ops/isfinite.h>

#include <cmath>
#include <limits>

#include "ops.h"

namespace retdet {

void check_focal_inputs(const at::Tensor& logits, const at::Tensor& targets, int64_t reduction) {
  TORCH_CHECK(logits.dim() == 2, "sigmoid_focal_loss: logits must be (N, K), got shape ", logits.sizes());
  TORCH_CHECK(logits.is_floating_point(), "sigmoid_focal_loss: logits must be floating point, got ",
              logits.scalar_type());
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "sigmoid_focal_loss: reduction must be 0 (none), 1 (mean) or 2 (sum)");
  TORCH_CHECK(targets.device() == logits.device(), "sigmoid_focal_loss: targets on ", targets.device(),
              " but logits on ", logits.device());
  if (targets.is_floating_point()) {
    TORCH_CHECK(targets.sizes() == logits.sizes(), "sigmoid_focal_loss: float targets must have the logits' shape ",
                logits.sizes(), ", got ", targets.sizes());
  } else {
    TORCH_CHECK(targets.scalar_type() == at::kLong, "sigmoid_focal_loss: class-index targets must be int64, got ",
                targets.scalar_type());
    TORCH_CHECK(targets.dim() == 1 && targets.size(0) == logits.size(0),
                "sigmoid_focal_loss: class-index targets must be (N,) with N = ", logits.size(0), ", got shape ",
                targets.sizes());
  }
}

void check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "batched_nms: boxes must be (N, 4) xyxy, got shape ",
              boxes.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), "batched_nms: scores must be (N,) with N = ",
              boxes.size(0), ", got shape ", scores.sizes());
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == boxes.size(0), "batched_nms: idxs must be (N,) with N = ",
              boxes.size(0), ", got shape ", idxs.sizes());
  TORCH_CHECK(boxes.is_floating_point() && scores.is_floating_point(), "batched_nms: boxes and scores must be floating");
  TORCH_CHECK(!idxs.is_floating_point() && !idxs.is_complex(), "batched_nms: idxs must be an integer tensor");
  TORCH_CHECK(boxes.device() == scores.device() && boxes.device() == idxs.device(),
              "batched_nms: boxes, scores and idxs must be on one device");
  if (boxes.numel() > 0) {
    // One synchronising check; a NaN would otherwise silently change which boxes survive.
    const bool finite = at::isfinite(boxes).all().item<bool>() && at::isfinite(scores).all().item<bool>();
    TORCH_CHECK(finite, "batched_nms: boxes and scores must be finite; found NaN or inf (check the model's outputs "
                "or the box decoding)");
  }
}

at::Tensor class_major_order(const at::Tensor& scores, const at::Tensor& idxs) {
  // Two stable sorts: by score (descending), then by class; ties keep the lower index first.
  const auto by_score = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const auto by_class = std::get<1>(idxs.index_select(0, by_score).sort(/*stable=*/true, /*dim=*/0, false));
  return by_score.index_select(0, by_class);
}

at::Tensor order_kept_by_score(const at::Tensor& kept, const at::Tensor& scores, int64_t num_boxes) {
  const auto kept_asc = std::get<0>(kept.sort());
  const auto kept_scores = scores.index_select(0, kept_asc);
  // torchvision.ops.batched_nms takes one of two paths, and they order equal scores differently:
  // up to 1000 boxes on CPU (25000 on CUDA) its NMS order puts the lower index first (a stable
  // sort); above that it sorts the kept indices, in ascending order, with the default (not stable)
  // torch.sort(descending=True). Doing the same here makes the result identical in both cases.
  const int64_t path_limit = kept.is_cuda() ? 100000 : 4000;  // on boxes.numel(), as torchvision
  const bool stable = num_boxes * 4 <= path_limit;
  const auto by_score = std::get<1>(kept_scores.sort(stable, /*dim=*/0, /*descending=*/true));
  return kept_asc.index_select(0, by_score);
}

float float_threshold(double threshold) {
  float f = static_cast<float>(threshold);
  if (static_cast<double>(f) > threshold) f = std::nextafter(f, -std::numeric_limits<float>::infinity());
  return f;
}

}  // namespace retdet
