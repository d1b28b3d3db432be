#pragma once
/// \file error.h
/// The one exception hierarchy of ichkit. Every failure is an exception derived from
/// ichkit::Error (itself a std::runtime_error). The Python bindings translate each kind:
/// IoError -> ichkit.IoError (an OSError), FormatError / GeometryError / InvalidArgument ->
/// subclasses of ValueError, ResourceError -> a MemoryError subclass, Error -> RuntimeError.
#include <cstdio>
#include <stdexcept>
#include <string>

namespace ichkit {

/// Base class of every ichkit exception.
class Error : public std::runtime_error {
public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// A file could not be opened, read, written or renamed (Python: OSError).
class IoError : public Error {
public:
  explicit IoError(const std::string& what) : Error(what) {}
};

/// A file was read but its content is not a valid image of a supported kind
/// (Python: ichkit.FormatError, a ValueError).
class FormatError : public Error {
public:
  explicit FormatError(const std::string& what) : Error(what) {}
};

/// Geometry is missing, singular or inconsistent (Python: ichkit.GeometryError, a ValueError).
class GeometryError : public Error {
public:
  explicit GeometryError(const std::string& what) : Error(what) {}
};

/// A caller passed an argument outside its domain (Python: ichkit.InvalidArgument, a ValueError).
class InvalidArgument : public Error {
public:
  explicit InvalidArgument(const std::string& what) : Error(what) {}
};

/// A request would need more memory than the configured budget (Python: ichkit.ResourceError,
/// a MemoryError).
class ResourceError : public Error {
public:
  explicit ResourceError(const std::string& what) : Error(what) {}
};

namespace detail {
/// A number as an error message shows it: 5, 0.45, 1e+300, inf, nan (std::to_string would
/// write 1e300 with 300 digits and 1e-9 as 0.000000).
inline std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
}  // namespace detail

}  // namespace ichkit
