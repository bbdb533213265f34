#include <dchag/core/error.hpp>
#include <dchag/kernels/batched_gemm.hpp>
#include <dchag/kernels/gemm.hpp>

#include <limits>

#include "test_common.hpp"

using namespace dchag_test;

namespace {
Matrix<double> op(dchag::Op o, const Matrix<double>& m) {
  return o == dchag::Op::N ? m : Matrix<double>(m.transpose());
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("gemm matches Eigen for every transpose combination", C, gemm_eigen) {
  using Space = typename C::space;
  using T = typename C::scalar;
  using dchag::Op;
  Space space;
  // Odd sizes, and a square one, so that swapped extents or a missed transpose show.
  const int shapes[][3] = {{7, 5, 3}, {1, 9, 4}, {13, 1, 6}, {16, 16, 16}, {33, 17, 29}};
  std::uint64_t seed = 1;
  for (auto& s : shapes) {
    const int m = s[0], n = s[1], k = s[2];
    for (Op oa : {Op::N, Op::T}) {
      for (Op ob : {Op::N, Op::T}) {
        dchag::View2<T, Space> A("A", oa == Op::N ? m : k, oa == Op::N ? k : m);
        dchag::View2<T, Space> B("B", ob == Op::N ? k : n, ob == Op::N ? n : k);
        dchag::View2<T, Space> Cv("C", m, n);
        fill_random(A, seed++);
        fill_random(B, seed++);
        fill_random(Cv, seed++);
        const Matrix<double> c0 = to_eigen(Cv);
        const T alpha = T(0.75), beta = T(-0.5);
        dchag::gemm(space, oa, ob, alpha, A, B, beta, Cv);
        const Matrix<double> ref =
            double(alpha) * op(oa, to_eigen(A)) * op(ob, to_eigen(B)) + double(beta) * c0;
        CAPTURE(m);
        CAPTURE(n);
        CAPTURE(k);
        CHECK(rel_diff(to_eigen(Cv), ref) < tol<T>());
      }
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(gemm_eigen, AllCases);

TEST_CASE_TEMPLATE_DEFINE("batched gemm: both forms match Eigen per batch entry", C, bgemm) {
  using Space = typename C::space;
  using T = typename C::scalar;
  using dchag::Op;
  Space space;
  const int batch = 5, n = 7, k = 11;
  std::uint64_t seed = 100;
  // m = 70: several row tiles of the team form, the last one partial.
  for (int m : {9, 70})
  for (int form = 0; form < 3; ++form) {
    for (Op oa : {Op::N, Op::T}) {
      for (Op ob : {Op::N, Op::T}) {
        dchag::View3<T, Space> A("A", batch, oa == Op::N ? m : k, oa == Op::N ? k : m);
        dchag::View3<T, Space> B("B", batch, ob == Op::N ? k : n, ob == Op::N ? n : k);
        dchag::View3<T, Space> Cv("C", batch, m, n);
        fill_random(A, seed++);
        fill_random(B, seed++);
        fill_random(Cv, seed++);
        // beta = 0 must overwrite C, NaN included (attention writes into reused buffers).
        if (form == 2) Kokkos::deep_copy(Cv, std::numeric_limits<T>::quiet_NaN());
        auto c0 = to_host(Cv);
        auto c0copy = Kokkos::create_mirror(c0);
        Kokkos::deep_copy(c0copy, c0);
        const T alpha = T(1.25), beta = form == 2 ? T(0) : T(0.5);
        if (form == 0) dchag::batched_gemm_team(space, oa, ob, alpha, A, B, beta, Cv);
        if (form == 1) dchag::batched_gemm(space, oa, ob, alpha, A, B, beta, Cv);
        if (form == 2) dchag::batched_gemm_team(space, oa, ob, alpha, A, B, beta, Cv);
        for (int i = 0; i < batch; ++i) {
          auto ai = Kokkos::subview(A, i, Kokkos::ALL, Kokkos::ALL);
          auto bi = Kokkos::subview(B, i, Kokkos::ALL, Kokkos::ALL);
          auto ci = Kokkos::subview(Cv, i, Kokkos::ALL, Kokkos::ALL);
          auto c0i = Kokkos::subview(c0copy, i, Kokkos::ALL, Kokkos::ALL);
          const Matrix<double> ref =
              double(alpha) * op(oa, to_eigen(ai)) * op(ob, to_eigen(bi)) +
              (form == 2 ? Matrix<double>::Zero(m, n) : Matrix<double>(double(beta) * to_eigen(c0i)));
          CAPTURE(form);
          CAPTURE(m);
          CAPTURE(i);
          CHECK(rel_diff(to_eigen(ci), ref) < tol<T>());
        }
      }
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(bgemm, AllCases);

TEST_CASE("gemm refuses mismatched and empty operands, naming the shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  dchag::View2<double, Space> A("A", 3, 4), B("B", 5, 2), Cv("C", 3, 2), E("E", 0, 2);
  CHECK_THROWS_WITH_AS(dchag::gemm(Space(), dchag::Op::N, dchag::Op::N, 1.0, A, B, 0.0, Cv),
                       doctest::Contains("'A'[3, 4]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::gemm(Space(), dchag::Op::N, dchag::Op::N, 1.0, A, B, 0.0, Cv),
                       doctest::Contains("'B'[5, 2]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::gemm(Space(), dchag::Op::N, dchag::Op::N, 1.0, E, B, 0.0, Cv),
                       doctest::Contains("empty"), dchag::Error);
  dchag::View3<double, Space> A3("A3", 2, 3, 4), B3("B3", 3, 4, 2), C3("C3", 2, 3, 2);
  CHECK_THROWS_WITH_AS(
      dchag::batched_gemm(Space(), dchag::Op::N, dchag::Op::N, 1.0, A3, B3, 0.0, C3),
      doctest::Contains("'B3'[3, 4, 2]"), dchag::Error);
}
