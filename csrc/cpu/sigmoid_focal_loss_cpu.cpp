// CPU kernels of retdet::sigmoid_focal_loss(_with_grad, _backward).
//
// One pass over the logits computes the loss and/or its gradient, multithreaded over rows.
// float32 inputs with gamma in {0, 1, 2, 3} take an 8-lane vector path (vec8.h), compiled twice:
// for AVX2 and for the baseline, chosen at run time. Other inputs take the scalar path of
// focal_loss_math.h (float32 arithmetic; float64 for double). Sums are added per row, then per
// fixed chunk of rows in double, so results do not depend on the thread count. Every task runs with
// subnormals flushed (denormal_guard.h) so that its cost does not depend on the logits' values.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "../focal_loss_math.h"
#include "../ops.h"
#include "denormal_guard.h"
#include "vec8.h"

namespace retdet {
namespace {

constexpr int64_t kGrainElements = 32768;  // elements per task: enough to amortise scheduling

int64_t rows_per_task(int64_t K) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(K, 1)); }

// What one pass reads and writes. Pointers that are null are not used.
template <typename scalar_t, typename acc_t>
struct FocalPass {
  const scalar_t* x;          // (N, K) logits
  const int64_t* labels;      // (N,) class indices, or
  const scalar_t* dense;      // (N, K) float targets
  int64_t K;
  acc_t alpha, gamma;
  scalar_t* loss;             // (N, K) per-element loss (reduction none)
  bool sum_loss;              // accumulate the loss sum (reduction sum/mean)
  scalar_t* grad;             // (N, K) gradient
  const acc_t* upstream;      // (N, K) upstream gradient (backward of reduction none), or
  acc_t grad_scale;           // one factor for every element

  // Row n's label check; false when the row is ignored (label -1).
  bool row_valid(int64_t n) const {
    if (labels == nullptr) return true;
    const int64_t label = labels[n];
    TORCH_CHECK(label >= -1 && label <= K, "sigmoid_focal_loss: class index ", label, " at row ", n,
                " is outside [-1, ", K, "] (K = background, -1 = ignore)");
    return label >= 0;
  }

  void zero_row(int64_t n) const {
    if (loss) std::fill(loss + n * K, loss + (n + 1) * K, scalar_t(0));
    if (grad) std::fill(grad + n * K, grad + (n + 1) * K, scalar_t(0));
  }

  // Scalar path for columns [k0, K) of row n; returns the row's loss sum over them.
  acc_t scalar_columns(int64_t n, int64_t k0) const {
    acc_t row_sum = 0;
    for (int64_t k = k0; k < K; ++k) {
      const int64_t i = n * K + k;
      const acc_t xv = static_cast<acc_t>(x[i]);
      const acc_t t = labels ? (labels[n] == k ? acc_t(1) : acc_t(0)) : static_cast<acc_t>(dense[i]);
      if (loss || sum_loss) {
        const acc_t v = focal_loss_value(xv, t, alpha, gamma);
        if (loss) loss[i] = static_cast<scalar_t>(v);
        row_sum += v;
      }
      if (grad) {
        const acc_t up = upstream ? upstream[i] * grad_scale : grad_scale;
        grad[i] = static_cast<scalar_t>(flush_tiny(up * focal_loss_grad(xv, t, alpha, gamma)));
      }
    }
    return row_sum;
  }
};

// ---- the 8-lane float path ------------------------------------------------------------------

template <int kGamma>
RETDET_VEC_INLINE vec8::vf pow_gamma(vec8::vf b) {
  if (kGamma == 0) return vec8::splat(1.f);
  if (kGamma == 1) return b;
  if (kGamma == 2) return b * b;
  return b * b * b;
}

template <int kGamma>
RETDET_VEC_INLINE vec8::vf pow_gamma_grad(vec8::vf b) {  // d(b^gamma)/db
  if (kGamma == 0) return vec8::splat(0.f);
  if (kGamma == 1) return vec8::splat(1.f);
  if (kGamma == 2) return vec8::splat(2.f) * b;
  return vec8::splat(3.f) * b * b;
}

// The loss and gradient of 8 logits x with targets t (before the upstream factor).
template <int kGamma>
struct FocalLanes {
  vec8::vf one = vec8::splat(1.f), zero = vec8::splat(0.f), alpha, one_minus_alpha;
  bool weighted, want_loss, want_grad;

  explicit FocalLanes(const FocalPass<float, float>& a)
      : alpha(vec8::splat(a.alpha)), one_minus_alpha(vec8::splat(1.f - a.alpha)), weighted(a.alpha >= 0.f),
        want_loss(a.loss || a.sum_loss), want_grad(a.grad != nullptr) {}

