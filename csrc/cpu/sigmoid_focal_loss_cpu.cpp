// CPU kernels of retdet::sigmoid_focal_loss: one pass over the logits, multithreaded over rows.
// Arithmetic in float32 (float64 for double inputs); reductions add per-row sums in fixed chunks,
// in double, so the result does not depend on the number of threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../focal_loss_math.h"
#include "../ops.h"

namespace retdet {
namespace {

constexpr int64_t kGrainElements = 32768;  // elements per task: enough to amortise scheduling

template <typename scalar_t>
struct Targets {
  const int64_t* labels;  // (N,) class indices, or nullptr
  const scalar_t* dense;  // (N, K) float targets, or nullptr
  int64_t K;
};

template <typename scalar_t>
Targets<scalar_t> view_targets(const at::Tensor& targets, int64_t K) {
  if (targets.is_floating_point()) return {nullptr, targets.data_ptr<scalar_t>(), K};
  return {targets.data_ptr<int64_t>(), nullptr, K};
}

// Calls fn(i, x, t) for the K elements of row n (i = n * K + k); returns false for an ignored row.
template <typename acc_t, typename scalar_t, typename Fn>
inline bool visit_row(const scalar_t* logits, const Targets<scalar_t>& tg, int64_t n, Fn&& fn) {
  const int64_t K = tg.K;
  const scalar_t* x = logits + n * K;
  if (tg.labels != nullptr) {
    const int64_t label = tg.labels[n];
    TORCH_CHECK(label >= -1 && label <= K, "sigmoid_focal_loss: class index ", label, " at row ", n,
                " is outside [-1, ", K, "] (K = background, -1 = ignore)");
    if (label < 0) return false;
    for (int64_t k = 0; k < K; ++k) fn(n * K + k, static_cast<acc_t>(x[k]), k == label ? acc_t(1) : acc_t(0));
    return true;
  }
  const scalar_t* t = tg.dense + n * K;
  for (int64_t k = 0; k < K; ++k) fn(n * K + k, static_cast<acc_t>(x[k]), static_cast<acc_t>(t[k]));
  return true;
}

at::Tensor prepare_targets(const at::Tensor& logits, const at::Tensor& targets) {
  return targets.is_floating_point() ? targets.to(logits.scalar_type()).contiguous() : targets.contiguous();
}

int64_t rows_per_task(int64_t K) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(K, 1)); }

}  // namespace

at::Tensor sigmoid_focal_loss_cpu(const at::Tensor& logits_in, const at::Tensor& targets_in, double alpha,
                                  double gamma, int64_t reduction) {
  check_focal_inputs(logits_in, targets_in, reduction);
  const auto logits = logits_in.contiguous();
  const auto targets = prepare_targets(logits, targets_in);
  const int64_t N = logits.size(0), K = logits.size(1);
  const int64_t grain = rows_per_task(K);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sigmoid_focal_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t a = static_cast<acc_t>(alpha), g = static_cast<acc_t>(gamma);
    const scalar_t* x = logits.data_ptr<scalar_t>();
    const auto tg = view_targets<scalar_t>(targets, K);
    if (reduction == kNone) {
      out = at::empty_like(logits);
      scalar_t* o = out.data_ptr<scalar_t>();
      at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const bool valid = visit_row<acc_t>(x, tg, n, [&](int64_t i, acc_t xv, acc_t t) {
            o[i] = static_cast<scalar_t>(focal_loss_value(xv, t, a, g));
          });
          if (!valid) std::fill(o + n * K, o + (n + 1) * K, scalar_t(0));
        }
      });
      return;
    }
    const int64_t num_chunks = (N + grain - 1) / grain;
    std::vector<double> partial(num_chunks, 0.0);
    at::parallel_for(0, num_chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double chunk = 0.0;
        for (int64_t n = c * grain; n < std::min(N, (c + 1) * grain); ++n) {
          acc_t row = 0;
          visit_row<acc_t>(x, tg, n, [&](int64_t, acc_t xv, acc_t t) { row += focal_loss_value(xv, t, a, g); });
          chunk += row;
        }
        partial[c] = chunk;
      }
    });
    double total = 0.0;
    for (double p : partial) total += p;
    if (reduction == kMean) total /= static_cast<double>(N * K);  // N*K == 0 gives NaN, like torch.mean
    out = at::scalar_tensor(total, logits.options());
  });
  return out;
}

at::Tensor sigmoid_focal_loss_backward_cpu(const at::Tensor& grad_output, const at::Tensor& logits_in,
                                           const at::Tensor& targets_in, double alpha, double gamma,
                                           int64_t reduction) {
  check_focal_inputs(logits_in, targets_in, reduction);
  const auto logits = logits_in.contiguous();
  const auto targets = prepare_targets(logits, targets_in);
  const int64_t N = logits.size(0), K = logits.size(1);
  auto grad_input = at::empty_like(logits);
  if (logits.numel() == 0) return grad_input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sigmoid_focal_loss_backward_cpu",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t a = static_cast<acc_t>(alpha), g = static_cast<acc_t>(gamma);
    const scalar_t* x = logits.data_ptr<scalar_t>();
    const auto tg = view_targets<scalar_t>(targets, K);
    // none: grad_output is (N, K); sum and mean: one scalar for every element.
    const auto go = grad_output.to(at::CppTypeToScalarType<acc_t>::value).contiguous();
    const acc_t* gptr = go.data_ptr<acc_t>();
    const acc_t gscalar = reduction == kNone ? acc_t(0)
                          : reduction == kMean ? gptr[0] / static_cast<acc_t>(N * K)
                                               : gptr[0];
    scalar_t* gi = grad_input.data_ptr<scalar_t>();
    at::parallel_for(0, N, rows_per_task(K), [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const bool valid = visit_row<acc_t>(x, tg, n, [&](int64_t i, acc_t xv, acc_t t) {
          const acc_t upstream = reduction == kNone ? gptr[i] : gscalar;
          gi[i] = static_cast<scalar_t>(upstream * focal_loss_grad(xv, t, a, g));
        });
        if (!valid) std::fill(gi + n * K, gi + (n + 1) * K, scalar_t(0));
      }
    });
  });
  return grad_input;
}

}  // namespace retdet

TORCH_LIBRARY_IMPL(retdet, CPU, m) {
  m.impl("sigmoid_focal_loss", &retdet::sigmoid_focal_loss_cpu);
  m.impl("sigmoid_focal_loss_backward", &retdet::sigmoid_focal_loss_backward_cpu);
}
