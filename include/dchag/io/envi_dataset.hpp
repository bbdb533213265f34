#ifndef DCHAG_IO_ENVI_DATASET_HPP
#define DCHAG_IO_ENVI_DATASET_HPP

// Training samples cut from hyperspectral scenes in ENVI format (io/envi.hpp), with the interface
// of the synthetic HyperspectralGenerator (io/hyperspectral.hpp), so that the pre-training
// example takes either.
//
// Samples are the non-overlapping height x width tiles of every scene, in row-major order (the
// pixels right of and below the last whole tile are not used). Per scene, the last
// floor(test_fraction x tiles) tiles (the bottom rows of the scene) form the Test split and the
// others the Train split: a held-out tile is never a neighbour-shifted copy of a training tile
// except along one seam.
//
// Normalisation: per band, the mean and standard deviation of every Train pixel, from one pass
// over the Train tiles at construction (double accumulation). A band that is constant over the
// Train tiles (a dead detector row, a band zeroed in absorption windows) is only centred: its
// standard deviation is reported as 0 and divides as 1.
//
// A process reads only bands [band_begin, band_end) of its configuration, from disk as well
// (EnviFile::read touches only those bytes): a tensor-parallel rank that owns a range of bands
// opens the scenes with that range. A value that is not finite (NaN, Inf), in the statistics
// pass or in a sample, is an error naming the file, band and pixel.

#include <Kokkos_Core.hpp>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/view.hpp>
#include <dchag/io/envi.hpp>
#include <dchag/io/host_output.hpp>
#include <dchag/io/split.hpp>

namespace dchag {

struct EnviDatasetConfig {
  std::vector<std::string> files;  // scenes: headers or data files, all with the same bands
  int height = 32, width = 32;     // tile size: the model's image
  double test_fraction = 0.2;      // of each scene's tiles, from its end
  int band_begin = 0, band_end = -1;  // bands this process reads; -1: to the last band
  bool normalize = true;
};

template <class T>
class EnviDataset {
  static_assert(std::is_floating_point<T>::value, "EnviDataset<T>: T must be float or double");

 public:
  explicit EnviDataset(const EnviDatasetConfig& config) : cfg_(config) {
    Impl::require(!cfg_.files.empty(), "EnviDataset: no files given");
    Impl::require(cfg_.height > 0 && cfg_.width > 0, "EnviDataset: tile size ", cfg_.height, "x",
                  cfg_.width, " must be positive");
    Impl::require(cfg_.test_fraction >= 0 && cfg_.test_fraction < 1,
                  "EnviDataset: test_fraction is a fraction in [0, 1), got ", cfg_.test_fraction);
    for (const std::string& f : cfg_.files) files_.emplace_back(f);
    const EnviHeader& first = files_.front().header();
    bands_ = int(first.bands);
    for (const EnviFile& f : files_) {
      const EnviHeader& h = f.header();
      Impl::require(h.bands == first.bands, "EnviDataset: ", f.header_path(), " has ", h.bands,
                    " bands, but ", files_.front().header_path(), " has ", first.bands,
                    ": every scene must have the same bands");
      Impl::require(h.wavelengths == first.wavelengths, "EnviDataset: the wavelengths of ",
                    f.header_path(), " differ from those of ", files_.front().header_path());
    }
    band_begin_ = cfg_.band_begin;
    band_end_ = cfg_.band_end < 0 ? bands_ : cfg_.band_end;
    Impl::require(0 <= band_begin_ && band_begin_ < band_end_ && band_end_ <= bands_,
                  "EnviDataset: bands [", cfg_.band_begin, ", ", cfg_.band_end,
                  ") are not a range within the scenes' ", bands_, " bands");
    build_tiles();
    build_normalisation();
  }

  const EnviDatasetConfig& config() const { return cfg_; }
  int bands() const { return bands_; }
  int height() const { return cfg_.height; }
  int width() const { return cfg_.width; }
  int band_begin() const { return band_begin_; }
  int band_end() const { return band_end_; }
  std::size_t size(Split split) const { return tiles(split).size(); }

  // Band centres as the first header gives them (empty when it has none), and their unit.
  const std::vector<double>& wavelengths() const { return files_.front().header().wavelengths; }
  const std::string& wavelength_units() const { return files_.front().header().wavelength_units; }
  // Per band of [band_begin, band_end), indexed from band_begin, in the files' units.
  const std::vector<double>& band_mean() const { return mean_; }
  const std::vector<double>& band_std() const { return std_; }

  // Which scene and pixel a sample starts at.
  struct Tile {
    std::size_t file = 0;
    long row = 0, column = 0;
  };
  const Tile& tile(Split split, std::size_t index) const {
    check_index(split, index);
    return tiles(split)[index];
  }

