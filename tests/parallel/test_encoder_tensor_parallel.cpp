// Partition invariance of the Megatron-split encoder: the same Encoder (same seed) built whole on
// one rank and split over a tensor-parallel group computes the same outputs and gradients, and
// every rank holds exactly its pieces of the whole model's parameters.

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/model/encoder.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/communicator.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

// A view's elements in row-major order, in double.
template <class View>
std::vector<double> host_values(const View& v) {
  auto h = to_host(v);
  std::vector<double> out(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) out[i] = static_cast<double>(h.data()[i]);
  return out;
}

template <class View>
void set_values(const View& v, const std::vector<double>& values) {
  REQUIRE(values.size() == v.size());
  auto h = Kokkos::create_mirror_view(v);
  for (std::size_t i = 0; i < values.size(); ++i)
    h.data()[i] = static_cast<typename View::non_const_value_type>(values[i]);
  Kokkos::deep_copy(v, h);
}

// Calls f(flat logical index) for every element of `box`, in the box's row-major order (the
// order in which a rank stores it).
template <class F>
void for_each_in_box(const std::vector<std::size_t>& shape, const dchag::LogicalBox& box, F&& f) {
  const std::size_t rank = shape.size();
  if (box.size() == 0) return;
  std::vector<std::size_t> idx(rank, 0);
  for (std::size_t n = 0; n < box.size(); ++n) {
    std::size_t at = 0;
    for (std::size_t d = 0; d < rank; ++d) at = at * shape[d] + box.start[d] + idx[d];
    f(at);
    for (std::size_t d = rank; d-- > 0;) {
      if (++idx[d] < box.extents[d]) break;
      idx[d] = 0;
    }
  }
}

// What a rank holding `pieces` of the row-major logical tensor `full` stores: the pieces one
// after the other (all of `full` when there are none).
std::vector<double> extract(const std::vector<double>& full, const std::vector<std::size_t>& shape,
                            const std::vector<dchag::LogicalBox>& pieces) {
  if (pieces.empty()) return full;
  std::vector<double> out;
  for (const auto& box : pieces)
    for_each_in_box(shape, box, [&](std::size_t at) { out.push_back(full.at(at)); });
  return out;
}