  RETDET_VEC_INLINE void operator()(vec8::vf x, vec8::vf t, vec8::vf& v, vec8::vf& g) const {
    using namespace vec8;
    const vf e = exp_nonpositive(-abs(x));
    const vf inv = one / (one + e);
    const vi positive = x >= zero;
    const vf p = select(positive, inv, e * inv);  // sigmoid(x)
    const vf q = select(positive, e * inv, inv);  // 1 - sigmoid(x)
    const vf ce = select(positive, x, zero) - x * t + log1p_unit(e);
    const vf one_minus_t = one - t;
    const vf b = p * one_minus_t + q * t;         // 1 - p_t
    const vf mod = pow_gamma<kGamma>(b);
    const vf w = weighted ? alpha * t + one_minus_alpha * one_minus_t : one;
    if (want_loss) v = flush_tiny(w * ce * mod);
    if (want_grad) {
      const vf dmod = pow_gamma_grad<kGamma>(b) * p * q * (one - t - t);
      g = w * ((p * one_minus_t - q * t) * mod + ce * dmod);  // p - t, see focal_loss_math.h
    }
  }
};

// Rows [begin, end) of a float32 pass with K a multiple of 8 or more than 8: 8 columns of one row
// at a time, the last K % 8 columns scalar. Returns the loss sum of those rows.
template <int kGamma>
RETDET_VEC_INLINE double focal_rows_vec(const FocalPass<float, float>& a, int64_t begin, int64_t end) {
  using namespace vec8;
  const int64_t K = a.K, K8 = K - K % 8;
  const FocalLanes<kGamma> lanes_of(a);
  const vf one = lanes_of.one, zero = lanes_of.zero;
  const vi lane = vi{0, 1, 2, 3, 4, 5, 6, 7};
  double total = 0.0;
  for (int64_t n = begin; n < end; ++n) {
    if (!a.row_valid(n)) {
      a.zero_row(n);
      continue;
    }
    const float* xr = a.x + n * K;
    const vi label = splat_i(a.labels ? static_cast<int32_t>(a.labels[n]) : 0);
    vf row_sum = zero;
    for (int64_t k = 0; k < K8; k += 8) {
      const vf t = a.labels ? select(lane + splat_i(static_cast<int32_t>(k)) == label, one, zero)
                            : load(a.dense + n * K + k);
      vf v, g;
      lanes_of(load(xr + k), t, v, g);
      if (a.loss) store(a.loss + n * K + k, v);
      if (a.sum_loss) row_sum += v;
      if (a.grad) {
        g *= a.upstream ? load(a.upstream + n * K + k) * splat(a.grad_scale) : splat(a.grad_scale);
        store(a.grad + n * K + k, flush_tiny(g));
      }
    }
    float lanes[8];
    store(lanes, row_sum);
    float s = a.scalar_columns(n, K8);
    for (float l : lanes) s += l;
    total += s;
  }
  return total;
}

// The first `count` (<= 8) lanes of v to dst.
RETDET_VEC_INLINE void store_first(float* dst, vec8::vf v, int64_t count) {
  float lanes[8];
  vec8::store(lanes, v);
  std::memcpy(dst, lanes, count * sizeof(float));
}

// Rows [begin, end) with K < 8 (e.g. 3 or 4 classes), which have no 8 columns to vectorise: the
// rows' K * (end - begin) elements 8 at a time, each lane with its own row's target. Ignored rows
// (label -1) give 0 in their lanes, whatever their logits; a partial last vector goes through a zero-padded copy.
// Returns the loss sum, added in float over 64 vectors at a time, then in double.
template <int kGamma>
RETDET_VEC_INLINE double focal_flat_vec(const FocalPass<float, float>& a, int64_t begin, int64_t end) {
  using namespace vec8;
  const int64_t K = a.K;
  for (int64_t n = begin; n < end; ++n) a.row_valid(n);  // the label range check, before any write
  const FocalLanes<kGamma> lanes_of(a);
  const int64_t first = begin * K, last = end * K;
  int64_t row = begin, col = 0;  // of the element at i
  const vf zero = lanes_of.zero;
  double total = 0.0;
  vf block_sum = zero;
  int blocked = 0;
  auto add_block = [&] {
    float lanes[8];
    store(lanes, block_sum);
    for (float l : lanes) total += l;
    block_sum = zero;
    blocked = 0;
  };
  for (int64_t i = first; i < last; i += 8) {
    const int64_t count = std::min<int64_t>(8, last - i);
    alignas(32) float x[8] = {}, t[8] = {}, up[8] = {};
    alignas(32) int32_t keep[8] = {};  // -1 (all bits): a lane of a row that is not ignored
    for (int64_t j = 0; j < count; ++j) {
      x[j] = a.x[i + j];
      const int64_t label = a.labels ? a.labels[row] : 0;
      keep[j] = label >= 0 ? -1 : 0;
      t[j] = a.labels ? (label == col ? 1.f : 0.f) : a.dense[i + j];
      if (a.upstream) up[j] = a.upstream[i + j];
      if (++col == K) {
        col = 0;
        ++row;
      }
    }
    vf v, g;
    lanes_of(load(x), load(t), v, g);
    vi kept;
    std::memcpy(&kept, keep, sizeof(kept));
    if (a.loss || a.sum_loss) {
      v = select(kept, v, zero);  // not a product: an ignored row's NaN logit must give 0
      if (a.loss) store_first(a.loss + i, v, count);
      block_sum += v;  // padded lanes are 0
      if (++blocked == 64) add_block();
    }
    if (a.grad) {
      g *= a.upstream ? load(up) * splat(a.grad_scale) : splat(a.grad_scale);
      store_first(a.grad + i, select(kept, flush_tiny(g), zero), count);
    }
  }
  add_block();
  return total;
}

