// CUDA kernel of retdet::batched_nms, without copying an IoU mask to the host and without
// quadratic memory.
//
// 1. Boxes go to class-major order (class, then decreasing score, ties by lower index), so each class
//    is a contiguous run and a box only needs comparing with the boxes up to the end of its class.
// 2. The IoU bit mask is built in 64 x 64 tiles, only for tiles that can hold a same-class pair, for
//    a chunk of rows at a time (a buffer of at most kMaskBudgetWords words).
// 3. One thread block does the greedy reduction on the GPU, 64 boxes at a time: resolve the 64 boxes
//    against each other in shared memory, then OR the kept boxes' mask rows into a `removed` bitmap.
// The IoU uses the same expression as torchvision, with explicitly rounded operations (no FMA
// contraction), so the comparisons round exactly as on the CPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../ops.h"

namespace retdet {
namespace {

constexpr int kBlock = 64;                             // boxes per tile side: one uint64 of mask bits
constexpr int64_t kMaskBudgetWords = int64_t(1) << 23;  // 64 MiB of mask per chunk
constexpr int kReduceThreads = 256;

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }

template <typename T>
__device__ __forceinline__ bool iou_above(const T* a, const T* b, T threshold) {
  const T w = max(T(0), sub_rn(min(a[2], b[2]), max(a[0], b[0])));
  const T h = max(T(0), sub_rn(min(a[3], b[3]), max(a[1], b[1])));
  const T inter = mul_rn(w, h);
  const T area_a = mul_rn(sub_rn(a[2], a[0]), sub_rn(a[3], a[1]));
  const T area_b = mul_rn(sub_rn(b[2], b[0]), sub_rn(b[3], b[1]));
  return div_rn(inter, sub_rn(add_rn(area_a, area_b), inter)) > threshold;
}

// Tile (row block b, column block c = b + blockIdx.x): bit j of mask[row][blockIdx.x] says that
// sorted box c*64 + j has the same class as the row's box, comes after it, and overlaps it above the
// threshold.
template <typename T>
__global__ void nms_mask_kernel(const T* __restrict__ boxes, const int64_t* __restrict__ cls, int64_t n,
                                int64_t first_row_block, const int64_t* __restrict__ last_col_block,
                                int64_t mask_width, T threshold, uint64_t* __restrict__ mask) {
  const int64_t b = first_row_block + blockIdx.y;
  const int64_t c = b + blockIdx.x;
  if (c > last_col_block[b]) return;
  __shared__ T col_boxes[kBlock * 4];
  __shared__ int64_t col_cls[kBlock];
  const int64_t col_start = c * kBlock;
  const int cols = n - col_start < kBlock ? static_cast<int>(n - col_start) : kBlock;
  if (threadIdx.x < cols) {
    for (int d = 0; d < 4; ++d) col_boxes[threadIdx.x * 4 + d] = boxes[(col_start + threadIdx.x) * 4 + d];
    col_cls[threadIdx.x] = cls[col_start + threadIdx.x];
  }
  __syncthreads();
  const int64_t row = b * kBlock + threadIdx.x;
  if (row >= n) return;
  T row_box[4];
  for (int d = 0; d < 4; ++d) row_box[d] = boxes[row * 4 + d];
  const int64_t row_cls = cls[row];
  uint64_t bits = 0;
  for (int j = (c == b ? threadIdx.x + 1 : 0); j < cols; ++j) {
    if (col_cls[j] == row_cls && iou_above(row_box, col_boxes + j * 4, threshold)) bits |= uint64_t(1) << j;
  }
  mask[((b - first_row_block) * kBlock + threadIdx.x) * mask_width + blockIdx.x] = bits;
}

// Greedy pass over row blocks [first, last): kept[b] gets the kept boxes' bits of block b.
__global__ void nms_reduce_kernel(const uint64_t* __restrict__ mask, int64_t n, int64_t first, int64_t last,
                                  const int64_t* __restrict__ last_col_block, int64_t mask_width,
                                  uint64_t* __restrict__ removed, uint64_t* __restrict__ kept) {
  __shared__ uint64_t diag[kBlock];
  __shared__ uint64_t kept_bits;
  for (int64_t b = first; b < last; ++b) {
    const uint64_t* rows = mask + (b - first) * kBlock * mask_width;
    const int rows_here = n - b * kBlock < kBlock ? static_cast<int>(n - b * kBlock) : kBlock;
    if (threadIdx.x < rows_here) diag[threadIdx.x] = rows[threadIdx.x * mask_width];
    __syncthreads();
    if (threadIdx.x == 0) {
      uint64_t gone = removed[b], keep = 0;
      for (int r = 0; r < rows_here; ++r) {
        if (!((gone >> r) & 1)) {
          keep |= uint64_t(1) << r;
          gone |= diag[r];
        }
      }
      kept_bits = keep;
      kept[b] = keep;
    }
    __syncthreads();
    const uint64_t keep = kept_bits;
    for (int64_t c = b + 1 + threadIdx.x; c <= last_col_block[b]; c += blockDim.x) {
      uint64_t acc = 0;
      for (uint64_t bits = keep; bits != 0; bits &= bits - 1) {
        acc |= rows[(__ffsll(static_cast<long long>(bits)) - 1) * mask_width + (c - b)];
      }
      removed[c] |= acc;
    }
    __syncthreads();
  }
}

}  // namespace

