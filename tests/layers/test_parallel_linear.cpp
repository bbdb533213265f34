// Column- and row-parallel linear layers against the whole layer they are parts of: the parts'
// initial weights are blocks of the whole layer's, their outputs and gradients combine (by
// concatenation or by sum, as Megatron's communication would) into the whole layer's, and they
// register their blocks under the logical name and shape.
#include <dchag/layers/parallel_linear.hpp>

#include <utility>
#include <vector>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Rows of section s, block [begin, begin + n) of every section of `total` rows.
Matrix<double> section_rows(const Matrix<double>& w, int sections, int total, int begin, int n) {
  Matrix<double> out(sections * n, w.cols());
  for (int s = 0; s < sections; ++s) out.middleRows(s * n, n) = w.middleRows(s * total + begin, n);
  return out;
}

Eigen::VectorXd section_entries(const Eigen::VectorXd& b, int sections, int total, int begin,
                                int n) {
  Eigen::VectorXd out(sections * n);
  for (int s = 0; s < sections; ++s) out.segment(s * n, n) = b.segment(s * total + begin, n);
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("ColumnParallelLinear parts are row blocks of the whole layer", C,
                          column_parts) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int in = 5, total = 6, rows = 7;
  for (const int sections : {1, 3}) {
    CAPTURE(sections);
    dchag::ColumnParallelLinear<T, Space> whole("qkv", in, dchag::SplitRange::whole(total),
                                                sections);
    whole.init_truncated_normal(3, 0.3);
    fill_random(whole.bias(), 4);
    dchag::View2<T, Space> x("x", rows, in), r("r", rows, sections * total);
    fill_random(x, 5);
    fill_random(r, 6);
    const Matrix<double> y = to_eigen(whole.forward(space, x));
    const Matrix<double> dx = to_eigen(whole.backward(space, r));
    const Matrix<double> W = to_eigen(whole.weight()), gW = to_eigen(whole.grad_weight());
    const Eigen::VectorXd b = to_eigen_vector(whole.bias()), gb = to_eigen_vector(whole.grad_bias());
    Matrix<double> dx_sum = Matrix<double>::Zero(rows, in);
    for (const auto& part_range : std::vector<std::pair<int, int>>{{0, 2}, {2, 4}}) {
      const int begin = part_range.first, n = part_range.second;
      CAPTURE(begin);
      dchag::ColumnParallelLinear<T, Space> part("qkv", in, {begin, n, total}, sections);
      part.init_truncated_normal(3, 0.3);
      CHECK(rel_diff(to_eigen(part.weight()), section_rows(W, sections, total, begin, n)) == 0);
      from_eigen(part.bias(), section_entries(b, sections, total, begin, n));
      // Its output features are columns of the whole output.
      const Matrix<double> yp = to_eigen(part.forward(space, x));
      CHECK(rel_diff(yp, section_rows(y.transpose(), sections, total, begin, n).transpose()) <
            tol<T>());
      // Given its columns of the output gradient: its blocks of the weight gradients, and a
      // share of the input gradient that sums to the whole one.
      dchag::View2<T, Space> rv("rv", rows, sections * n);
      from_eigen(rv, section_rows(to_eigen(r).transpose(), sections, total, begin, n).transpose());
      dx_sum += to_eigen(part.backward(space, rv));
      CHECK(rel_diff(to_eigen(part.grad_weight()), section_rows(gW, sections, total, begin, n)) <
            tol<T>());
      CHECK(rel_diff(to_eigen_vector(part.grad_bias()),
                     section_entries(gb, sections, total, begin, n)) < tol<T>());
      dchag::ParameterList<T, Space> params;
      part.parameters(params);
      REQUIRE(params.size() == 2);
      CHECK(params[0].name == "qkv.weight");
      CHECK(params[0].shape == std::vector<std::size_t>{std::size_t(sections * total), 5});
      CHECK(params[0].pieces.size() == std::size_t(sections));
      CHECK(params[0].pieces.back().start == std::vector<std::size_t>{
                                                 std::size_t((sections - 1) * total + begin), 0});
      CHECK(params[0].partitioned);
      CHECK(params[1].name == "qkv.bias");
      CHECK(params[1].shape == std::vector<std::size_t>{std::size_t(sections * total)});
      CHECK_FALSE(params[1].decay);
    }
    CHECK(rel_diff(dx_sum, dx) < tol<T>());
  }
}
TEST_CASE_TEMPLATE_APPLY(column_parts, AllCases);

