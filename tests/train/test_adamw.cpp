#include <dchag/train/adamw.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Three parameters of different sizes owning their storage, one of them without weight decay.
template <class T, class Space>
struct ToyModel {
  struct Tensor {
    std::string name;
    dchag::View2<T, Space> value, grad;
    bool decay;
  };
  std::vector<Tensor> tensors;

  ToyModel() {
    add("blocks.0.mlp.fc1.weight", 3, 4, true);
    add("blocks.0.norm1.weight", 1, 5, false);
    add("head.0.weight", 2, 6, true);
    for (std::size_t i = 0; i < tensors.size(); ++i) fill_random(tensors[i].value, 100 + i);
  }
  void add(const std::string& name, int r, int c, bool decay) {
    tensors.push_back({name, dchag::View2<T, Space>(name, r, c),
                       dchag::View2<T, Space>(name + ".grad", r, c), decay});
  }
  dchag::ParameterList<T, Space> parameters() const {
    dchag::ParameterList<T, Space> list;
    for (const auto& t : tensors)
      dchag::Impl::add_parameter<T, Space>(list, t.name, t.value, t.grad, t.decay);
    return list;
  }
  void random_grads(unsigned seed) {
    for (std::size_t i = 0; i < tensors.size(); ++i)
      fill_random(tensors[i].grad, seed * 31 + i, -2.0, 2.0);
  }
};

// The update as the PyTorch documentation writes it, in double, one scalar at a time.
struct ReferenceAdamW {
  dchag::AdamWConfig c;
  std::vector<double> p, m, v;
  std::vector<bool> decay;
  long t = 0;

  void step(const std::vector<double>& g, double lr) {
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (decay[i]) p[i] -= lr * c.weight_decay * p[i];
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * g[i];
      v[i] = c.beta2 * v[i] + (1 - c.beta2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(c.beta1, t));
      const double vhat = v[i] / (1 - std::pow(c.beta2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + c.eps);
    }
  }
};

template <class View>
std::vector<double> flatten(const View& v) {
  auto h = to_host(v);
  std::vector<double> out;
  for (std::size_t i = 0; i < h.span(); ++i) out.push_back(double(h.data()[i]));
  return out;
}

template <class T, class Space>
ReferenceAdamW reference_of(const ToyModel<T, Space>& model, const dchag::AdamWConfig& c) {
  ReferenceAdamW ref;
  ref.c = c;
  for (const auto& t : model.tensors)
    for (double x : flatten(t.value)) {
      ref.p.push_back(x);
      ref.decay.push_back(t.decay);
    }
  ref.m.assign(ref.p.size(), 0.0);
  ref.v.assign(ref.p.size(), 0.0);
  return ref;
}

template <class T, class Space>
std::vector<double> all_grads(const ToyModel<T, Space>& model) {
  std::vector<double> g;
  for (const auto& t : model.tensors)
    for (double x : flatten(t.grad)) g.push_back(x);
  return g;
}

// Largest |a - b| relative to max(1, |b|) entry by entry.
double worst_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  return worst;
}

