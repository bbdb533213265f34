#ifndef DCHAG_IO_ENVI_HPP
#define DCHAG_IO_ENVI_HPP

// ENVI raster files, the format hyperspectral sensors and their processing chains deliver
// (AVIRIS, HyMap, PRISMA and EnMAP exports): a text header `name.hdr` next to a headerless raw
// file of `lines x samples x bands` values.
//
// Header: the first line is "ENVI", then `key = value` lines; a value that opens with '{' runs
// to the matching '}' over any number of lines (wavelength lists). Keys are case-insensitive.
// Read here: samples, lines, bands (required), data type (required: 1 uint8, 2 int16, 3 int32,
// 4 float32, 5 float64, 12 uint16, 13 uint32, 14 int64, 15 uint64; the complex types 6 and 9
// are refused), interleave (required: bsq, bil or bip), byte order (0 little-endian, 1
// big-endian; 0 when absent), header offset (bytes before the data; 0 when absent),
// wavelength, wavelength units and band names (optional). Other keys are kept as text.
//
// Layouts, for band b, line (row) r, sample (column) c:
//   bsq  band-sequential      offset = ((b * lines + r) * samples + c)
//   bil  band-interleaved-by-line  ((r * bands + b) * samples + c)
//   bip  band-interleaved-by-pixel ((r * samples + c) * bands + b)
// EnviFile::read reads a window of rows and columns of a range of bands and touches only the
// bytes of those bands: a tensor-parallel rank that owns bands [b0, b1) reads nothing else,
// whatever the interleave.

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>