TEST_CASE_TEMPLATE_DEFINE("RowParallelLinear parts sum to the whole layer, bias added once", C,
                          row_parts) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int total = 6, out = 4, rows = 5;
  dchag::RowParallelLinear<T, Space> whole("proj", dchag::SplitRange::whole(total), out);
  whole.init_truncated_normal(8, 0.3);
  fill_random(whole.bias(), 9);
  dchag::View2<T, Space> x("x", rows, total), r("r", rows, out);
  fill_random(x, 10);
  fill_random(r, 11);
  const Matrix<double> y = to_eigen(whole.forward(space, x));
  const Matrix<double> dx = to_eigen(whole.backward(space, r));
  const Matrix<double> W = to_eigen(whole.weight()), gW = to_eigen(whole.grad_weight());
  Matrix<double> y_sum = Matrix<double>::Zero(rows, out);
  for (const auto& part_range : std::vector<std::pair<int, int>>{{0, 1}, {1, 5}}) {
    const int begin = part_range.first, n = part_range.second;
    CAPTURE(begin);
    dchag::RowParallelLinear<T, Space> part("proj", {begin, n, total}, out, /*skip_bias_add=*/true);
    part.init_truncated_normal(8, 0.3);
    CHECK(rel_diff(to_eigen(part.weight()), W.middleCols(begin, n)) == 0);
    Kokkos::deep_copy(part.bias(), whole.bias());
    dchag::View2<T, Space> xv("xv", rows, n);
    from_eigen(xv, to_eigen(x).middleCols(begin, n));
    y_sum += to_eigen(part.forward(space, xv));
    // The whole output gradient on every part: its columns of dx, its block of dW, all of db.
    CHECK(rel_diff(to_eigen(part.backward(space, r)), dx.middleCols(begin, n)) < tol<T>());
    CHECK(rel_diff(to_eigen(part.grad_weight()), gW.middleCols(begin, n)) < tol<T>());
    CHECK(rel_diff(to_eigen_vector(part.grad_bias()), to_eigen_vector(whole.grad_bias())) <
          tol<T>());
    dchag::ParameterList<T, Space> params;
    part.parameters(params);
    REQUIRE(params.size() == 2);
    CHECK(params[0].name == "proj.weight");
    CHECK(params[0].shape == std::vector<std::size_t>{std::size_t(out), std::size_t(total)});
    CHECK(params[0].pieces.front().start == std::vector<std::size_t>{0, std::size_t(begin)});
    CHECK(params[1].name == "proj.bias");
    CHECK(params[1].pieces.empty());
    CHECK_FALSE(params[1].partitioned);
  }
  // The sum of the partial outputs, then the bias once, is the whole layer.
  dchag::View2<T, Space> ys("ys", rows, out);
  from_eigen(ys, y_sum);
  whole.add_bias(space, ys);
  CHECK(rel_diff(to_eigen(ys), y) < tol<T>());  // the whole layer adds its bias itself
}
TEST_CASE_TEMPLATE_APPLY(row_parts, AllCases);

TEST_CASE_TEMPLATE_DEFINE("parallel linear layers: gradients match finite differences", C,
                          parallel_linear_grad) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::ColumnParallelLinear<T, Space> col("fc1", 4, {1, 2, 5}, 2);
  dchag::RowParallelLinear<T, Space> row("fc2", {1, 4, 6}, 3);
  col.init_truncated_normal(1, 0.5);
  row.init_truncated_normal(2, 0.5);
  fill_random(col.bias(), 3);
  fill_random(row.bias(), 4);
  dchag::View2<T, Space> x("x", 6, 4), r("r", 6, 3);
  fill_random(x, 5);
  fill_random(r, 6);
  auto loss = [&] { return dot(row.forward(space, col.forward(space, x)), r); };
  loss();
  auto dx = col.backward(space, row.backward(space, r));
  CHECK(gradient_error(x, dx, loss) < 1e-7);
  CHECK(gradient_error(col.weight(), col.grad_weight(), loss) < 1e-7);
  CHECK(gradient_error(col.bias(), col.grad_bias(), loss) < 1e-7);
  CHECK(gradient_error(row.weight(), row.grad_weight(), loss) < 1e-7);
  CHECK(gradient_error(row.bias(), row.grad_bias(), loss) < 1e-7);
}
TEST_CASE_TEMPLATE_APPLY(parallel_linear_grad, DoubleCases);

TEST_CASE("parallel linear layers refuse splits outside the logical layer") {
  using Space = Kokkos::DefaultExecutionSpace;
  using Col = dchag::ColumnParallelLinear<double, Space>;
  using Row = dchag::RowParallelLinear<double, Space>;
  CHECK_THROWS_WITH_AS(Col("fc1", 4, {3, 4, 6}), doctest::Contains("[3, 7)"), dchag::Error);
  CHECK_THROWS_WITH_AS(Row("fc2", {0, 0, 6}, 3), doctest::Contains("input features"),
                       dchag::Error);
}