template <class T, class Space>
void check_against_reference(const ToyModel<T, Space>& model, const dchag::AdamW<T, Space>& opt,
                             const ReferenceAdamW& ref) {
  std::vector<double> p, m, v;
  for (const auto& t : model.tensors) {
    for (double x : flatten(t.value)) p.push_back(x);
    for (double x : flatten(opt.state(t.name).m)) m.push_back(x);
    for (double x : flatten(opt.state(t.name).v)) v.push_back(x);
  }
  CHECK(worst_diff(p, ref.p) < tol<T>());
  CHECK(worst_diff(m, ref.m) < tol<T>());
  CHECK(worst_diff(v, ref.v) < tol<T>());
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("AdamW matches a scalar reference over several steps", C, adamw_ref) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  for (auto config : {dchag::AdamWConfig(), dchag::AdamWConfig::climax()}) {
    config.weight_decay = 0.1;  // large enough that a misapplied decay shows
    ToyModel<T, Space> model;
    const auto params = model.parameters();
    dchag::AdamW<T, Space> opt(params, config);
    auto ref = reference_of(model, config);
    const double lrs[] = {1e-2, 3e-2, 2e-2, 5e-3, 1e-2, 1e-3};
    for (int s = 0; s < 6; ++s) {
      model.random_grads(s + 1);
      ref.step(all_grads(model), lrs[s]);
      opt.step(space, params, lrs[s]);
      CHECK(opt.step_count() == s + 1);
      check_against_reference(model, opt, ref);
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(adamw_ref, AllCases);

TEST_CASE_TEMPLATE_DEFINE("AdamW first step moves each parameter by lr * sign(g)", C,
                          adamw_first) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  ToyModel<T, Space> model;
  // Gradients well away from 0, so that eps is negligible against |g|.
  for (std::size_t i = 0; i < model.tensors.size(); ++i) {
    auto h = Kokkos::create_mirror_view(model.tensors[i].grad);
    std::mt19937 gen(7 + i);
    std::uniform_real_distribution<double> mag(0.1, 3.0);
    for (std::size_t k = 0; k < h.span(); ++k)
      h.data()[k] = T((gen() % 2 ? 1 : -1) * mag(gen));
    Kokkos::deep_copy(model.tensors[i].grad, h);
  }
  std::vector<std::vector<double>> p0, g0;
  for (const auto& t : model.tensors) {
    p0.push_back(flatten(t.value));
    g0.push_back(flatten(t.grad));
  }
  dchag::AdamWConfig config;
  config.weight_decay = 0.05;
  const double lr = 1e-2;
  dchag::AdamW<T, Space> opt(config);  // state allocated lazily by the first step
  CHECK_FALSE(opt.has_state());
  opt.step(space, model.parameters(), lr);
  CHECK(opt.has_state());
  for (std::size_t i = 0; i < model.tensors.size(); ++i) {
    const auto p1 = flatten(model.tensors[i].value);
    const double keep = model.tensors[i].decay ? 1 - lr * config.weight_decay : 1.0;
    for (std::size_t k = 0; k < p1.size(); ++k) {
      const double expected = p0[i][k] * keep - lr * (g0[i][k] > 0 ? 1 : -1);
      CHECK(std::abs(p1[k] - expected) < 1e-6 + tol<T>() * std::abs(expected));
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(adamw_first, AllCases);

TEST_CASE_TEMPLATE_DEFINE("AdamW decays only parameters flagged decay", C, adamw_decay) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  ToyModel<T, Space> model;
  const auto params = model.parameters();
  dchag::AdamWConfig config;
  config.weight_decay = 0.5;
  dchag::AdamW<T, Space> opt(params, config);
  // Zero gradients: the Adam part moves nothing, so only the decay can change a value.
  dchag::zero_grad(space, params);
  std::vector<std::vector<double>> before;
  for (const auto& t : model.tensors) before.push_back(flatten(t.value));
  const double lr = 0.1;
  opt.step(space, params, lr);
  for (std::size_t i = 0; i < model.tensors.size(); ++i) {
    const auto after = flatten(model.tensors[i].value);
    for (std::size_t k = 0; k < after.size(); ++k) {
      if (model.tensors[i].decay)
        CHECK(after[k] == doctest::Approx(before[i][k] * (1 - lr * 0.5)).epsilon(tol<T>()));
      else
        CHECK(after[k] == before[i][k]);
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(adamw_decay, AllCases);

TEST_CASE_TEMPLATE_DEFINE("AdamW state is found by name and restored with the step count", C,
                          adamw_state) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  dchag::AdamWConfig config;
  config.weight_decay = 0.1;

  // Run A: four steps straight.
  ToyModel<T, Space> a;
  dchag::AdamW<T, Space> opt_a(a.parameters(), config);
  for (int s = 0; s < 4; ++s) {
    a.random_grads(s + 1);
    opt_a.step(space, a.parameters(), 1e-2);
  }

  // Run B: two steps, then a "checkpoint" (values, moments, step count) into a fresh optimiser
  // that receives the parameters in reverse order, then two more steps.
  ToyModel<T, Space> b;
  dchag::AdamW<T, Space> opt_b(b.parameters(), config);
  for (int s = 0; s < 2; ++s) {
    b.random_grads(s + 1);
    opt_b.step(space, b.parameters(), 1e-2);
  }
  auto reversed = b.parameters();
  std::reverse(reversed.begin(), reversed.end());
  dchag::AdamW<T, Space> opt_c(reversed, config);
  CHECK(opt_c.state_names().front() == "head.0.weight");
  for (const auto& t : b.tensors) {
    Kokkos::deep_copy(opt_c.state(t.name).m, opt_b.state(t.name).m);
    Kokkos::deep_copy(opt_c.state(t.name).v, opt_b.state(t.name).v);
  }
  opt_c.set_step_count(opt_b.step_count());
  for (int s = 2; s < 4; ++s) {
    b.random_grads(s + 1);
    opt_c.step(space, b.parameters(), 1e-2);
  }
  CHECK(opt_c.step_count() == 4);
  for (std::size_t i = 0; i < a.tensors.size(); ++i) {
    CHECK(worst_diff(flatten(b.tensors[i].value), flatten(a.tensors[i].value)) == 0.0);
    CHECK(worst_diff(flatten(opt_c.state(b.tensors[i].name).v),
                     flatten(opt_a.state(a.tensors[i].name).v)) == 0.0);
  }
  CHECK_THROWS_WITH_AS(opt_c.state("pos_embed"), doctest::Contains("'pos_embed'"),
                       dchag::Error);
  CHECK_THROWS_AS(opt_c.set_step_count(-1), dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(adamw_state, AllCases);

TEST_CASE("AdamW refuses a parameter list that does not match its state") {
  using Space = Kokkos::DefaultExecutionSpace;
  using T = double;
  Space space;
  ToyModel<T, Space> model;
  const auto params = model.parameters();
  dchag::AdamW<T, Space> opt(params);

  auto missing = params;
  missing.pop_back();
  CHECK_THROWS_WITH_AS(opt.step(space, missing), doctest::Contains("'head.0.weight'"),
                       dchag::Error);

  auto renamed = params;
  renamed[1].name = "blocks.0.norm2.weight";
  CHECK_THROWS_WITH_AS(opt.step(space, renamed),
                       doctest::Contains("'blocks.0.norm2.weight' has no optimiser state"),
                       dchag::Error);

  auto resized = params;
  resized[0].value = dchag::Unmanaged<T*, Space>(resized[0].value.data(), 5);
  resized[0].grad = dchag::Unmanaged<T*, Space>(resized[0].grad.data(), 5);
  CHECK_THROWS_WITH_AS(opt.step(space, resized), doctest::Contains("optimiser state has 12"),
                       dchag::Error);

  auto duplicated = params;
  duplicated[2] = duplicated[0];
  CHECK_THROWS_WITH_AS(opt.step(space, duplicated), doctest::Contains("appears twice"),
                       dchag::Error);
  using Opt = dchag::AdamW<T, Space>;
  CHECK_THROWS_WITH_AS(Opt{duplicated}, doctest::Contains("appears twice"), dchag::Error);
  // Nothing was stepped by the refused calls.
  CHECK(opt.step_count() == 0);
}

TEST_CASE("AdamW validates its hyper-parameters") {
  using Space = Kokkos::DefaultExecutionSpace;
  using Opt = dchag::AdamW<float, Space>;
  dchag::AdamWConfig c;
  c.beta1 = 1.0;
  CHECK_THROWS_WITH_AS(Opt{c}, doctest::Contains("beta1"), dchag::Error);
  c = dchag::AdamWConfig();
  c.beta2 = -0.1;
  CHECK_THROWS_WITH_AS(Opt{c}, doctest::Contains("beta2"), dchag::Error);
  c = dchag::AdamWConfig();
  c.weight_decay = -1;
  CHECK_THROWS_WITH_AS(Opt{c}, doctest::Contains("weight_decay"), dchag::Error);
  c = dchag::AdamWConfig();
  c.lr = std::nan("");
  CHECK_THROWS_WITH_AS(Opt{c}, doctest::Contains("learning rate"), dchag::Error);

  ToyModel<float, Space> model;
  Opt opt(model.parameters());
  CHECK_THROWS_WITH_AS(opt.step(Space(), model.parameters(), -1e-3),
                       doctest::Contains("learning rate"), dchag::Error);
  // Finite as a double, infinite as a float: refused before any parameter turns into NaN.
  const auto before = flatten(model.tensors[0].value);
  CHECK_THROWS_WITH_AS(opt.step(Space(), model.parameters(), 1e300),
                       doctest::Contains("overflows the float parameters"), dchag::Error);
  CHECK(flatten(model.tensors[0].value) == before);

  const auto climax = dchag::AdamWConfig::climax();
  CHECK(climax.beta1 == 0.9);
  CHECK(climax.beta2 == 0.95);
  CHECK(climax.lr == 5e-4);
  CHECK(climax.weight_decay == 1e-5);
}

TEST_CASE_TEMPLATE_DEFINE("zero_grad clears every gradient", C, zero_grad) {
  using Space = typename C::space;
  using T = typename C::scalar;
  ToyModel<T, Space> model;
  model.random_grads(3);
  dchag::zero_grad(Space(), model.parameters());
  for (const auto& t : model.tensors)
    for (double g : flatten(t.grad)) CHECK(g == 0.0);
}
TEST_CASE_TEMPLATE_APPLY(zero_grad, AllCases);
