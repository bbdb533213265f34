#ifndef DCHAG_IO_WEATHER_HPP
#define DCHAG_IO_WEATHER_HPP

// Synthetic weather with the structure a forecasting model can learn: smooth, correlated fields
// on a latitude/longitude grid, advected in time, so that the state at t + lead is a predictable
// but non-trivial function of the state at t. Nothing is downloaded; everything follows from
// the seed.
//
// The model behind the data
// -------------------------
// K latent fields z_k(lat, lon, t) (think: a few independent modes of the atmosphere), each
//
//   z_k = clim_k(lat) + sum_m a_km(t) P_km(lat) cos(n_km (lon - s_km t) + nu_km t + psi_km)
//
//   clim_k    time-independent meridional structure ("climatology": warm equator, asymmetric
//             hemispheres), a few low-order terms in lat;
//   n_km      integer zonal wavenumber in [1, max_wavenumber], amplitude ~ 1/n^0.8, so fields
//             are multi-scale but smooth;
//   P_km      a wave packet in latitude: a Gaussian around lat_km (width 15-35 degrees),
//             tapered towards the poles;
//   s_km      the zonal wind s(lat) averaged over the packet (area-weighted |P_km|^2). s(lat)
//             has westerly jets near +-45 degrees and weak easterlies at the equator, so
//             packets at different latitudes travel at different speeds and in different
//             directions: the future is not a rigid shift of the present. (Advecting every
//             row by its own s(lat) would shear the fields into ever finer latitudinal
//             filaments; moving each packet as a whole keeps them smooth at any t.);
//   nu_km     slow phase drift of each mode (its own propagation relative to the wind);
//   a_km(t)   slowly breathing amplitude (+-30%, periods of hundreds of steps), so that held-out
//             times are new combinations rather than replays of training states.
//
// Channel c (a variable at some level) is a linear mixture of the latents plus noise:
//
//   raw_c = offset_c + scale_c (sum_k A_ck z_k + noise sigma_c eps)
//
// where A_ck varies smoothly with c (neighbouring "levels" are strongly correlated) plus a
// per-channel random part, sigma_c is the standard deviation of the noiseless mixture (so
// `noise` is a noise-to-signal ratio) and eps ~ N(0, 1) is drawn per (time, channel, pixel).
// The state is a function of the time index alone: the target of sample i is the input of
// sample i + lead, exactly.
//
// Normalisation (what ClimaX does with ERA5)
// ------------------------------------------
// Per channel, mean_c and std_c are the statistics of raw_c over all grid points of 32 training
// times spread over the Train range (computed at construction from the latents' mean and
// covariance, plus the known noise variance). With config.normalize (the default) every output
// is (raw_c - mean_c) / std_c, i.e. ~zero mean, unit variance per channel; channel_mean() and
// channel_std() return mean_c and std_c so predictions can be mapped back to raw units. With
// normalize = false the raw values are returned.
//
// Splits
// ------
// Train index i is time i, for i < train_size. Test index i is time train_size + max_lead + i,
// for i < test_size: no Test input or target time is ever a Train input or target time.

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>
#include <dchag/io/counter_rng.hpp>
#include <dchag/io/host_output.hpp>
#include <dchag/io/split.hpp>

namespace dchag {

struct WeatherConfig {
  int channels = 16;       // C: variables x levels
  int height = 32;         // H: latitude rows
  int width = 64;          // W: longitude columns
  int lead_time = 4;       // Delta in steps between input x (time t) and target y (t + Delta)
  int max_lead_time = 0;   // > lead_time: Delta drawn per sample in [lead_time, max_lead_time]
  double hours_per_step = 6.0;
  std::uint64_t seed = 0;
  double noise = 0.05;     // noise std relative to each channel's signal std
  int latents = 6;         // K latent fields behind the C channels
  int modes = 6;           // Fourier modes per latent field
  int max_wavenumber = 5;  // largest zonal wavenumber (width must exceed 2 x this)
  double wind = 1.0;       // scales advection and phase drift; 0 freezes the waves
  std::size_t train_size = 100000;  // number of Train sample indices
  std::size_t test_size = 10000;    // number of Test sample indices
  bool normalize = true;   // standardise per channel (see above) or return raw values
};

template <class T>
struct WeatherBatch {
  using host_space = Kokkos::DefaultHostExecutionSpace;
  View4<T, host_space> x;          // [B, C', H, W] state at t
  View4<T, host_space> y;          // [B, C', H, W] state at t + Delta
  View1<T, host_space> lead_time;  // [B] Delta in hours / 100: ClimaX's lead-time input scaling
};

template <class T>
class WeatherGenerator {
  // Values are computed in double and rounded once into T.
  static_assert(is_model_scalar_v<T>, "WeatherGenerator<T>: T must be float, double, bf16 or fp16");

