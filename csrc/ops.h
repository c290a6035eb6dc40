// Kernel entry points, one per device; the op schemas are declared once in retdet_ops.cpp.
#pragma once
// Tensor only: each kernel file includes the ATen ops it calls (ATen/ATen.h takes ~6 s of every
// file's compile; csrc/cuda includes it whole).
#include <ATen/core/Tensor.h>

namespace retdet {

at::Tensor sigmoid_focal_loss_cpu(const at::Tensor& logits, const at::Tensor& targets, double alpha, double gamma,
                                  int64_t reduction);
std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_with_grad_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                                                    double alpha, double gamma, int64_t reduction);
at::Tensor sigmoid_focal_loss_backward_cpu(const at::Tensor& grad_output, const at::Tensor& logits,
                                           const at::Tensor& targets, double alpha, double gamma, int64_t reduction);
at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold);
void winograd_input_transform_cpu(const at::Tensor& x, int64_t m, const at::Tensor& out);
at::Tensor winograd_input_transform_backward_cpu(const at::Tensor& dV, int64_t m, int64_t N, int64_t H, int64_t W);
at::Tensor winograd_output_transform_cpu(const at::Tensor& M, const std::optional<at::Tensor>& bias, bool relu,
                                         int64_t m, int64_t N, int64_t H, int64_t W);
void winograd_output_transform_backward_cpu(const at::Tensor& dy, const std::optional<at::Tensor>& relu_output,
                                            int64_t m, const at::Tensor& out);

// Shared checks and helpers (ops_common.cpp).
void check_focal_inputs(const at::Tensor& logits, const at::Tensor& targets, int64_t reduction);
void check_nms_inputs(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs);
// Sort order for batched NMS: by class, then decreasing score, ties by lower index.
at::Tensor class_major_order(const at::Tensor& scores, const at::Tensor& idxs);
// Kept indices (any order) -> by decreasing score, equal scores ordered exactly as
// torchvision.ops.batched_nms orders them for an input of num_boxes boxes.
at::Tensor order_kept_by_score(const at::Tensor& kept, const at::Tensor& scores, int64_t num_boxes);
// The largest float f such that, for every float v, (v > threshold) == (v > f).
float float_threshold(double threshold);

}  // namespace retdet
