// Winograd F(m x m, 3 x 3) transforms on the CPU (Lavin & Gray 2016): the memory-bound passes of a
// 3x3 stride-1 convolution computed as (m+2)^2 matrix products (retdet/layers/winograd.py does the
// products and the small weight transform).
//
// Layouts: images are channels-last (N, H, W, C in memory), so every transform is a sum of whole
// channel rows with constant coefficients (unrolled at compile time, the inner loop over channels
// vectorised). The transformed tensors are (P, T, C): P = (m+2)^2 positions, T = N * ceil(H/m) *
// ceil(W/m) tiles in (n, tile row, tile column) order, C contiguous, so each position is one matrix
// of a batched product. The convolution's zero padding of 1 and the tiles past the image edge are
// read as zeros and never written.
//
// Every kernel is deterministic: the adjoint of the input transform (tiles overlap by two pixels)
// scatters tile rows of one parity at a time, so no two threads add into the same pixel.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>

#include "../ops.h"

namespace retdet {
namespace {

// B^T (input), A^T (output) of F(2x2, 3x3) and F(4x4, 3x3), interpolation points 0, +-1 (+-2), inf.
// G (weights) lives in retdet/layers/winograd.py, which transforms the weights with autograd.
template <int M>
struct Winograd;

template <>
struct Winograd<2> {
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

template <>
struct Winograd<4> {
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

struct Geometry {
  int64_t N, H, W, C, th, tw;
  int64_t tiles() const { return N * th * tw; }
};

// 32-byte vectors of the scalar type (GCC/Clang vector extensions, as vec8.h): 8 floats or 4 doubles;
// two SSE registers on baseline x86-64, one AVX register where the target has it.
template <typename scalar_t>
struct Vec {
  typedef scalar_t type __attribute__((vector_size(32)));
  static constexpr int64_t lanes = 32 / sizeof(scalar_t);
};

// Loads and stores of n <= lanes channels (the last chunk when C is not a multiple of the lanes).
template <typename V, typename scalar_t>
inline V load(const scalar_t* p, int64_t n) {
  V v = {};
  std::memcpy(&v, p, n * sizeof(scalar_t));
  return v;
}
template <typename V, typename scalar_t>
inline void store(scalar_t* p, V v, int64_t n) {
  std::memcpy(p, &v, n * sizeof(scalar_t));
}

// Coefficient accessors with compile-time values, so that the unrolled sums below drop zero terms.
template <int M, bool Transpose>
struct InputMatrix {  // B^T, or B
  static constexpr float at(int i, int j) { return Transpose ? Winograd<M>::BT[j][i] : Winograd<M>::BT[i][j]; }
};
template <int M, bool Transpose>
struct OutputMatrix {  // A^T, or A
  static constexpr float at(int i, int j) { return Transpose ? Winograd<M>::AT[j][i] : Winograd<M>::AT[i][j]; }
};

// sum_j C[r][j] * term(j) for a compile-time coefficient matrix C (zero terms vanish when unrolled).
template <typename C, int Terms, typename V, typename Term>
inline __attribute__((always_inline)) V combine(int r, Term term) {
  using S = std::remove_reference_t<decltype(std::declval<V>()[0])>;
  V acc = {};
#pragma GCC unroll 8
  for (int j = 0; j < Terms; ++j)
    if (C::at(r, j) != 0.f) acc += static_cast<S>(C::at(r, j)) * term(j);
  return acc;
}

// out[r][q] = sum_{j,k} L[r][j] in[j][k] R[q][k] on one vector of channels per tile position:
// L is (R x J), R is (Q x K); `in(j, k)` loads, `out(r, q, v)` stores.
template <int Rn, int J, int Q, int K, typename L, typename R, typename V, typename In, typename Out>
inline __attribute__((always_inline)) void two_sided(In in, Out out) {
  V x[J][K], t[Rn][K];
#pragma GCC unroll 8
  for (int j = 0; j < J; ++j)
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) x[j][k] = in(j, k);
#pragma GCC unroll 8
  for (int r = 0; r < Rn; ++r)
#pragma GCC unroll 8
    for (int k = 0; k < K; ++k) t[r][k] = combine<L, J, V>(r, [&](int j) { return x[j][k]; });
#pragma GCC unroll 8
  for (int r = 0; r < Rn; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < Q; ++q) out(r, q, combine<R, K, V>(q, [&](int k) { return t[r][k]; }));
}

// Tile t -> (image, tile row, tile column).
struct TileIndex {
  int64_t n, ty, tx;
  TileIndex(int64_t t, const Geometry& g) : n(t / (g.th * g.tw)), ty((t / g.tw) % g.th), tx(t % g.tw) {}
};

// body(t, tile, c, n) for every tile t and every vector of channels [c, c + n), tiles spread over threads.
template <typename scalar_t, typename Body>
void for_each_tile(const Geometry& g, Body body) {
  constexpr int64_t lanes = Vec<scalar_t>::lanes;
  at::parallel_for(0, g.tiles(), 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const TileIndex ti(t, g);
      for (int64_t c = 0; c < g.C; c += lanes) body(t, ti, c, std::min(lanes, g.C - c));
    }
  });
}

// V = B^T d B for every tile: x (N, H, W, C) -> V (A*A, T, C).
template <typename scalar_t, int M>
void input_transform(const scalar_t* x, scalar_t* V, const Geometry& g) {
  constexpr int A = M + 2;
  using Vt = typename Vec<scalar_t>::type;
  const int64_t T = g.tiles();
  for_each_tile<scalar_t>(g, [&](int64_t t, const TileIndex& ti, int64_t c, int64_t n) {
    const int64_t y0 = ti.ty * M - 1, x0 = ti.tx * M - 1;
    two_sided<A, A, A, A, InputMatrix<M, false>, InputMatrix<M, false>, Vt>(
        [&](int j, int k) -> Vt {
          const int64_t y = y0 + j, xx = x0 + k;
          if (y < 0 || y >= g.H || xx < 0 || xx >= g.W) return Vt{};
          return load<Vt>(x + ((ti.n * g.H + y) * g.W + xx) * g.C + c, n);
        },
        [&](int i, int l, Vt v) { store(V + ((i * A + l) * T + t) * g.C + c, v, n); });
  });
}

// The adjoint: dx += B dV B^T of every tile, scattered back onto the pixels the tile read.
template <typename scalar_t, int M>
void input_transform_adjoint(const scalar_t* dV, scalar_t* dx, const Geometry& g) {
  constexpr int A = M + 2;
  using Vt = typename Vec<scalar_t>::type;
  constexpr int64_t lanes = Vec<scalar_t>::lanes;
  const int64_t T = g.tiles();
  // Tile rows ty and ty + 1 share two pixel rows; ty and ty + 2 share none (M >= 2).
  for (int parity = 0; parity < 2; ++parity) {
    const int64_t rows = (g.th - parity + 1) / 2;
    at::parallel_for(0, g.N * rows, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n_img = r / rows, ty = 2 * (r % rows) + parity;
        for (int64_t tx = 0; tx < g.tw; ++tx) {
          const int64_t t = (n_img * g.th + ty) * g.tw + tx;
          const int64_t y0 = ty * M - 1, x0 = tx * M - 1;
          for (int64_t c = 0; c < g.C; c += lanes) {
            const int64_t n = std::min(lanes, g.C - c);
            two_sided<A, A, A, A, InputMatrix<M, true>, InputMatrix<M, true>, Vt>(
                [&](int i, int l) { return load<Vt>(dV + ((i * A + l) * T + t) * g.C + c, n); },
                [&](int j, int k, Vt v) {
                  const int64_t y = y0 + j, xx = x0 + k;
                  if (y < 0 || y >= g.H || xx < 0 || xx >= g.W) return;
                  scalar_t* p = dx + ((n_img * g.H + y) * g.W + xx) * g.C + c;
                  store(p, load<Vt>(p, n) + v, n);
                });
          }
        }
      }
    });
  }
}

