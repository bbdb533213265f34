#include <dchag/core/error.hpp>
#include <dchag/kernels/channel_rows.hpp>

#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

// The channels of a [C, N, D] view, each as an N x D matrix.
template <class View>
std::vector<Matrix<double>> channels_of(const View& v) {
  const auto h = to_host(v);
  std::vector<Matrix<double>> out(h.extent(0), Matrix<double>(h.extent(1), h.extent(2)));
  for (std::size_t c = 0; c < h.extent(0); ++c)
    for (std::size_t n = 0; n < h.extent(1); ++n)
      for (std::size_t j = 0; j < h.extent(2); ++j)
        out[c](n, j) = static_cast<double>(h(c, n, j));
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("add_channel_rows and sum_channel_rows match Eigen; the sum accumulates",
                          C, channel_rows_eigen) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  std::uint64_t seed = 70;
  // 17 and 129 columns leave a partial column tile on host backends, 2100 splits a row into
  // segments of 1024 + 1024 + 52 (Impl::for_each_row_segment); 300 rows make the sums long.
  for (int channels : {1, 3, 5}) {
    for (int rows : {1, 7, 300}) {
      for (int n : {1, 5, 17, 129, 2100}) {
        dchag::View3<T, Space> Y("Y", channels, rows, n);
        dchag::View2<T, Space> E("E", channels, n), G("G", channels, n);
        fill_random(Y, seed++);
        fill_random(E, seed++);
        fill_random(G, seed++);
        const std::vector<Matrix<double>> y0 = channels_of(Y);
        const Matrix<double> e = to_eigen(E), g0 = to_eigen(G);
        CAPTURE(channels);
        CAPTURE(rows);
        CAPTURE(n);

        dchag::add_channel_rows(space, Y, E);
        const std::vector<Matrix<double>> y = channels_of(Y);
        Matrix<double> colsums(channels, n);
        for (int c = 0; c < channels; ++c) {
          const Matrix<double> ref = y0[c].rowwise() + e.row(c);
          CHECK(rel_diff(y[c], ref) < tol<T>());
          colsums.row(c) = ref.colwise().sum();
        }

        dchag::sum_channel_rows(space, Y, G);
        CHECK(rel_diff(to_eigen(G), g0 + colsums) < tol<T>());
        dchag::sum_channel_rows(space, Y, G);
        CHECK(rel_diff(to_eigen(G), g0 + 2.0 * colsums) < tol<T>());
      }
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(channel_rows_eigen, AllCases);

TEST_CASE_TEMPLATE_DEFINE("sum_channel_rows from zero doubles exactly on a second call", C,
                          channel_rows_twice) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::View3<T, Space> dY("dY", 3, 33, 129);
  dchag::View2<T, Space> G("G", 3, 129);
  fill_random(dY, 8);
  dchag::sum_channel_rows(space, dY, G);
  const Matrix<double> once = to_eigen(G);
  dchag::sum_channel_rows(space, dY, G);
  CHECK(to_eigen(G) == 2.0 * once);
}
TEST_CASE_TEMPLATE_APPLY(channel_rows_twice, AllCases);

TEST_CASE("channel-row kernels refuse mismatched and empty views, naming the shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::View3<double, Space> Y("Y", 3, 4, 5), Empty("Empty", 3, 0, 5);
  dchag::View2<double, Space> wrong_channels("wrong_channels", 2, 5),
      wrong_width("wrong_width", 3, 4), E("E", 3, 5);
  CHECK_THROWS_WITH_AS(dchag::add_channel_rows(space, Y, wrong_channels),
                       doctest::Contains("'wrong_channels'[2, 5]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::add_channel_rows(space, Y, wrong_width),
                       doctest::Contains("'Y'[3, 4, 5]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::sum_channel_rows(space, Y, wrong_width),
                       doctest::Contains("'wrong_width'[3, 4]"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::add_channel_rows(space, Empty, E), doctest::Contains("empty"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::sum_channel_rows(space, Empty, E),
                       doctest::Contains("'Empty'[3, 0, 5]"), dchag::Error);
}

// A dY whose columns are not contiguous (every other value of a wider buffer) takes the
// view-indexed loop, contiguous rows the pointer loop: the same sums, bit for bit.
TEST_CASE_TEMPLATE_DEFINE("sum_channel_rows on strided columns equals the contiguous sum", C,
                          channel_rows_strided) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int channels = 3, rows = 41, n = 300;
  dchag::View3<T, Space> wide("wide", channels, rows, 2 * n), dY("dY", channels, rows, n);
  fill_random(wide, 9);
  Kokkos::View<T***, Kokkos::LayoutStride, Space> strided(
      wide.data(), Kokkos::LayoutStride(channels, std::size_t(rows) * 2 * n, rows, 2 * n, n, 2));
  Kokkos::deep_copy(dY, strided);
  REQUIRE(strided.stride(2) == 2);
  dchag::View2<T, Space> a("a", channels, n), b("b", channels, n);
  dchag::sum_channel_rows(space, dY, a);
  dchag::sum_channel_rows(space, strided, b);
  CHECK(to_eigen(a) == to_eigen(b));
  Matrix<double> ref = Matrix<double>::Zero(channels, n);
  const std::vector<Matrix<double>> y = channels_of(dY);
  for (int c = 0; c < channels; ++c) ref.row(c) = y[c].colwise().sum();
  CHECK(rel_diff(to_eigen(a), ref) < tol<T>());
}
TEST_CASE_TEMPLATE_APPLY(channel_rows_strided, AllCases);
