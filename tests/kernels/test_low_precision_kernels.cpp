// The kernels on 16-bit storage (bf16, fp16): against the same Eigen references in double as the
// float kernels, computed from the rounded inputs, and with sums long enough that accumulating
// in 16 bits would visibly fail (a running bf16 sum of ones stops at 256, an fp16 one at 2048).
#include <dchag/kernels/batched_gemm.hpp>
#include <dchag/kernels/bias.hpp>
#include <dchag/kernels/gelu.hpp>
#include <dchag/kernels/gemm.hpp>
#include <dchag/kernels/layer_norm.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/kernels/softmax.hpp>

#include <cmath>
#include <limits>

#include "test_common.hpp"

using namespace dchag_test;

namespace {
Matrix<double> op(dchag::Op o, const Matrix<double>& m) {
  return o == dchag::Op::N ? m : Matrix<double>(m.transpose());
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("16-bit gemm and batched gemm match Eigen, every transpose", C,
                          low_gemm) {
  using Space = typename C::space;
  using T = typename C::scalar;
  using dchag::Op;
  Space space;
  const int m = 33, n = 17, k = 29;
  std::uint64_t seed = 11;
  for (Op oa : {Op::N, Op::T})
    for (Op ob : {Op::N, Op::T}) {
      dchag::View2<T, Space> A("A", oa == Op::N ? m : k, oa == Op::N ? k : m);
      dchag::View2<T, Space> B("B", ob == Op::N ? k : n, ob == Op::N ? n : k);
      dchag::View2<T, Space> Cv("C", m, n);
      fill_random(A, seed++);
      fill_random(B, seed++);
      fill_random(Cv, seed++);
      const Matrix<double> c0 = to_eigen(Cv);
      dchag::gemm(space, oa, ob, 0.75f, A, B, -0.5f, Cv);
      const Matrix<double> ref = 0.75 * op(oa, to_eigen(A)) * op(ob, to_eigen(B)) - 0.5 * c0;
      CHECK(rel_diff(to_eigen(Cv), ref) < tol<T>());

      // Three products at once, through a batch of rank-3 views.
      const int batch = 3;
      dchag::View3<T, Space> A3("A3", batch, A.extent(0), A.extent(1));
      dchag::View3<T, Space> B3("B3", batch, B.extent(0), B.extent(1));
      dchag::View3<T, Space> C3("C3", batch, m, n);
      fill_random(A3, seed++);
      fill_random(B3, seed++);
      dchag::batched_gemm(space, oa, ob, 1.0f, A3, B3, 0.0f, C3);
      for (int i = 0; i < batch; ++i) {
        const auto a = Kokkos::subview(A3, i, Kokkos::ALL, Kokkos::ALL);
        const auto b = Kokkos::subview(B3, i, Kokkos::ALL, Kokkos::ALL);
        const auto c = Kokkos::subview(C3, i, Kokkos::ALL, Kokkos::ALL);
        CHECK(rel_diff(to_eigen(c), Matrix<double>(op(oa, to_eigen(a)) * op(ob, to_eigen(b)))) <
              tol<T>());
      }
    }
}
TEST_CASE_TEMPLATE_APPLY(low_gemm, LowPrecisionCases);

TEST_CASE_TEMPLATE_DEFINE("16-bit sums are accumulated in float", C, low_accumulate) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int K = 4096;  // exact in both formats; their running sums of ones stop far below it
  dchag::View2<T, Space> a("a", 1, K), b("b", K, 1), c("c", 1, 1);
  Kokkos::deep_copy(a, T(1));
  Kokkos::deep_copy(b, T(1));
  dchag::gemm(space, dchag::Op::N, dchag::Op::N, 1.0f, a, b, 0.0f, c);
  CHECK(double(to_host(c)(0, 0)) == K);

  // Sums whose 16-bit roundings would not cancel: +1 and -1 in turn, with 2^-7 added at every
  // third k. Exact in float; the result must be that sum rounded once, through the team
  // kernel's K blocks (32 on a GPU) and with beta applied once.
  {
    dchag::View2<T, Space> u("u", 1, K), w("w", K, 1), out("out", 1, 1);
    auto hu = Kokkos::create_mirror_view(u);
    auto hw = Kokkos::create_mirror_view(w);
    double exact = 0;
    for (int j = 0; j < K; ++j) {
      const double x = (j % 2 ? -1.0 : 1.0) + (j % 3 == 0 ? std::ldexp(1.0, -7) : 0.0);
      hu(0, j) = T(x);
      hw(j, 0) = T(1);
      exact += double(hu(0, j));
    }
    Kokkos::deep_copy(u, hu);
    Kokkos::deep_copy(w, hw);
    Kokkos::deep_copy(out, T(0.5));
    dchag::gemm(space, dchag::Op::N, dchag::Op::N, 1.0f, u, w, 2.0f, out);
    CHECK(to_host(out)(0, 0).bits == T(float(exact + 1.0)).bits);
  }

  dchag::View2<T, Space> rows("rows", K, 3);
  dchag::View1<T, Space> sums("sums", 3);
  Kokkos::deep_copy(rows, T(1));
  dchag::sum_rows(space, rows, sums);
  for (int j = 0; j < 3; ++j) CHECK(double(to_host(sums)(j)) == K);

  // A row of K equal scores: every probability is exactly 1 / K (the sum of exp(0) is K).
  dchag::View2<T, Space> scores("scores", 2, K);
  Kokkos::deep_copy(scores, T(0.5));
  dchag::softmax_rows(space, scores, scores);
  const auto p = to_host(scores);
  CHECK(double(p(0, 0)) == 1.0 / K);
  CHECK(double(p(1, K - 1)) == 1.0 / K);

  // LayerNorm of a row whose mean needs all K terms: ones and, every 64th, a three.
  dchag::View2<T, Space> x("x", 1, K), y("y", 1, K);
  dchag::View1<T, Space> gamma("gamma", K), beta("beta", K);
  dchag::View1<float, Space> mean("mean", 1), rstd("rstd", 1);
  auto hx = Kokkos::create_mirror_view(x);
  for (int j = 0; j < K; ++j) hx(0, j) = T(j % 64 == 0 ? 3.0 : 1.0);
  Kokkos::deep_copy(x, hx);
  Kokkos::deep_copy(gamma, T(1));
  dchag::layer_norm(space, x, gamma, beta, 1e-5f, y, mean, rstd);
  CHECK(double(to_host(mean)(0)) == doctest::Approx(1.0 + 2.0 / 64).epsilon(1e-6));

  CHECK(dchag::sum_squares(space, rows) == 3.0 * K);

  // NaN and infinity are found in 16-bit views (what checkpoints refuse to write).
  CHECK(dchag::all_finite(space, rows));
  auto hr = Kokkos::create_mirror_view(rows);
  Kokkos::deep_copy(hr, rows);
  hr(K - 1, 2) = T(std::numeric_limits<float>::quiet_NaN());
  Kokkos::deep_copy(rows, hr);
  CHECK(!dchag::all_finite(space, rows));
  hr(K - 1, 2) = T(std::numeric_limits<float>::infinity());
  Kokkos::deep_copy(rows, hr);
  CHECK(!dchag::all_finite(space, rows));
}
TEST_CASE_TEMPLATE_APPLY(low_accumulate, LowPrecisionCases);

TEST_CASE_TEMPLATE_DEFINE("16-bit LayerNorm, softmax and GELU match the double references", C,
                          low_rows) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int rows = 5, n = 77;
  dchag::View2<T, Space> X("X", rows, n), Y("Y", rows, n);
  dchag::View1<T, Space> gamma("gamma", n), beta("beta", n);
  dchag::View1<float, Space> mean("mean", rows), rstd("rstd", rows);
  fill_random(X, 1, 1.0, 3.0);  // an offset mean, as for float
  fill_random(gamma, 2, 0.5, 1.5);
  fill_random(beta, 3);
  dchag::layer_norm(space, X, gamma, beta, 1e-5f, Y, mean, rstd);
  const Matrix<double> x = to_eigen(X);
  const Eigen::VectorXd g = to_eigen_vector(gamma), bt = to_eigen_vector(beta);
  Matrix<double> ln(rows, n);
  for (int i = 0; i < rows; ++i) {
    const double mu = x.row(i).mean();
    const double var = (x.row(i).array() - mu).square().mean();
    for (int j = 0; j < n; ++j) ln(i, j) = (x(i, j) - mu) / std::sqrt(var + 1e-5) * g(j) + bt(j);
  }
  CHECK(rel_diff(to_eigen(Y), ln) < tol<T>());

  dchag::View2<T, Space> P("P", rows, n);
  fill_random(P, 4, -3.0, 3.0);
  const Matrix<double> s = to_eigen(P);
  dchag::softmax_rows(space, P, P, 0.5f);
  Matrix<double> sm(rows, n);
  for (int i = 0; i < rows; ++i) {
    const Eigen::RowVectorXd e = (0.5 * (s.row(i).array() - s.row(i).maxCoeff())).exp();
    sm.row(i) = e / e.sum();
  }
  CHECK(rel_diff(to_eigen(P), sm) < tol<T>());

  dchag::View2<T, Space> G("G", rows, n), GY("GY", rows, n);
  fill_random(G, 5, -4.0, 4.0);
  dchag::gelu(space, G, GY);
  const Matrix<double> gx = to_eigen(G);
  Matrix<double> ge(rows, n);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < n; ++j) ge(i, j) = 0.5 * gx(i, j) * (1 + std::erf(gx(i, j) / std::sqrt(2.0)));
  CHECK(rel_diff(to_eigen(GY), ge) < tol<T>());
}
TEST_CASE_TEMPLATE_APPLY(low_rows, LowPrecisionCases);
