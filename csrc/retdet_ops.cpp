// The op schemas, declared once. Kernels register per device in cpu/ and cuda/; autocast below;
// fake (meta) kernels and autograd are registered from Python (retdet/ops/).
#include <Python.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(retdet, m) {
  // reduction: 0 = none, 1 = mean (over all N*K elements), 2 = sum.
  // targets: int64 (N,) class indices (K = background, -1 = ignore) or floating (N, K).
  m.def("sigmoid_focal_loss(Tensor logits, Tensor targets, float alpha, float gamma, int reduction) -> Tensor");
  // The loss and, in the same pass, its gradient w.r.t. logits (of the reduced loss; elementwise
  // for reduction none): what autograd saves so that backward is one multiplication.
  m.def(
      "sigmoid_focal_loss_with_grad(Tensor logits, Tensor targets, float alpha, float gamma, int reduction) -> "
      "(Tensor, Tensor)");
  // Recomputes the gradient from the logits (the backward of sigmoid_focal_loss).
  m.def(
      "sigmoid_focal_loss_backward(Tensor grad_output, Tensor logits, Tensor targets, float alpha, float gamma, "
      "int reduction) -> Tensor");
  // Indices of the kept boxes, by decreasing score; equal scores keep the lower index first.
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  // Winograd F(m x m, 3 x 3), m = 2 or 4 (retdet/layers/winograd.py): the transforms of a 3x3 stride-1
  // padding-1 convolution and their adjoints. x, y: (N, C, H, W) images, channels-last in memory;
  // V, M: ((m+2)^2, N * ceil(H/m) * ceil(W/m), C) transformed tiles. The transforms into the tile
  // domain write into a given tensor, so the caller can reuse one workspace (fresh pages cost more
  // than the transform; retdet/layers/winograd.py).
  m.def("winograd_input_transform(Tensor x, int m, Tensor(a!) out) -> ()");
  m.def("winograd_input_transform_backward(Tensor dV, int m, int N, int H, int W) -> Tensor");
  // y = relu?(A^T M A + bias) per tile.
  m.def("winograd_output_transform(Tensor M, Tensor? bias, bool relu, int m, int N, int H, int W) -> Tensor");
  // dM = A (dy * [relu_output > 0]) A^T per tile (no mask when relu_output is None).
  m.def("winograd_output_transform_backward(Tensor dy, Tensor? relu_output, int m, Tensor(a!) out) -> ()");
}

namespace retdet {
namespace {

// What autocast's cast to float32 does to an argument (at::autocast::cached_cast, whose header would
// double this file's compile time; its cache holds only weights, which these ops never see): a
// float16/bfloat16 tensor on the autocast device becomes float32; any other tensor (integer class
// indices included) passes as it is.
at::Tensor to_float32(const at::Tensor& t, c10::DeviceType device) {
  const bool reduced = t.defined() && t.is_floating_point() && t.device().type() == device &&
                       t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble;
  return reduced ? t.to(at::kFloat) : t;
}

// Under autocast the loss is computed from float32 logits (as autocast does for
// binary_cross_entropy_with_logits) so that the loss and its gradient stay float32.
template <c10::DeviceType device, c10::DispatchKey key>
at::Tensor focal_loss_autocast(const at::Tensor& logits, const at::Tensor& targets, double alpha, double gamma,
                               int64_t reduction) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("retdet::sigmoid_focal_loss", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, double, int64_t)>();
  return op.call(to_float32(logits, device), to_float32(targets, device), alpha, gamma, reduction);
}

template <c10::DeviceType device, c10::DispatchKey key>
std::tuple<at::Tensor, at::Tensor> focal_loss_with_grad_autocast(const at::Tensor& logits, const at::Tensor& targets,
                                                                 double alpha, double gamma, int64_t reduction) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("retdet::sigmoid_focal_loss_with_grad", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double, double,
                                                                 int64_t)>();
  return op.call(to_float32(logits, device), to_float32(targets, device), alpha, gamma, reduction);
}

// NMS compares IoUs against a threshold: do it on float32 boxes, never half.
template <c10::DeviceType device, c10::DispatchKey key>
at::Tensor batched_nms_autocast(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double iou_threshold) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("retdet::batched_nms", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>();
  return op.call(to_float32(boxes, device), to_float32(scores, device), idxs, iou_threshold);
}

}  // namespace
}  // namespace retdet

TORCH_LIBRARY_IMPL(retdet, AutocastCPU, m) {
  m.impl("sigmoid_focal_loss", retdet::focal_loss_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
  m.impl("sigmoid_focal_loss_with_grad",
         retdet::focal_loss_with_grad_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
  m.impl("batched_nms", retdet::batched_nms_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
}

TORCH_LIBRARY_IMPL(retdet, AutocastCUDA, m) {
  m.impl("sigmoid_focal_loss", retdet::focal_loss_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
  m.impl("sigmoid_focal_loss_with_grad",
         retdet::focal_loss_with_grad_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
  m.impl("batched_nms", retdet::batched_nms_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
}

// A tiny Python module so `import retdet._C` loads the library (and its registrations) and can say
// which kernels were compiled.
static PyObject* compiled_with_cuda(PyObject*, PyObject*) {
#ifdef RETDET_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"compiled_with_cuda", compiled_with_cuda, METH_NOARGS, "Whether the CUDA kernels were compiled."},
    {nullptr, nullptr, 0, nullptr}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "retdet compiled ops", -1, methods};

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