// One copy of the vector code per gamma; a macro, not a lambda, so that it is inlined into each
// target-specific function below (a lambda's body would be compiled for the default target).
#define RETDET_FOCAL_BY_GAMMA(a, gamma, begin, end)                                                      \
  switch (gamma) {                                                                                      \
    case 0: return (a).K < 8 ? focal_flat_vec<0>(a, begin, end) : focal_rows_vec<0>(a, begin, end);     \
    case 1: return (a).K < 8 ? focal_flat_vec<1>(a, begin, end) : focal_rows_vec<1>(a, begin, end);     \
    case 2: return (a).K < 8 ? focal_flat_vec<2>(a, begin, end) : focal_rows_vec<2>(a, begin, end);     \
    default: return (a).K < 8 ? focal_flat_vec<3>(a, begin, end) : focal_rows_vec<3>(a, begin, end);    \
  }

double focal_rows_baseline(const FocalPass<float, float>& a, int gamma, int64_t begin, int64_t end) {
  RETDET_FOCAL_BY_GAMMA(a, gamma, begin, end)
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) double focal_rows_avx2(const FocalPass<float, float>& a, int gamma, int64_t begin,
                                                        int64_t end) {
  RETDET_FOCAL_BY_GAMMA(a, gamma, begin, end)
}
// RETDET_DISABLE_AVX2=1 forces the baseline copy (the tests use it to check that copy too).
const bool kHasAvx2 = __builtin_cpu_supports("avx2") && std::getenv("RETDET_DISABLE_AVX2") == nullptr;
#endif

double focal_rows_float(const FocalPass<float, float>& a, int gamma, int64_t begin, int64_t end) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (kHasAvx2) return focal_rows_avx2(a, gamma, begin, end);
#endif
  return focal_rows_baseline(a, gamma, begin, end);
}

// ---- driving a pass -------------------------------------------------------------------------

template <typename scalar_t, typename acc_t>
double scalar_rows(const FocalPass<scalar_t, acc_t>& a, int64_t begin, int64_t end) {
  double total = 0.0;
  for (int64_t n = begin; n < end; ++n) {
    if (a.row_valid(n)) {
      total += a.scalar_columns(n, 0);
    } else {
      a.zero_row(n);
    }
  }
  return total;
}