// y = A^T Mt A (+ bias, then ReLU) for every tile: Mt (A*A, T, C) -> y (N, H, W, C).
template <typename scalar_t, int M>
void output_transform(const scalar_t* Mt, const scalar_t* bias, bool relu, scalar_t* y, const Geometry& g) {
  constexpr int A = M + 2;
  using Vt = typename Vec<scalar_t>::type;
  const int64_t T = g.tiles();
  for_each_tile<scalar_t>(g, [&](int64_t t, const TileIndex& ti, int64_t c, int64_t n) {
    const Vt b = bias != nullptr ? load<Vt>(bias + c, n) : Vt{};
    two_sided<M, A, M, A, OutputMatrix<M, false>, OutputMatrix<M, false>, Vt>(
        [&](int j, int k) { return load<Vt>(Mt + ((j * A + k) * T + t) * g.C + c, n); },
        [&](int i, int l, Vt v) {
          const int64_t yy = ti.ty * M + i, xx = ti.tx * M + l;
          if (yy >= g.H || xx >= g.W) return;
          v += b;
          if (relu) v = v < Vt{} ? Vt{} : v;  // NaN stays NaN, as in torch.relu
          store(y + ((ti.n * g.H + yy) * g.W + xx) * g.C + c, v, n);
        });
  });
}