 public:
  using host_space = Kokkos::DefaultHostExecutionSpace;
  using batch_type = WeatherBatch<T>;

  explicit WeatherGenerator(const WeatherConfig& config) : cfg_(config) {
    validate();
    build_grid();
    build_latents();
    build_channels();
  }

  const WeatherConfig& config() const { return cfg_; }
  double hours_per_step() const { return cfg_.hours_per_step; }
  int channels() const { return cfg_.channels; }
  // The channels' names, "var0", "var1", ...: synthetic variables have no physical name, and
  // these are the names ModelConfig gives variables nobody named (model/config.hpp), so a model
  // of this data describes and checkpoints as one of unnamed variables.
  std::vector<std::string> variable_names() const {
    std::vector<std::string> names;
    for (int c = 0; c < cfg_.channels; ++c) names.push_back("var" + std::to_string(c));
    return names;
  }
  int height() const { return cfg_.height; }
  int width() const { return cfg_.width; }

  std::size_t size(Split split) const {
    Impl::require(split != Split::Validation, "WeatherGenerator: no validation split, expected "
                  "Train or Test");
    return split == Split::Train ? cfg_.train_size : cfg_.test_size;
  }

  // Latitude of each row in degrees, from -90 + dlat/2 (row 0) to 90 - dlat/2.
  const std::vector<double>& latitudes() const { return lat_deg_; }
  // Longitude of each column in degrees, 0 to 360 - dlon.
  const std::vector<double>& longitudes() const { return lon_deg_; }
  // Per-channel statistics used for normalisation, in raw units: x_norm = (raw - mean) / std.
  const std::vector<double>& channel_mean() const { return mean_; }
  const std::vector<double>& channel_std() const { return std_; }
  // Background zonal wind of each row in radians of longitude per step; each wave packet moves
  // at this wind averaged over its latitudes.
  const std::vector<double>& zonal_speed() const { return speed_; }

  // The time index a sample's input lives at; its target lives at time + lead_steps(...).
  std::int64_t time_index(Split split, std::size_t index) const {
    Impl::require(index < size(split), "WeatherGenerator: ", split_name(split), " index ", index,
                  " out of range, expected < ", size(split));
    const std::size_t t =
        split == Split::Train ? index : cfg_.train_size + static_cast<std::size_t>(max_lead()) + index;
    return static_cast<std::int64_t>(t);
  }

  int lead_steps(Split split, std::size_t index) const {
    if (cfg_.max_lead_time <= cfg_.lead_time) return cfg_.lead_time;
    const auto span = static_cast<std::uint64_t>(cfg_.max_lead_time - cfg_.lead_time + 1);
    const auto h = Impl::hash_key(cfg_.seed, kTagLead, static_cast<std::uint64_t>(split), index);
    return cfg_.lead_time + static_cast<int>(h % span);
  }

  // Fills x[B, C', H, W], y[B, C', H, W] and lead_time[B] for samples `indices` of `split`, with
  // channels [channel_begin, channel_begin + C') only. Each channel's values are bit-identical
  // to the same channel of a full-range call. Views may live in any memory space.
  template <class XView, class YView, class LeadView>
  void fill(Split split, const std::vector<std::size_t>& indices, const XView& x, const YView& y,
            const LeadView& lead_time, int channel_begin = 0) const {
    Impl::check_output_view_type<XView, T>();
    Impl::check_output_view_type<YView, T>();
    Impl::check_output_view_type<LeadView, T>();
    static_assert(XView::rank == 4 && YView::rank == 4 && LeadView::rank == 1,
                  "WeatherGenerator::fill: x and y must be rank 4 [B, C, H, W], lead_time rank 1");
    const int nc = static_cast<int>(x.extent(1));
    check_channel_range(channel_begin, channel_begin + nc);
    const std::size_t b = indices.size(), hh = cfg_.height, ww = cfg_.width;
    Impl::require_extents("WeatherGenerator::fill", x, {b, std::size_t(nc), hh, ww});
    Impl::require_extents("WeatherGenerator::fill", y, {b, std::size_t(nc), hh, ww});
    Impl::require_extents("WeatherGenerator::fill", lead_time, {b});
    for (std::size_t i : indices) time_index(split, i);  // all index checks before any work
    Impl::write_through_host(x, [&](T* xp) {
      Impl::write_through_host(y, [&](T* yp) {
        Impl::write_through_host(lead_time, [&](T* lp) {
          fill_host(split, indices, xp, yp, lp, channel_begin, nc);
        });
      });
    });
  }

