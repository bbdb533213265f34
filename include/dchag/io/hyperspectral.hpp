#ifndef DCHAG_IO_HYPERSPECTRAL_HPP
#define DCHAG_IO_HYPERSPECTRAL_HPP

// Synthetic hyperspectral cubes with the structure real scenes have: the linear mixing model.
// Nothing is downloaded; everything follows from the seed.
//
// The model behind the data
// -------------------------
// E endmember spectra S_e(lambda) (pure materials) are smooth reflectance curves over the
// wavelength range (default 400-2500 nm): a low-order continuum, for some a vegetation-like red
// edge near 720 nm, and a few Gaussian absorption features, clamped to [0.01, 0.99]. They are
// fixed by the seed and shared by all scenes.
//
// Each scene (sample) has abundance maps A_e(row, col) >= 0 with sum_e A_e = 1 at every pixel:
// the softmax over e of `sharpness` x a smooth random field (a per-scene bias per endmember plus
// a few low-wavenumber 2-D Fourier modes, wavelengths >= patch_scale / max_wavenumber pixels),
// so materials form smooth patches with soft borders.
//
//   raw_c(pixel) = sum_e S_e(lambda_c) A_e(pixel) + noise sigma_c eps
//
// where sigma_c is the standard deviation of the noiseless band (so `noise` is a
// noise-to-signal ratio) and eps ~ N(0, 1) is drawn per (scene, band, pixel). Neighbouring
// bands are therefore strongly correlated and the whole cube has rank ~E plus noise, which is
// what a masked autoencoder can learn to exploit.
//
// Normalisation: per band, mean_c and std_c are the statistics of raw_c over all pixels of 64
// training scenes (computed at construction from the abundances' mean and covariance, plus the
// known noise variance). With config.normalize (the default) every output is
// (raw_c - mean_c) / std_c; band_mean() and band_std() return mean_c and std_c. With
// normalize = false the outputs are raw reflectances.
//
// Splits: Train and Test scenes come from disjoint random streams (the split is part of the
// key every scene's abundances are drawn from).

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/view.hpp>
#include <dchag/io/counter_rng.hpp>
#include <dchag/io/host_output.hpp>
#include <dchag/io/split.hpp>

namespace dchag {

struct HyperspectralConfig {
  int bands = 128;          // C
  int height = 32;          // H
  int width = 32;           // W
  int endmembers = 5;       // E pure materials
  std::uint64_t seed = 0;
  double noise = 0.02;      // noise std relative to each band's signal std
  int modes = 6;            // Fourier modes per abundance field
  int max_wavenumber = 2;   // largest spatial wavenumber, in cycles per patch_scale pixels
  double patch_scale = 32;  // pixels per cycle at wavenumber 1: patches keep their size in
                            // pixels whatever the image size, as at a fixed ground resolution
  double sharpness = 2.5;   // softmax gain: larger gives purer pixels and crisper borders
  double min_wavelength = 400.0;   // nm, centre of the first band's interval starts here
  double max_wavelength = 2500.0;  // nm
  std::size_t train_size = 100000;
  std::size_t test_size = 10000;
  bool normalize = true;
};

template <class T>
class HyperspectralGenerator {
  static_assert(std::is_floating_point<T>::value,
                "HyperspectralGenerator<T>: T must be float or double");

 public:
  using host_space = Kokkos::DefaultHostExecutionSpace;

  explicit HyperspectralGenerator(const HyperspectralConfig& config) : cfg_(config) {
    validate();
    build_grid();
    build_spectra();
    build_normalisation();
  }

  const HyperspectralConfig& config() const { return cfg_; }
  int bands() const { return cfg_.bands; }
  int height() const { return cfg_.height; }
  int width() const { return cfg_.width; }
  int num_endmembers() const { return cfg_.endmembers; }

  std::size_t size(Split split) const {
    Impl::require(split != Split::Validation, "HyperspectralGenerator: no validation split, expected "
                  "Train or Test");
    return split == Split::Train ? cfg_.train_size : cfg_.test_size;
  }

  // Band centres in nm.
  const std::vector<double>& wavelengths() const { return wavelength_; }
  // Per-band statistics used for normalisation, in reflectance: x_norm = (raw - mean) / std.
  const std::vector<double>& band_mean() const { return mean_; }
  const std::vector<double>& band_std() const { return std_; }