// Runs the pass over all rows; returns the loss sum (0 unless a.sum_loss).
template <typename scalar_t, typename acc_t>
double run_pass(const FocalPass<scalar_t, acc_t>& a, int64_t N) {
  const int64_t grain = rows_per_task(a.K);
  const int64_t num_chunks = (N + grain - 1) / grain;
  std::vector<double> partial(num_chunks, 0.0);
  const int64_t g = static_cast<int64_t>(a.gamma);
  const bool vector_path = std::is_same<scalar_t, float>::value && a.gamma == static_cast<acc_t>(g) && g >= 0 &&
                           g <= 3 && a.K < std::numeric_limits<int32_t>::max() - 8;
  at::parallel_for(0, num_chunks, 1, [&](int64_t c0, int64_t c1) {
    ScopedFlushDenormals flush_denormals;
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t begin = c * grain, end = std::min(N, (c + 1) * grain);
      if constexpr (std::is_same<scalar_t, float>::value) {
        if (vector_path) {
          partial[c] = focal_rows_float(a, static_cast<int>(g), begin, end);
          continue;
        }
      }
      partial[c] = scalar_rows(a, begin, end);
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

at::Tensor prepare_targets(const at::Tensor& logits, const at::Tensor& targets) {
  return targets.is_floating_point() ? targets.to(logits.scalar_type()).contiguous() : targets.contiguous();
}

// The one entry all three ops use. want_loss: return the (reduced) loss. want_grad: return the
// gradient of the reduced loss times `upstream` ((N, K) for reduction none, else a scalar; an
// undefined tensor means 1).
std::tuple<at::Tensor, at::Tensor> focal_cpu(const at::Tensor& logits_in, const at::Tensor& targets_in,
                                             double alpha, double gamma, int64_t reduction, bool want_loss,
                                             bool want_grad, const at::Tensor& upstream) {
  check_focal_inputs(logits_in, targets_in, reduction);
  TORCH_CHECK(gamma >= 0, "sigmoid_focal_loss: gamma must be >= 0, got ", gamma);
  const auto logits = logits_in.contiguous();
  const auto targets = prepare_targets(logits, targets_in);
  const int64_t N = logits.size(0), K = logits.size(1);
  at::Tensor loss, grad;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "sigmoid_focal_loss_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    FocalPass<scalar_t, acc_t> a{};
    a.x = logits.data_ptr<scalar_t>();
    a.labels = targets.is_floating_point() ? nullptr : targets.data_ptr<int64_t>();
    a.dense = targets.is_floating_point() ? targets.data_ptr<scalar_t>() : nullptr;
    a.K = K;
    a.alpha = static_cast<acc_t>(alpha);
    a.gamma = static_cast<acc_t>(gamma);
    if (want_loss && reduction == kNone) {
      loss = at::empty_like(logits);
      a.loss = loss.data_ptr<scalar_t>();
    }
    a.sum_loss = want_loss && reduction != kNone;
    at::Tensor up;  // keeps the upstream buffer alive during the pass
    if (want_grad) {
      grad = at::empty_like(logits);
      a.grad = grad.data_ptr<scalar_t>();
      const acc_t mean_scale = reduction == kMean ? acc_t(1) / static_cast<acc_t>(std::max<int64_t>(N * K, 1)) : acc_t(1);
      a.grad_scale = mean_scale;
      if (upstream.defined()) {
        up = upstream.to(at::CppTypeToScalarType<acc_t>::value).contiguous();
        if (reduction == kNone) {
          TORCH_CHECK(up.sizes() == logits.sizes(), "sigmoid_focal_loss_backward: grad_output must be (N, K)");
          a.upstream = up.data_ptr<acc_t>();
        } else {
          a.grad_scale = mean_scale * up.item<acc_t>();
        }
      }
    }
    const double total = N * K > 0 ? run_pass(a, N) : 0.0;
    if (a.sum_loss) {
      const double value = reduction == kMean ? total / static_cast<double>(N * K) : total;  // 0/0: NaN, as torch.mean
      // A sum beyond the dtype's range is inf, as torch's own sum gives (a diverging run's loss must
      // reach the non-finite loss check, not fail at this conversion).
      const double limit = static_cast<double>(std::numeric_limits<scalar_t>::max());
      loss = at::scalar_tensor(std::abs(value) > limit ? std::copysign(INFINITY, value) : value, logits.options());
    }
  });
  return {loss, grad};
}

}  // namespace

at::Tensor sigmoid_focal_loss_cpu(const at::Tensor& logits, const at::Tensor& targets, double alpha, double gamma,
                                  int64_t reduction) {
  return std::get<0>(focal_cpu(logits, targets, alpha, gamma, reduction, true, false, at::Tensor()));
}

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_with_grad_cpu(const at::Tensor& logits,
                                                                    const at::Tensor& targets, double alpha,
                                                                    double gamma, int64_t reduction) {
  return focal_cpu(logits, targets, alpha, gamma, reduction, true, true, at::Tensor());
}

at::Tensor sigmoid_focal_loss_backward_cpu(const at::Tensor& grad_output, const at::Tensor& logits,
                                           const at::Tensor& targets, double alpha, double gamma,
                                           int64_t reduction) {
  return std::get<1>(focal_cpu(logits, targets, alpha, gamma, reduction, false, true, grad_output));
}

}  // namespace retdet

TORCH_LIBRARY_IMPL(retdet, CPU, m) {
  m.impl("sigmoid_focal_loss", &retdet::sigmoid_focal_loss_cpu);
  m.impl("sigmoid_focal_loss_with_grad", &retdet::sigmoid_focal_loss_with_grad_cpu);
  m.impl("sigmoid_focal_loss_backward", &retdet::sigmoid_focal_loss_backward_cpu);
}
