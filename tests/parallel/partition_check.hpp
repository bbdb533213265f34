// The comparison behind the partition-invariance tests: a run on a grid against the single-rank
// run of the same model definition, seed and data.
#ifndef DCHAG_TESTS_PARTITION_CHECK_HPP
#define DCHAG_TESTS_PARTITION_CHECK_HPP

#include <dchag/core/parameter.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/process_grid.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "test_common.hpp"

namespace dchag_test {

// A rank's targets: the outputs its model predicts (all of them, or under D-CHAG those of its
// channels) of the global targets yg [B_global, C_out, H, W], for its samples `rows`.
template <class Model, class View, class Rows>
View predicted_targets(const Model& model, const View& yg, const Rows& rows) {
  const auto& mine = model.predicted_outputs();
  View y("y", rows.second - rows.first, mine.size(), yg.extent(2), yg.extent(3));
  for (std::size_t k = 0; k < mine.size(); ++k)
    Kokkos::deep_copy(Kokkos::subview(y, Kokkos::ALL, k, Kokkos::ALL, Kokkos::ALL),
                      Kokkos::subview(yg, rows, mine[k], Kokkos::ALL, Kokkos::ALL));
  return y;
}

// The losses of a few training steps and every parameter as the rank holds it.
struct Run {
  std::vector<double> losses;
  std::map<std::string, std::vector<double>> params;
};

// The logical elements a rank holds, in its storage order, read out of the full tensor.
inline std::vector<double> pieces_of(const std::vector<double>& full,
                                     const std::vector<std::size_t>& shape,
                                     const std::vector<dchag::LogicalBox>& pieces) {
  if (pieces.empty()) return full;
  std::vector<double> out;
  for (const auto& box : pieces) {
    const std::size_t rank = shape.size();
    std::vector<std::size_t> idx(rank, 0);
    for (std::size_t n = 0; n < box.size(); ++n) {
      std::size_t flat = 0;
      for (std::size_t d = 0; d < rank; ++d) flat = flat * shape[d] + box.start[d] + idx[d];
      out.push_back(full[flat]);
      for (std::size_t d = rank; d-- > 0;) {
        if (++idx[d] < box.extents[d]) break;
        idx[d] = 0;
      }
    }
  }
  return out;
}

template <class Params>
void record_parameters(const Params& params, Run& run) {
  for (const auto& p : params) {
    auto h = to_host(p.value);
    std::vector<double>& v = run.params[p.name];
    v.resize(h.extent(0));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = double(h(i));
  }
}

// Losses to 1e-10 relative, every piece of every parameter to 1e-10, and the ranks of a
// tp x fsdp group holding the model exactly once between them.
template <class Params>
void check_partition_invariance(const Run& ref, const Params& ref_params, const Run& par,
                                const Params& par_params, const dchag::ProcessGrid& grid) {
  const int tp = grid.tp(), fsdp = grid.fsdp(), dp = grid.dp();
  CAPTURE(tp);
  CAPTURE(fsdp);
  CAPTURE(dp);
  REQUIRE(par.losses.size() == ref.losses.size());
  for (std::size_t s = 0; s < ref.losses.size(); ++s)
    CHECK(par.losses[s] == doctest::Approx(ref.losses[s]).epsilon(1e-10));
  std::map<std::string, const typename Params::value_type*> ref_by_name;
  for (const auto& p : ref_params) ref_by_name[p.name] = &p;
  for (const auto& p : par_params) {
    CAPTURE(p.name);
    REQUIRE(ref_by_name.count(p.name) == 1);
    const auto& r = *ref_by_name[p.name];
    CHECK(r.shape == p.shape);
    const auto expect = pieces_of(ref.params.at(p.name), r.shape, p.pieces);
    const auto& got = par.params.at(p.name);
    REQUIRE(expect.size() == got.size());
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
      worst = std::max(worst, std::abs(got[i] - expect[i]) / std::max(1.0, std::abs(expect[i])));
    CHECK(worst < 1e-10);
  }
  // The ranks of one TP group together hold every value of the model exactly once (partitioned)
  // or each a replica, and the ranks of an fsdp group each their own slices (sharded): count
  // what the tp x fsdp ranks hold against the reference.
  double partitioned = 0, replicated = 0;
  for (const auto& p : par_params) {
    CHECK(p.sharded == (fsdp > 1));
    (p.partitioned ? partitioned : replicated) += double(p.size());
  }
  partitioned = dchag::all_reduce_sum(grid.tp_comm(), partitioned);
  double held = partitioned + replicated;
  if (fsdp > 1) held = dchag::all_reduce_sum(grid.fsdp_comm(), held);
  double total = 0;
  for (const auto& p : ref_params) total += double(p.size());
  CHECK(held == total);
}

}  // namespace dchag_test

#endif