  // The pure spectra S[E, C] (raw reflectance).
  View2<T, host_space> endmember_spectra() const {
    View2<T, host_space> s("endmember_spectra", cfg_.endmembers, cfg_.bands);
    for (int e = 0; e < cfg_.endmembers; ++e)
      for (int c = 0; c < cfg_.bands; ++c)
        s(e, c) = static_cast<T>(spectra_[std::size_t(e) * cfg_.bands + c]);
    return s;
  }

  // The ground-truth abundance maps A[E, H, W] of one scene (non-negative, sum 1 per pixel).
  View3<T, host_space> abundances(Split split, std::size_t index) const {
    check_index(split, index);
    std::vector<double> a(abundance_size());
    abundances_of(split, index, a.data());
    View3<T, host_space> out("abundances", cfg_.endmembers, cfg_.height, cfg_.width);
    for (std::size_t i = 0; i < a.size(); ++i) out.data()[i] = static_cast<T>(a[i]);
    return out;
  }

  // Fills x[B, C', H, W] with scenes `indices` of `split`, bands [band_begin, band_begin + C')
  // only. Each band's values are bit-identical to the same band of a full-range call. The view
  // may live in any memory space.
  template <class XView>
  void fill(Split split, const std::vector<std::size_t>& indices, const XView& x,
            int band_begin = 0) const {
    Impl::check_output_view_type<XView, T>();
    static_assert(XView::rank == 4, "HyperspectralGenerator::fill: x must be rank 4 [B, C, H, W]");
    const int nc = static_cast<int>(x.extent(1));
    check_band_range(band_begin, band_begin + nc);
    Impl::require_extents("HyperspectralGenerator::fill", x,
                          {indices.size(), std::size_t(nc), std::size_t(cfg_.height),
                           std::size_t(cfg_.width)});
    for (std::size_t i : indices) check_index(split, i);
    Impl::write_through_host(x, [&](T* xp) { fill_host(split, indices, xp, band_begin, nc); });
  }

  // Consecutive scenes first_index, first_index + 1, ...; the batch size is x.extent(0).
  template <class XView>
  void fill(Split split, std::size_t first_index, const XView& x, int band_begin = 0) const {
    fill(split, consecutive(first_index, x.extent(0)), x, band_begin);
  }

  View4<T, host_space> batch(Split split, const std::vector<std::size_t>& indices, int band_begin,
                             int band_end) const {
    check_band_range(band_begin, band_end);
    View4<T, host_space> x(Kokkos::view_alloc("hyperspectral_x", Kokkos::WithoutInitializing),
                           indices.size(), band_end - band_begin, cfg_.height, cfg_.width);
    fill(split, indices, x, band_begin);
    return x;
  }
  View4<T, host_space> batch(Split split, const std::vector<std::size_t>& indices) const {
    return batch(split, indices, 0, cfg_.bands);
  }
  View4<T, host_space> batch(Split split, std::size_t first_index, std::size_t batch_size,
                             int band_begin, int band_end) const {
    return batch(split, consecutive(first_index, batch_size), band_begin, band_end);
  }
  View4<T, host_space> batch(Split split, std::size_t first_index, std::size_t batch_size) const {
    return batch(split, first_index, batch_size, 0, cfg_.bands);
  }

  // One scene into x[C', H, W].
  template <class XView>
  void sample(Split split, std::size_t index, const XView& x, int band_begin = 0) const {
    Impl::check_output_view_type<XView, T>();
    static_assert(XView::rank == 3, "HyperspectralGenerator::sample: x must be rank 3 [C, H, W]");
    const int nc = static_cast<int>(x.extent(0));
    check_band_range(band_begin, band_begin + nc);
    Impl::require_extents("HyperspectralGenerator::sample", x,
                          {std::size_t(nc), std::size_t(cfg_.height), std::size_t(cfg_.width)});
    check_index(split, index);
    Impl::write_through_host(x, [&](T* xp) { fill_host(split, {index}, xp, band_begin, nc); });
  }

 private:
  static constexpr std::uint64_t kTagSpectrum = 11, kTagScene = 12, kTagNoise = 13;
  static constexpr double kPi = 3.14159265358979323846;
  static constexpr int kStatScenes = 64;

  std::size_t pixels() const { return std::size_t(cfg_.height) * cfg_.width; }
  std::size_t abundance_size() const { return std::size_t(cfg_.endmembers) * pixels(); }

  static std::vector<std::size_t> consecutive(std::size_t first, std::size_t count) {
    std::vector<std::size_t> v(count);
    for (std::size_t i = 0; i < count; ++i) v[i] = first + i;
    return v;
  }