  // Consecutive samples first_index, first_index + 1, ...; the batch size is x.extent(0).
  template <class XView, class YView, class LeadView>
  void fill(Split split, std::size_t first_index, const XView& x, const YView& y,
            const LeadView& lead_time, int channel_begin = 0) const {
    fill(split, consecutive(first_index, x.extent(0)), x, y, lead_time, channel_begin);
  }

  batch_type batch(Split split, const std::vector<std::size_t>& indices, int channel_begin,
                   int channel_end) const {
    check_channel_range(channel_begin, channel_end);
    const std::size_t b = indices.size(), nc = channel_end - channel_begin;
    batch_type out{View4<T, host_space>(Kokkos::view_alloc("weather_x", Kokkos::WithoutInitializing),
                                        b, nc, cfg_.height, cfg_.width),
                   View4<T, host_space>(Kokkos::view_alloc("weather_y", Kokkos::WithoutInitializing),
                                        b, nc, cfg_.height, cfg_.width),
                   View1<T, host_space>("weather_lead_time", b)};
    fill(split, indices, out.x, out.y, out.lead_time, channel_begin);
    return out;
  }
  batch_type batch(Split split, const std::vector<std::size_t>& indices) const {
    return batch(split, indices, 0, cfg_.channels);
  }
  batch_type batch(Split split, std::size_t first_index, std::size_t batch_size, int channel_begin,
                   int channel_end) const {
    return batch(split, consecutive(first_index, batch_size), channel_begin, channel_end);
  }
  batch_type batch(Split split, std::size_t first_index, std::size_t batch_size) const {
    return batch(split, first_index, batch_size, 0, cfg_.channels);
  }

  // One sample into x[C', H, W] and y[C', H, W]; returns its lead time in steps.
  template <class XView, class YView>
  int sample(Split split, std::size_t index, const XView& x, const YView& y,
             int channel_begin = 0) const {
    Impl::check_output_view_type<XView, T>();
    Impl::check_output_view_type<YView, T>();
    static_assert(XView::rank == 3 && YView::rank == 3,
                  "WeatherGenerator::sample: x and y must be rank 3 [C, H, W]");
    const int nc = static_cast<int>(x.extent(0));
    check_channel_range(channel_begin, channel_begin + nc);
    const std::size_t hh = cfg_.height, ww = cfg_.width;
    Impl::require_extents("WeatherGenerator::sample", x, {std::size_t(nc), hh, ww});
    Impl::require_extents("WeatherGenerator::sample", y, {std::size_t(nc), hh, ww});
    time_index(split, index);
    T lead;
    Impl::write_through_host(x, [&](T* xp) {
      Impl::write_through_host(y, [&](T* yp) {
        fill_host(split, {index}, xp, yp, &lead, channel_begin, nc);
      });
    });
    return lead_steps(split, index);
  }

  // The state at any time index >= 0 into out[C', H, W] (e.g. the truth along a rollout).
  template <class OutView>
  void state(std::int64_t time, const OutView& out, int channel_begin = 0) const {
    Impl::check_output_view_type<OutView, T>();
    static_assert(OutView::rank == 3, "WeatherGenerator::state: out must be rank 3 [C, H, W]");
    Impl::require(time >= 0 && time <= kMaxTime, "WeatherGenerator::state: time ", time,
                  " out of range, expected 0 <= time <= ", kMaxTime);
    const int nc = static_cast<int>(out.extent(0));
    check_channel_range(channel_begin, channel_begin + nc);
    Impl::require_extents("WeatherGenerator::state", out,
                          {std::size_t(nc), std::size_t(cfg_.height), std::size_t(cfg_.width)});
    std::vector<double> z(latent_size());
    latents_at(time, z.data());
    Impl::write_through_host(out, [&](T* p) { mix(time, z.data(), channel_begin, nc, p); });
  }

