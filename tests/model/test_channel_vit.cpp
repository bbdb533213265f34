// The whole forecast model (ChannelViT) on one rank: its hand-written backward against central
// finite differences for every parameter, its refusal of nonsense definitions before anything
// is allocated, and its determinism in the seed. Partition invariance over grids lives in
// tests/parallel.
#include <dchag/core/memory_tracker.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/train/adamw.hpp>
#include <dchag/train/losses.hpp>

#include <set>
#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Central-difference step. A whole model's loss is O(1) while some entries' gradients are
// O(1e-3): at the usual 1e-6 the rounding of the loss (1e-16 / h) is already 1e-6 of such a
// gradient, and at 1e-5 the truncation error (h^2) is still below 1e-8.
constexpr double kStep = 1e-5;

// C=4, 8x8 image, patch 4 (L=4), D=8, depth 1, heads 2, D-CHAG groups {2, 1}, lead time on.
dchag::ModelConfig tiny_forecast(std::vector<int> levels = {2, 1}) {
  dchag::ModelConfig c;
  c.channels = 4;
  c.height = c.width = 8;
  c.patch = 4;
  c.dim = 8;
  c.depth = 1;
  c.heads = 2;
  c.decoder_depth = 1;
  c.levels = std::move(levels);
  c.lead_time = true;
  c.seed = 5;
  return c;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Values far from the initialisation so that every path carries signal (norm weights around 1,
// weight matrices O(0.5), the rest O(0.3)) yet LayerNorm and softmax stay well conditioned.
template <class List>
void randomise(const List& params, std::uint64_t seed) {
  for (const auto& p : params) {
    if (p.name.find("norm") != std::string::npos && ends_with(p.name, ".weight"))
      fill_random(p.value, seed++, 0.5, 1.5);
    else if (p.decay)
      fill_random(p.value, seed++, -0.5, 0.5);
    else
      fill_random(p.value, seed++, -0.3, 0.3);
  }
}

template <class View>
std::vector<double> host_values(const View& v) {
  auto h = to_host(v);
  std::vector<double> out(h.span());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(h.data()[i]);
  return out;
}

// Every parameter's gradient, from one backward of `loss`, against central differences of it
// on up to `samples` entries; and no parameter may be disconnected (an all-zero gradient would
// pass the comparison vacuously).
template <class T, class Space, class Loss, class Backward>
void check_every_parameter(const dchag::ParameterList<T, Space>& params, Loss&& loss,
                           Backward&& backward, int samples = 16) {
  Space space;
  dchag::zero_grad(space, params);
  loss();
  backward();
  std::set<std::string> names;
  for (const auto& p : params) {
    CAPTURE(p.name);
    CHECK(names.insert(p.name).second);
    CHECK(dchag::sum_squares(space, p.grad) > 0);
    CHECK(gradient_error(p.value, p.grad, loss, samples, kStep) < 1e-6);
  }
}

template <class Policy, class T, class Space>
void check_forecast_gradients(const dchag::ModelConfig& cfg,
                              dchag::ForwardMode mode = dchag::ForwardMode::evaluation()) {
  CAPTURE(cfg.describe());
  CAPTURE(Policy::name());
  Space space;
  const int B = 2;
  dchag::ChannelViT<T, Space, Policy> model(cfg);
  const auto params = model.parameters();
  randomise(params, 100);
  dchag::View4<T, Space> x("x", B, cfg.channels, cfg.height, cfg.width);
  dchag::View4<T, Space> y("y", B, cfg.out_channels(), cfg.height, cfg.width);
  dchag::View4<T, Space> dpred("dpred", B, cfg.out_channels(), cfg.height, cfg.width);
  dchag::View1<T, Space> lead("lead", B), w("w_lat", cfg.height);
  fill_random(x, 1);
  fill_random(y, 2, -2.0, 2.0);
  fill_random(lead, 3, 0.2, 1.0);
  fill_random(w, 4, 0.5, 1.5);
  auto loss = [&] {
    return dchag::lat_weighted_mse(space, model.forward(space, x, lead, mode), y, w, dpred);
  };
  if (mode.training && (cfg.drop_rate > 0 || cfg.drop_path_rate > 0)) {
    // Dropout is on in training only.
    const double train = loss();
    const double eval = dchag::lat_weighted_mse(space, model.forward(space, x, lead), y, w, dpred);
    CHECK(std::abs(train - eval) > 1e-6 * std::abs(eval));
  }
  check_every_parameter(params, loss, [&] { model.backward(space, dpred); });
}

// Runs `make` and checks that it throws a dchag::Error whose message contains every one of
// `parts`, without a single byte of Kokkos memory allocated on the way.
template <class Make>
void check_refused(Make&& make, const std::vector<std::string>& parts) {
  dchag::MemoryTracker::install();
  const std::uint64_t before = dchag::MemoryTracker::current_total_bytes();
  dchag::MemoryTracker::reset_peak();
  std::string message;
  try {
    make();
  } catch (const dchag::Error& e) {
    message = e.what();
  }
  CAPTURE(message);
  REQUIRE(!message.empty());
  for (const auto& p : parts) {
    CAPTURE(p);
    CHECK(message.find(p) != std::string::npos);
  }
  CHECK(dchag::MemoryTracker::peak_total_bytes() == before);
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("ChannelViT: every gradient matches finite differences", C, vit_grad) {
  using Space = typename C::space;
  using T = typename C::scalar;
  using namespace dchag;
  SUBCASE("D-CHAG-L, groups {2, 1}") {
    check_forecast_gradients<DistributedChannels<LinearAggregator>, T, Space>(tiny_forecast());
  }
  SUBCASE("ClimaX aggregation, levels {1}") {
    check_forecast_gradients<DistributedChannels<LinearAggregator>, T, Space>(tiny_forecast({1}));
    check_forecast_gradients<TensorParallel, T, Space>(tiny_forecast({1}));
  }
  SUBCASE("D-CHAG-C, groups {2, 1}") {
    check_forecast_gradients<DistributedChannels<CrossAttentionAggregator>, T, Space>(
        tiny_forecast());
  }
  SUBCASE("no lead time, no hidden head layer, a deeper encoder") {
    auto cfg = tiny_forecast({2, 1});
    cfg.lead_time = false;
    cfg.decoder_depth = 0;
    cfg.depth = 2;
    check_forecast_gradients<DistributedChannels<LinearAggregator>, T, Space>(cfg);
  }
  SUBCASE("training with dropout and drop-path (masks fixed by the step)") {
    auto cfg = tiny_forecast({2, 1});
    cfg.depth = 2;
    cfg.drop_rate = 0.2;
    cfg.drop_path_rate = 0.3;
    check_forecast_gradients<DistributedChannels<LinearAggregator>, T, Space>(
        cfg, ForwardMode::train(7));
    check_forecast_gradients<TensorParallel, T, Space>(dchag::climax_dropout(tiny_forecast({1})),
                                                       ForwardMode::train(3));
  }
  SUBCASE("named variables, outputs a subset in another order") {
    auto cfg = tiny_forecast({2, 1});
    cfg.variables = {"z500", "t850", "t2m", "u10"};
    cfg.out_variables = {"u10", "z500", "t2m"};
    check_forecast_gradients<DistributedChannels<LinearAggregator>, T, Space>(cfg);
    cfg.out_variables = {"t850"};
    cfg.levels = {1};
    check_forecast_gradients<TensorParallel, T, Space>(cfg);
  }
}
TEST_CASE_TEMPLATE_APPLY(vit_grad, DoubleCases);

// ClimaX's `preds[:, out_var_ids]`, against a model of the same weights predicting every
// variable: the prediction is its channels picked by name, and every parameter's gradient is
// the one of its gradient with the other channels' zeroed.
TEST_CASE("ChannelViT: the output variables are the selected channels of the full prediction") {
  using Space = Kokkos::DefaultExecutionSpace;
  using T = double;
  using Policy = dchag::DistributedChannels<dchag::LinearAggregator>;
  Space space;
  const int B = 2;
  auto all = tiny_forecast({2, 1});
  all.variables = {"a", "b", "c", "d"};
  auto some = all;
  some.out_variables = {"d", "b"};
  CHECK(some.out_channels() == 2);
  CHECK(some.output_indices() == std::vector<int>{3, 1});
  dchag::ChannelViT<T, Space, Policy> full(all), picked(some);
  const auto pf = full.parameters(), pp = picked.parameters();
  REQUIRE(pf.size() == pp.size());
  randomise(pf, 100);
  randomise(pp, 100);  // the same values: the parameters have the same names and shapes
  dchag::View4<T, Space> x("x", B, 4, all.height, all.width);
  dchag::View1<T, Space> lead("lead", B);
  fill_random(x, 1);
  fill_random(lead, 3, 0.2, 1.0);
  const auto yf = to_host(full.forward(space, x, lead));
  const auto yp = to_host(picked.forward(space, x, lead));
  REQUIRE(yp.extent(1) == 2);
  const auto whole = to_host(picked.full_prediction());
  const int ids[2] = {3, 1};
  double worst = 0;
  for (int b = 0; b < B; ++b)
    for (int k = 0; k < 2; ++k)
      for (int h = 0; h < all.height; ++h)
        for (int w = 0; w < all.width; ++w) {
          worst = std::max(worst, std::abs(yp(b, k, h, w) - yf(b, ids[k], h, w)));
          CHECK(whole(b, ids[k], h, w) == yp(b, k, h, w));
        }
  CHECK(worst == 0);
  dchag::View4<T, Space> dp("dp", B, 2, all.height, all.width), df("df", B, 4, all.height,
                                                                     all.width);
  fill_random(dp, 9, -1.0, 1.0);
  {
    const auto hp = to_host(dp);
    auto hf = Kokkos::create_mirror_view(df);
    Kokkos::deep_copy(hf, 0.0);
    for (int b = 0; b < B; ++b)
      for (int k = 0; k < 2; ++k)
        for (int h = 0; h < all.height; ++h)
          for (int w = 0; w < all.width; ++w) hf(b, ids[k], h, w) = hp(b, k, h, w);
    Kokkos::deep_copy(df, hf);
  }
  dchag::zero_grad(space, pf);
  dchag::zero_grad(space, pp);
  full.backward(space, df);
  picked.backward(space, dp);
  for (std::size_t i = 0; i < pf.size(); ++i) {
    CAPTURE(pf[i].name);
    REQUIRE(pf[i].name == pp[i].name);
    CHECK(host_values(pf[i].grad) == host_values(pp[i].grad));
  }
}

TEST_CASE("ModelConfig: variable names, their checks and their description") {
  using Space = Kokkos::DefaultExecutionSpace;
  using Model = dchag::ChannelViT<double, Space>;
  auto refused = [](const dchag::ModelConfig& c, const std::vector<std::string>& parts) {
    check_refused([&] { Model m(c); }, parts);
  };
  auto c = tiny_forecast();
  const std::string plain = c.describe();
  CHECK(c.variable_names() == std::vector<std::string>{"var0", "var1", "var2", "var3"});
  CHECK(c.output_variable_names() == c.variable_names());
  CHECK(c.out_channels() == 4);
  // The defaults spelled out describe the same model as the defaults left implicit.
  c.variables = {"var0", "var1", "var2", "var3"};
  c.out_variables = c.variables;
  CHECK(c.describe() == plain);
  CHECK(plain.find("variables") == std::string::npos);
  c.out_variables = {"var2"};
  CHECK(c.describe() == dchag::Impl::concat(plain.substr(0, plain.find(" out=")), " out=1",
                                            plain.substr(plain.find(" image=")),
                                            " out_variables=var2"));
  c.variables = {"z", "t", "q", "u"};
  c.out_variables = {"u", "z"};
  CHECK(c.describe().find(" variables=z,t,q,u out_variables=u,z") != std::string::npos);
  c.validate();

  c = tiny_forecast();
  c.variables = {"z", "t", "q"};
  refused(c, {"3 variable names (z,t,q) for channels = 4"});
  c.variables = {"z", "t", "z", "u"};
  refused(c, {"variable 'z' is named twice (channels 0 and 2)"});
  c.variables = {"z", "", "q", "u"};
  refused(c, {"an empty name among the variables"});
  c.variables = {"z", "t 2m", "q", "u"};
  refused(c, {"variables name 't 2m' holds a comma, white space or a control character"});
  c.variables = {"z", "t,2m", "q", "u"};
  refused(c, {"name 't,2m' holds a comma"});
  c.variables = {"z", "t", "q", "u"};
  c.out_variables = {"t", "v"};
  refused(c, {"output variable 'v' is not an input variable (z,t,q,u)"});
  c.out_variables = {"t", "q", "t"};
  refused(c, {"output variable 't' is listed twice"});
  c.out_variables = {"var0"};
  refused(c, {"output variable 'var0' is not an input variable"});
  c = tiny_forecast();
  c.out_variables = {""};
  refused(c, {"an empty name among the out_variables"});
}

TEST_CASE("ChannelViT refuses nonsense definitions before allocating anything") {
  using Space = Kokkos::DefaultExecutionSpace;
  using Model = dchag::ChannelViT<double, Space>;
  auto refused = [](const dchag::ModelConfig& c, const std::vector<std::string>& parts) {
    CAPTURE(c.describe());
    check_refused([&] { Model m(c); }, parts);
  };
  auto c = tiny_forecast();
  c.height = 10;
  refused(c, {"image 10x8", "not divisible by patch 4"});
  c = tiny_forecast();
  c.width = 6;
  refused(c, {"image 8x6", "patch 4"});
  c = tiny_forecast();
  c.dim = 12;
  c.heads = 5;
  refused(c, {"dim 12", "heads 5"});
  c = tiny_forecast();
  c.dim = 6;
  c.heads = 2;
  refused(c, {"dim 6", "divisible by 4"});
  c = tiny_forecast({3, 1});
  refused(c, {"reduces 4 tokens to 3", "{3,1}", "channels 4"});
  c = tiny_forecast({2, 2});
  refused(c, {"{2,2}", "must end in 1"});
  c = tiny_forecast();
  c.channels = 6;
  c.levels = {4, 1};
  refused(c, {"reduces 6 tokens to 4"});
  c = tiny_forecast({});
  refused(c, {"must end in 1"});

  struct Zero { const char* field; int dchag::ModelConfig::*member; };
  for (Zero z : {Zero{"channels", &dchag::ModelConfig::channels},
                 Zero{"height", &dchag::ModelConfig::height},
                 Zero{"width", &dchag::ModelConfig::width},
                 Zero{"patch", &dchag::ModelConfig::patch}, Zero{"dim", &dchag::ModelConfig::dim},
                 Zero{"depth", &dchag::ModelConfig::depth},
                 Zero{"heads", &dchag::ModelConfig::heads}}) {
    CAPTURE(z.field);
    c = tiny_forecast();
    c.*z.member = 0;
    refused(c, {std::string(z.field) + " must be positive, got 0"});
    c.*z.member = -3;
    refused(c, {std::string(z.field) + " must be positive, got -3"});
  }
  for (const double ratio : {0.0, -3.0, 65.0, std::nan("")}) {
    c = tiny_forecast();
    c.mlp_ratio = ratio;
    refused(c, {"mlp_ratio must be a number in (0, 64]"});
  }
  c = tiny_forecast();
  c.mlp_ratio = 0.01;  // int(dim * 0.01) = 0 hidden units
  refused(c, {"MLP hidden width int(dim * mlp_ratio)"});
  for (const double rate : {-0.1, 1.0, std::nan("")}) {
    c = tiny_forecast();
    c.drop_rate = rate;
    refused(c, {"drop_rate is a probability in [0, 1), got"});
    c = tiny_forecast();
    c.drop_path_rate = rate;
    refused(c, {"drop_path_rate is a probability in [0, 1), got"});
  }
  c = tiny_forecast();
  c.decoder_depth = -1;
  refused(c, {"decoder_depth must be >= 0, got -1"});
  // Sizes whose products would overflow (from a typo or a corrupt checkpoint) are refused
  // before anything is allocated.
  c = tiny_forecast();
  c.channels = 2147483647;
  refused(c, {"channels = 2147483647 exceeds the limit of 65536"});
  c = tiny_forecast();
  c.height = c.width = 2147483647;
  c.patch = 1;
  refused(c, {"height = 2147483647 exceeds the limit"});
  c = tiny_forecast();
  c.height = c.width = 65536;
  c.patch = 2;
  refused(c, {"1073741824 patches, more than the limit of 16777216"});
}

TEST_CASE("ChannelViT refuses inputs of the wrong shape") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const auto cfg = tiny_forecast();
  dchag::ChannelViT<double, Space> model(cfg);
  dchag::View4<double, Space> bad("x", 2, 3, 8, 8), good("x", 2, 4, 8, 8);
  dchag::View1<double, Space> lead("lead", 2), short_lead("lead", 1);
  CHECK_THROWS_WITH_AS(model.forward(space, bad, lead), doctest::Contains("'x'[2, 3, 8, 8]"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(model.forward(space, good, short_lead),
                       doctest::Contains("'lead'[1]"), dchag::Error);
  dchag::ChannelViT<double, Space> fresh(cfg);
  dchag::View4<double, Space> d("d", 2, 4, 8, 8);
  CHECK_THROWS_WITH_AS(fresh.backward(space, d), doctest::Contains("before forward"),
                       dchag::Error);
}

TEST_CASE_TEMPLATE_DEFINE("ChannelViT is a deterministic function of its seed", C, vit_seed) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  auto cfg = tiny_forecast();
  cfg.seed = 11;
  dchag::View4<T, Space> x("x", 3, cfg.channels, cfg.height, cfg.width);
  dchag::View1<T, Space> lead("lead", 3);
  fill_random(x, 1);
  fill_random(lead, 2, 0.0, 1.0);

  struct Result {
    std::vector<std::string> names;
    std::vector<bool> decay;
    std::vector<std::vector<double>> values;
    std::vector<double> output;
  };
  auto run = [&](std::uint64_t seed) {
    auto c = cfg;
    c.seed = seed;
    dchag::ChannelViT<T, Space> model(c);
    Result r;
    for (const auto& p : model.parameters()) {
      r.names.push_back(p.name);
      r.decay.push_back(p.decay);
      r.values.push_back(host_values(p.value));
    }
    r.output = host_values(model.forward(space, x, lead));
    // A second forward of the same input is the same: no hidden state leaks between calls.
    CHECK(host_values(model.forward(space, x, lead)) == r.output);
    return r;
  };
  const Result a = run(11), b = run(11), other = run(12);
  REQUIRE(a.names == b.names);
  for (std::size_t i = 0; i < a.values.size(); ++i) {
    CAPTURE(a.names[i]);
    CHECK(a.values[i] == b.values[i]);  // bitwise
  }
  CHECK(a.output == b.output);
  REQUIRE(a.names == other.names);
  CHECK(a.output != other.output);
  // Every randomly initialised tensor (the weight matrices) moves with the seed; the sin-cos
  // embeddings and the zero biases do not depend on it.
  for (std::size_t i = 0; i < a.values.size(); ++i) {
    CAPTURE(a.names[i]);
    if (a.decay[i]) CHECK(a.values[i] != other.values[i]);
    if (a.names[i] == "pos_embed" || a.names[i] == "var_embed") CHECK(a.values[i] == other.values[i]);
  }
}
TEST_CASE_TEMPLATE_APPLY(vit_seed, AllCases);
