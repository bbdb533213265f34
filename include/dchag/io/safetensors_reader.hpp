#ifndef DCHAG_IO_SAFETENSORS_READER_HPP
#define DCHAG_IO_SAFETENSORS_READER_HPP

// Reading a safetensors file (io/safetensors.hpp describes the format and what reading checks):
// where its bytes come from (a file kept open, or memory), the validation of its header against
// the data, and each tensor read on demand, verified against its checksum when the file records
// one, and converted to the scalar asked for.

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/hash.hpp>
#include <dchag/core/low_precision.hpp>
#include <dchag/io/safetensors_format.hpp>
#include <dchag/io/safetensors_header.hpp>

namespace dchag {

namespace Impl {

// Little-endian element i of `raw` (dtype one of the readable four) as T (float, double, bf16
// or fp16), rounded to nearest even where T is narrower.
template <class T>
T decode_element(const std::string& dtype, const unsigned char* raw, std::size_t i) {
  if (dtype == "F32") {
    const std::uint32_t bits = load_le<std::uint32_t>(raw + 4 * i);
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return convert_scalar<T>(f);
  }
  if (dtype == "F64") {
    const std::uint64_t bits = load_le<std::uint64_t>(raw + 8 * i);
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return convert_scalar<T>(d);
  }
  const std::uint16_t bits = load_le<std::uint16_t>(raw + 2 * i);
  if (dtype == "F16") return convert_scalar<T>(fp16::from_bits(bits));
  return convert_scalar<T>(bf16::from_bits(bits));
}
// Where the bytes of a safetensors file come from: the file itself (kept open) or memory.
class SafetensorsSource {
 public:
  static std::shared_ptr<SafetensorsSource> open_file(const std::string& path) {
    auto s = std::make_shared<SafetensorsSource>();
    s->label_ = "safetensors file '" + path + "'";
    // Opening a FIFO would block until someone writes to it, and a directory or a device has
    // no meaningful size: only regular files (or links to them) are read.
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (!ec && std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
      throw Error(concat(s->label_, ": is not a regular file (",
                         std::filesystem::is_directory(status) ? "a directory" : "a FIFO, socket or device",
                         ")"));
    s->file_ = std::make_shared<std::ifstream>(path, std::ios::binary);
    if (!*s->file_)
      throw Error(concat(s->label_, ": cannot open it for reading (", std::strerror(errno), ")"));
    s->file_->seekg(0, std::ios::end);
    const std::streamoff size = s->file_->tellg();
    if (size < 0) throw Error(concat(s->label_, ": cannot determine its size"));
    s->size_ = static_cast<std::uint64_t>(size);
    return s;
  }

  static std::shared_ptr<SafetensorsSource> from_bytes(std::string bytes, std::string label) {
    auto s = std::make_shared<SafetensorsSource>();
    s->label_ = std::move(label);
    s->memory_ = std::make_shared<const std::string>(std::move(bytes));
    s->size_ = s->memory_->size();
    return s;
  }

  // Bytes [offset, offset + n) into out; the caller has checked the range against size().
  void read(std::uint64_t offset, std::size_t n, unsigned char* out, const std::string& what) const {
    if (n == 0) return;
    if (memory_) {
      std::memcpy(out, memory_->data() + offset, n);
      return;
    }
    file_->clear();
    file_->seekg(static_cast<std::streamoff>(offset));
    file_->read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(n));
    if (!*file_ || file_->gcount() != static_cast<std::streamsize>(n))
      throw Error(concat(label_, ": reading ", what, " failed at byte ", offset,
                         " (the file was shortened or cannot be read)"));
  }

  std::uint64_t size() const { return size_; }
  const std::string& label() const { return label_; }

 private:
  std::string label_;
  std::uint64_t size_ = 0;
  std::shared_ptr<std::ifstream> file_;
  std::shared_ptr<const std::string> memory_;
};

}  // namespace Impl

// A safetensors file whose header has been read and validated. Tensors are read on demand
// (the file stays open; copies share it and are not safe to use from several threads at once).
class SafetensorsFile {
 public:
  // Opens and validates `path`; throws dchag::Error naming the file and what is wrong.
  static SafetensorsFile read(const std::string& path) {
    return SafetensorsFile(Impl::SafetensorsSource::open_file(path));
  }

  // The same from bytes in memory; `label` names them in error messages.
  static SafetensorsFile from_bytes(std::string bytes, std::string label = "safetensors buffer") {
    return SafetensorsFile(Impl::SafetensorsSource::from_bytes(std::move(bytes), std::move(label)));
  }

