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

TEST_CASE_TEMPLATE_DEFINE("Block with dropout and drop-path: masks fixed by the step, "
                          "gradients match finite differences", C, block_dropout) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  const int batch = 4, L = 5, dim = 12, heads = 3;
  dchag::Block<T, Space> block("blocks.1", dim, heads, 4.0, 1e-5,
                               dchag::Communicator(MPI_COMM_SELF), dchag::DropoutRates{0.2, 0.4});
  dchag::Block<T, Space> plain("blocks.1", dim, heads);
  block.init(7);
  plain.init(7);
  const auto params = params_of(block);
  randomise(params, 8);
  copy_by_name(params, params_of(plain));
  dchag::View2<T, Space> x("x", batch * L, dim), r("r", batch * L, dim);
  fill_random(x, 9);
  fill_random(r, 10);
  // Evaluation (the default, or a context that does not train) is the block without dropout.
  const auto ref = to_eigen(plain.forward(space, x, batch, L));
  CHECK((to_eigen(block.forward(space, x, batch, L)) - ref).cwiseAbs().maxCoeff() == 0);
  dchag::DropoutContext eval{false, 3, 11, 0};
  CHECK((to_eigen(block.forward(space, x, batch, L, eval)) - ref).cwiseAbs().maxCoeff() == 0);
  // Training at a fixed step: deterministic, and different from evaluation.
  const dchag::DropoutContext train{true, 3, 11, 8};
  const auto y1 = to_eigen(block.forward(space, x, batch, L, train));
  CHECK((to_eigen(block.forward(space, x, batch, L, train)) - y1).cwiseAbs().maxCoeff() == 0);
  CHECK((y1 - ref).cwiseAbs().maxCoeff() > 1e-3);

  auto loss = [&] { return dot(block.forward(space, x, batch, L, train), r); };
  loss();
  for (const auto& p : params) Kokkos::deep_copy(p.grad, T(0));
  auto dx = block.backward(space, r);
  CHECK(gradient_error(x, dx, loss, 60) < 1e-6);
  for (const auto& p : params) {
    CAPTURE(p.name);
    CHECK(gradient_error(p.value, p.grad, loss) < 1e-6);
  }
  // Refused rates name the value.
  using B = dchag::Block<T, Space>;
  CHECK_THROWS_WITH_AS(B("b", dim, heads, 4.0, 1e-5, dchag::Communicator(MPI_COMM_SELF),
                         dchag::DropoutRates{1.0, 0}),
                       doctest::Contains("drop_rate is a probability in [0, 1), got 1"),
                       dchag::Error);
}
TEST_CASE_TEMPLATE_APPLY(block_dropout, DoubleCases);

TEST_CASE("Encoder: ClimaX's linear drop-path schedule, gradients with dropout") {
  using Space = Kokkos::DefaultExecutionSpace;
  using T = double;
  Space space;
  const int batch = 3, L = 3, dim = 8, heads = 2, depth = 3;
  dchag::Encoder<T, Space> enc(dim, depth, heads, 2.0, "", 1e-5,
                               dchag::Communicator(MPI_COMM_SELF),
                               dchag::Communicator(MPI_COMM_SELF), dchag::DropoutRates{0.1, 0.3});
  for (int i = 0; i < depth; ++i) {
    CHECK(enc.block(i).dropout_rates().drop == 0.1);
    CHECK(enc.block(i).dropout_rates().path == doctest::Approx(0.15 * i));
  }
  enc.init(31);
  dchag::ParameterList<T, Space> params;
  enc.parameters(params);
  randomise(params, 32);
  dchag::View2<T, Space> x("x", batch * L, dim), r("r", batch * L, dim);
  fill_random(x, 33);
  fill_random(r, 34);
  const dchag::DropoutContext train{true, 1, 4, 0};
  auto loss = [&] { return dot(enc.forward(space, x, batch, L, train), r); };
  loss();
  auto dx = enc.backward(space, r);
  CHECK(gradient_error(x, dx, loss, 48) < 1e-6);
  for (const auto& p : params) {
    CAPTURE(p.name);
    CHECK(gradient_error(p.value, p.grad, loss, 12) < 1e-6);
  }
}

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

