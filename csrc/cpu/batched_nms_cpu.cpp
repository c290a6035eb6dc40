// CPU kernel of retdet::batched_nms.
//
// Boxes are put in class-major order (by class, then decreasing score, ties by lower index), so each
// class is a contiguous run; classes run in parallel, and inside a class the greedy loop compares a
// kept box with every later box of its class only. The IoU is computed with the same expression and
// float rounding as torchvision's kernel (inter / (area_i + area_j - inter) > threshold), so the kept
// set is identical; the inner loop is branch-free so the compiler can vectorise it.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../ops.h"

namespace retdet {
namespace {

template <typename T>
struct SortedBoxes {  // structure of arrays, in class-major order
  std::vector<T> x1, y1, x2, y2, area;
};

// Greedy NMS over positions [begin, end) of one class; sets suppressed[j] = 1 for removed boxes.
template <typename T, typename Thr>
void nms_one_class(const SortedBoxes<T>& b, int64_t begin, int64_t end, Thr threshold, uint8_t* suppressed) {
  for (int64_t i = begin; i < end; ++i) {
    if (suppressed[i]) continue;
    const T ix1 = b.x1[i], iy1 = b.y1[i], ix2 = b.x2[i], iy2 = b.y2[i], iarea = b.area[i];
    const T* x1 = b.x1.data();
    const T* y1 = b.y1.data();
    const T* x2 = b.x2.data();
    const T* y2 = b.y2.data();
    const T* area = b.area.data();
    for (int64_t j = i + 1; j < end; ++j) {
      const T w = std::max(T(0), std::min(ix2, x2[j]) - std::max(ix1, x1[j]));
      const T h = std::max(T(0), std::min(iy2, y2[j]) - std::max(iy1, y1[j]));
      const T inter = w * h;
      const T iou = inter / (iarea + area[j] - inter);
      suppressed[j] |= static_cast<uint8_t>(iou > threshold);
    }
  }
}

}  // namespace

at::Tensor batched_nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor& idxs_in,
                           double iou_threshold) {
  check_nms_inputs(boxes_in, scores_in, idxs_in);
  const int64_t N = boxes_in.size(0);
  if (N == 0) return at::empty({0}, boxes_in.options().dtype(at::kLong));
  // Half inputs are compared in float32 (as under autocast).
  const auto boxes = boxes_in.scalar_type() == at::kDouble ? boxes_in.contiguous() : boxes_in.to(at::kFloat).contiguous();
  const auto idxs = idxs_in.to(at::kLong).contiguous();
  const auto order = class_major_order(scores_in, idxs);  // (N,) int64
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* cls = idxs.data_ptr<int64_t>();

  // Class runs: [starts[r], starts[r + 1]) in the sorted order.
  std::vector<int64_t> starts{0};
  for (int64_t i = 1; i < N; ++i)
    if (cls[ord[i]] != cls[ord[i - 1]]) starts.push_back(i);
  starts.push_back(N);
  const int64_t num_runs = static_cast<int64_t>(starts.size()) - 1;

  std::vector<uint8_t> suppressed(N, 0);
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "batched_nms_cpu", [&] {
    const scalar_t* bx = boxes.data_ptr<scalar_t>();
    SortedBoxes<scalar_t> sb;
    for (auto* v : {&sb.x1, &sb.y1, &sb.x2, &sb.y2, &sb.area}) v->resize(N);
    for (int64_t i = 0; i < N; ++i) {
      const scalar_t* b = bx + ord[i] * 4;
      sb.x1[i] = b[0], sb.y1[i] = b[1], sb.x2[i] = b[2], sb.y2[i] = b[3];
      sb.area[i] = (b[2] - b[0]) * (b[3] - b[1]);
    }
    // float boxes compare against the float threshold that splits floats exactly as the double does.
    using thr_t = scalar_t;
    const thr_t thr = std::is_same<scalar_t, float>::value ? static_cast<thr_t>(float_threshold(iou_threshold))
                                                          : static_cast<thr_t>(iou_threshold);
    // A class's cost grows with its size squared: one task per class run.
    at::parallel_for(0, num_runs, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) nms_one_class(sb, starts[r], starts[r + 1], thr, suppressed.data());
    });
  });

  std::vector<int64_t> kept;
  for (int64_t i = 0; i < N; ++i)
    if (!suppressed[i]) kept.push_back(ord[i]);
  auto kept_t = at::from_blob(kept.data(), {static_cast<int64_t>(kept.size())}, at::kLong).clone();
  return order_kept_by_score(kept_t, scores_in, N);
}

}  // namespace retdet

TORCH_LIBRARY_IMPL(retdet, CPU, m) { m.impl("batched_nms", &retdet::batched_nms_cpu); }
