#ifndef DCHAG_IO_SAFETENSORS_HPP
#define DCHAG_IO_SAFETENSORS_HPP

// Reading and writing the safetensors format (https://github.com/huggingface/safetensors), the
// plain file that moves weights between this library and PyTorch:
//
//   8 bytes   N, little-endian u64
//   N bytes   JSON: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
//                    ..., "__metadata__": {"<key>": "<value>", ...}}   (may end in spaces)
//   the rest  raw little-endian tensor data; offsets are relative to its start
//
// Host-side only: device views are staged through host copies by the caller (the checkpoint
// layer). Nothing here depends on Kokkos or MPI.
//
// Reading is strict, as the reference implementation is: the header must be valid UTF-8 JSON
// of exactly this shape (objects, arrays, strings, non-negative integers; our own small parser,
// so no new dependency), names unique, every dtype known, every tensor's byte range exactly the
// size its shape and dtype need, and the ranges must tile the data section: no overlap, no gap,
// nothing before, between or after them. A file that breaks any rule is refused with a
// dchag::Error naming the file, the tensor and the rule, before any tensor is read. Values are
// read as F32, F64, F16 or BF16 and converted to the scalar asked for; the other dtypes of the
// format (integers, bool, 8-bit floats) are understood for validation but cannot be read as
// floating point.
//
// What reading a header costs is bounded by the header's size (see SafetensorsHeaderParser).
// When the metadata holds the checksums our writer records ("dchag.fnv1a64"), reading a tensor
// verifies its bytes; files of other writers have none and are read as they are.
//
// Writing produces F32, F64, BF16 or F16 tensors (the scalar's own dtype, or the one declared),
// the header padded with spaces so that the data start on an 8-byte boundary (as the reference
// writer does), with a checksum of every tensor, through a
// temporary file in the same directory that is renamed over the target only once complete: a
// crash or a full disk never leaves a truncated file under the final name, and what a killed
// writer left behind is found by remove_stale_temporaries.
//
// The parts, one concept each: io/safetensors_format.hpp (what the header describes, dtypes,
// byte order), io/safetensors_header.hpp (the JSON header), io/safetensors_reader.hpp
// (SafetensorsFile) and io/safetensors_writer.hpp (SafetensorsWriter, write_safetensors,
// remove_stale_temporaries). This header includes them all. F16 and BF16 convert through
// core/low_precision.hpp.

#include <dchag/io/safetensors_format.hpp>
#include <dchag/io/safetensors_header.hpp>
#include <dchag/io/safetensors_reader.hpp>
#include <dchag/io/safetensors_writer.hpp>

#endif