  // Fills x[B, C', H, W] with the tiles `indices` of `split`, bands [band_begin, band_begin + C')
  // (within the configured range). The view may live in any memory space.
  template <class XView>
  void fill(Split split, const std::vector<std::size_t>& indices, const XView& x,
            int band_begin = 0) const {
    Impl::check_output_view_type<XView, T>();
    static_assert(XView::rank == 4, "EnviDataset::fill: x must be rank 4 [B, C, H, W]");
    const int nc = static_cast<int>(x.extent(1));
    Impl::require(band_begin >= band_begin_ && band_begin + nc <= band_end_ && nc > 0,
                  "EnviDataset::fill: bands [", band_begin, ", ", band_begin + nc,
                  ") are not within the bands [", band_begin_, ", ", band_end_,
                  ") this data set reads");
    Impl::require_extents("EnviDataset::fill", x,
                          {indices.size(), std::size_t(nc), std::size_t(cfg_.height),
                           std::size_t(cfg_.width)});
    for (std::size_t i : indices) check_index(split, i);
    const std::size_t pixels = std::size_t(cfg_.height) * cfg_.width;
    Impl::write_through_host(x, [&](T* xp) {
      std::vector<double> buffer(std::size_t(nc) * pixels);
      for (std::size_t s = 0; s < indices.size(); ++s) {
        const Tile& t = tiles(split)[indices[s]];
        read_tile(t, band_begin, band_begin + nc, buffer.data());
        for (int b = 0; b < nc; ++b) {
          const int k = band_begin + b - band_begin_;
          const double m = cfg_.normalize ? mean_[k] : 0.0;
          const double inv = cfg_.normalize && std_[k] > 0 ? 1.0 / std_[k] : 1.0;
          const double* src = buffer.data() + std::size_t(b) * pixels;
          T* dst = xp + (s * nc + b) * pixels;
          for (std::size_t p = 0; p < pixels; ++p) dst[p] = static_cast<T>((src[p] - m) * inv);
        }
      }
    });
  }

 private:
  const std::vector<Tile>& tiles(Split split) const {
    Impl::require(split != Split::Validation, "EnviDataset: no validation split, expected Train "
                  "or Test");
    return split == Split::Train ? train_ : test_;
  }

  void check_index(Split split, std::size_t index) const {
    Impl::require(index < size(split), "EnviDataset: ", split_name(split), " sample ", index,
                  " does not exist (the split has ", size(split), " tiles)");
  }

  void build_tiles() {
    for (std::size_t f = 0; f < files_.size(); ++f) {
      const EnviHeader& h = files_[f].header();
      const long rows = h.lines / cfg_.height, cols = h.samples / cfg_.width;
      Impl::require(rows > 0 && cols > 0, "EnviDataset: ", files_[f].header_path(), " is ",
                    h.lines, " lines x ", h.samples, " samples, smaller than one ", cfg_.height,
                    "x", cfg_.width, " tile");
      const long n = rows * cols;
      const long n_test = long(std::floor(cfg_.test_fraction * double(n)));
      for (long i = 0; i < n; ++i)
        (i < n - n_test ? train_ : test_)
            .push_back({f, (i / cols) * cfg_.height, (i % cols) * cfg_.width});
    }
    Impl::require(!train_.empty(), "EnviDataset: no Train tiles (", test_.size(),
                  " tiles, test_fraction ", cfg_.test_fraction, ")");
    Impl::require(cfg_.test_fraction == 0 || !test_.empty(), "EnviDataset: ", train_.size(),
                  " tiles of ", cfg_.height, "x", cfg_.width, " are too few for a Test split of ",
                  cfg_.test_fraction, " (floor(fraction x tiles) is 0 in every scene)");
  }

  // Reads bands [b0, b1) of tile t into out[b][row][column] and refuses values that are not
  // finite.
  void read_tile(const Tile& t, int b0, int b1, double* out) const {
    EnviFile& f = files_[t.file];
    f.read(b0, b1, t.row, cfg_.height, t.column, cfg_.width, out);
    const std::size_t pixels = std::size_t(cfg_.height) * cfg_.width;
    for (std::size_t i = 0; i < std::size_t(b1 - b0) * pixels; ++i)
      if (!std::isfinite(out[i])) {
        const std::size_t b = i / pixels, p = i % pixels;
        throw Error(Impl::concat("EnviDataset: ", f.data_path(), " holds ", out[i], " at band ",
                                 b0 + long(b), ", line ", t.row + long(p / cfg_.width),
                                 ", sample ", t.column + long(p % cfg_.width),
                                 ": the data must be finite"));
      }
  }

  void build_normalisation() {
    const int nb = band_end_ - band_begin_;
    const std::size_t pixels = std::size_t(cfg_.height) * cfg_.width;
    // Per band, shifted sums about the first tile's mean: the plain sum of squares loses the
    // variance of bands with a large offset (radiances around 10^4 with noise of a few units).
    std::vector<double> shift(nb, 0.0), sum(nb, 0.0), sum_sq(nb, 0.0);
    std::vector<double> buffer(std::size_t(nb) * pixels);
    for (std::size_t k = 0; k < train_.size(); ++k) {
      read_tile(train_[k], band_begin_, band_end_, buffer.data());
      for (int b = 0; b < nb; ++b) {
        const double* v = buffer.data() + std::size_t(b) * pixels;
        if (k == 0) {
          for (std::size_t p = 0; p < pixels; ++p) shift[b] += v[p] / double(pixels);
        }
        for (std::size_t p = 0; p < pixels; ++p) {
          const double d = v[p] - shift[b];
          sum[b] += d;
          sum_sq[b] += d * d;
        }
      }
    }
    const double n = double(train_.size()) * double(pixels);
    mean_.resize(nb);
    std_.resize(nb);
    for (int b = 0; b < nb; ++b) {
      const double m = sum[b] / n;
      mean_[b] = shift[b] + m;
      std_[b] = std::sqrt(std::max(0.0, sum_sq[b] / n - m * m));
    }
  }

  EnviDatasetConfig cfg_;
  mutable std::vector<EnviFile> files_;  // reading moves their file positions only
  int bands_ = 0, band_begin_ = 0, band_end_ = 0;
  std::vector<Tile> train_, test_;
  std::vector<double> mean_, std_;
};

}  // namespace dchag

#endif
