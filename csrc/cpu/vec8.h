// Eight-lane float vectors (GCC/Clang vector extensions) and the math the focal loss needs.
//
// The compiler lowers these to whatever the function's target supports: two SSE registers on
// baseline x86-64, one AVX2 register in functions compiled with target("avx2,fma"), NEON on arm64.
// exp and log1p are polynomial approximations with float32 accuracy (about 1e-7 relative).
#pragma once
#include <cstdint>
#include <cstring>

namespace retdet {
namespace vec8 {

typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));

#define RETDET_VEC_INLINE inline __attribute__((always_inline))

RETDET_VEC_INLINE vf splat(float v) { return vf{v, v, v, v, v, v, v, v}; }
RETDET_VEC_INLINE vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
RETDET_VEC_INLINE void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
RETDET_VEC_INLINE vf select(vi mask, vf a, vf b) { return mask ? a : b; }
RETDET_VEC_INLINE vi splat_i(int32_t v) { return vi{v, v, v, v, v, v, v, v}; }
RETDET_VEC_INLINE vf abs(vf x) { return (vf)((vi)x & splat_i(0x7fffffff)); }

// 0 where |v| < 2^-100 (the kernels' flush of tiny results, as flush_tiny in focal_loss_math.h).
RETDET_VEC_INLINE vf flush_tiny(vf v) { return select(abs(v) < splat(0x1p-100f), splat(0.f), v); }

// exp(y) for y <= 0 (Cephes' expf scheme): y = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6
// polynomial, 2^n put into the exponent bits. y is clamped at -87 (exp = 1.6e-38, still normal).
RETDET_VEC_INLINE vf exp_nonpositive(vf y) {
  y = select(y < splat(-87.f), splat(-87.f), y);
  const vf fx = y * splat(1.44269504088896341f) - splat(0.5f);
  const vi n = __builtin_convertvector(fx, vi);  // truncation toward zero: rounds y/ln2 to nearest
  const vf nf = __builtin_convertvector(n, vf);
  vf r = y - nf * splat(0.693359375f);
  r = r - nf * splat(-2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * (r * r) + r + splat(1.f);
  const vi scale = (n + splat_i(127)) << 23;
  return p * (vf)scale;
}

// log(1 + e) for e in [0, 1]: 2 atanh(s) with s = e / (2 + e) in [0, 1/3], as an odd series in s
// (8 terms: truncation error < 2e-9 relative). Accurate for tiny e, unlike log(1 + e).
RETDET_VEC_INLINE vf log1p_unit(vf e) {
  const vf s = e / (splat(2.f) + e);
  const vf s2 = s * s;
  vf p = splat(1.f / 15.f);
  p = p * s2 + splat(1.f / 13.f);
  p = p * s2 + splat(1.f / 11.f);
  p = p * s2 + splat(1.f / 9.f);
  p = p * s2 + splat(1.f / 7.f);
  p = p * s2 + splat(1.f / 5.f);
  p = p * s2 + splat(1.f / 3.f);
  p = p * s2 + splat(1.f);
  return splat(2.f) * s * p;
}

}  // namespace vec8
}  // namespace retdet
