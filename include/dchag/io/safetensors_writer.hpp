#ifndef DCHAG_IO_SAFETENSORS_WRITER_HPP
#define DCHAG_IO_SAFETENSORS_WRITER_HPP

// Writing a safetensors file (io/safetensors.hpp describes the format): F32, F64, BF16 or F16
// tensors
// streamed after a header declared up front, with a checksum of each, through a temporary file
// in the same directory that is renamed over the target only once complete, so that a crash or
// a full disk never leaves a truncated file under the final name; and the removal of the
// temporaries that killed writers left behind, which their names make recognisable.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
#include <unistd.h>
#endif

#include <dchag/core/error.hpp>
#include <dchag/core/hash.hpp>
#include <dchag/io/safetensors_format.hpp>
#include <dchag/io/safetensors_header.hpp>

namespace dchag {

namespace Impl {

// This host's name as it may appear in a file name (only [A-Za-z0-9-], anything else as '-'),
// "host" when unknown; and this process's id (0 when unknown).
inline std::string host_name() {
  std::string name;
#if defined(__unix__) || defined(__APPLE__)
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) == 0) name = buffer;
#endif
  for (char& c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
      c = '-';
  return name.empty() ? "host" : name;
}

inline long process_id() {
#if defined(__unix__) || defined(__APPLE__)
  return static_cast<long>(::getpid());
#else
  return 0;
#endif
}

// Is process `pid` of this host alive? Unknown counts as alive (nothing is removed then).
inline bool process_alive(long pid) {
#if defined(__unix__) || defined(__APPLE__)
  if (pid <= 0) return true;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;
#else
  (void)pid;
  return true;
#endif
}

inline bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The writer's pid if `file` is a temporary SafetensorsWriter made on this host:
// "<name>.safetensors.tmp.<host>.<pid>.<n>" (or "<name>.safetensors.tmp.<pid>.<n>" of earlier
// versions, which did not record the host); -1 otherwise.
inline long temporary_writer(const std::string& file, const std::string& host) {
  const std::size_t at = file.rfind(".safetensors.tmp.");
  if (at == std::string::npos || at == 0) return -1;
  std::vector<std::string> fields;
  std::string rest = file.substr(at + std::string(".safetensors.tmp.").size());
  for (std::size_t dot; (dot = rest.rfind('.')) != std::string::npos && fields.size() < 2;) {
    fields.push_back(rest.substr(dot + 1));
    rest.resize(dot);
  }
  // fields = {n, pid} with the host left in rest, or {n} with the pid in rest.
  if (fields.size() == 2 && rest == host && all_digits(fields[0]) && all_digits(fields[1]) &&
      fields[1].size() < 10)
    return std::stol(fields[1]);
  if (fields.size() == 1 && all_digits(fields[0]) && all_digits(rest) && rest.size() < 10)
    return std::stol(rest);
  return -1;
}

}  // namespace Impl

// Removes the temporary files that SafetensorsWriters of processes that no longer run (killed
// during a save) left in `directory`, and returns their paths. Only files whose name says they
// were made on this host by a process that is not alive are touched: a save in progress,
// another node's, and every other file are left alone. A missing directory holds none.
inline std::vector<std::string> remove_stale_temporaries(const std::string& directory) {
  std::vector<std::string> removed;
  std::error_code ec;
  std::filesystem::directory_iterator it(directory, ec), end;
  if (ec) return removed;
  const std::string host = Impl::host_name();
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    std::error_code type_error;
    if (!it->is_regular_file(type_error)) continue;
    const std::string name = it->path().filename().string();
    const long pid = Impl::temporary_writer(name, host);
    if (pid < 0 || Impl::process_alive(pid)) continue;
    std::error_code remove_error;
    if (std::filesystem::remove(it->path(), remove_error)) removed.push_back(it->path().string());
  }
  return removed;
}

// What a tensor will be: declared up front, because the header (with every offset) comes first.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32", "F64", "BF16" or "F16"
  std::vector<std::size_t> shape;
};