TEST_CASE("Block and Encoder on one rank hold the whole layers") {
  using Space = Kokkos::DefaultExecutionSpace;
  // The default group is this rank alone: nothing is split, nothing is registered in pieces.
  dchag::Block<double, Space> block("blocks.0", 12, 3);
  CHECK(block.tp().size() == 1);
  CHECK(block.heads() == 3);
  CHECK(block.hidden() == 48);
  CHECK(block.attn().heads() == 3);
  CHECK(block.mlp().hidden() == 48);
  CHECK(block.attn().defers_proj_bias());
  CHECK(block.mlp().defers_fc2_bias());
  for (const auto& p : params_of(block)) {
    CAPTURE(p.name);
    CHECK(!p.partitioned);
    CHECK(p.pieces.empty());
  }
  dchag::Encoder<double, Space> enc(12, 2, 3, 4.0, "", 1e-5, dchag::Communicator(MPI_COMM_SELF));
  CHECK(enc.tp().size() == 1);
  CHECK(enc.block(1).tp().size() == 1);
  // A default-constructed block or encoder is only something to assign to.
  CHECK_THROWS_WITH_AS((dchag::Block<double, Space>().tp()),
                       doctest::Contains("no tensor-parallel communicator"), dchag::Error);
  CHECK_THROWS_AS((dchag::Encoder<double, Space>().tp()), dchag::Error);
}

TEST_CASE("Partial attention and MLP register their pieces of the logical weights") {
  using Space = Kokkos::DefaultExecutionSpace;
  using Box = dchag::LogicalBox;
  auto same = [](const Box& a, const Box& b) {
    return a.start == b.start && a.extents == b.extents;
  };
  // Heads [2, 3) of 4, head_dim 2: inner 2 of 8.
  dchag::SelfAttention<double, Space> attn("blocks.1.attn", 8, 1, 2, true, 2, 4);
  dchag::ParameterList<double, Space> a;
  attn.parameters(a);
  REQUIRE(a.size() == 4);
  CHECK(a[0].name == "blocks.1.attn.qkv.weight");
  CHECK(a[0].shape == std::vector<std::size_t>{24, 8});
  REQUIRE(a[0].pieces.size() == 3);
  CHECK(same(a[0].pieces[0], Box{{4, 0}, {2, 8}}));
  CHECK(same(a[0].pieces[1], Box{{12, 0}, {2, 8}}));
  CHECK(same(a[0].pieces[2], Box{{20, 0}, {2, 8}}));
  CHECK(a[1].name == "blocks.1.attn.qkv.bias");
  CHECK(a[1].shape == std::vector<std::size_t>{24});
  REQUIRE(a[1].pieces.size() == 3);
  CHECK(same(a[1].pieces[2], Box{{20}, {2}}));
  CHECK(a[2].name == "blocks.1.attn.proj.weight");
  CHECK(a[2].shape == std::vector<std::size_t>{8, 8});
  REQUIRE(a[2].pieces.size() == 1);
  CHECK(same(a[2].pieces[0], Box{{0, 4}, {8, 2}}));
  CHECK(a[3].name == "blocks.1.attn.proj.bias");
  CHECK(a[3].shape == std::vector<std::size_t>{8});
  CHECK((a[0].partitioned && a[1].partitioned && a[2].partitioned && !a[3].partitioned));
  CHECK((a[0].decay && !a[1].decay && a[2].decay && !a[3].decay));

  // Hidden units [16, 24) of 32.
  dchag::Mlp<double, Space> mlp("blocks.1.mlp", 8, 8, true, 16, 32);
  dchag::ParameterList<double, Space> m;
  mlp.parameters(m);
  REQUIRE(m.size() == 4);
  CHECK(m[0].name == "blocks.1.mlp.fc1.weight");
  CHECK(m[0].shape == std::vector<std::size_t>{32, 8});
  REQUIRE(m[0].pieces.size() == 1);
  CHECK(same(m[0].pieces[0], Box{{16, 0}, {8, 8}}));
  CHECK(m[1].shape == std::vector<std::size_t>{32});
  REQUIRE(m[1].pieces.size() == 1);
  CHECK(same(m[1].pieces[0], Box{{16}, {8}}));
  CHECK(m[2].name == "blocks.1.mlp.fc2.weight");
  CHECK(m[2].shape == std::vector<std::size_t>{8, 32});
  REQUIRE(m[2].pieces.size() == 1);
  CHECK(same(m[2].pieces[0], Box{{0, 16}, {8, 8}}));
  CHECK(m[3].name == "blocks.1.mlp.fc2.bias");
  CHECK((m[0].partitioned && m[1].partitioned && m[2].partitioned && !m[3].partitioned));
  CHECK(m[3].pieces.empty());
}