// The adjoint: dMt = A (dy * [y > 0]) A^T per tile (the mask only when `relu_output` is given).
template <typename scalar_t, int M>
void output_transform_adjoint(const scalar_t* dy, const scalar_t* relu_output, scalar_t* dMt, const Geometry& g) {
  constexpr int A = M + 2;
  using Vt = typename Vec<scalar_t>::type;
  const int64_t T = g.tiles();
  for_each_tile<scalar_t>(g, [&](int64_t t, const TileIndex& ti, int64_t c, int64_t n) {
    two_sided<A, M, A, M, OutputMatrix<M, true>, OutputMatrix<M, true>, Vt>(
        [&](int i, int l) -> Vt {
          const int64_t yy = ti.ty * M + i, xx = ti.tx * M + l;
          if (yy >= g.H || xx >= g.W) return Vt{};
          const int64_t offset = ((ti.n * g.H + yy) * g.W + xx) * g.C + c;
          const Vt d = load<Vt>(dy + offset, n);
          // torch's ReLU backward: 0 where the output is <= 0 (a NaN output passes the gradient)
          return relu_output == nullptr ? d : (load<Vt>(relu_output + offset, n) <= Vt{} ? Vt{} : d);
        },
        [&](int j, int k, Vt v) { store(dMt + ((j * A + k) * T + t) * g.C + c, v, n); });
  });
}

int64_t tile_size(int64_t m) {
  TORCH_CHECK(m == 2 || m == 4, "winograd: tile must be 2 (F(2x2,3x3)) or 4 (F(4x4,3x3)), got ", m);
  return m;
}

Geometry geometry(int64_t N, int64_t H, int64_t W, int64_t C, int64_t m) {
  TORCH_CHECK(N >= 0 && H > 0 && W > 0 && C > 0, "winograd: bad image size (N, C, H, W) = (", N, ", ", C, ", ", H,
              ", ", W, ")");
  return Geometry{N, H, W, C, (H + m - 1) / m, (W + m - 1) / m};
}

// A (N, C, H, W) tensor whose memory is (N, H, W, C).
at::Tensor channels_last(const at::Tensor& x) { return x.contiguous(at::MemoryFormat::ChannelsLast); }

void check_transformed(const at::Tensor& t, const Geometry& g, int64_t m, const char* name) {
  const int64_t A = m + 2;
  TORCH_CHECK(t.dim() == 3 && t.size(0) == A * A && t.size(1) == g.tiles() && t.size(2) == g.C, "winograd: ", name,
              " must be (", A * A, ", ", g.tiles(), ", ", g.C, "), got ", t.sizes());
}

template <typename F>
void by_tile(int64_t m, F&& f) {
  if (m == 2) {
    f(std::integral_constant<int, 2>());
  } else {
    f(std::integral_constant<int, 4>());
  }
}

}  // namespace

void winograd_input_transform_cpu(const at::Tensor& x_in, int64_t m, const at::Tensor& V) {
  TORCH_CHECK(x_in.dim() == 4, "winograd_input_transform: x must be (N, C, H, W), got ", x_in.sizes());
  tile_size(m);
  const auto g = geometry(x_in.size(0), x_in.size(2), x_in.size(3), x_in.size(1), m);
  const auto x = channels_last(x_in);
  check_transformed(V, g, m, "out");
  TORCH_CHECK(V.is_contiguous() && V.scalar_type() == x.scalar_type(),
              "winograd_input_transform: out must be contiguous and of x's dtype");
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "winograd_input_transform", [&] {
    by_tile(m, [&](auto M) { input_transform<scalar_t, decltype(M)::value>(x.data_ptr<scalar_t>(),
                                                                            V.data_ptr<scalar_t>(), g); });
  });
}