  // Tensor names in the order of their data in the file.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& t : tensors_) out.push_back(t.name);
    return out;
  }
  const std::vector<SafetensorsInfo>& tensors() const { return tensors_; }
  std::size_t size() const { return tensors_.size(); }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }

  const SafetensorsInfo& info(const std::string& name) const {
    const auto it = index_.find(name);
    Impl::require(it != index_.end(), label(), ": no tensor '", name, "' (the file holds ",
                  tensors_.size(), " tensors)");
    return tensors_[it->second];
  }

  // The string-to-string "__metadata__" of the header (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Reads tensor `name` into out[0, count), converted to T; count must be its element count.
  template <class T>
  void read(const std::string& name, T* out, std::size_t count) const {
    static_assert(Impl::safetensors_scalar<T>(),
                  "dchag::SafetensorsFile::read converts to float, double, bf16 or fp16");
    const SafetensorsInfo& t = info(name);
    Impl::require(Impl::safetensors_readable(t.dtype), label(), ": tensor '", name,
                  "' has dtype ", t.dtype, ", which cannot be read as floating point (F32, F64, "
                  "F16 and BF16 can)");
    Impl::require(count == t.elements(), label(), ": tensor '", name, "' has shape ",
                  Impl::shape_text(t.shape), " = ", t.elements(), " values, but room for ",
                  count, " was given");
    const std::size_t width = Impl::safetensors_dtype_size(t.dtype);
    const std::uint64_t start = data_offset_ + t.begin;
    const bool direct = Impl::host_is_little_endian() &&
                        t.dtype == Impl::safetensors_dtype_of<T>();
    Impl::Fnv1a hash;
    if (direct) {
      source_->read(start, count * width, reinterpret_cast<unsigned char*>(out),
                    "tensor '" + name + "'");
      if (t.has_checksum) hash.update(out, count * width);
    } else {
      // Converted in chunks: a large tensor never needs a second full-size buffer.
      constexpr std::size_t chunk = std::size_t(1) << 16;
      std::vector<unsigned char> raw(std::min(count, chunk) * width);
      for (std::size_t done = 0; done < count;) {
        const std::size_t n = std::min(chunk, count - done);
        source_->read(start + done * width, n * width, raw.data(), "tensor '" + name + "'");
        if (t.has_checksum) hash.update(raw.data(), n * width);
        for (std::size_t i = 0; i < n; ++i)
          out[done + i] = Impl::decode_element<T>(t.dtype, raw.data(), i);
        done += n;
      }
    }
    Impl::require(!t.has_checksum || hash.value() == t.checksum, label(), ": tensor '", name,
                  "' fails its checksum (its bytes hash to ", Impl::hex16(hash.value()),
                  ", the header records ", Impl::hex16(t.checksum),
                  "): the file is corrupt or was changed after it was written");
  }

  template <class T>
  std::vector<T> read(const std::string& name) const {
    std::vector<T> out(info(name).elements());
    read(name, out.data(), out.size());
    return out;
  }

  // "safetensors file '<path>'" (or the label given to from_bytes).
  const std::string& label() const { return source_->label(); }

 private:
  explicit SafetensorsFile(std::shared_ptr<Impl::SafetensorsSource> source)
      : source_(std::move(source)) {
    const std::uint64_t size = source_->size();
    Impl::require(size >= 8, label(), ": the file is ", size,
                  " bytes, shorter than the 8-byte header length that starts every safetensors "
                  "file");
    unsigned char head[8];
    source_->read(0, 8, head, "the header length");
    const std::uint64_t n = Impl::load_le<std::uint64_t>(head);
    Impl::require(n <= Impl::safetensors_max_header, label(), ": header length ", n,
                  " bytes is absurdly large (limit ", Impl::safetensors_max_header,
                  "); not a safetensors file, or a corrupt one");
    Impl::require(n <= size - 8, label(), ": header length ", n,
                  " bytes runs past the end of the file (", size, " bytes)");
    std::string header(static_cast<std::size_t>(n), '\0');
    source_->read(8, header.size(), reinterpret_cast<unsigned char*>(&header[0]), "the header");
    data_offset_ = 8 + n;
    parse_header(header, size - data_offset_);
  }

  void parse_header(const std::string& header, std::uint64_t data_size) {
    Impl::SafetensorsHeaderParser(header.data(), header.data() + header.size(), label())
        .parse(tensors_, metadata_);
    for (auto& t : tensors_) check_entry(t, data_size);
    read_checksums();
    check_layout(data_size);
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  }

  // The dtype is known and the byte range holds exactly the shape, inside the data.
  void check_entry(SafetensorsInfo& t, std::uint64_t data_size) const {
    const std::string& name = t.name;
    const std::size_t width = Impl::safetensors_dtype_size(t.dtype);
    Impl::require(width > 0, label(), ": tensor '", name, "' has unknown dtype '", t.dtype, "'");
    // Element and byte counts in 64 bits with overflow checks: a corrupt shape must be refused,
    // not wrapped around into a small, plausible size.
    std::uint64_t elements = 1;
    bool overflow = false;
    for (const auto e : t.shape) {
      if (e != 0 && elements > std::numeric_limits<std::uint64_t>::max() / e) overflow = true;
      else elements *= e;
    }
    Impl::require(!overflow && elements <= std::numeric_limits<std::uint64_t>::max() / width &&
                      elements <= std::numeric_limits<std::size_t>::max(),
                  label(), ": tensor '", name, "': shape ", Impl::shape_text(t.shape),
                  " has more elements than can be addressed");
    Impl::require(t.begin <= t.end, label(), ": tensor '", name, "': data_offsets [", t.begin,
                  ", ", t.end, "] end before they begin");
    const std::uint64_t bytes = elements * width;
    Impl::require(t.end - t.begin == bytes, label(), ": tensor '", name, "': shape ",
                  Impl::shape_text(t.shape), " of ", t.dtype, " needs ", bytes,
                  " bytes, but data_offsets [", t.begin, ", ", t.end, "] hold ", t.end - t.begin);
    Impl::require(t.end <= data_size, label(), ": tensor '", name, "': data_offsets [", t.begin,
                  ", ", t.end, "] run past the end of the data (", data_size, " bytes)");
  }

  // The checksums SafetensorsWriter records (one per tensor, in header order); files without
  // them (other writers) are read unchecked.
  void read_checksums() {
    const auto it = metadata_.find(Impl::safetensors_checksum_key);
    if (it == metadata_.end()) return;
    const std::string& text = it->second;
    const std::size_t n = tensors_.size();
    const bool sized = n == 0 ? text.empty() : text.size() == 17 * n - 1;
    Impl::require(sized, label(), ": metadata '", Impl::safetensors_checksum_key, "' holds ",
                  text.size(), " characters, not the ", n, " comma-separated 16-digit checksums "
                  "of its ", n, " tensors");
    for (std::size_t i = 0; i < n; ++i) {
      std::uint64_t h = 0;
      for (std::size_t k = 0; k < 16; ++k) {
        const char c = text[17 * i + k];
        const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        Impl::require(digit >= 0, label(), ": metadata '", Impl::safetensors_checksum_key,
                      "' is not a list of hexadecimal checksums (character ", 17 * i + k, ")");
        h = (h << 4) | static_cast<std::uint64_t>(digit);
      }
      Impl::require(i + 1 == n || text[17 * i + 16] == ',', label(), ": metadata '",
                    Impl::safetensors_checksum_key, "' is not comma-separated");
      tensors_[i].checksum = h;
      tensors_[i].has_checksum = true;
    }
    // The writer's bookkeeping, not the user's metadata: copying metadata() into a new file
    // must not carry checksums of other bytes.
    metadata_.erase(it);
  }

  // The byte ranges must tile [0, data_size) exactly, as the format requires.
  void check_layout(std::uint64_t data_size) {
    std::stable_sort(tensors_.begin(), tensors_.end(),
                     [](const SafetensorsInfo& a, const SafetensorsInfo& b) {
                       return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
                     });
    std::uint64_t covered = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      Impl::require(t.begin >= covered, label(), ": tensor '", t.name, "': data_offsets [",
                    t.begin, ", ", t.end, "] overlap those of tensor '",
                    i > 0 ? tensors_[i - 1].name : std::string(), "'");
      Impl::require(t.begin == covered, label(), ": tensor '", t.name, "': data_offsets [",
                    t.begin, ", ", t.end, "] leave a gap: bytes [", covered, ", ", t.begin,
                    ") of the data belong to no tensor");
      covered = t.end;
    }
    Impl::require(covered == data_size, label(), ": the data section has ", data_size,
                  " bytes but the tensors cover only ", covered,
                  " (trailing bytes after the last tensor)");
  }

  std::shared_ptr<Impl::SafetensorsSource> source_;
  std::uint64_t data_offset_ = 0;
  std::vector<SafetensorsInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dchag

#endif
