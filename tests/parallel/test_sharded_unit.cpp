// Model sharding of one unit: the slices tile the parameters exactly once, gathering gives the
// layers their values back, the gradient slices hold the sum over the fsdp group, and a
// released unit holds nothing.
#include <dchag/layers/layer_norm.hpp>
#include <dchag/layers/linear.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/sharded_unit.hpp>

#include <map>
#include <optional>
#include <stdexcept>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

using Space = Kokkos::DefaultExecutionSpace;

// Flat (row-major) indices of a box of `shape`, in the box's own row-major order.
std::vector<std::size_t> indices_of(const std::vector<std::size_t>& shape,
                                    const dchag::LogicalBox& box) {
  std::vector<std::size_t> out;
  const std::size_t rank = shape.size();
  std::vector<std::size_t> idx(rank, 0);
  for (std::size_t n = 0; n < box.size(); ++n) {
    std::size_t flat = 0;
    for (std::size_t d = 0; d < rank; ++d) flat = flat * shape[d] + box.start[d] + idx[d];
    out.push_back(flat);
    for (std::size_t d = rank; d-- > 0;) {
      if (++idx[d] < box.extents[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

// Host vectors summed over the ranks (collectives on host views take a host execution space).
void sum_over_ranks(const dchag::Communicator& world, std::vector<double>& v) {
  dchag::all_reduce_sum(Kokkos::DefaultHostExecutionSpace(), world,
                        Kokkos::View<double*, Kokkos::HostSpace,
                                     Kokkos::MemoryTraits<Kokkos::Unmanaged>>(v.data(), v.size()));
}

}  // namespace

TEST_CASE("a flat range of a box is the row-major concatenation of the boxes it is cut into") {
  const std::vector<std::size_t> shape = {5, 4, 6};
  const dchag::LogicalBox box{{1, 0, 2}, {3, 4, 3}};  // 36 elements
  const std::vector<std::size_t> all = indices_of(shape, box);
  for (std::size_t lo = 0; lo <= box.size(); ++lo)
    for (std::size_t hi = lo; hi <= box.size(); ++hi) {
      CAPTURE(lo);
      CAPTURE(hi);
      std::vector<dchag::LogicalBox> parts;
      dchag::Impl::append_range_boxes(box, lo, hi, parts);
      std::vector<std::size_t> got;
      for (const auto& b : parts) {
        REQUIRE(b.size() > 0);
        const auto in = indices_of(shape, b);
        got.insert(got.end(), in.begin(), in.end());
      }
      CHECK(parts.size() <= 2 * shape.size() - 1);
      REQUIRE(got.size() == hi - lo);
      CHECK(std::equal(got.begin(), got.end(), all.begin() + lo));
    }
}

TEST_CASE_TEMPLATE("a sharded unit gathers, releases and reduce-scatters its layers", T, float,
                   double) {
  const dchag::Communicator world;
  const int p = world.size(), r = world.rank();
  Space space;
  // Two layers with sizes that do not divide by p: 7 x 5 + 7 and 2 x 5.
  dchag::Linear<T, Space> lin("lin", 5, 7);
  dchag::LayerNorm<T, Space> norm("norm", 5);
  lin.init(3, 0.5);
  fill_random(norm.weight(), 11);
  fill_random(norm.bias(), 12);
  auto visit = [&](auto& f) {
    lin.visit_storage(f);
    norm.visit_storage(f);
  };
  auto list = [&](dchag::ParameterList<T, Space>& l) {
    lin.parameters(l);
    norm.parameters(l);
  };
  dchag::ParameterList<T, Space> whole_list;
  list(whole_list);
  std::map<std::string, std::vector<double>> whole;
  for (const auto& q : whole_list) {
    const auto h = to_host(q.value);
    whole[q.name].assign(h.data(), h.data() + h.size());
  }

  dchag::ShardedUnit<T, Space> unit("unit", world, visit, list);
  // Released: the layers keep their shapes and hold nothing.
  CHECK(lin.weight().data() == nullptr);
  CHECK(lin.weight().extent(0) == 7);
  CHECK(norm.grad_bias().data() == nullptr);
  CHECK_FALSE(unit.gathered());

  // The slices: every element of every parameter on exactly one rank, with its value.
  dchag::ParameterList<T, Space> slices;
  unit.parameters(slices);
  REQUIRE(slices.size() == whole_list.size());
  for (std::size_t i = 0; i < slices.size(); ++i) {
    const auto& s = slices[i];
    CAPTURE(s.name);
    CHECK(s.sharded);
    CHECK(s.shape == whole_list[i].shape);
    REQUIRE_FALSE(s.pieces.empty());
    std::vector<double> count(whole.at(s.name).size(), 0.0);
    const auto h = to_host(s.value);
    std::size_t at = 0;
    for (const auto& b : s.pieces)
      for (const std::size_t k : indices_of(s.shape, b)) {
        CHECK(double(h(at++)) == whole.at(s.name)[k]);
        count[k] += 1;
      }
    CHECK(at == s.size());
    sum_over_ranks(world, count);
    for (double c : count) CHECK(c == 1.0);
  }

  // Gathered: the layers compute with the original values.
  dchag::View2<T, Space> x("x", 3, 5);
  fill_random(x, 21 + r);  // every rank its own samples
  unit.gather(space, visit);
  CHECK(unit.gathered());
  const auto w = to_host(lin.weight());
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(double(w.data()[i]) == whole.at("lin.weight")[i]);

  // Backward: the gradient slices are the sum over the ranks of each rank's gradient.
  unit.begin_backward(space, visit);
  dchag::View2<T, Space> dy("dy", 3, 7);
  fill_random(dy, 31 + r);
  lin.forward(space, x);
  lin.backward(space, dy);
  norm.forward(space, x);
  norm.backward(space, x);  // any upstream gradient
  std::map<std::string, std::vector<double>> local_grad;
  dchag::ParameterList<T, Space> gathered;
  list(gathered);
  for (const auto& q : gathered) {
    const auto h = to_host(q.grad);
    local_grad[q.name].assign(h.data(), h.data() + h.size());
  }
  unit.end_backward(space, visit);
  CHECK_FALSE(unit.gathered());
  CHECK(lin.grad_weight().data() == nullptr);
  for (const auto& s : slices) {
    CAPTURE(s.name);
    auto sum = local_grad.at(s.name);
    sum_over_ranks(world, sum);
    const auto h = to_host(s.grad);
    std::size_t at = 0;
    for (const auto& b : s.pieces)
      for (const std::size_t k : indices_of(s.shape, b))
        CHECK(double(h(at++)) == doctest::Approx(sum[k]).epsilon(tol<T>()));
  }
}

TEST_CASE("a layer whose storage changed since the unit was built is refused") {
  const dchag::Communicator world;
  Space space;
  dchag::Linear<double, Space> a("a", 3, 4), b("b", 2, 2);
  auto list = [&](dchag::ParameterList<double, Space>& l) { a.parameters(l); };
  dchag::ShardedUnit<double, Space> unit("unit", world, [&](auto& f) { a.visit_storage(f); }, list);
  // Another layer in its place: the unit notices instead of writing past its buffers.
  CHECK_THROWS_WITH_AS(unit.gather(space, [&](auto& f) { b.visit_storage(f); }),
                       doctest::Contains("other storage"), dchag::Error);
}

TEST_CASE("the gather and backward scopes release their unit, and do nothing without one") {
  const dchag::Communicator world;
  Space space;
  dchag::Linear<double, Space> lin("lin", 3, 4);
  lin.init(5, 0.5);
  auto visit = [&](auto& f) { lin.visit_storage(f); };
  auto list = [&](dchag::ParameterList<double, Space>& l) { lin.parameters(l); };
  std::optional<dchag::ShardedUnit<double, Space>> none, unit;
  unit.emplace("unit", world, visit, list);

  {  // not sharded: the layer keeps its own storage throughout
    dchag::Linear<double, Space> plain("plain", 3, 4);
    auto plain_visit = [&](auto& f) { plain.visit_storage(f); };
    const double* before = plain.weight().data();
    dchag::Impl::GatheredScope g(none, space, plain_visit);
    dchag::Impl::BackwardScope b(none, space, plain_visit);
    b.finish();
    CHECK(before != nullptr);
    CHECK(plain.weight().data() == before);
  }
  {  // gathered for the scope, released at its end
    dchag::Impl::GatheredScope g(unit, space, visit);
    CHECK(unit->gathered());
    CHECK(lin.weight().data() != nullptr);
  }
  CHECK_FALSE(unit->gathered());
  CHECK(lin.weight().data() == nullptr);
  {  // keep(): still gathered after the scope (the head's forward hands it to its backward)
    dchag::Impl::GatheredScope g(unit, space, visit);
    g.keep();
  }
  CHECK(unit->gathered());
  {  // the backward finished: reduced and released
    dchag::Impl::BackwardScope b(unit, space, visit);
    CHECK(lin.grad_weight().data() != nullptr);
    b.finish();
    CHECK_FALSE(unit->gathered());
  }
  // An exception inside either scope releases the unit without any collective.
  CHECK_THROWS_AS(
      [&] {
        dchag::Impl::GatheredScope g(unit, space, visit);
        throw std::runtime_error("forward failed");
      }(),
      std::runtime_error);
  CHECK_FALSE(unit->gathered());
  CHECK_THROWS_AS(
      [&] {
        dchag::Impl::BackwardScope b(unit, space, visit);
        throw std::runtime_error("backward failed");
      }(),
      std::runtime_error);
  CHECK_FALSE(unit->gathered());
  CHECK(lin.grad_weight().data() == nullptr);
}
