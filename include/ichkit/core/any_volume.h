#pragma once
/// \file any_volume.h
/// A volume of any supported voxel type, for APIs that keep the on-disk type.
#include <cstdint>
#include <string>
#include <variant>

#include "ichkit/core/volume.h"

namespace ichkit {

/// Voxel types ichkit reads and writes (NIfTI's scalar types).
enum class DataType { UInt8, Int8, Int16, UInt16, Int32, UInt32, Int64, UInt64, Float32, Float64 };

using AnyVolume = std::variant<Volume<std::uint8_t>, Volume<std::int8_t>, Volume<std::int16_t>, Volume<std::uint16_t>,
                               Volume<std::int32_t>, Volume<std::uint32_t>, Volume<std::int64_t>, Volume<std::uint64_t>,
                               Volume<float>, Volume<double>>;

template <class T> struct datatype_of;
template <> struct datatype_of<std::uint8_t> { static constexpr DataType value = DataType::UInt8; };
template <> struct datatype_of<std::int8_t> { static constexpr DataType value = DataType::Int8; };
template <> struct datatype_of<std::int16_t> { static constexpr DataType value = DataType::Int16; };
template <> struct datatype_of<std::uint16_t> { static constexpr DataType value = DataType::UInt16; };
template <> struct datatype_of<std::int32_t> { static constexpr DataType value = DataType::Int32; };
template <> struct datatype_of<std::uint32_t> { static constexpr DataType value = DataType::UInt32; };
template <> struct datatype_of<std::int64_t> { static constexpr DataType value = DataType::Int64; };
template <> struct datatype_of<std::uint64_t> { static constexpr DataType value = DataType::UInt64; };
template <> struct datatype_of<float> { static constexpr DataType value = DataType::Float32; };
template <> struct datatype_of<double> { static constexpr DataType value = DataType::Float64; };

/// numpy-style name: "uint8", "int16", "float32", ...
inline const char* to_string(DataType t) {
  switch (t) {
    case DataType::UInt8: return "uint8";
    case DataType::Int8: return "int8";
    case DataType::Int16: return "int16";
    case DataType::UInt16: return "uint16";
    case DataType::Int32: return "int32";
    case DataType::UInt32: return "uint32";
    case DataType::Int64: return "int64";
    case DataType::UInt64: return "uint64";
    case DataType::Float32: return "float32";
    case DataType::Float64: return "float64";
  }
  return "?";
}

inline DataType datatype_from_string(const std::string& s) {
  for (DataType t : {DataType::UInt8, DataType::Int8, DataType::Int16, DataType::UInt16, DataType::Int32, DataType::UInt32,
                     DataType::Int64, DataType::UInt64, DataType::Float32, DataType::Float64})
    if (s == to_string(t)) return t;
  throw InvalidArgument("unknown voxel type '" + s + "' (use uint8, int8, int16, uint16, int32, uint32, int64, uint64, float32 or float64)");
}

/// Voxel type held by an AnyVolume.
inline DataType datatype(const AnyVolume& v) {
  return std::visit([](const auto& x) { return datatype_of<typename std::decay_t<decltype(x)>::value_type>::value; }, v);
}

/// The AnyVolume's voxels converted to T (a shared view when already of type T).
template <class T>
Volume<T> as(const AnyVolume& v) {
  return std::visit(
      [](const auto& x) -> Volume<T> {
        using U = typename std::decay_t<decltype(x)>::value_type;
        if constexpr (std::is_same<U, T>::value) return x;
        else return x.template cast<T>();
      },
      v);
}

}  // namespace ichkit
