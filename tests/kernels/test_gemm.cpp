#include <dchag/core/error.hpp>
#include <dchag/kernels/batched_gemm.hpp>
#include <dchag/kernels/gemm.hpp>

#include <limits>
#include <type_traits>

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
  const int batch = 5;
  std::uint64_t seed = 100;
  // {m, n, k}. The team form cuts C into 128 x 128 tiles on a CPU and 64 x 64 on a GPU, and K
  // into blocks of 64 and 32: 130 x 133 has partial tiles in both directions on both, k = 70 and
  // 129 take two to five K blocks (the later ones add onto C), 1 x 1 x 1 and n = 7 are narrower
  // than one micro-tile.
  const int shapes[][3] = {{9, 7, 11}, {70, 7, 11}, {130, 133, 70}, {1, 1, 1}, {33, 65, 129}};
  for (auto& s : shapes)
  for (int form = 0; form < 3; ++form) {
    const int m = s[0], n = s[1], k = s[2];
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
          CAPTURE(n);
          CAPTURE(k);
          CAPTURE(i);
          CHECK(rel_diff(to_eigen(ci), ref) < tol<T>());
        }
      }
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(bgemm, AllCases);

namespace {
// The GPU's tiling (interleaved 4 x 4 micro-tiles over a 64 x 64 tile, padded scratch rows,
// K blocks of 32, one-row staging groups) with one thread and one lane per team, so that a host
// backend runs every index of the GPU's kernel; only the concurrency is the GPU's own.
template <class Space>
struct GpuTilingOneThread : dchag::Impl::BatchedGemmTiling<Space, false> {
  static constexpr int team_size = 1, vector_length = 1;
};
// The host tiling at the micro-tile width this build does not use (16 columns without AVX-512,
// 8 with it), so that every build checks both.
template <class Space>
struct HostTilingOtherWidth : dchag::Impl::BatchedGemmTiling<Space, true> {
  static constexpr int nr = dchag::Impl::BatchedGemmTiling<Space, true>::nr == 16 ? 8 : 16;
};

template <class Tiling, class C>
void check_tiling() {
  using Space = typename C::space;
  using T = typename C::scalar;
  using dchag::Op;
  Space space;
  const int batch = 2;
  std::uint64_t seed = 300;
  // Partial tiles (64 x 64 on a GPU, 128 x 128 on a host), several K blocks, a C smaller than
  // one micro-tile's stride, and several tiles of a host.
  const int shapes[][3] = {{70, 67, 65}, {5, 3, 2}, {64, 64, 32}, {131, 150, 129}};
  for (auto& s : shapes) {
    const int m = s[0], n = s[1], k = s[2];
    for (Op oa : {Op::N, Op::T}) {
      for (Op ob : {Op::N, Op::T}) {
        for (int zero_beta = 0; zero_beta < 2; ++zero_beta) {
          dchag::View3<T, Space> A("A", batch, oa == Op::N ? m : k, oa == Op::N ? k : m);
          dchag::View3<T, Space> B("B", batch, ob == Op::N ? k : n, ob == Op::N ? n : k);
          dchag::View3<T, Space> Cv("C", batch, m, n);
          fill_random(A, seed++);
          fill_random(B, seed++);
          fill_random(Cv, seed++);
          if (zero_beta) Kokkos::deep_copy(Cv, std::numeric_limits<T>::quiet_NaN());
          auto c0 = Kokkos::create_mirror(Cv);
          Kokkos::deep_copy(c0, Cv);
          const T alpha = T(0.75), beta = zero_beta ? T(0) : T(-1.5);
          dchag::Impl::batched_gemm_team_tiled<Tiling>(space, oa, ob, alpha, A, B, beta, Cv);
          for (int i = 0; i < batch; ++i) {
            auto ai = Kokkos::subview(A, i, Kokkos::ALL, Kokkos::ALL);
            auto bi = Kokkos::subview(B, i, Kokkos::ALL, Kokkos::ALL);
            auto ci = Kokkos::subview(Cv, i, Kokkos::ALL, Kokkos::ALL);
            auto c0i = Kokkos::subview(c0, i, Kokkos::ALL, Kokkos::ALL);
            const Matrix<double> ref =
                double(alpha) * op(oa, to_eigen(ai)) * op(ob, to_eigen(bi)) +
                (zero_beta ? Matrix<double>::Zero(m, n)
                           : Matrix<double>(double(beta) * to_eigen(c0i)));
            CAPTURE(m);
            CAPTURE(n);
            CAPTURE(k);
            CAPTURE(zero_beta);
            CAPTURE(i);
            CHECK(rel_diff(to_eigen(ci), ref) < tol<T>());
          }
        }
      }
    }
  }
}
}  // namespace