  void validate() const {
    using Impl::require;
    const auto& c = cfg_;
    require(c.bands > 0, "HyperspectralGenerator: config.bands = ", c.bands, ", expected > 0");
    require(c.height > 0, "HyperspectralGenerator: config.height = ", c.height, ", expected > 0");
    require(c.width > 0, "HyperspectralGenerator: config.width = ", c.width, ", expected > 0");
    require(c.endmembers > 0, "HyperspectralGenerator: config.endmembers = ", c.endmembers,
            ", expected > 0");
    require(c.modes > 0, "HyperspectralGenerator: config.modes = ", c.modes, ", expected > 0");
    require(c.max_wavenumber > 0, "HyperspectralGenerator: config.max_wavenumber = ",
            c.max_wavenumber, ", expected > 0");
    require(std::isfinite(c.noise) && c.noise >= 0, "HyperspectralGenerator: config.noise = ",
            c.noise, ", expected finite and >= 0");
    require(std::isfinite(c.patch_scale) && c.patch_scale > 0,
            "HyperspectralGenerator: config.patch_scale = ", c.patch_scale, ", expected > 0");
    require(std::isfinite(c.sharpness) && c.sharpness > 0,
            "HyperspectralGenerator: config.sharpness = ", c.sharpness, ", expected > 0");
    require(std::isfinite(c.min_wavelength) && std::isfinite(c.max_wavelength) &&
                c.min_wavelength > 0 && c.min_wavelength < c.max_wavelength,
            "HyperspectralGenerator: wavelength range [", c.min_wavelength, ", ",
            c.max_wavelength, "] nm invalid, expected 0 < min_wavelength < max_wavelength");
    require(c.train_size > 0, "HyperspectralGenerator: config.train_size = 0, expected > 0");
    require(c.test_size > 0, "HyperspectralGenerator: config.test_size = 0, expected > 0");
  }

  void check_band_range(int begin, int end) const {
    Impl::require(begin >= 0 && begin < end && end <= cfg_.bands,
                  "HyperspectralGenerator: band range [", begin, ", ", end,
                  ") invalid, expected 0 <= begin < end <= bands = ", cfg_.bands);
  }

  void check_index(Split split, std::size_t index) const {
    Impl::require(index < size(split), "HyperspectralGenerator: ", split_name(split), " index ",
                  index, " out of range, expected < ", size(split));
  }

  void build_grid() {
    const int cc = cfg_.bands, hh = cfg_.height, ww = cfg_.width;
    wavelength_.resize(cc);
    const double step = (cfg_.max_wavelength - cfg_.min_wavelength) / cc;
    for (int c = 0; c < cc; ++c) wavelength_[c] = cfg_.min_wavelength + step * (c + 0.5);
    // The same coordinate scale along both axes keeps patches round on non-square images.
    // Columns get tables (cos/sin of kx x for every kx), rows need trig only
    // once per mode and scene: cos(kx x + ky y + phi) = cos(kx x) cos(ky y + phi)
    //                                                  - sin(kx x) sin(ky y + phi).
    const double scale = 2.0 * kPi / cfg_.patch_scale;
    row_coord_.resize(hh);
    for (int r = 0; r < hh; ++r) row_coord_[r] = scale * r;
    const int kmax = cfg_.max_wavenumber;
    cos_tab_.resize(std::size_t(kmax + 1) * ww);
    sin_tab_.resize(cos_tab_.size());
    for (int k = 0; k <= kmax; ++k)
      for (int j = 0; j < ww; ++j) {
        cos_tab_[std::size_t(k) * ww + j] = std::cos(k * scale * j);
        sin_tab_[std::size_t(k) * ww + j] = std::sin(k * scale * j);
      }
  }