namespace dchag {

namespace Impl {

inline std::size_t envi_value_bytes(int data_type) {
  switch (data_type) {
    case 1: return 1;
    case 2: case 12: return 2;
    case 3: case 4: case 13: return 4;
    case 5: case 14: case 15: return 8;
    default: return 0;
  }
}

inline std::string envi_trim(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

inline std::string envi_lower(std::string s) {
  for (char& ch : s) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// "{a, b, c}" -> {"a", "b", "c"}
inline std::vector<std::string> envi_list(const std::string& value) {
  std::string v = envi_trim(value);
  if (!v.empty() && v.front() == '{') v = v.substr(1);
  if (!v.empty() && v.back() == '}') v.pop_back();
  std::vector<std::string> out;
  std::stringstream s(v);
  for (std::string item; std::getline(s, item, ',');) out.push_back(envi_trim(item));
  if (out.size() == 1 && out[0].empty()) out.clear();
  return out;
}

inline long envi_integer(const std::string& path, const std::string& key, const std::string& value,
                         long lo, long hi) {
  const std::string v = envi_trim(value);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  require(!v.empty() && end && *end == '\0' && errno == 0, "ENVI header ", path, ": '", key,
          " = ", v, "' is not an integer");
  require(x >= lo && x <= hi, "ENVI header ", path, ": ", key, " = ", x, " is outside [", lo, ", ",
          hi, "]");
  return long(x);
}

}  // namespace Impl

enum class EnviInterleave { Bsq, Bil, Bip };

struct EnviHeader {
  long samples = 0, lines = 0, bands = 0;  // columns, rows, bands
  int data_type = 0;
  EnviInterleave interleave = EnviInterleave::Bsq;
  int byte_order = 0;
  long header_offset = 0;
  std::vector<double> wavelengths;  // one per band, or empty
  std::string wavelength_units;
  std::vector<std::string> band_names;  // one per band, or empty
  std::map<std::string, std::string> fields;  // every key as written (lower case), raw text

  std::size_t value_bytes() const { return Impl::envi_value_bytes(data_type); }
  // Bytes of the data the header describes, after the header offset.
  std::uintmax_t data_bytes() const {
    return std::uintmax_t(samples) * std::uintmax_t(lines) * std::uintmax_t(bands) *
           value_bytes();
  }
  // Byte offset of value (band, row, column) in the data file.
  std::uintmax_t offset(long band, long row, long column) const {
    std::uintmax_t index = 0;
    switch (interleave) {
      case EnviInterleave::Bsq: index = (std::uintmax_t(band) * lines + row) * samples + column; break;
      case EnviInterleave::Bil: index = (std::uintmax_t(row) * bands + band) * samples + column; break;
      case EnviInterleave::Bip: index = (std::uintmax_t(row) * samples + column) * bands + band; break;
    }
    return std::uintmax_t(header_offset) + index * value_bytes();
  }
};

// Parses the text of a header; `path` names it in errors.
inline EnviHeader parse_envi_header(const std::string& text, const std::string& path) {
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  Impl::require(Impl::envi_trim(line) == "ENVI", "ENVI header ", path,
                ": the first line must be 'ENVI', got '", Impl::envi_trim(line).substr(0, 40),
                "' (not an ENVI header?)");
  EnviHeader h;
  for (int number = 2; std::getline(in, line); ++number) {
    if (Impl::envi_trim(line).empty() || Impl::envi_trim(line)[0] == ';') continue;
    const std::size_t eq = line.find('=');
    Impl::require(eq != std::string::npos, "ENVI header ", path, ": line ", number, " '",
                  Impl::envi_trim(line).substr(0, 60), "' is not 'key = value'");
    const std::string key = Impl::envi_lower(Impl::envi_trim(line.substr(0, eq)));
    std::string value = Impl::envi_trim(line.substr(eq + 1));
    if (!value.empty() && value.front() == '{') {
      const int first = number;
      while (value.find('}') == std::string::npos) {
        Impl::require(bool(std::getline(in, line)), "ENVI header ", path, ": the '{' of '", key,
                      "' opened on line ", first, " is never closed");
        ++number;
        value += " " + Impl::envi_trim(line);
      }
    }
    h.fields[key] = value;
  }
  auto need = [&](const char* key) -> const std::string& {
    auto it = h.fields.find(key);
    Impl::require(it != h.fields.end(), "ENVI header ", path, ": no '", key, "' entry");
    return it->second;
  };
  constexpr long max_side = 1L << 24;
  h.samples = Impl::envi_integer(path, "samples", need("samples"), 1, max_side);
  h.lines = Impl::envi_integer(path, "lines", need("lines"), 1, max_side);
  h.bands = Impl::envi_integer(path, "bands", need("bands"), 1, 1L << 16);
  h.data_type = int(Impl::envi_integer(path, "data type", need("data type"), 0, 1000));
  Impl::require(h.data_type != 6 && h.data_type != 9, "ENVI header ", path, ": data type ",
                h.data_type, " is complex, which a real-valued model cannot take");
  Impl::require(h.value_bytes() > 0, "ENVI header ", path, ": unknown data type ", h.data_type,
                " (expected 1, 2, 3, 4, 5, 12, 13, 14 or 15)");
  const std::string il = Impl::envi_lower(Impl::envi_trim(need("interleave")));
  if (il == "bsq") h.interleave = EnviInterleave::Bsq;
  else if (il == "bil") h.interleave = EnviInterleave::Bil;
  else if (il == "bip") h.interleave = EnviInterleave::Bip;
  else
    throw Error(Impl::concat("ENVI header ", path, ": interleave '", il,
                             "' is not bsq, bil or bip"));
  if (h.fields.count("byte order"))
    h.byte_order = int(Impl::envi_integer(path, "byte order", h.fields["byte order"], 0, 1));
  if (h.fields.count("header offset"))
    h.header_offset =
        Impl::envi_integer(path, "header offset", h.fields["header offset"], 0, 1L << 40);
  if (h.fields.count("wavelength")) {
    for (const std::string& w : Impl::envi_list(h.fields["wavelength"])) {
      char* end = nullptr;
      const double x = std::strtod(w.c_str(), &end);
      Impl::require(!w.empty() && end && *end == '\0' && std::isfinite(x), "ENVI header ", path,
                    ": wavelength entry '", w, "' is not a number");
      h.wavelengths.push_back(x);
    }
    Impl::require(long(h.wavelengths.size()) == h.bands, "ENVI header ", path, ": ",
                  h.wavelengths.size(), " wavelengths for ", h.bands, " bands");
  }
  if (h.fields.count("wavelength units")) h.wavelength_units = Impl::envi_trim(h.fields["wavelength units"]);
  if (h.fields.count("band names")) {
    h.band_names = Impl::envi_list(h.fields["band names"]);
    Impl::require(long(h.band_names.size()) == h.bands, "ENVI header ", path, ": ",
                  h.band_names.size(), " band names for ", h.bands, " bands");
  }
  return h;
}

// The text of `header` as an ENVI header file (writers of test cubes and of exported results).
inline std::string envi_header_text(const EnviHeader& h) {
  std::ostringstream s;
  s << "ENVI\nsamples = " << h.samples << "\nlines = " << h.lines << "\nbands = " << h.bands
    << "\nheader offset = " << h.header_offset << "\ndata type = " << h.data_type
    << "\ninterleave = "
    << (h.interleave == EnviInterleave::Bsq ? "bsq" : h.interleave == EnviInterleave::Bil ? "bil" : "bip")
    << "\nbyte order = " << h.byte_order << '\n';
  if (!h.wavelengths.empty()) {
    s.precision(17);
    s << "wavelength = {";
    for (std::size_t i = 0; i < h.wavelengths.size(); ++i) s << (i ? ", " : "") << h.wavelengths[i];
    s << "}\n";
    if (!h.wavelength_units.empty()) s << "wavelength units = " << h.wavelength_units << '\n';
  }
  if (!h.band_names.empty()) {
    s << "band names = {";
    for (std::size_t i = 0; i < h.band_names.size(); ++i) s << (i ? ", " : "") << h.band_names[i];
    s << "}\n";
  }
  return s.str();
}

// One ENVI raster: its header and an open data file.
class EnviFile {
 public:
  // `path` names the header (`x.hdr`) or the data file (`x.img`, `x.dat`, `x.raw`, `x`); the
  // other is found next to it.
  explicit EnviFile(const std::string& path) {
    namespace fs = std::filesystem;
    const fs::path p(path);
    if (Impl::envi_lower(p.extension().string()) == ".hdr") {
      header_path_ = path;
      for (const char* ext : {".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ""}) {
        fs::path candidate = p;
        candidate.replace_extension(ext);
        std::error_code ec;
        if (fs::is_regular_file(candidate, ec)) {
          data_path_ = candidate.string();
          break;
        }
      }
      Impl::require(!data_path_.empty(), "ENVI file ", path, ": no data file next to the header (",
                    "looked for the same name with .img, .dat, .raw, .bsq, .bil, .bip or none)");
    } else {
      data_path_ = path;
      fs::path with = fs::path(path + ".hdr"), replaced = p;
      replaced.replace_extension(".hdr");
      std::error_code ec;
      header_path_ = fs::is_regular_file(with, ec) ? with.string() : replaced.string();
    }
    std::ifstream hin(header_path_, std::ios::binary);
    Impl::require(bool(hin), "ENVI file ", path, ": cannot open the header ", header_path_, " (",
                  std::strerror(errno), ")");
    std::ostringstream text;
    text << hin.rdbuf();
    header_ = parse_envi_header(text.str(), header_path_);
    std::error_code ec;
    const std::uintmax_t size = std::filesystem::file_size(data_path_, ec);
    Impl::require(!ec, "ENVI file ", data_path_, ": cannot read its size (", ec.message(), ")");
    const std::uintmax_t need = std::uintmax_t(header_.header_offset) + header_.data_bytes();
    Impl::require(size >= need, "ENVI file ", data_path_, ": ", size, " bytes, but its header ",
                  header_path_, " describes ", header_.lines, " lines x ", header_.samples,
                  " samples x ", header_.bands, " bands of ", header_.value_bytes(),
                  " bytes after an offset of ", header_.header_offset, " = ", need,
                  " bytes (truncated?)");
    data_.open(data_path_, std::ios::binary);
    Impl::require(bool(data_), "ENVI file ", data_path_, ": cannot open (", std::strerror(errno),
                  ")");
  }

  const EnviHeader& header() const { return header_; }
  const std::string& header_path() const { return header_path_; }
  const std::string& data_path() const { return data_path_; }

  // out[b - band_begin][r - row][c - column] for bands [band_begin, band_end), rows
  // [row, row + rows), columns [column, column + columns), converted to double. Reads only
  // those bands' bytes. Throws on a window outside the raster or a failed read.
  void read(long band_begin, long band_end, long row, long rows, long column, long columns,
            double* out) {
    const EnviHeader& h = header_;
    Impl::require(0 <= band_begin && band_begin < band_end && band_end <= h.bands, "ENVI file ",
                  data_path_, ": bands [", band_begin, ", ", band_end, ") are not within its ",
                  h.bands, " bands");
    Impl::require(0 <= row && rows > 0 && row + rows <= h.lines && 0 <= column && columns > 0 &&
                      column + columns <= h.samples,
                  "ENVI file ", data_path_, ": window rows [", row, ", ", row + rows,
                  ") x columns [", column, ", ", column + columns, ") is not within its ",
                  h.lines, " x ", h.samples);
    const long nb = band_end - band_begin;
    const std::size_t vb = h.value_bytes();
    // One contiguous run of the file per read: a row segment of one band (bsq, bil) or the
    // bands of one pixel (bip).
    const bool pixel_runs = h.interleave == EnviInterleave::Bip;
    const std::size_t run = std::size_t(pixel_runs ? nb : columns);
    buffer_.resize(run * vb);
    auto store = [&](long b, long r, long c, double v) {
      out[(std::size_t(b) * rows + r) * columns + c] = v;
    };
    for (long r = 0; r < rows; ++r) {
      if (pixel_runs) {
        for (long c = 0; c < columns; ++c) {
          fetch(h.offset(band_begin, row + r, column + c));
          for (long b = 0; b < nb; ++b) store(b, r, c, value(b));
        }
      } else {
        for (long b = 0; b < nb; ++b) {
          fetch(h.offset(band_begin + b, row + r, column));
          for (long c = 0; c < columns; ++c) store(b, r, c, value(c));
        }
      }
    }
  }

 private:
  void fetch(std::uintmax_t offset) {
    data_.seekg(std::streamoff(offset));
    data_.read(buffer_.data(), std::streamsize(buffer_.size()));
    Impl::require(bool(data_) && std::size_t(data_.gcount()) == buffer_.size(), "ENVI file ",
                  data_path_, ": reading ", buffer_.size(), " bytes at offset ", offset,
                  " failed (the file shrank while open?)");
  }

  // Value i of the buffer in the file's type and byte order.
  double value(long i) const {
    const std::size_t vb = header_.value_bytes();
    unsigned char bytes[8];
    std::memcpy(bytes, buffer_.data() + std::size_t(i) * vb, vb);
    if (header_.byte_order != host_byte_order()) std::reverse(bytes, bytes + vb);
    switch (header_.data_type) {
      case 1: return bytes[0];
      case 2: return as<std::int16_t>(bytes);
      case 3: return as<std::int32_t>(bytes);
      case 4: return as<float>(bytes);
      case 5: return as<double>(bytes);
      case 12: return as<std::uint16_t>(bytes);
      case 13: return as<std::uint32_t>(bytes);
      case 14: return double(as<std::int64_t>(bytes));
      default: return double(as<std::uint64_t>(bytes));
    }
  }

  template <class V>
  static double as(const unsigned char* bytes) {
    V v;
    std::memcpy(&v, bytes, sizeof v);
    return double(v);
  }

  static int host_byte_order() {
    const std::uint16_t one = 1;
    unsigned char first;
    std::memcpy(&first, &one, 1);
    return first == 1 ? 0 : 1;
  }

  EnviHeader header_;
  std::string header_path_, data_path_;
  std::ifstream data_;
  std::vector<char> buffer_;
};

}  // namespace dchag

#endif
