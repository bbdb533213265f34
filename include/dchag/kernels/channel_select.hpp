#ifndef DCHAG_KERNELS_CHANNEL_SELECT_HPP
#define DCHAG_KERNELS_CHANNEL_SELECT_HPP

// Channels of an image picked by index, and the gradient of that pick: out[b, k] = x[b, ids[k]]
// for images [B, C, H, W], and its adjoint dx[b, c] = dout[b, k] where ids[k] = c, zero for a
// channel not picked. ClimaX's head predicts every input variable and the loss sees
// `preds[:, out_var_ids]`; this is that indexing and its backward.

#include <Kokkos_Core.hpp>

#include <dchag/core/error.hpp>

namespace dchag {
namespace Impl {

template <class XView, class OutView, class IdView>
void check_channel_select(const char* where, const XView& x, const OutView& out,
                          const IdView& ids) {
  static_assert(XView::rank == 4 && OutView::rank == 4 && IdView::rank == 1,
                "images are [B, C, H, W], ids [K]");
  require(out.extent(0) == x.extent(0) && out.extent(1) == ids.extent(0) &&
              out.extent(2) == x.extent(2) && out.extent(3) == x.extent(3),
          where, ": selection ", shape_of(out), " does not match image ", shape_of(x), " with ",
          ids.extent(0), " channel indices");
}

}  // namespace Impl

// out[b, k, h, w] = x[b, ids[k], h, w]. The ids must lie in [0, C) (the caller validated them).
template <class ExecSpace, class XView, class OutView, class IdView>
void select_channels(const ExecSpace& space, const XView& x, const IdView& ids,
                     const OutView& out) {
  Impl::check_channel_select("dchag::select_channels", x, out, ids);
  const int K = static_cast<int>(out.extent(1));
  Kokkos::parallel_for(
      "dchag::select_channels",
      Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<3>>(
          space, {0, 0, 0}, {int(out.extent(0)) * K, int(out.extent(2)), int(out.extent(3))}),
      KOKKOS_LAMBDA(int bk, int h, int w) {
        const int b = bk / K, k = bk % K;
        out(b, k, h, w) = x(b, ids(k), h, w);
      });
}

// The adjoint of select_channels: dx[b, c, h, w] = dout[b, k, h, w] for the k with ids[k] = c,
// 0 where no k picks c. `slot` is the inverse map, slot[c] = k or -1 (so every element of dx is
// written once, without atomics; the ids are distinct).
template <class ExecSpace, class DOutView, class SlotView, class DXView>
void scatter_channels(const ExecSpace& space, const DOutView& dout, const SlotView& slot,
                      const DXView& dx) {
  static_assert(DOutView::rank == 4 && DXView::rank == 4 && SlotView::rank == 1,
                "images are [B, C, H, W], slots [C]");
  Impl::require(dout.extent(0) == dx.extent(0) && slot.extent(0) == dx.extent(1) &&
                    dout.extent(2) == dx.extent(2) && dout.extent(3) == dx.extent(3),
                "dchag::scatter_channels: gradient ", Impl::shape_of(dout),
                " does not match image ", Impl::shape_of(dx), " with ", slot.extent(0),
                " channel slots");
  using T = typename DXView::non_const_value_type;
  const int C = static_cast<int>(dx.extent(1));
  Kokkos::parallel_for(
      "dchag::scatter_channels",
      Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<3>>(
          space, {0, 0, 0}, {int(dx.extent(0)) * C, int(dx.extent(2)), int(dx.extent(3))}),
      KOKKOS_LAMBDA(int bc, int h, int w) {
        const int b = bc / C, c = bc % C, k = slot(c);
        dx(b, c, h, w) = k >= 0 ? T(dout(b, k, h, w)) : T(0);
      });
}

// out[c, b, h, w] = x[b, c, h, w]: images channel-major, so that one channel's pixels of every
// sample are contiguous (the layout a gather of channels over ranks concatenates).
template <class ExecSpace, class XView, class OutView>
void swap_batch_and_channels(const ExecSpace& space, const XView& x, const OutView& out) {
  static_assert(XView::rank == 4 && OutView::rank == 4, "images are [B, C, H, W]");
  Impl::require(out.extent(0) == x.extent(1) && out.extent(1) == x.extent(0) &&
                    out.extent(2) == x.extent(2) && out.extent(3) == x.extent(3),
                "dchag::swap_batch_and_channels: output ", Impl::shape_of(out),
                " is not the input ", Impl::shape_of(x), " with its first two dimensions swapped");
  const int C = static_cast<int>(x.extent(1));
  Kokkos::parallel_for(
      "dchag::swap_batch_and_channels",
      Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<3>>(
          space, {0, 0, 0}, {int(x.extent(0)) * C, int(x.extent(2)), int(x.extent(3))}),
      KOKKOS_LAMBDA(int bc, int h, int w) {
        const int b = bc / C, c = bc % C;
        out(c, b, h, w) = x(b, c, h, w);
      });
}

}  // namespace dchag

#endif
