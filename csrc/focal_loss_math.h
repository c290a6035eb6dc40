// Element-wise sigmoid focal loss and its derivative, shared by the CPU and CUDA kernels so both
// compute the same expressions: in float32 for float, half and bfloat16 inputs, in float64 for double.
//
//   p = sigmoid(x), ce = BCE-with-logits(x, t), 1 - p_t = p (1 - t) + (1 - p) t
//   loss = alpha_t * ce * (1 - p_t)^gamma,   alpha_t = alpha t + (1 - alpha)(1 - t)  (alpha >= 0)
//   dloss/dx = alpha_t * [ (p - t)(1 - p_t)^gamma + gamma (1 - p_t)^(gamma - 1) p (1 - p)(1 - 2t) ce ]
//
// p - t is computed as p (1 - t) - (1 - p) t: the same number, but for a confident positive (t = 1,
// p = 0.99998) it is -(1 - p) from the accurately computed 1 - p, not a float32 difference of two
// numbers near 1 that loses most of its digits (and is 0 above x = 17).
//
// Results (loss elements and gradients) computed in float32 whose magnitude is below 2^-100 are
// returned as 0 (flush_tiny). Confident logits make such values by the million (an easy negative at
// x = -50 has p^2 ~ 1e-44, a subnormal float), and subnormal operands make every later operation on
// them (the backward's scaling by the loss normaliser, the head's convolution backward) take a slow
// microcode path on x86 CPUs: a step's cost then depends on the logits' values. 2^-100 rather than
// the smallest normal float (2^-126) leaves room for that later scaling (by down to 2^-26) to stay
// normal. No gradient this small moves a float32 weight. float64 (gradcheck) results are exact.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define RETDET_HD __host__ __device__ __forceinline__
#else
#define RETDET_HD inline
#endif

namespace retdet {

enum Reduction : int64_t { kNone = 0, kMean = 1, kSum = 2 };

// Overloads so one template serves float (float, half, bfloat16 inputs) and double (gradcheck).
RETDET_HD float m_exp(float v) { return expf(v); }
RETDET_HD double m_exp(double v) { return exp(v); }
RETDET_HD float m_log1p(float v) { return log1pf(v); }
RETDET_HD double m_log1p(double v) { return log1p(v); }
RETDET_HD float m_pow(float b, float e) { return powf(b, e); }
RETDET_HD double m_pow(double b, double e) { return pow(b, e); }
RETDET_HD float m_abs(float v) { return fabsf(v); }
RETDET_HD double m_abs(double v) { return fabs(v); }

// b^gamma for b in [0, 1]; gamma = 0..3 (the common cases) without pow().
template <typename T>
RETDET_HD T focal_pow(T b, T gamma) {
  if (gamma == T(2)) return b * b;
  if (gamma == T(1)) return b;
  if (gamma == T(0)) return T(1);
  if (gamma == T(3)) return b * b * b;
  return b > T(0) ? m_pow(b, gamma) : T(0);
}

// d(b^gamma)/db; taken as 0 at b == 0 for gamma < 1 (p (1 - p) == 0 multiplies it there anyway).
template <typename T>
RETDET_HD T focal_pow_grad(T b, T gamma) {
  if (gamma == T(2)) return T(2) * b;
  if (gamma == T(1)) return T(1);
  if (gamma == T(0)) return T(0);
  if (gamma == T(3)) return T(3) * b * b;
  return b > T(0) ? gamma * m_pow(b, gamma - T(1)) : T(0);
}

template <typename T>
struct SigmoidTerms {
  T p;   // sigmoid(x)
  T q;   // 1 - sigmoid(x), computed as sigmoid(-x) so it keeps its precision near 0
  T ce;  // max(x, 0) - x t + log(1 + exp(-|x|))
};

template <typename T>
RETDET_HD SigmoidTerms<T> sigmoid_terms(T x, T t) {
  const T e = m_exp(-m_abs(x));  // in (0, 1]: never overflows
  const T inv = T(1) / (T(1) + e);
  SigmoidTerms<T> s;
  s.p = x >= T(0) ? inv : e * inv;
  s.q = x >= T(0) ? e * inv : inv;
  s.ce = (x > T(0) ? x : T(0)) - x * t + m_log1p(e);
  return s;
}

// 0 for float results below 2^-100 in magnitude (see the top of this file); doubles unchanged.
RETDET_HD float flush_tiny(float v) { return fabsf(v) < 0x1p-100f ? 0.f : v; }
RETDET_HD double flush_tiny(double v) { return v; }

template <typename T>
RETDET_HD T alpha_weight(T t, T alpha) {
  return alpha >= T(0) ? alpha * t + (T(1) - alpha) * (T(1) - t) : T(1);
}

template <typename T>
RETDET_HD T focal_loss_value(T x, T t, T alpha, T gamma) {
  const SigmoidTerms<T> s = sigmoid_terms(x, t);
  const T b = s.p * (T(1) - t) + s.q * t;
  return flush_tiny(alpha_weight(t, alpha) * s.ce * focal_pow(b, gamma));
}

template <typename T>
RETDET_HD T focal_loss_grad(T x, T t, T alpha, T gamma) {
  const SigmoidTerms<T> s = sigmoid_terms(x, t);
  const T b = s.p * (T(1) - t) + s.q * t;
  const T dmod = focal_pow_grad(b, gamma) * s.p * s.q * (T(1) - T(2) * t);
  const T p_minus_t = s.p * (T(1) - t) - s.q * t;
  return alpha_weight(t, alpha) * (p_minus_t * focal_pow(b, gamma) + s.ce * dmod);  // flushed after scaling
}

}  // namespace retdet
