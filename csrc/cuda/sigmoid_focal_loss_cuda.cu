// CUDA kernels of retdet::sigmoid_focal_loss: one thread per element (grid-stride), float32
// arithmetic (float64 for double); sum/mean reduce per block, then add the block partials with
// at::sum, so the result is deterministic (no float atomics).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../focal_loss_math.h"
#include "../ops.h"

namespace retdet {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ bool element_target(const int64_t* labels, const scalar_t* dense, int64_t i, int64_t K,
                                               acc_t& t) {
  if (labels != nullptr) {
    const int64_t label = labels[i / K];
    CUDA_KERNEL_ASSERT(label >= -1 && label <= K && "sigmoid_focal_loss: class index outside [-1, K]");
    t = (i % K) == label ? acc_t(1) : acc_t(0);
    return label >= 0;
  }
  t = static_cast<acc_t>(dense[i]);
  return true;
}

template <typename scalar_t, typename acc_t>
__global__ void focal_forward_kernel(const scalar_t* __restrict__ logits, const int64_t* __restrict__ labels,
                                     const scalar_t* __restrict__ dense, int64_t numel, int64_t K, acc_t alpha,
                                     acc_t gamma, scalar_t* __restrict__ out, acc_t* __restrict__ block_sums) {
  acc_t local = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < numel; i += (int64_t)gridDim.x * blockDim.x) {
    acc_t t;
    const bool valid = element_target(labels, dense, i, K, t);
    const acc_t v = valid ? focal_loss_value(static_cast<acc_t>(logits[i]), t, alpha, gamma) : acc_t(0);
    if (out != nullptr) out[i] = static_cast<scalar_t>(v);
    local += v;
  }
  if (block_sums == nullptr) return;
  __shared__ acc_t shared[kThreads];
  shared[threadIdx.x] = local;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) block_sums[blockIdx.x] = shared[0];
}

template <typename scalar_t, typename acc_t>
__global__ void focal_backward_kernel(const acc_t* __restrict__ grad_output, bool scalar_grad, acc_t grad_scale,
                                      const scalar_t* __restrict__ logits, const int64_t* __restrict__ labels,
                                      const scalar_t* __restrict__ dense, int64_t numel, int64_t K, acc_t alpha,
                                      acc_t gamma, scalar_t* __restrict__ grad_input) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < numel; i += (int64_t)gridDim.x * blockDim.x) {
    acc_t t;
    const bool valid = element_target(labels, dense, i, K, t);
    const acc_t upstream = scalar_grad ? grad_output[0] * grad_scale : grad_output[i];
    const acc_t g = valid ? upstream * focal_loss_grad(static_cast<acc_t>(logits[i]), t, alpha, gamma) : acc_t(0);
    grad_input[i] = static_cast<scalar_t>(g);
  }
}

int num_blocks(int64_t numel) {
  // Only c10/cuda headers are included (ATen/cuda pulls in cuBLAS/cuSPARSE headers).
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t max_blocks = static_cast<int64_t>(sms) * 8;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((numel + kThreads - 1) / kThreads, max_blocks)));
}

at::Tensor prepare_targets(const at::Tensor& logits, const at::Tensor& targets) {
  return targets.is_floating_point() ? targets.to(logits.scalar_type()).contiguous() : targets.contiguous();
}

}  // namespace

at::Tensor sigmoid_focal_loss_cuda(const at::Tensor& logits_in, const at::Tensor& targets_in, double alpha,
                                   double gamma, int64_t reduction) {
  check_focal_inputs(logits_in, targets_in, reduction);
  c10::cuda::CUDAGuard guard(logits_in.device());
  const auto logits = logits_in.contiguous();
  const auto targets = prepare_targets(logits, targets_in);
  const int64_t numel = logits.numel(), K = logits.size(1);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sigmoid_focal_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = at::CppTypeToScalarType<acc_t>::value;
    const int blocks = num_blocks(numel);
    const int64_t* labels = targets.is_floating_point() ? nullptr : targets.data_ptr<int64_t>();
    const scalar_t* dense = targets.is_floating_point() ? targets.data_ptr<scalar_t>() : nullptr;
    at::Tensor elementwise, block_sums;
    if (reduction == kNone) {
      elementwise = at::empty_like(logits);
    } else {
      block_sums = at::zeros({blocks}, logits.options().dtype(acc_type));
    }
    if (numel > 0) {
      focal_forward_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          logits.data_ptr<scalar_t>(), labels, dense, numel, K, static_cast<acc_t>(alpha), static_cast<acc_t>(gamma),
          reduction == kNone ? elementwise.data_ptr<scalar_t>() : nullptr,
          reduction == kNone ? nullptr : block_sums.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (reduction == kNone) {
      out = elementwise;
    } else {
      auto total = block_sums.sum();
      if (reduction == kMean) total = total / static_cast<double>(numel);
      out = total.to(logits.scalar_type());
    }
  });
  return out;
}

at::Tensor sigmoid_focal_loss_backward_cuda(const at::Tensor& grad_output, const at::Tensor& logits_in,
                                            const at::Tensor& targets_in, double alpha, double gamma,
                                            int64_t reduction) {
  check_focal_inputs(logits_in, targets_in, reduction);
  c10::cuda::CUDAGuard guard(logits_in.device());
  const auto logits = logits_in.contiguous();
  const auto targets = prepare_targets(logits, targets_in);
  const int64_t numel = logits.numel(), K = logits.size(1);
  auto grad_input = at::empty_like(logits);
  if (numel == 0) return grad_input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sigmoid_focal_loss_backward_cuda",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = at::CppTypeToScalarType<acc_t>::value;
    // sum and mean: every element reads the one upstream value on the device (no host sync).
    const auto go = grad_output.to(acc_type).contiguous();
    const acc_t scale = reduction == kMean ? acc_t(1) / static_cast<acc_t>(numel) : acc_t(1);
    focal_backward_kernel<scalar_t, acc_t><<<num_blocks(numel), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        go.data_ptr<acc_t>(), reduction != kNone, scale, logits.data_ptr<scalar_t>(),
        targets.is_floating_point() ? nullptr : targets.data_ptr<int64_t>(),
        targets.is_floating_point() ? targets.data_ptr<scalar_t>() : nullptr, numel, K, static_cast<acc_t>(alpha),
        static_cast<acc_t>(gamma), grad_input.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_input;
}

}  // namespace retdet

TORCH_LIBRARY_IMPL(retdet, CUDA, m) {
  m.impl("sigmoid_focal_loss", &retdet::sigmoid_focal_loss_cuda);
  m.impl("sigmoid_focal_loss_backward", &retdet::sigmoid_focal_loss_backward_cuda);
}
