// CUDA kernels of retdet::sigmoid_focal_loss(_with_grad, _backward): one thread per element
// (grid-stride), float32 arithmetic (float64 for double). The loss sum is reduced per block, then the
// block partials are added with at::sum: deterministic, no float atomics, no host synchronisation.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../focal_loss_math.h"
#include "../ops.h"

namespace retdet {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t, typename acc_t>
struct FocalPass {
  const scalar_t* x;
  const int64_t* labels;  // (N,) class indices, or
  const scalar_t* dense;  // (N, K) float targets
  int64_t numel, K;
  acc_t alpha, gamma;
  scalar_t* loss;                 // per element (reduction none), or null
  acc_t* block_sums;              // per block loss sums (sum/mean), or null
  scalar_t* grad;                 // per element gradient, or null
  const acc_t* upstream;          // (N, K) upstream gradient, or null
  const acc_t* upstream_scalar;   // one upstream value on the device, or null (= 1)
  acc_t grad_scale;               // 1, or 1 / numel for mean
};

template <typename scalar_t, typename acc_t>
__global__ void focal_kernel(const FocalPass<scalar_t, acc_t> a) {
  acc_t local = 0;
  const acc_t scalar_up = a.upstream_scalar ? *a.upstream_scalar * a.grad_scale : a.grad_scale;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.numel; i += (int64_t)gridDim.x * blockDim.x) {
    acc_t t;
    bool valid = true;
    if (a.labels != nullptr) {
      const int64_t label = a.labels[i / a.K];
      CUDA_KERNEL_ASSERT(label >= -1 && label <= a.K && "sigmoid_focal_loss: class index outside [-1, K]");
      t = (i % a.K) == label ? acc_t(1) : acc_t(0);
      valid = label >= 0;
    } else {
      t = static_cast<acc_t>(a.dense[i]);
    }
    const acc_t x = static_cast<acc_t>(a.x[i]);
    if (a.loss != nullptr || a.block_sums != nullptr) {
      const acc_t v = valid ? focal_loss_value(x, t, a.alpha, a.gamma) : acc_t(0);
      if (a.loss != nullptr) a.loss[i] = static_cast<scalar_t>(v);
      local += v;
    }
    if (a.grad != nullptr) {
      const acc_t up = a.upstream != nullptr ? a.upstream[i] * a.grad_scale : scalar_up;
      const acc_t g = valid ? flush_tiny(up * focal_loss_grad(x, t, a.alpha, a.gamma)) : acc_t(0);
      a.grad[i] = static_cast<scalar_t>(g);
    }
  }
  if (a.block_sums == nullptr) return;
  __shared__ acc_t shared[kThreads];
  shared[threadIdx.x] = local;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) a.block_sums[blockIdx.x] = shared[0];
}

int num_blocks(int64_t numel) {
  // Only c10/cuda headers are included (ATen/cuda pulls in cuBLAS/cuSPARSE headers).
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t max_blocks = static_cast<int64_t>(sms) * 8;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((numel + kThreads - 1) / kThreads, max_blocks)));
}

// The one entry all three ops use (see the CPU kernel's focal_cpu for the contract).
std::tuple<at::Tensor, at::Tensor> focal_cuda(const at::Tensor& logits_in, const at::Tensor& targets_in,
                                              double alpha, double gamma, int64_t reduction, bool want_loss,
                                              bool want_grad, const at::Tensor& upstream) {
  check_focal_inputs(logits_in, targets_in, reduction);
  TORCH_CHECK(gamma >= 0, "sigmoid_focal_loss: gamma must be >= 0, got ", gamma);
  c10::cuda::CUDAGuard guard(logits_in.device());
  const auto logits = logits_in.contiguous();
  const auto targets =
      targets_in.is_floating_point() ? targets_in.to(logits.scalar_type()).contiguous() : targets_in.contiguous();
  const int64_t numel = logits.numel();
  at::Tensor loss, grad;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sigmoid_focal_loss_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = at::CppTypeToScalarType<acc_t>::value;
    const int blocks = num_blocks(numel);
    FocalPass<scalar_t, acc_t> a{};
    a.x = logits.data_ptr<scalar_t>();
    a.labels = targets.is_floating_point() ? nullptr : targets.data_ptr<int64_t>();
    a.dense = targets.is_floating_point() ? targets.data_ptr<scalar_t>() : nullptr;
    a.numel = numel;
    a.K = logits.size(1);
    a.alpha = static_cast<acc_t>(alpha);
    a.gamma = static_cast<acc_t>(gamma);
    at::Tensor block_sums, up;
    if (want_loss && reduction == kNone) {
      loss = at::empty_like(logits);
      a.loss = loss.data_ptr<scalar_t>();
    } else if (want_loss) {
      block_sums = at::zeros({blocks}, logits.options().dtype(acc_type));
      a.block_sums = block_sums.data_ptr<acc_t>();
    }
    if (want_grad) {
      grad = at::empty_like(logits);
      a.grad = grad.data_ptr<scalar_t>();
      a.grad_scale = reduction == kMean ? acc_t(1) / static_cast<acc_t>(std::max<int64_t>(numel, 1)) : acc_t(1);
      if (upstream.defined()) {
        up = upstream.to(acc_type).contiguous();
        if (reduction == kNone) {
          TORCH_CHECK(up.sizes() == logits.sizes(), "sigmoid_focal_loss_backward: grad_output must be (N, K)");
          a.upstream = up.data_ptr<acc_t>();
        } else {
          a.upstream_scalar = up.data_ptr<acc_t>();
        }
      }
    }
    if (numel > 0) {
      focal_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(a);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (want_loss && reduction != kNone) {
      auto total = block_sums.sum();
      if (reduction == kMean) total = total / static_cast<double>(numel);
      loss = total.to(logits.scalar_type());
    }
  });
  return {loss, grad};
}

}  // namespace

at::Tensor sigmoid_focal_loss_cuda(const at::Tensor& logits, const at::Tensor& targets, double alpha, double gamma,
                                   int64_t reduction) {
  return std::get<0>(focal_cuda(logits, targets, alpha, gamma, reduction, true, false, at::Tensor()));
}

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_with_grad_cuda(const at::Tensor& logits,
                                                                     const at::Tensor& targets, double alpha,
                                                                     double gamma, int64_t reduction) {
  return focal_cuda(logits, targets, alpha, gamma, reduction, true, true, at::Tensor());
}

at::Tensor sigmoid_focal_loss_backward_cuda(const at::Tensor& grad_output, const at::Tensor& logits,
                                            const at::Tensor& targets, double alpha, double gamma,
                                            int64_t reduction) {
  return std::get<1>(focal_cuda(logits, targets, alpha, gamma, reduction, false, true, grad_output));
}

}  // namespace retdet

TORCH_LIBRARY_IMPL(retdet, CUDA, m) {
  m.impl("sigmoid_focal_loss", &retdet::sigmoid_focal_loss_cuda);
  m.impl("sigmoid_focal_loss_with_grad", &retdet::sigmoid_focal_loss_with_grad_cuda);
  m.impl("sigmoid_focal_loss_backward", &retdet::sigmoid_focal_loss_backward_cuda);
}