  void build_spectra() {
    const int cc = cfg_.bands, ee = cfg_.endmembers;
    spectra_.resize(std::size_t(ee) * cc);
    const double lo = cfg_.min_wavelength, hi = cfg_.max_wavelength;
    for (int e = 0; e < ee; ++e) {
      Impl::ParameterRng rng(Impl::hash_key(cfg_.seed, kTagSpectrum, e));
      const double b0 = rng.uniform(0.05, 0.45), b1 = rng.uniform(-0.25, 0.35),
                   b2 = rng.uniform(-0.2, 0.2);
      double wiggle[3], wiggle_phase[3];
      for (int q = 0; q < 3; ++q) {
        wiggle[q] = rng.uniform(0.0, 0.04) / (1 + q);
        wiggle_phase[q] = rng.uniform(0.0, 2 * kPi);
      }
      // Every other material gets a red edge: the chlorophyll step that makes vegetation bright
      // in the near infrared.
      const double edge = e % 2 == 0 ? rng.uniform(0.15, 0.4) : 0.0;
      const int n_abs = rng.integer(2, 4);
      double centre[4], depth[4], width[4];
      for (int i = 0; i < n_abs; ++i) {
        centre[i] = rng.uniform(lo, hi);
        depth[i] = rng.uniform(0.15, 0.6);
        width[i] = rng.uniform(20.0, 90.0);
      }
      for (int c = 0; c < cc; ++c) {
        const double lambda = wavelength_[c], u = (lambda - lo) / (hi - lo);
        double s = b0 + b1 * u + b2 * u * u;
        for (int q = 0; q < 3; ++q) s += wiggle[q] * std::cos(2 * kPi * (q + 1) * u + wiggle_phase[q]);
        s += edge / (1.0 + std::exp(-(lambda - 720.0) / 20.0));
        for (int i = 0; i < n_abs; ++i) {
          const double v = (lambda - centre[i]) / width[i];
          s *= 1.0 - depth[i] * std::exp(-0.5 * v * v);
        }
        spectra_[std::size_t(e) * cc + c] = std::min(0.99, std::max(0.01, s));
      }
    }
  }

  // a[E, H, W] of one scene: softmax over e of sharpness x (bias_e + sum of modes).
  void abundances_of(Split split, std::size_t index, double* a) const {
    const int ee = cfg_.endmembers, hh = cfg_.height, ww = cfg_.width, kmax = cfg_.max_wavenumber;
    const std::size_t np = pixels();
    Impl::ParameterRng rng(
        Impl::hash_key(cfg_.seed, kTagScene, static_cast<std::uint64_t>(split), index));
    for (int e = 0; e < ee; ++e) {
      double* f = a + std::size_t(e) * np;
      std::fill(f, f + np, 0.7 * rng.normal());  // which materials dominate this scene
      for (int m = 0; m < cfg_.modes; ++m) {
        int kx = rng.integer(0, kmax), ky = rng.integer(-kmax, kmax);
        if (kx == 0 && ky == 0) kx = 1;  // the constant is the bias's job
        const double amp = rng.uniform(0.5, 1.5) / std::sqrt(double(kx * kx + ky * ky));
        const double phase = rng.uniform(0.0, 2 * kPi);
        const double* ct = cos_tab_.data() + std::size_t(kx) * ww;
        const double* st = sin_tab_.data() + std::size_t(kx) * ww;
        for (int r = 0; r < hh; ++r) {
          const double theta = ky * row_coord_[r] + phase;
          const double alpha = amp * std::cos(theta), beta = amp * std::sin(theta);
          double* row = f + std::size_t(r) * ww;
          for (int j = 0; j < ww; ++j) row[j] += alpha * ct[j] - beta * st[j];
        }
      }
    }
    const double g = cfg_.sharpness;
    for (std::size_t p = 0; p < np; ++p) {
      double top = a[p];
      for (int e = 1; e < ee; ++e) top = std::max(top, a[std::size_t(e) * np + p]);
      double sum = 0.0;
      for (int e = 0; e < ee; ++e) {
        double& v = a[std::size_t(e) * np + p];
        v = std::exp(g * (v - top));
        sum += v;
      }
      const double inv = 1.0 / sum;
      for (int e = 0; e < ee; ++e) a[std::size_t(e) * np + p] *= inv;
    }
  }

