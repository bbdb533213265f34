#include <dchag/train/adamw.hpp>
#include <dchag/train/grad_clip.hpp>
#include <dchag/train/parameter_table.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Tensors around and across the chunk size (several chunks, an exact multiple, an empty one),
// with every combination of the partitioned / sharded flags.
template <class T, class Space>
struct ChunkedModel {
  struct Tensor {
    std::string name;
    dchag::View1<T, Space> value, grad;
    bool decay, partitioned, sharded;
  };
  std::vector<Tensor> tensors;

  ChunkedModel() {
    const std::size_t chunk = dchag::ParameterTable<T, Space>::chunk_elements();
    add("a.weight", 3 * chunk + 17, true, false, false);
    add("b.bias", 5, false, true, false);
    add("c.empty", 0, true, false, true);
    add("d.weight", 2 * chunk, true, true, true);
    add("e.norm", 1, false, false, true);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      fill_random(tensors[i].value, 10 + i);
      fill_random(tensors[i].grad, 50 + i, -2.0, 2.0);
    }
  }
  void add(const std::string& name, std::size_t n, bool decay, bool partitioned, bool sharded) {
    tensors.push_back({name, dchag::View1<T, Space>(name, n),
                       dchag::View1<T, Space>(name + ".grad", n), decay, partitioned, sharded});
  }
  dchag::ParameterList<T, Space> parameters() const {
    dchag::ParameterList<T, Space> list;
    for (const auto& t : tensors) {
      dchag::Impl::add_parameter<T, Space>(list, t.name, t.value, t.grad, t.decay);
      list.back().partitioned = t.partitioned;
      list.back().sharded = t.sharded;
    }
    return list;
  }
};

template <class View>
std::vector<double> flatten(const View& v) {
  auto h = to_host(v);
  std::vector<double> out;
  for (std::size_t i = 0; i < h.span(); ++i) out.push_back(double(h.data()[i]));
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("ParameterTable: zeroing, scaling and the squared norm by kind in one "
                          "launch each match the per-tensor operations",
                          C, table_ops) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  ChunkedModel<T, Space> model;
  const auto params = model.parameters();
  dchag::ParameterTable<T, Space> table(params);
  CHECK(table.tensor_count() == params.size());
  CHECK(table.chunk_count() == 3 + 1 + 1 + 0 + 2 + 1);
  CHECK_FALSE(table.update(params));  // the same list: kept

  double expected[4] = {0, 0, 0, 0};
  for (const auto& p : params)
    expected[2 * p.sharded + p.partitioned] += dchag::sum_squares(space, p.grad);
  double kinds[4];
  dchag::grad_squares_by_kind(space, table, kinds);
  for (int k = 0; k < 4; ++k) CHECK(kinds[k] == doctest::Approx(expected[k]).epsilon(1e-12));
  CHECK(dchag::grad_sum_squares(space, table) ==
        doctest::Approx(dchag::grad_sum_squares(space, params)).epsilon(1e-12));

  std::vector<std::vector<double>> before;
  for (const auto& p : params) before.push_back(flatten(p.grad));
  dchag::scale_grads(space, table, T(0.5));
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto after = flatten(params[i].grad);
    for (std::size_t k = 0; k < after.size(); ++k)
      REQUIRE(after[k] == double(T(before[i][k]) * T(0.5)));
  }
  dchag::zero_grad(space, table);
  CHECK(dchag::grad_sum_squares(space, params) == 0.0);

  // A list of other tensors rebuilds the table.
  auto fewer = params;
  fewer.pop_back();
  CHECK(table.update(fewer));
  CHECK(table.tensor_count() == fewer.size());
}
TEST_CASE_TEMPLATE_APPLY(table_ops, AllCases);

TEST_CASE_TEMPLATE_DEFINE("AdamW updates every element of tensors spanning many chunks once, "
                          "in torch's order of operations",
                          C, adamw_chunks) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  // beta1 = 0.3: torch's lerp takes its other formula at a weight of 1 - beta1 >= 0.5.
  for (const double beta1 : {0.9, 0.3}) {
    CAPTURE(beta1);
    ChunkedModel<T, Space> model;
    auto params = model.parameters();
    dchag::AdamWConfig config;
    config.weight_decay = 0.1;
    config.beta1 = beta1;
    dchag::AdamW<T, Space> opt(params, config);

    // The update of torch's single-tensor AdamW, element by element in T.
    std::vector<std::vector<T>> p, m, v;
    for (const auto& q : params) {
      std::vector<T> x;
      for (double e : flatten(q.value)) x.push_back(T(e));
      p.push_back(x);
      m.emplace_back(x.size(), T(0));
      v.emplace_back(x.size(), T(0));
    }
    const double lrs[] = {1e-2, 3e-2, 5e-3};
    for (int s = 0; s < 3; ++s) {
      for (std::size_t i = 0; i < model.tensors.size(); ++i)
        fill_random(model.tensors[i].grad, 1000 * s + i, -2.0, 2.0);
      // Every other step the list comes in another order: the moments follow the names.
      if (s == 1) std::reverse(params.begin(), params.end());
      opt.step(space, params, lrs[s]);
      const double lr = lrs[s], t = s + 1;
      const T neg_step = T(-(lr / (1.0 - std::pow(config.beta1, t))));
      const T bc2_sqrt = T(std::sqrt(1.0 - std::pow(config.beta2, t)));
      for (std::size_t i = 0; i < model.tensors.size(); ++i) {
        const auto& tensor = model.tensors[i];
        const auto g = flatten(tensor.grad);
        const T decay = tensor.decay ? T(1.0 - lr * config.weight_decay) : T(1);
        for (std::size_t k = 0; k < g.size(); ++k) {
          const T gk = T(g[k]);
          const T pk = p[i][k] * decay;
          const T w = T(1.0 - config.beta1);
          m[i][k] = 1.0 - config.beta1 < 0.5 ? m[i][k] + w * (gk - m[i][k])
                                              : gk - (gk - m[i][k]) * (T(1) - w);
          v[i][k] = v[i][k] * T(config.beta2) + T(1.0 - config.beta2) * gk * gk;
          p[i][k] = pk + neg_step * m[i][k] / (T(std::sqrt(v[i][k])) / bc2_sqrt + T(config.eps));
        }
        const auto got_p = flatten(tensor.value);
        const auto got_m = flatten(opt.state(tensor.name).m);
        const auto got_v = flatten(opt.state(tensor.name).v);
        REQUIRE(got_p.size() == p[i].size());
        double worst = 0;
        for (std::size_t k = 0; k < got_p.size(); ++k) {
          worst = std::max(worst, std::abs(got_p[k] - double(p[i][k])));
          worst = std::max(worst, std::abs(got_m[k] - double(m[i][k])));
          worst = std::max(worst, std::abs(got_v[k] - double(v[i][k])));
        }
        CAPTURE(tensor.name);
        CHECK(worst <= 4 * std::numeric_limits<T>::epsilon());
      }
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(adamw_chunks, AllCases);

TEST_CASE("ParameterTable refuses offsets outside the packed buffer") {
  using Space = Kokkos::DefaultExecutionSpace;
  ChunkedModel<float, Space> model;
  const auto params = model.parameters();
  dchag::ParameterTable<float, Space> table;
  CHECK_THROWS_WITH_AS(table.build(params, std::vector<std::int64_t>(params.size(), 0), 10),
                       doctest::Contains("exceeds the buffer"), dchag::Error);
  CHECK_THROWS_WITH_AS(table.build(params, {0}, 10), doctest::Contains("offsets for"),
                       dchag::Error);
}