TEST_CASE_TEMPLATE_DEFINE("batched gemm: the GPU tiling matches Eigen on the host", C,
                          bgemm_gpu_tiling) {
  check_tiling<GpuTilingOneThread<typename C::space>, C>();
}
TEST_CASE_TEMPLATE_APPLY(bgemm_gpu_tiling, AllCases);

TEST_CASE_TEMPLATE_DEFINE("batched gemm: the host tiling of the other SIMD width matches Eigen",
                          C, bgemm_other_width) {
  check_tiling<HostTilingOtherWidth<typename C::space>, C>();
}
TEST_CASE_TEMPLATE_APPLY(bgemm_other_width, AllCases);

// Strided operands (slices of larger views, LayoutStride): batched_gemm takes the team form,
// which must address them through their strides, C included.
TEST_CASE_TEMPLATE_DEFINE("batched gemm on strided views matches Eigen", C, bgemm_strided) {
  using Space = typename C::space;
  using T = typename C::scalar;
  using dchag::Op;
  Space space;
  const int batch = 3, m = 67, n = 45, k = 38;
  std::uint64_t seed = 500;
  for (Op oa : {Op::N, Op::T}) {
    for (Op ob : {Op::N, Op::T}) {
      const int ar = oa == Op::N ? m : k, ac = oa == Op::N ? k : m;
      const int br = ob == Op::N ? k : n, bc = ob == Op::N ? n : k;
      dchag::View3<T, Space> A_big("A_big", batch, ar + 3, ac + 2), B_big("B_big", batch, br + 1, bc + 5),
          C_big("C_big", batch, m + 2, n + 4);
      fill_random(A_big, seed++);
      fill_random(B_big, seed++);
      fill_random(C_big, seed++);
      const auto A = Kokkos::subview(A_big, Kokkos::ALL, Kokkos::make_pair(2, 2 + ar),
                                     Kokkos::make_pair(1, 1 + ac));
      const auto B = Kokkos::subview(B_big, Kokkos::ALL, Kokkos::make_pair(1, 1 + br),
                                     Kokkos::make_pair(3, 3 + bc));
      const auto Cv = Kokkos::subview(C_big, Kokkos::ALL, Kokkos::make_pair(1, 1 + m),
                                      Kokkos::make_pair(2, 2 + n));
      static_assert(std::is_same<typename decltype(Cv)::array_layout, Kokkos::LayoutStride>::value,
                    "the slices must be strided views");
      auto c_big0 = Kokkos::create_mirror(C_big);
      Kokkos::deep_copy(c_big0, C_big);
      const T alpha = T(-0.5), beta = T(2);
      dchag::batched_gemm(space, oa, ob, alpha, A, B, beta, Cv);
      // The slices are taken on host copies of the whole views: a strided device view cannot
      // be copied to the host by itself.
      const auto a_big = to_host(A_big);
      const auto b_big = to_host(B_big);
      const auto c_big1 = to_host(C_big);
      const auto rows = [](int begin, int count) { return Kokkos::make_pair(begin, begin + count); };
      for (int i = 0; i < batch; ++i) {
        auto ai = Kokkos::subview(a_big, i, rows(2, ar), rows(1, ac));
        auto bi = Kokkos::subview(b_big, i, rows(1, br), rows(3, bc));
        auto ci = Kokkos::subview(c_big1, i, rows(1, m), rows(2, n));
        auto c0i = Kokkos::subview(c_big0, i, rows(1, m), rows(2, n));
        const Matrix<double> ref = double(alpha) * op(oa, to_eigen(ai)) * op(ob, to_eigen(bi)) +
                                   double(beta) * to_eigen(c0i);
        CAPTURE(i);
        CHECK(rel_diff(to_eigen(ci), ref) < tol<T>());
        // Nothing outside the slice of C is touched.
        bool outside_same = true;
        for (int r = 0; r < m + 2; ++r)
          for (int c = 0; c < n + 4; ++c) {
            const bool inside = r >= 1 && r < 1 + m && c >= 2 && c < 2 + n;
            if (!inside && c_big1(i, r, c) != c_big0(i, r, c)) outside_same = false;
          }
        CHECK(outside_same);
      }
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(bgemm_strided, AllCases);

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