at::Tensor winograd_input_transform_backward_cpu(const at::Tensor& dV_in, int64_t m, int64_t N, int64_t H,
                                                 int64_t W) {
  tile_size(m);
  TORCH_CHECK(dV_in.dim() == 3, "winograd_input_transform_backward: dV must be (P, T, C), got ", dV_in.sizes());
  const auto g = geometry(N, H, W, dV_in.size(2), m);
  check_transformed(dV_in, g, m, "dV");
  const auto dV = dV_in.contiguous();
  // (at::zeros would ignore the memory format.)
  auto dx = at::empty({N, g.C, H, W}, dV.options().memory_format(at::MemoryFormat::ChannelsLast)).zero_();
  AT_DISPATCH_FLOATING_TYPES(dV.scalar_type(), "winograd_input_transform_backward", [&] {
    by_tile(m, [&](auto M) {
      input_transform_adjoint<scalar_t, decltype(M)::value>(dV.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), g);
    });
  });
  return dx;
}

at::Tensor winograd_output_transform_cpu(const at::Tensor& Mt_in, const std::optional<at::Tensor>& bias_in,
                                         bool relu, int64_t m, int64_t N, int64_t H, int64_t W) {
  tile_size(m);
  TORCH_CHECK(Mt_in.dim() == 3, "winograd_output_transform: M must be (P, T, C), got ", Mt_in.sizes());
  const auto g = geometry(N, H, W, Mt_in.size(2), m);
  check_transformed(Mt_in, g, m, "M");
  const auto Mt = Mt_in.contiguous();
  at::Tensor bias;
  if (bias_in.has_value() && bias_in->defined()) {
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == g.C, "winograd_output_transform: bias must be (",
                g.C, ",), got ", bias_in->sizes());
    bias = bias_in->to(Mt.scalar_type()).contiguous();
  }
  auto y = at::empty({N, g.C, H, W}, Mt.options().memory_format(at::MemoryFormat::ChannelsLast));
  AT_DISPATCH_FLOATING_TYPES(Mt.scalar_type(), "winograd_output_transform", [&] {
    by_tile(m, [&](auto M) {
      output_transform<scalar_t, decltype(M)::value>(Mt.data_ptr<scalar_t>(),
                                                     bias.defined() ? bias.data_ptr<scalar_t>() : nullptr, relu,
                                                     y.data_ptr<scalar_t>(), g);
    });
  });
  return y;
}

void winograd_output_transform_backward_cpu(const at::Tensor& dy_in, const std::optional<at::Tensor>& relu_out,
                                            int64_t m, const at::Tensor& dMt) {
  tile_size(m);
  TORCH_CHECK(dy_in.dim() == 4, "winograd_output_transform_backward: dy must be (N, C, H, W), got ", dy_in.sizes());
  const auto g = geometry(dy_in.size(0), dy_in.size(2), dy_in.size(3), dy_in.size(1), m);
  const auto dy = channels_last(dy_in);
  at::Tensor mask;
  if (relu_out.has_value() && relu_out->defined()) {
    TORCH_CHECK(relu_out->sizes() == dy_in.sizes(), "winograd_output_transform_backward: the ReLU output must be ",
                dy_in.sizes(), ", got ", relu_out->sizes());
    mask = channels_last(relu_out->to(dy.scalar_type()));
  }
  check_transformed(dMt, g, m, "out");
  TORCH_CHECK(dMt.is_contiguous() && dMt.scalar_type() == dy.scalar_type(),
              "winograd_output_transform_backward: out must be contiguous and of dy's dtype");
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "winograd_output_transform_backward", [&] {
    by_tile(m, [&](auto M) {
      output_transform_adjoint<scalar_t, decltype(M)::value>(
          dy.data_ptr<scalar_t>(), mask.defined() ? mask.data_ptr<scalar_t>() : nullptr, dMt.data_ptr<scalar_t>(), g);
    });
  });
}

}  // namespace retdet

TORCH_LIBRARY_IMPL(retdet, CPU, m) {
  m.impl("winograd_input_transform", &retdet::winograd_input_transform_cpu);
  m.impl("winograd_input_transform_backward", &retdet::winograd_input_transform_backward_cpu);
  m.impl("winograd_output_transform", &retdet::winograd_output_transform_cpu);
  m.impl("winograd_output_transform_backward", &retdet::winograd_output_transform_backward_cpu);
}