  void build_normalisation() {
    const int cc = cfg_.bands, ee = cfg_.endmembers;
    const std::size_t np = pixels();
    std::vector<double> mu(ee, 0.0), cov(std::size_t(ee) * ee, 0.0), a(abundance_size());
    const std::size_t ns = std::min<std::size_t>(kStatScenes, cfg_.train_size);
    for (std::size_t s = 0; s < ns; ++s) {
      abundances_of(Split::Train, s * cfg_.train_size / ns, a.data());
      for (int e = 0; e < ee; ++e) {
        const double* ae = a.data() + e * np;
        for (std::size_t p = 0; p < np; ++p) mu[e] += ae[p];
        for (int f = 0; f <= e; ++f) {
          const double* af = a.data() + f * np;
          double sum = 0.0;
          for (std::size_t p = 0; p < np; ++p) sum += ae[p] * af[p];
          cov[std::size_t(e) * ee + f] += sum;
        }
      }
    }
    const double count = double(ns) * double(np);
    for (int e = 0; e < ee; ++e) mu[e] /= count;
    for (int e = 0; e < ee; ++e)
      for (int f = 0; f <= e; ++f) {
        const double v = cov[std::size_t(e) * ee + f] / count - mu[e] * mu[f];
        cov[std::size_t(e) * ee + f] = cov[std::size_t(f) * ee + e] = v;
      }

    std::vector<double> sig(cc);
    double sig_max = 0.0;
    for (int c = 0; c < cc; ++c) {
      double v = 0.0;
      for (int e = 0; e < ee; ++e)
        for (int f = 0; f < ee; ++f)
          v += spectra_[std::size_t(e) * cc + c] * cov[std::size_t(e) * ee + f] *
               spectra_[std::size_t(f) * cc + c];
      sig[c] = std::sqrt(std::max(v, 0.0));
      sig_max = std::max(sig_max, sig[c]);
    }
    mean_.resize(cc);
    std_.resize(cc);
    coef_.resize(std::size_t(cc) * ee);
    bias_.resize(cc);
    noise_amp_.resize(cc);
    const double noise_factor = std::sqrt(1.0 + cfg_.noise * cfg_.noise);
    for (int c = 0; c < cc; ++c) {
      // A band where every material reflects alike carries no signal (one endmember, or
      // clamped spectra); floor its scale so normalising does not blow its noise up.
      const double s = std::max(sig[c], 1e-6 * std::max(sig_max, 1e-3));
      double m = 0.0;
      for (int e = 0; e < ee; ++e) m += spectra_[std::size_t(e) * cc + c] * mu[e];
      mean_[c] = m;
      std_[c] = s * noise_factor;
      // One affine map per band, normalised or raw, so the pixel loop is the same either way.
      const double gain = cfg_.normalize ? 1.0 / std_[c] : 1.0;
      for (int e = 0; e < ee; ++e)
        coef_[std::size_t(c) * ee + e] = gain * spectra_[std::size_t(e) * cc + c];
      bias_[c] = cfg_.normalize ? -gain * m : 0.0;
      noise_amp_[c] = gain * cfg_.noise * s;
    }
  }

  // Same chunked, alias-free accumulation as the weather generator's channel mixing.
  void mix(Split split, std::size_t index, const double* a, int c0, int nc, T* out) const {
    constexpr std::size_t chunk = 512;
    const std::size_t np = pixels();
    const int ee = cfg_.endmembers;
    double acc[chunk];
    for (int ci = 0; ci < nc; ++ci) {
      const int c = c0 + ci;
      const double* s = coef_.data() + std::size_t(c) * ee;
      const double amp = noise_amp_[c];
      const std::uint64_t key = Impl::hash_key(cfg_.seed, kTagNoise,
                                               static_cast<std::uint64_t>(split), index, c);
      T* o = out + std::size_t(ci) * np;
      for (std::size_t p0 = 0; p0 < np; p0 += chunk) {
        const std::size_t n = std::min(chunk, np - p0);
        for (std::size_t i = 0; i < n; ++i) acc[i] = bias_[c];
        for (int e = 0; e < ee; ++e) {
          const double se = s[e];
          const double* ae = a + std::size_t(e) * np + p0;
          for (std::size_t i = 0; i < n; ++i) acc[i] += se * ae[i];
        }
        if (amp != 0.0)
          for (std::size_t i = 0; i < n; ++i)
            acc[i] += amp * Impl::fast_normal(Impl::splitmix64(key + p0 + i));
        for (std::size_t i = 0; i < n; ++i) o[p0 + i] = static_cast<T>(acc[i]);
      }
    }
  }

  void fill_host(Split split, const std::vector<std::size_t>& indices, T* x, int c0,
                 int nc) const {
    const std::size_t block = std::size_t(nc) * pixels();
    std::vector<double> a(abundance_size());
    for (std::size_t b = 0; b < indices.size(); ++b) {
      abundances_of(split, indices[b], a.data());
      mix(split, indices[b], a.data(), c0, nc, x + b * block);
    }
  }

  HyperspectralConfig cfg_;
  std::vector<double> wavelength_, row_coord_;
  std::vector<double> cos_tab_, sin_tab_;  // [max_wavenumber + 1, W]
  std::vector<double> spectra_;            // S [E, C]
  std::vector<double> mean_, std_;         // published raw statistics [C]
  std::vector<double> coef_, bias_, noise_amp_;  // the affine map actually applied
};

}  // namespace dchag

#endif