 private:
  // Tags keep the random streams of different parameter kinds apart.
  static constexpr std::uint64_t kTagMode = 1, kTagClim = 2, kTagMix = 3, kTagChannel = 4,
                                 kTagNoise = 5, kTagLead = 6;
  // Times stay exact in double and phases stay accurate far below this.
  static constexpr std::int64_t kMaxTime = std::int64_t(1) << 40;
  static constexpr double kPi = 3.14159265358979323846;
  static constexpr int kStatTimes = 32;

  struct Mode {
    int n;
    double amp, phase, drift, mod_rate, mod_phase;
    double speed;                 // s_km, radians of longitude per step
    std::vector<double> profile;  // P_km per row
  };

  std::size_t pixels() const { return std::size_t(cfg_.height) * cfg_.width; }
  std::size_t latent_size() const { return std::size_t(cfg_.latents) * pixels(); }
  int max_lead() const { return std::max(cfg_.lead_time, cfg_.max_lead_time); }

  static std::vector<std::size_t> consecutive(std::size_t first, std::size_t count) {
    std::vector<std::size_t> v(count);
    for (std::size_t i = 0; i < count; ++i) v[i] = first + i;
    return v;
  }

  void validate() const {
    using Impl::require;
    const auto& c = cfg_;
    require(c.channels > 0, "WeatherGenerator: config.channels = ", c.channels, ", expected > 0");
    require(c.height > 0, "WeatherGenerator: config.height = ", c.height, ", expected > 0");
    require(c.width > 0, "WeatherGenerator: config.width = ", c.width, ", expected > 0");
    require(c.latents > 0, "WeatherGenerator: config.latents = ", c.latents, ", expected > 0");
    require(c.modes > 0, "WeatherGenerator: config.modes = ", c.modes, ", expected > 0");
    require(c.max_wavenumber > 0, "WeatherGenerator: config.max_wavenumber = ", c.max_wavenumber,
            ", expected > 0");
    require(c.width > 2 * c.max_wavenumber, "WeatherGenerator: config.width = ", c.width,
            " cannot resolve zonal wavenumber ", c.max_wavenumber, ", expected width > ",
            2 * c.max_wavenumber);
    require(c.lead_time > 0, "WeatherGenerator: config.lead_time = ", c.lead_time,
            ", expected > 0 steps");
    require(c.max_lead_time == 0 || c.max_lead_time >= c.lead_time,
            "WeatherGenerator: config.max_lead_time = ", c.max_lead_time,
            ", expected 0 (fixed lead) or >= lead_time = ", c.lead_time);
    require(std::isfinite(c.hours_per_step) && c.hours_per_step > 0,
            "WeatherGenerator: config.hours_per_step = ", c.hours_per_step, ", expected > 0");
    require(std::isfinite(c.noise) && c.noise >= 0, "WeatherGenerator: config.noise = ", c.noise,
            ", expected finite and >= 0");
    require(std::isfinite(c.wind), "WeatherGenerator: config.wind = ", c.wind,
            ", expected finite");
    require(c.train_size > 0, "WeatherGenerator: config.train_size = 0, expected > 0");
    require(c.test_size > 0, "WeatherGenerator: config.test_size = 0, expected > 0");
    require(c.train_size <= std::size_t(kMaxTime) && c.test_size <= std::size_t(kMaxTime) &&
                c.train_size + c.test_size + std::size_t(max_lead()) * 2 <= std::size_t(kMaxTime),
            "WeatherGenerator: config.train_size = ", c.train_size, " + test_size = ", c.test_size,
            " exceed the ", kMaxTime, " time steps the generator keeps exact");
  }

  void check_channel_range(int begin, int end) const {
    Impl::require(begin >= 0 && begin < end && end <= cfg_.channels,
                  "WeatherGenerator: channel range [", begin, ", ", end,
                  ") invalid, expected 0 <= begin < end <= channels = ", cfg_.channels);
  }

  // Background zonal wind: westerly jets at +-45 degrees, weak tropical easterlies, a little
  // everywhere else; about 1.8 grid columns per step at the jets on a 64-column grid.
  double wind_at(double lat_deg) const {
    const double jet = (std::abs(lat_deg) - 45.0) / 15.0, eq = lat_deg / 15.0;
    return cfg_.wind * (0.015 + 0.16 * std::exp(-jet * jet) - 0.04 * std::exp(-eq * eq));
  }

