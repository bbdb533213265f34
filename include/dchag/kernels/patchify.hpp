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
// One thread per pixel with w fastest, so that adjacent GPU threads read adjacent image
// addresses.
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

// The host version. The map is a transpose: the channel index is the slowest of the image's
// and the fastest of the tokens'. One work item per image row (b, h) and block of CB channels
// moves a CB x (QB patches) tile at a time through a local buffer: the image side as CB
// contiguous row pieces, the token side as contiguous runs of CB channels, and the index
// arithmetic (divisions) once per tile rather than per pixel, where it cost more than the copy.
// ToTokens: image -> tokens (patchify), else tokens -> image.
template <bool ToTokens, class ImageView, class TokenView>
struct PatchTiles {
  using T = typename TokenView::non_const_value_type;
  static constexpr int CB = 16, WB = 64;  // a 4 KiB float tile
  ImageView x;
  TokenView y;
  int patch, C, H, W, wp, L, QB, cblocks;

  KOKKOS_INLINE_FUNCTION void operator()(int item) const {
    const int cb = item % cblocks, bh = item / cblocks;
    const int b = bh / H, h = bh % H;
    const int c0 = cb * CB, nc = C - c0 < CB ? C - c0 : CB;
    const int row = b * L + (h / patch) * wp, i = h % patch;
    if (patch > WB) {  // no tile: pixel by pixel
      for (int w = 0; w < W; ++w)
        for (int c = 0; c < nc; ++c) {
          const int n = row + w / patch, k = (i * patch + w % patch) * C + c0 + c;
          if constexpr (ToTokens) {
            y(n, k) = x(b, c0 + c, h, w);
          } else {
            x(b, c0 + c, h, w) = y(n, k);
          }
        }
      return;
    }
    T tile[CB * WB];
    for (int q0 = 0; q0 < wp; q0 += QB) {
      const int nq = wp - q0 < QB ? wp - q0 : QB, w0 = q0 * patch, nw = nq * patch;
      if constexpr (ToTokens) {
        for (int c = 0; c < nc; ++c)
          for (int w = 0; w < nw; ++w) tile[c * WB + w] = x(b, c0 + c, h, w0 + w);
      }
      for (int q = 0; q < nq; ++q)
        for (int j = 0; j < patch; ++j) {
          const int n = row + q0 + q, k0 = (i * patch + j) * C + c0, w = q * patch + j;
          for (int c = 0; c < nc; ++c) {
            if constexpr (ToTokens) {
              y(n, k0 + c) = tile[c * WB + w];
            } else {
              tile[c * WB + w] = y(n, k0 + c);
            }
          }
        }
      if constexpr (!ToTokens) {
        for (int c = 0; c < nc; ++c)
          for (int w = 0; w < nw; ++w) x(b, c0 + c, h, w0 + w) = tile[c * WB + w];
      }
    }
  }
};

template <bool ToTokens, class ExecSpace, class ImageView, class TokenView>
void patch_tiles_host(const char* label, const ExecSpace& space, const ImageView& x,
                      const TokenView& y, int patch) {
  using Tiles = PatchTiles<ToTokens, ImageView, TokenView>;
  const int B = int(x.extent(0)), C = int(x.extent(1)), H = int(x.extent(2)),
            W = int(x.extent(3));
  const int wp = W / patch, L = (H / patch) * wp;
  const int QB = patch <= Tiles::WB ? Tiles::WB / patch : 1;  // patches per tile
  const int cblocks = (C + Tiles::CB - 1) / Tiles::CB;
  Kokkos::parallel_for(label, Kokkos::RangePolicy<ExecSpace>(space, 0, B * H * cblocks),
                       Tiles{x, y, patch, C, H, W, wp, L, QB, cblocks});
}

}  // namespace Impl

template <class ExecSpace, class ImageView, class TokenView>
void patchify(const ExecSpace& space, const ImageView& x, int patch, const TokenView& y) {
  Impl::check_patchify("dchag::patchify", x, y, patch);
  if constexpr (Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible) {
    Impl::patch_tiles_host<true>("dchag::patchify", space, x, y, patch);
    return;
  }
  Impl::for_each_patch_pixel(
      "dchag::patchify", space, x.extent(0), x.extent(1), x.extent(2), x.extent(3), patch,
      KOKKOS_LAMBDA(int b, int c, int h, int w, int n, int k) { y(n, k) = x(b, c, h, w); });
}

template <class ExecSpace, class TokenView, class ImageView>
void unpatchify(const ExecSpace& space, const TokenView& y, int patch, const ImageView& x) {
  Impl::check_patchify("dchag::unpatchify", x, y, patch);
  if constexpr (Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible) {
    Impl::patch_tiles_host<false>("dchag::unpatchify", space, x, y, patch);
    return;
  }
  Impl::for_each_patch_pixel(
      "dchag::unpatchify", space, x.extent(0), x.extent(1), x.extent(2), x.extent(3), patch,
      KOKKOS_LAMBDA(int b, int c, int h, int w, int n, int k) { x(b, c, h, w) = y(n, k); });
}

}  // namespace dchag

#endif
