#include <dchag/model/encoder.hpp>
#include <dchag/model/vit_block.hpp>

#include <map>
#include <string>

#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace {

// Values far from the initialisation so that every path carries signal: norm weights around 1,
// everything else O(0.5).
template <class List>
void randomise(const List& params, std::uint64_t seed) {
  for (const auto& p : params) {
    const bool norm_weight = p.name.find("norm") != std::string::npos &&
                             p.name.compare(p.name.size() - 7, 7, ".weight") == 0;
    if (norm_weight) {
      fill_random(p.value, seed++, 0.5, 1.5);
    } else if (p.decay) {
      fill_random(p.value, seed++, -0.6, 0.6);
    } else {
      fill_random(p.value, seed++, -0.3, 0.3);
    }
  }
}

// Copies every parameter of `from` into the parameter of `to` with the same name.
template <class List>
void copy_by_name(const List& from, const List& to) {
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < from.size(); ++i) index[from[i].name] = i;
  REQUIRE(index.size() == to.size());
  for (const auto& p : to) {
    REQUIRE(index.count(p.name) == 1);
    Kokkos::deep_copy(p.value, from[index[p.name]].value);
  }
}

template <class T, class Space>
dchag::ParameterList<T, Space> params_of(const dchag::Block<T, Space>& b) {
  dchag::ParameterList<T, Space> list;
  b.parameters(list);
  return list;
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("Block forward is the pre-LN residual composition", C, block_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  struct Shape { int batch, L, dim, heads; double ratio; };
  for (Shape s : {Shape{2, 5, 12, 3, 4.0}, Shape{1, 7, 10, 5, 2.5}, Shape{3, 1, 4, 1, 1.0}}) {
    CAPTURE(s.batch);
    CAPTURE(s.L);
    CAPTURE(s.dim);
    CAPTURE(s.heads);
    const int rows = s.batch * s.L, hidden = static_cast<int>(s.dim * s.ratio);
    dchag::Block<T, Space> block("blocks.3", s.dim, s.heads, s.ratio);
    block.init(1);
    const auto params = params_of(block);
    randomise(params, 2);
    // The same computation from stand-alone layers carrying the same names and values.
    dchag::LayerNorm<T, Space> norm1("blocks.3.norm1", s.dim), norm2("blocks.3.norm2", s.dim);
    dchag::SelfAttention<T, Space> attn("blocks.3.attn", s.dim, s.heads, s.dim / s.heads);
    dchag::Mlp<T, Space> mlp("blocks.3.mlp", s.dim, hidden);
    dchag::ParameterList<T, Space> parts;
    norm1.parameters(parts);
    attn.parameters(parts);
    norm2.parameters(parts);
    mlp.parameters(parts);
    copy_by_name(params, parts);

    dchag::View2<T, Space> x("x", rows, s.dim);
    fill_random(x, 3);
    const Matrix<double> mid =
        to_eigen(x) + to_eigen(attn.forward(space, norm1.forward(space, x), s.batch, s.L));
    dchag::View2<T, Space> xmid("mid", rows, s.dim);
    {
      auto h = Kokkos::create_mirror_view(xmid);
      for (int i = 0; i < rows; ++i)
        for (int j = 0; j < s.dim; ++j) h(i, j) = static_cast<T>(mid(i, j));
      Kokkos::deep_copy(xmid, h);
    }
    const Matrix<double> ref = mid + to_eigen(mlp.forward(space, norm2.forward(space, xmid)));
    auto y = block.forward(space, x, s.batch, s.L);
    CHECK(rel_diff(to_eigen(y), ref) < tol<T>());
    CHECK(block.flops(s.batch, s.L) ==
          doctest::Approx(norm1.flops(rows) + attn.flops(s.batch, s.L) + norm2.flops(rows) +
                          mlp.flops(rows) + 2.0 * rows * s.dim));
  }
}
TEST_CASE_TEMPLATE_APPLY(block_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("Block backward matches finite differences", C, block_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int batch = 2, L = 5, dim = 12, heads = 3;
  dchag::Block<T, Space> block("blocks.0", dim, heads);
  block.init(7);
  const auto params = params_of(block);
  randomise(params, 8);
  REQUIRE(params.size() == 12);
  const char* names[] = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                         "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                         "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};
  for (std::size_t i = 0; i < params.size(); ++i)
    CHECK(params[i].name == std::string("blocks.0.") + names[i]);
  CHECK(params[8].shape == std::vector<std::size_t>{48, 12});

  dchag::View2<T, Space> x("x", batch * L, dim), r("r", batch * L, dim);
  fill_random(x, 9);
  fill_random(r, 10);
  auto loss = [&] { return dot(block.forward(space, x, batch, L), r); };
  loss();
  auto dx = block.backward(space, r);
  // dL/dx = r (the residual path) + the two branches: check both that it is right and that the
  // residual path is there at all.
  CHECK(gradient_error(x, dx, loss, 60) < 1e-6);
  CHECK((to_eigen(dx) - to_eigen(r)).cwiseAbs().maxCoeff() > 1e-3);
  for (const auto& p : params) {
    CAPTURE(p.name);
    CHECK(gradient_error(p.value, p.grad, loss) < 1e-6);
  }
}
TEST_CASE_TEMPLATE_APPLY(block_bwd, DoubleCases);

TEST_CASE_TEMPLATE_DEFINE("Encoder forward chains its blocks and the final norm", C, enc_fwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int batch = 2, L = 4, dim = 8, heads = 2, depth = 2;
  dchag::Encoder<T, Space> enc(dim, depth, heads, 2.0);
  enc.init(21);
  dchag::ParameterList<T, Space> params;
  enc.parameters(params);
  REQUIRE(params.size() == 12 * depth + 2);
  CHECK(params.front().name == "blocks.0.norm1.weight");
  CHECK(params[12].name == "blocks.1.norm1.weight");
  CHECK(params[params.size() - 2].name == "norm.weight");
  CHECK(params.back().name == "norm.bias");
  randomise(params, 22);

  dchag::Block<T, Space> b0("blocks.0", dim, heads, 2.0), b1("blocks.1", dim, heads, 2.0);
  dchag::LayerNorm<T, Space> norm("norm", dim);
  dchag::ParameterList<T, Space> parts;
  b0.parameters(parts);
  b1.parameters(parts);
  norm.parameters(parts);
  copy_by_name(params, parts);

  dchag::View2<T, Space> x("x", batch * L, dim);
  fill_random(x, 23);
  const auto ref =
      to_eigen(norm.forward(space, b1.forward(space, b0.forward(space, x, batch, L), batch, L)));
  CHECK(rel_diff(to_eigen(enc.forward(space, x, batch, L)), ref) < tol<T>());
  CHECK(enc.flops(batch, L) ==
        doctest::Approx(b0.flops(batch, L) + b1.flops(batch, L) + norm.flops(batch * L)));

  // A prefix renames everything (the MAE decoder).
  dchag::Encoder<T, Space> dec(dim, 1, heads, 4.0, "decoder_");
  dchag::ParameterList<T, Space> dparams;
  dec.parameters(dparams);
  CHECK(dparams.front().name == "decoder_blocks.0.norm1.weight");
  CHECK(dparams.back().name == "decoder_norm.bias");
}
TEST_CASE_TEMPLATE_APPLY(enc_fwd, AllCases);

TEST_CASE_TEMPLATE_DEFINE("Encoder backward matches finite differences", C, enc_bwd) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int batch = 2, L = 3, dim = 8, heads = 2, depth = 2;
  dchag::Encoder<T, Space> enc(dim, depth, heads, 2.0);
  enc.init(31);
  dchag::ParameterList<T, Space> params;
  enc.parameters(params);
  randomise(params, 32);
  dchag::View2<T, Space> x("x", batch * L, dim), r("r", batch * L, dim);
  fill_random(x, 33);
  fill_random(r, 34);
  auto loss = [&] { return dot(enc.forward(space, x, batch, L), r); };
  loss();
  auto dx = enc.backward(space, r);
  CHECK(gradient_error(x, dx, loss, 48) < 1e-6);
  for (const auto& p : params) {
    CAPTURE(p.name);
    CHECK(gradient_error(p.value, p.grad, loss, 12) < 1e-6);
  }
}
TEST_CASE_TEMPLATE_APPLY(enc_bwd, DoubleCases);