  void build_grid() {
    const int hh = cfg_.height, ww = cfg_.width;
    const double dlat = 180.0 / hh, dlon = 360.0 / ww;
    lat_deg_.resize(hh);
    lat_rad_.resize(hh);
    speed_.resize(hh);
    for (int r = 0; r < hh; ++r) {
      lat_deg_[r] = -90.0 + dlat * (r + 0.5);
      lat_rad_[r] = lat_deg_[r] * kPi / 180.0;
      speed_[r] = wind_at(lat_deg_[r]);
    }
    lon_deg_.resize(ww);
    for (int j = 0; j < ww; ++j) lon_deg_[j] = dlon * j;
    // Separable tables: cos(n lon + theta) = cos(n lon) cos(theta) - sin(n lon) sin(theta), so
    // the per-pixel work is two multiply-adds per mode; only rows need trig per time.
    cos_tab_.resize(std::size_t(cfg_.max_wavenumber) * ww);
    sin_tab_.resize(cos_tab_.size());
    for (int n = 1; n <= cfg_.max_wavenumber; ++n)
      for (int j = 0; j < ww; ++j) {
        // Integer multiples of the column index keep the argument exact, so the tables are the
        // same on every platform and the zonal mean of each mode is zero to rounding.
        const double arg = 2.0 * kPi * double((std::int64_t(n) * j) % ww) / ww;
        cos_tab_[std::size_t(n - 1) * ww + j] = std::cos(arg);
        sin_tab_[std::size_t(n - 1) * ww + j] = std::sin(arg);
      }
  }

  void build_latents() {
    const int hh = cfg_.height, kk = cfg_.latents;
    clim_.assign(std::size_t(kk) * hh, 0.0);
    for (int k = 0; k < kk; ++k) {
      Impl::ParameterRng rng(Impl::hash_key(cfg_.seed, kTagClim, k));
      const double g1 = 0.5 * rng.normal(), g2 = 0.3 * rng.normal(), g3 = 0.15 * rng.normal();
      for (int r = 0; r < hh; ++r) {
        const double phi = lat_rad_[r];
        clim_[std::size_t(k) * hh + r] = g1 * std::cos(2 * phi) + g2 * std::sin(phi) +
                                         g3 * std::cos(4 * phi);
      }
      for (int m = 0; m < cfg_.modes; ++m) {
        Impl::ParameterRng mr(Impl::hash_key(cfg_.seed, kTagMode, k, m));
        Mode mode;
        mode.n = mr.integer(1, cfg_.max_wavenumber);
        mode.amp = mr.uniform(0.6, 1.4) / std::pow(double(mode.n), 0.8);
        mode.phase = mr.uniform(0.0, 2 * kPi);
        mode.drift = cfg_.wind * mr.uniform(-0.02, 0.02);
        mode.mod_rate = mr.uniform(0.003, 0.02);
        mode.mod_phase = mr.uniform(0.0, 2 * kPi);
        const double centre = mr.uniform(-70.0, 70.0), width = mr.uniform(15.0, 35.0);
        const double sign = mr.uniform() < 0.5 ? -1.0 : 1.0;
        auto profile = [&](double lat_deg) {
          const double u = (lat_deg - centre) / width;
          return sign * std::exp(-0.5 * u * u) * (0.35 + 0.65 * std::cos(lat_deg * kPi / 180.0));
        };
        mode.profile.resize(hh);
        for (int r = 0; r < hh; ++r) mode.profile[r] = profile(lat_deg_[r]);
        // The packet's speed is averaged on a fixed fine grid, not on the model grid, so a
        // generator at another resolution shows the same motion.
        double num = 0.0, den = 0.0;
        for (int i = 0; i < 360; ++i) {
          const double lat = -90.0 + 0.5 * (i + 0.5);
          const double w = profile(lat) * profile(lat) * std::cos(lat * kPi / 180.0);
          num += w * wind_at(lat);
          den += w;
        }
        mode.speed = num / den;
        modes_.push_back(std::move(mode));
      }
    }
  }

