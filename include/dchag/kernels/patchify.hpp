#ifndef DCHAG_KERNELS_PATCHIFY_HPP
#define DCHAG_KERNELS_PATCHIFY_HPP

// Images <-> per-patch vectors in ClimaX / MAE order: image x[B, C, H, W] with patch p maps to
// tokens y[B*L, p*p*C], token n = b*L + hp*(W/p) + wp, feature (i*p + j)*C + c for pixel
// (hp*p + i, wp*p + j) of channel c. This is the order of ClimaX's unpatchify and MAE's patchify,
// so predictions and targets line up with the PyTorch code.

#include <Kokkos_Core.hpp>

#include <dchag/core/error.hpp>

namespace dchag {
namespace Impl {

template <class ImageView, class TokenView>
void check_patchify(const char* where, const ImageView& x, const TokenView& y, int patch) {
  static_assert(ImageView::rank == 4 && TokenView::rank == 2, "images are [B, C, H, W]");
  require(patch > 0 && x.extent(2) % patch == 0 && x.extent(3) % patch == 0, where, ": image ",
          shape_of(x), " is not divisible into patches of ", patch);
  const std::size_t L = (x.extent(2) / patch) * (x.extent(3) / patch);
  const std::size_t P = std::size_t(patch) * patch * x.extent(1);
  require(y.extent(0) == x.extent(0) * L && y.extent(1) == P, where, ": tokens ", shape_of(y),
          " do not match image ", shape_of(x), " with patch ", patch, " (expected [",
          x.extent(0) * L, ", ", P, "])");
}

// Calls f(b, c, h, w, n, k) for every pixel: pixel (b, c, h, w) <-> token n, feature k.
template <class ExecSpace, class F>
void for_each_patch_pixel(const char* label, const ExecSpace& space, int B, int C, int H, int W,
                          int patch, const F& f) {
  const int wp = W / patch, L = (H / patch) * wp;
  Kokkos::parallel_for(
      label,
      Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<3>>(space, {0, 0, 0}, {B * C, H, W}),
      KOKKOS_LAMBDA(int bc, int h, int w) {
        const int b = bc / C, c = bc % C;
        const int n = b * L + (h / patch) * wp + (w / patch);
        const int k = ((h % patch) * patch + (w % patch)) * C + c;
        f(b, c, h, w, n, k);
      });
}

}  // namespace Impl

template <class ExecSpace, class ImageView, class TokenView>
void patchify(const ExecSpace& space, const ImageView& x, int patch, const TokenView& y) {
  Impl::check_patchify("dchag::patchify", x, y, patch);
  Impl::for_each_patch_pixel(
      "dchag::patchify", space, x.extent(0), x.extent(1), x.extent(2), x.extent(3), patch,
      KOKKOS_LAMBDA(int b, int c, int h, int w, int n, int k) { y(n, k) = x(b, c, h, w); });
}

template <class ExecSpace, class TokenView, class ImageView>
void unpatchify(const ExecSpace& space, const TokenView& y, int patch, const ImageView& x) {
  Impl::check_patchify("dchag::unpatchify", x, y, patch);
  Impl::for_each_patch_pixel(
      "dchag::unpatchify", space, x.extent(0), x.extent(1), x.extent(2), x.extent(3), patch,
      KOKKOS_LAMBDA(int b, int c, int h, int w, int n, int k) { x(b, c, h, w) = y(n, k); });
}

}  // namespace dchag

#endif