at::Tensor batched_nms_cuda(const at::Tensor& boxes_in, const at::Tensor& scores, const at::Tensor& idxs_in,
                            double iou_threshold) {
  check_nms_inputs(boxes_in, scores, idxs_in);
  c10::cuda::CUDAGuard guard(boxes_in.device());
  const int64_t n = boxes_in.size(0);
  auto long_opts = boxes_in.options().dtype(at::kLong);
  if (n == 0) return at::empty({0}, long_opts);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const auto idxs = idxs_in.to(at::kLong);
  const auto order = class_major_order(scores, idxs);
  const auto boxes = (boxes_in.scalar_type() == at::kDouble ? boxes_in : boxes_in.to(at::kFloat))
                         .index_select(0, order).contiguous();
  const auto cls = idxs.index_select(0, order).contiguous();

  // For row block b: the last column block holding a box of the same class as any of its rows.
  const int64_t num_blocks = (n + kBlock - 1) / kBlock;
  const auto class_end = at::searchsorted(cls, cls, /*out_int32=*/false, /*right=*/true);  // (n,)
  const auto block_last_row = at::clamp_max(at::arange(1, num_blocks + 1, long_opts) * kBlock - 1, n - 1);
  const auto last_col_block = at::floor_divide(class_end.index_select(0, block_last_row) - 1, kBlock).contiguous();
  const int64_t mask_width =
      (last_col_block - at::arange(num_blocks, long_opts)).max().item<int64_t>() + 1;  // one sync
  const int64_t chunk_blocks = std::max<int64_t>(1, kMaskBudgetWords / (kBlock * mask_width));

  auto mask = at::empty({std::min(chunk_blocks, num_blocks) * kBlock, mask_width}, long_opts);
  auto removed = at::zeros({num_blocks}, long_opts);
  auto kept = at::zeros({num_blocks}, long_opts);
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "batched_nms_cuda", [&] {
    const scalar_t thr = std::is_same<scalar_t, float>::value ? static_cast<scalar_t>(float_threshold(iou_threshold))
                                                             : static_cast<scalar_t>(iou_threshold);
    for (int64_t first = 0; first < num_blocks; first += chunk_blocks) {
      const int64_t last = std::min(num_blocks, first + chunk_blocks);
      const dim3 grid(static_cast<unsigned>(mask_width), static_cast<unsigned>(last - first));
      nms_mask_kernel<scalar_t><<<grid, kBlock, 0, stream>>>(
          boxes.data_ptr<scalar_t>(), cls.data_ptr<int64_t>(), n, first, last_col_block.data_ptr<int64_t>(),
          mask_width, thr, reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>()));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      nms_reduce_kernel<<<1, kReduceThreads, 0, stream>>>(
          reinterpret_cast<const uint64_t*>(mask.data_ptr<int64_t>()), n, first, last,
          last_col_block.data_ptr<int64_t>(), mask_width, reinterpret_cast<uint64_t*>(removed.data_ptr<int64_t>()),
          reinterpret_cast<uint64_t*>(kept.data_ptr<int64_t>()));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  // Unpack the kept bits, map sorted positions back to indices, order by score.
  const auto bit = at::arange(kBlock, long_opts);
  const auto keep_flags = at::bitwise_and(at::bitwise_right_shift(kept.unsqueeze(1), bit), 1).reshape({-1}).slice(0, 0, n);
  return order_kept_by_score(order.masked_select(keep_flags.to(at::kBool)), scores, n);
}

}  // namespace retdet

TORCH_LIBRARY_IMPL(retdet, CUDA, m) { m.impl("batched_nms", &retdet::batched_nms_cuda); }