  // z[K, H, W] at time t.
  void latents_at(std::int64_t time, double* z) const {
    const int hh = cfg_.height, ww = cfg_.width;
    const double t = static_cast<double>(time);
    for (int k = 0; k < cfg_.latents; ++k) {
      double* zk = z + std::size_t(k) * pixels();
      for (int r = 0; r < hh; ++r) std::fill(zk + std::size_t(r) * ww, zk + std::size_t(r + 1) * ww,
                                             clim_[std::size_t(k) * hh + r]);
      for (int m = 0; m < cfg_.modes; ++m) {
        const Mode& mode = modes_[std::size_t(k) * cfg_.modes + m];
        const double a = mode.amp * (1.0 + 0.3 * std::sin(mode.mod_rate * t + mode.mod_phase));
        const double phase0 = mode.phase + mode.drift * t;
        const double* ct = cos_tab_.data() + std::size_t(mode.n - 1) * ww;
        const double* st = sin_tab_.data() + std::size_t(mode.n - 1) * ww;
        const double theta = phase0 - mode.n * mode.speed * t;
        const double ca = a * std::cos(theta), sa = a * std::sin(theta);
        for (int r = 0; r < hh; ++r) {
          const double alpha = ca * mode.profile[r], beta = sa * mode.profile[r];
          double* row = zk + std::size_t(r) * ww;
          for (int j = 0; j < ww; ++j) row[j] += alpha * ct[j] - beta * st[j];
        }
      }
    }
  }

  void build_channels() {
    const int cc = cfg_.channels, kk = cfg_.latents;
    // Smooth dependence on the channel's position ("level") plus an individual part: neighbours
    // are strongly correlated, distant channels less so, and no two channels are identical.
    std::vector<double> smooth(std::size_t(kk) * 3);
    for (int k = 0; k < kk; ++k) {
      Impl::ParameterRng rng(Impl::hash_key(cfg_.seed, kTagMix, k));
      for (int q = 0; q < 3; ++q) smooth[std::size_t(k) * 3 + q] = rng.normal() / (1.0 + q);
    }
    mixing_.resize(std::size_t(cc) * kk);
    std::vector<double> offset(cc), scale(cc);
    for (int c = 0; c < cc; ++c) {
      Impl::ParameterRng rng(Impl::hash_key(cfg_.seed, kTagChannel, c));
      const double s = cc > 1 ? double(c) / (cc - 1) : 0.0;
      for (int k = 0; k < kk; ++k) {
        double a = 0.4 * rng.normal();
        for (int q = 0; q < 3; ++q) a += smooth[std::size_t(k) * 3 + q] * std::cos(kPi * q * s);
        mixing_[std::size_t(c) * kk + k] = a;
      }
      // Raw units differ wildly between variables (K, m^2/s^2, kg/kg, ...), which is why the
      // model sees normalised data.
      offset[c] = rng.uniform(-100.0, 300.0);
      scale[c] = std::exp(rng.uniform(std::log(0.5), std::log(50.0)));
    }

    // Latent mean and covariance over the statistics times, then each channel's by linearity.
    std::vector<double> mu(kk, 0.0), cov(std::size_t(kk) * kk, 0.0), z(latent_size());
    const std::size_t np = pixels();
    const std::size_t nt = std::min<std::size_t>(kStatTimes, cfg_.train_size);
    for (std::size_t s = 0; s < nt; ++s) {
      latents_at(static_cast<std::int64_t>(s * cfg_.train_size / nt), z.data());
      for (int k = 0; k < kk; ++k) {
        const double* zk = z.data() + k * np;
        for (std::size_t p = 0; p < np; ++p) mu[k] += zk[p];
        for (int l = 0; l <= k; ++l) {
          const double* zl = z.data() + l * np;
          double sum = 0.0;
          for (std::size_t p = 0; p < np; ++p) sum += zk[p] * zl[p];
          cov[std::size_t(k) * kk + l] += sum;
        }
      }
    }
    const double count = double(nt) * double(np);
    for (int k = 0; k < kk; ++k) mu[k] /= count;
    for (int k = 0; k < kk; ++k)
      for (int l = 0; l <= k; ++l) {
        const double v = cov[std::size_t(k) * kk + l] / count - mu[k] * mu[l];
        cov[std::size_t(k) * kk + l] = cov[std::size_t(l) * kk + k] = v;
      }

    mean_.resize(cc);
    std_.resize(cc);
    coef_.resize(std::size_t(cc) * kk);
    bias_.resize(cc);
    noise_amp_.resize(cc);
    const double noise_factor = std::sqrt(1.0 + cfg_.noise * cfg_.noise);
    for (int c = 0; c < cc; ++c) {
      const double* a = mixing_.data() + std::size_t(c) * kk;
      double m = 0.0, v = 0.0;
      for (int k = 0; k < kk; ++k) {
        m += a[k] * mu[k];
        for (int l = 0; l < kk; ++l) v += a[k] * cov[std::size_t(k) * kk + l] * a[l];
      }
      // A channel with (numerically) no variance would divide noise by ~0; it needs a
      // degenerate mixing row, which the random part above makes practically impossible.
      const double sig = std::sqrt(std::max(v, 1e-12));
      mean_[c] = offset[c] + scale[c] * m;
      std_[c] = scale[c] * sig * noise_factor;
      // Fold normalisation (or the raw units) into one affine map per channel, so the pixel loop
      // is the same either way: out = bias + sum_k coef_k z_k + noise_amp eps.
      const double gain = cfg_.normalize ? 1.0 / (sig * noise_factor) : scale[c];
      for (int k = 0; k < kk; ++k) coef_[std::size_t(c) * kk + k] = gain * a[k];
      bias_[c] = cfg_.normalize ? -gain * m : offset[c];
      noise_amp_[c] = gain * cfg_.noise * sig;
    }
  }