// Streams a safetensors file: the header at construction, then every tensor's data in the
// order of `entries` through write(), then commit() renames the finished file into place.
// Destroyed without commit() (an exception on the way), it removes its temporary file and the
// target is left as it was.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::string path, std::vector<SafetensorsEntry> entries,
                    const std::map<std::string, std::string>& metadata = {})
      : path_(std::move(path)), entries_(std::move(entries)) {
    const std::string header = make_header(metadata);
    temp_ = temp_name();
    file_ = std::fopen(temp_.c_str(), "wb");
    Impl::require(file_ != nullptr, label(), ": cannot create the temporary file '", temp_,
                  "' (", std::strerror(errno), ")");
    // A constructor that throws runs no destructor: close and remove the temporary here (a full
    // disk would otherwise leave one behind at every attempt).
    try {
      unsigned char length[8];
      Impl::store_le<std::uint64_t>(header.size(), length);
      put(length, 8, "the header length");
      put(header.data(), header.size(), "the header");
    } catch (...) {
      discard();
      throw;
    }
  }

  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  ~SafetensorsWriter() {
    if (!committed_) discard();
  }

  // The next tensor's values (it must be `name`, the next entry): count of them, converted to
  // the entry's dtype (rounded to nearest even where it is narrower than T).
  template <class T>
  void write(const std::string& name, const T* data, std::size_t count) {
    static_assert(Impl::safetensors_scalar<T>(),
                  "dchag::SafetensorsWriter::write takes float, double, bf16 or fp16 values");
    Impl::require(file_ != nullptr && !committed_, label(), ": write('", name,
                  "') after the file was committed or failed");
    Impl::require(next_ < entries_.size(), label(), ": write('", name, "') but all ",
                  entries_.size(), " declared tensors are already written");
    const SafetensorsEntry& e = entries_[next_];
    Impl::require(e.name == name, label(), ": tensor '", name, "' written where '", e.name,
                  "' was declared next");
    std::size_t expected = 1;
    for (auto d : e.shape) expected *= d;
    Impl::require(count == expected, label(), ": tensor '", name, "' has shape ",
                  Impl::shape_text(e.shape), " = ", expected, " values, but ", count,
                  " were given");
    Impl::Fnv1a hash;
    if (e.dtype == "F32") put_values<float>(data, count, name, hash);
    else if (e.dtype == "F64") put_values<double>(data, count, name, hash);
    else if (e.dtype == "BF16") put_values<bf16>(data, count, name, hash);
    else put_values<fp16>(data, count, name, hash);
    checksums_ += (next_ ? "," : "") + Impl::hex16(hash.value());
    ++next_;
  }

  // Every declared tensor written: flush, sync and rename over the target.
  void commit() {
    Impl::require(file_ != nullptr && !committed_, label(), ": commit() twice or after a failure");
    Impl::require(next_ == entries_.size(), label(), ": commit() after ", next_, " of ",
                  entries_.size(), " tensors; '", next_ < entries_.size() ? entries_[next_].name : "",
                  "' and later were never written");
    int err = 0;
    // The checksums are known only now: they fill the placeholder the header left for them
    // (the same number of characters, so no offset moves).
    if (std::fseek(file_, static_cast<long>(8 + checksum_at_), SEEK_SET) != 0 ||
        std::fwrite(checksums_.data(), 1, checksums_.size(), file_) != checksums_.size())
      err = errno ? errno : EIO;
    if (err == 0 && std::fflush(file_) != 0) err = errno;
#if defined(__unix__) || defined(__APPLE__)
    // The data must be on disk before the rename makes the file visible under its real name.
    if (err == 0 && ::fsync(fileno(file_)) != 0) err = errno;
#endif
    if (std::fclose(file_) != 0 && err == 0) err = errno;
    file_ = nullptr;
    Impl::require(err == 0, label(), ": writing the temporary file '", temp_, "' failed (",
                  std::strerror(err), ")");
    Impl::require(std::rename(temp_.c_str(), path_.c_str()) == 0, label(),
                  ": cannot rename the temporary file '", temp_, "' to it (",
                  std::strerror(errno), ")");
    committed_ = true;
  }

  const std::string& path() const { return path_; }

 private:
  std::string label() const { return "safetensors file '" + path_ + "'"; }

  std::string make_header(const std::map<std::string, std::string>& metadata) {
    Impl::require(metadata.count(Impl::safetensors_checksum_key) == 0, label(),
                  ": metadata key '", Impl::safetensors_checksum_key,
                  "' is reserved for the checksums the writer records");
    std::string h = "{\"__metadata__\":{";
    for (const auto& kv : metadata)
      h += Impl::json_quote(kv.first, label() + ": metadata key") + ':' +
           Impl::json_quote(kv.second, label() + ": metadata '" + kv.first + "'") + ',';
    h += std::string("\"") + Impl::safetensors_checksum_key + "\":\"";
    checksum_at_ = h.size();
    for (std::size_t i = 0; i < entries_.size(); ++i) h += i ? ",0000000000000000" : "0000000000000000";
    h += "\"}";
    std::uint64_t offset = 0;
    std::vector<std::string> seen;
    for (const auto& e : entries_) {
      Impl::require(e.name != "__metadata__", label(), ": '__metadata__' cannot be a tensor name");
      Impl::require(e.dtype == "F32" || e.dtype == "F64" || e.dtype == "BF16" ||
                        e.dtype == "F16",
                    label(), ": tensor '", e.name, "': dtype ", e.dtype,
                    " cannot be written (F32, F64, BF16 and F16 can)");
      seen.push_back(e.name);
      std::uint64_t n = Impl::safetensors_dtype_size(e.dtype);
      for (auto d : e.shape) {
        Impl::require(d == 0 || n <= std::numeric_limits<std::uint64_t>::max() / d, label(),
                      ": tensor '", e.name, "': shape ", Impl::shape_text(e.shape),
                      " is too large");
        n *= d;
      }
      if (h.size() > 1) h += ',';
      h += Impl::json_quote(e.name, label() + ": tensor name") + ":{\"dtype\":\"" + e.dtype +
           "\",\"shape\":[";
      for (std::size_t i = 0; i < e.shape.size(); ++i)
        h += (i ? "," : "") + std::to_string(e.shape[i]);
      h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + n) +
           "]}";
      offset += n;
    }
    std::sort(seen.begin(), seen.end());
    const auto dup = std::adjacent_find(seen.begin(), seen.end());
    Impl::require(dup == seen.end(), label(), ": duplicate tensor name '",
                  dup == seen.end() ? std::string() : *dup, "'");
    h += '}';
    // Data aligned to 8 bytes after the 8-byte length, as the reference writer pads.
    while (h.size() % 8 != 0) h += ' ';
    return h;
  }

  // ".tmp.<host>.<pid>.<n>": unique among the writers of one directory, also on a file system
  // that several nodes share, and enough for remove_stale_temporaries to tell whether the
  // writer is still alive.
  static std::string temp_name_suffix() {
    static std::atomic<int> counter{0};
    return Impl::concat(".tmp.", Impl::host_name(), ".", Impl::process_id(), ".", ++counter);
  }
  std::string temp_name() const { return path_ + temp_name_suffix(); }

  void discard() {
    if (file_) std::fclose(file_);
    file_ = nullptr;
    if (!temp_.empty()) std::remove(temp_.c_str());
    temp_.clear();
  }

  void put(const void* data, std::size_t n, const char* what) {
    if (n == 0) return;
    if (std::fwrite(data, 1, n, file_) != n) {
      const int err = errno;
      throw Error(Impl::concat(label(), ": writing ", what, " to the temporary file '", temp_,
                               "' failed (", std::strerror(err), ")"));
    }
  }

  template <class Stored, class T>
  void put_values(const T* data, std::size_t count, const std::string& name, Impl::Fnv1a& hash) {
    const std::string what = "tensor '" + name + "'";
    if (std::is_same<Stored, T>::value && Impl::host_is_little_endian()) {
      hash.update(data, count * sizeof(T));
      put(data, count * sizeof(T), what.c_str());
      return;
    }
    using Bits = std::conditional_t<
        sizeof(Stored) == 2, std::uint16_t,
        std::conditional_t<sizeof(Stored) == 4, std::uint32_t, std::uint64_t>>;
    constexpr std::size_t chunk = std::size_t(1) << 16;
    std::vector<unsigned char> raw(std::min(count, chunk) * sizeof(Stored));
    for (std::size_t done = 0; done < count;) {
      const std::size_t n = std::min(chunk, count - done);
      for (std::size_t i = 0; i < n; ++i) {
        const Stored v = Impl::convert_scalar<Stored>(data[done + i]);
        Bits bits;
        std::memcpy(&bits, &v, sizeof v);
        Impl::store_le<Bits>(bits, raw.data() + i * sizeof(Stored));
      }
      hash.update(raw.data(), n * sizeof(Stored));
      put(raw.data(), n * sizeof(Stored), what.c_str());
      done += n;
    }
  }

  std::string path_;
  std::vector<SafetensorsEntry> entries_;
  std::string temp_;
  std::FILE* file_ = nullptr;
  std::size_t next_ = 0;
  std::size_t checksum_at_ = 0;  // where the checksums go, in the header
  std::string checksums_;        // of the tensors written so far
  bool committed_ = false;
};

// One tensor to write: `data` holds the product of `shape` values, row-major.
template <class T>
struct SafetensorsTensor {
  std::string name;
  std::vector<std::size_t> shape;
  const T* data = nullptr;
};

// Writes `tensors` (in this order) and `metadata` to `path` atomically, each in its scalar's
// own dtype (F32, F64, BF16, F16: ScalarTraits<T>::dtype).
template <class T>
void write_safetensors(const std::string& path, const std::vector<SafetensorsTensor<T>>& tensors,
                       const std::map<std::string, std::string>& metadata = {}) {
  std::vector<SafetensorsEntry> entries;
  entries.reserve(tensors.size());
  for (const auto& t : tensors)
    entries.push_back({t.name, Impl::safetensors_dtype_of<T>(), t.shape});
  SafetensorsWriter writer(path, std::move(entries), metadata);
  for (const auto& t : tensors) {
    std::size_t n = 1;
    for (auto d : t.shape) n *= d;
    Impl::require(t.data != nullptr || n == 0, "safetensors file '", path, "': tensor '", t.name,
                  "' has no data");
    writer.write(t.name, t.data, n);
  }
  writer.commit();
}

}  // namespace dchag

#endif
