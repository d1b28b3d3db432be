#pragma once
/// \file bundle.h
/// The container of model files and training checkpoints (internal): an 8-byte magic,
/// u32 version, u32 reserved, u64 header length, a JSON header, u64 data length, 64-byte
/// aligned raw tensors (float32 / int64, little-endian), u32 CRC-32 of all preceding bytes,
/// "ICHKEND\n". The header's "tensors" list gives name, dtype, shape, offset and bytes.
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace ichkit::model::detail {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// Serialise; `header` gets a "tensors" entry.
std::string write_bundle(const char (&magic)[9], std::uint32_t version, nlohmann::json header, const NamedTensors& tensors);

struct Bundle {
  nlohmann::json header;
  NamedTensors tensors;
};

/// Parse and check everything (sizes, checksum, version, tensor entries, finite floats).
/// `what` names the kind of file in error messages ("model file", "checkpoint").
Bundle read_bundle(const std::string& bytes, const char (&magic)[9], std::uint32_t version, const std::string& what);

/// Read a whole file (IoError / ResourceError above max_bytes).
std::string read_file(const std::string& path, std::uint64_t max_bytes, const std::string& what);

}  // namespace ichkit::model::detail