  // out[nc, H, W] for channels [c0, c0 + nc) at time t from latents z. Pixels go in chunks
  // through a local accumulator: it stays in L1, and being local it cannot alias z or out, which
  // lets the compiler vectorise the multiply-adds even at -O2.
  void mix(std::int64_t time, const double* z, int c0, int nc, T* out) const {
    constexpr std::size_t chunk = 512;
    const std::size_t np = pixels();
    const int kk = cfg_.latents;
    double acc[chunk];
    for (int ci = 0; ci < nc; ++ci) {
      const int c = c0 + ci;
      const double* a = coef_.data() + std::size_t(c) * kk;
      const double amp = noise_amp_[c];
      const std::uint64_t key =
          Impl::hash_key(cfg_.seed, kTagNoise, static_cast<std::uint64_t>(time), c);
      T* o = out + std::size_t(ci) * np;
      for (std::size_t p0 = 0; p0 < np; p0 += chunk) {
        const std::size_t n = std::min(chunk, np - p0);
        for (std::size_t i = 0; i < n; ++i) acc[i] = bias_[c];
        for (int k = 0; k < kk; ++k) {
          const double ak = a[k];
          const double* zk = z + std::size_t(k) * np + p0;
          for (std::size_t i = 0; i < n; ++i) acc[i] += ak * zk[i];
        }
        if (amp != 0.0)
          for (std::size_t i = 0; i < n; ++i)
            acc[i] += amp * Impl::fast_normal(Impl::splitmix64(key + p0 + i));
        for (std::size_t i = 0; i < n; ++i) o[p0 + i] = static_cast<T>(acc[i]);
      }
    }
  }

  void fill_host(Split split, const std::vector<std::size_t>& indices, T* x, T* y, T* lead, int c0,
                 int nc) const {
    const std::size_t block = std::size_t(nc) * pixels();
    std::vector<double> z(latent_size());
    for (std::size_t b = 0; b < indices.size(); ++b) {
      const std::int64_t t = time_index(split, indices[b]);
      const int delta = lead_steps(split, indices[b]);
      latents_at(t, z.data());
      mix(t, z.data(), c0, nc, x + b * block);
      latents_at(t + delta, z.data());
      mix(t + delta, z.data(), c0, nc, y + b * block);
      lead[b] = static_cast<T>(delta * cfg_.hours_per_step / 100.0);
    }
  }

  WeatherConfig cfg_;
  std::vector<double> lat_deg_, lat_rad_, lon_deg_, speed_;
  std::vector<double> cos_tab_, sin_tab_;  // [max_wavenumber, W]
  std::vector<double> clim_;               // [K, H]
  std::vector<Mode> modes_;                // [K, modes]
  std::vector<double> mixing_;             // A [C, K]
  std::vector<double> mean_, std_;         // published raw-unit statistics [C]
  std::vector<double> coef_, bias_, noise_amp_;  // the affine map actually applied
};

}  // namespace dchag

#endif