TEST_CASE("Block and Encoder refuse bad shapes and settings") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  CHECK_THROWS_WITH_AS((dchag::Block<double, Space>("blocks.0", 10, 3)),
                       doctest::Contains("heads * head_dim must equal dim"), dchag::Error);
  CHECK_THROWS_WITH_AS((dchag::Encoder<double, Space>(10, 2, 4)),
                       doctest::Contains("blocks.0"), dchag::Error);
  CHECK_THROWS_AS((dchag::Block<double, Space>("blocks.0", 12, 0)), dchag::Error);
  dchag::Block<double, Space> block("blocks.0", 12, 3);
  dchag::View2<double, Space> x("x", 10, 13);
  CHECK_THROWS_WITH_AS(block.forward(space, x, 2, 5), doctest::Contains("'x'[10, 13]"),
                       dchag::Error);
  dchag::View2<double, Space> good("good", 10, 12), dy("dy", 9, 12);
  CHECK_THROWS_WITH_AS(block.forward(space, good, 3, 5), doctest::Contains("batch*L"),
                       dchag::Error);
  block.forward(space, good, 2, 5);
  CHECK_THROWS_WITH_AS(block.backward(space, dy), doctest::Contains("'dy'[9, 12]"),
                       dchag::Error);
  dchag::Encoder<double, Space> enc(12, 2, 3);
  CHECK_THROWS_WITH_AS(enc.forward(space, x, 2, 5), doctest::Contains("'x'[10, 13]"),
                       dchag::Error);
}