// max |a - b| / max |b|.
double rel_error(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

template <class T>
constexpr double tp_tol() {
  return std::is_same<T, float>::value ? 1e-5 : 1e-12;
}

bool split_in_tp(const std::string& name) {
  for (const char* s : {".attn.qkv.weight", ".attn.qkv.bias", ".attn.proj.weight",
                        ".mlp.fc1.weight", ".mlp.fc1.bias", ".mlp.fc2.weight"})
    if (name.size() >= std::string(s).size() &&
        name.compare(name.size() - std::string(s).size(), std::string::npos, s) == 0)
      return true;
  return false;
}

// Values far from the initialisation (zero biases would hide a bias added once per rank), the
// same on every rank: norm weights around 1, weight matrices O(0.6), the rest O(0.3).
template <class List>
void randomise(const List& params, std::uint64_t seed) {
  for (const auto& p : params) {
    const bool norm_weight = p.name.find("norm") != std::string::npos &&
                             p.name.compare(p.name.size() - 7, 7, ".weight") == 0;
    if (norm_weight)
      fill_random(p.value, seed++, 0.5, 1.5);
    else if (p.decay)
      fill_random(p.value, seed++, -0.6, 0.6);
    else
      fill_random(p.value, seed++, -0.3, 0.3);
  }
}

template <class T, class Space>
void check_partition_invariance(const dchag::Communicator& tp) {
  Space space;
  const int p = tp.size();
  CAPTURE(p);
  CAPTURE(tp.rank());
  const int dim = 16, heads = 4, depth = 2, batch = 2, L = 5, rows = batch * L;
  const std::uint64_t seed = 11;
  dchag::Encoder<T, Space> whole(dim, depth, heads, 4.0, "", 1e-5,
                                 dchag::Communicator(MPI_COMM_SELF));
  dchag::Encoder<T, Space> split(dim, depth, heads, 4.0, "", 1e-5, tp);
  whole.init(seed);
  split.init(seed);
  CHECK(split.tp().size() == p);
  CHECK(split.block(1).tp().size() == p);
  CHECK(split.block(0).attn().heads() == heads / p);
  CHECK(split.block(0).attn().head_begin() == tp.rank() * heads / p);
  CHECK(split.block(0).mlp().hidden() == 4 * dim / p);
  CHECK(split.block(0).heads() == heads);
  CHECK(split.block(0).hidden() == 4 * dim);

  dchag::ParameterList<T, Space> ref, mine;
  whole.parameters(ref);
  split.parameters(mine);
  REQUIRE(ref.size() == mine.size());

  // Same names, logical shapes and flags; the initial values are exactly this rank's pieces
  // of the whole model's; the pieces of all ranks cover every element once.
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const auto &r = ref[i], &m = mine[i];
    CAPTURE(m.name);
    CHECK(m.name == r.name);
    CHECK(m.shape == r.shape);
    CHECK(m.decay == r.decay);
    CHECK(!r.partitioned);
    CHECK(m.partitioned == (p > 1 && split_in_tp(m.name)));
    CHECK(m.pieces.empty() == !m.partitioned);
    CHECK(rel_error(host_values(m.value), extract(host_values(r.value), r.shape, m.pieces)) ==
          0.0);
    if (m.partitioned) {
      Kokkos::View<double*, Kokkos::HostSpace> count("count", r.value.size());
      for (const auto& box : m.pieces) for_each_in_box(m.shape, box, [&](std::size_t at) {
        count(at) += 1;
      });
      dchag::all_reduce_sum(Kokkos::DefaultHostExecutionSpace(), tp, count);
      double lo = 1, hi = 1;
      for (std::size_t k = 0; k < count.size(); ++k) {
        lo = std::min(lo, count(k));
        hi = std::max(hi, count(k));
      }
      CHECK(lo == 1.0);
      CHECK(hi == 1.0);
    }
  }

  // Random values everywhere, the split model taking its pieces of the whole one's.
  randomise(ref, 100);
  for (std::size_t i = 0; i < ref.size(); ++i)
    set_values(mine[i].value, extract(host_values(ref[i].value), ref[i].shape, mine[i].pieces));

  dchag::View2<T, Space> x("x", rows, dim), dy("dy", rows, dim);
  fill_random(x, 5);
  fill_random(dy, 6);
  const auto y_ref = host_values(whole.forward(space, x, batch, L));
  const auto dx_ref = host_values(whole.backward(space, dy));

  // Two all-reduces of [rows, dim] per block forward and two backward, none elsewhere.
  dchag::CommStats::reset();
  const auto y = host_values(split.forward(space, x, batch, L));
  CHECK(dchag::CommStats::calls() == 2u * depth);
  const auto dx = host_values(split.backward(space, dy));
  CHECK(dchag::CommStats::calls() == 4u * depth);
  const std::uint64_t n = std::uint64_t(rows) * dim * sizeof(T), up = std::uint64_t(p);
  CHECK(dchag::CommStats::bytes() == 4u * depth * (2 * (up - 1) * n / up));

  CHECK(rel_error(y, y_ref) <= tp_tol<T>());
  CHECK(rel_error(dx, dx_ref) <= tp_tol<T>());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    CAPTURE(mine[i].name);
    CHECK(rel_error(host_values(mine[i].value),
                    extract(host_values(ref[i].value), ref[i].shape, mine[i].pieces)) == 0.0);
    const auto g_ref = extract(host_values(ref[i].grad), ref[i].shape, mine[i].pieces);
    CHECK(rel_error(host_values(mine[i].grad), g_ref) <= tp_tol<T>());
  }

  // The share of the work: the split products shrink by p, the norms and residuals do not.
  const double f_whole = whole.flops(batch, L), f_split = split.flops(batch, L);
  double replicated = whole.norm().flops(rows);
  for (int b = 0; b < depth; ++b) {
    const auto& blk = whole.block(b);
    replicated += blk.norm1().flops(rows) + blk.norm2().flops(rows) + 2.0 * rows * dim;
  }
  CHECK(f_split == doctest::Approx(replicated + (f_whole - replicated) / p));
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("Tensor-parallel Encoder equals the whole Encoder", C, enc_tp) {
  using Space = typename C::space;
  using T = typename C::scalar;
  const dchag::Communicator world(MPI_COMM_WORLD);
  SUBCASE("the whole world as the tensor-parallel group") {
    check_partition_invariance<T, Space>(world);
  }
  if (world.size() == 4) {
    SUBCASE("two tensor-parallel groups of 2 ranks") {
      const dchag::Communicator pair = world.split(world.rank() / 2, world.rank());
      REQUIRE(pair.size() == 2);
      check_partition_invariance<T, Space>(pair);
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(enc_tp, AllCases);

TEST_CASE("Tensor-parallel Encoder refuses splits that do not divide, on every rank") {
  using Space = Kokkos::DefaultExecutionSpace;
  const dchag::Communicator world(MPI_COMM_WORLD);
  const int p = world.size();
  if (p == 1) {
    // One rank takes any head count.
    dchag::Encoder<double, Space> enc(12, 1, 3, 4.0, "", 1e-5, world);
    CHECK(enc.block(0).attn().heads() == 3);
  } else {
    const int heads = p == 4 ? 6 : p + 1;  // dim 12 / heads must stay whole
    const std::string expected = "heads = " + std::to_string(heads) +
                                 " do not split evenly over the " + std::to_string(p) + " ranks";
    CHECK_THROWS_WITH_AS((dchag::Encoder<double, Space>(12, 2, heads, 4.0, "", 1e-5, world)),
                         doctest::Contains(expected.c_str()), dchag::Error);
    // int(12 * 0.25) = 3 hidden units: no p > 1 divides them.
    CHECK_THROWS_WITH_AS((dchag::Encoder<double, Space>(12, 2, 4, 0.25, "", 1e-5, world)),
                         doctest::Contains("MLP hidden width 3"), dchag::Error);
    CHECK_THROWS_WITH_AS((dchag::Block<double, Space>("blocks.0", 12, heads, 4.0, 1e-5, world)),
                         doctest::Contains(expected.c_str()), dchag::Error);
    // Ranks that disagree on the model are told so instead of hanging in a collective.
    CHECK_THROWS_WITH_AS(
        (dchag::Encoder<double, Space>(16, world.rank() == 0 ? 2 : 3, 4, 4.0, "", 1e-5, world)),
        doctest::Contains("differs between ranks"), dchag::Error);
    CHECK_THROWS_WITH_AS(
        (dchag::Block<double, Space>("blocks.0", 16, world.rank() == p - 1 ? 2 : 4, 4.0, 1e-5,
                                     world)),
        doctest::Contains("differs between ranks"), dchag::Error);
  }
  // Every rank got here and the group still works.
  CHECK(dchag::all_reduce_sum(world, 1.0) == doctest::Approx(p));
  dchag::Encoder<double, Space> ok(16, 1, 4, 4.0, "", 1e-5, world);
  CHECK(ok.block(0).attn().heads() == 4 / p);
}
