#include <dchag/kernels/heads.hpp>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

struct HeadShape {
  int batch, L, heads, head_dim, sections;
};

const HeadShape head_shapes[] = {{2, 5, 3, 4, 3}, {1, 1, 1, 1, 1}, {3, 7, 2, 5, 3},
                                 {2, 4, 4, 3, 1}, {1, 9, 5, 1, 2}};

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("split_heads and merge_heads match an index loop", C, heads_ref) {
  using Space = typename C::space;
  using T = typename C::scalar;
  Space space;
  for (const HeadShape s : head_shapes) {
    CAPTURE(s.batch);
    CAPTURE(s.L);
    CAPTURE(s.heads);
    CAPTURE(s.head_dim);
    const int width = s.heads * s.head_dim;
    dchag::View2<T, Space> tokens("tokens", s.batch * s.L, s.sections * width);
    fill_random(tokens, 17);
    const auto ht = to_host(tokens);
    for (int section = 0; section < s.sections; ++section) {
      dchag::View3<T, Space> per_head("per_head", s.batch * s.heads, s.L, s.head_dim);
      dchag::split_heads(space, tokens, section, s.batch, s.heads, s.head_dim, per_head);
      const auto hp = to_host(per_head);
      int wrong = 0;
      for (int b = 0; b < s.batch; ++b)
        for (int h = 0; h < s.heads; ++h)
          for (int l = 0; l < s.L; ++l)
            for (int j = 0; j < s.head_dim; ++j)
              wrong += hp(b * s.heads + h, l, j) !=
                       ht(b * s.L + l, section * width + h * s.head_dim + j);
      CHECK(wrong == 0);

      // merge writes exactly the columns of its section and leaves the others alone.
      dchag::View2<T, Space> merged("merged", s.batch * s.L, s.sections * width);
      Kokkos::deep_copy(merged, T(-7));
      dchag::merge_heads(space, per_head, merged, section);
      const auto hm = to_host(merged);
      wrong = 0;
      for (int r = 0; r < s.batch * s.L; ++r)
        for (int c = 0; c < s.sections * width; ++c) {
          const bool mine = c / width == section;
          wrong += hm(r, c) != (mine ? ht(r, c) : T(-7));
        }
      CHECK(wrong == 0);
    }
  }
}
TEST_CASE_TEMPLATE_APPLY(heads_ref, AllCases);

TEST_CASE("split_heads and merge_heads refuse inconsistent shapes") {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::View2<double, Space> tokens("qkv", 10, 36);
  dchag::View3<double, Space> per_head("q", 6, 5, 4);
  // 36 columns = 3 sections of 3 heads x 4: sections 0..2 are fine, 3 is not.
  dchag::split_heads(space, tokens, 2, 2, 3, 4, per_head);
  CHECK_THROWS_WITH_AS(dchag::split_heads(space, tokens, 3, 2, 3, 4, per_head),
                       doctest::Contains("section 3 is out of range"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::split_heads(space, tokens, -1, 2, 3, 4, per_head),
                       doctest::Contains("section -1"), dchag::Error);
  // batch * heads disagrees with the per-head view.
  CHECK_THROWS_WITH_AS(dchag::split_heads(space, tokens, 0, 3, 3, 4, per_head),
                       doctest::Contains("'q'[6, 5, 4]"), dchag::Error);
  // Columns not a whole number of sections.
  dchag::View2<double, Space> ragged("ragged", 10, 35);
  CHECK_THROWS_WITH_AS(dchag::split_heads(space, ragged, 0, 2, 3, 4, per_head),
                       doctest::Contains("'ragged'[10, 35]"), dchag::Error);
  // Rows not batch * L.
  dchag::View2<double, Space> short_rows("short", 9, 36);
  CHECK_THROWS_WITH_AS(dchag::split_heads(space, short_rows, 0, 2, 3, 4, per_head),
                       doctest::Contains("'short'[9, 36]"), dchag::Error);
  CHECK_THROWS_AS(dchag::merge_heads(space, per_head, short_rows, 0), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::merge_heads(space, per_head, tokens, 3),
                       doctest::Contains("section 3 is out of range"), dchag::Error);
  dchag::View3<double, Space> odd_heads("odd", 7, 5, 4);
  CHECK_THROWS_AS(dchag::merge_heads(space, odd_heads, tokens, 0), dchag::Error);
}
