#pragma once
/// \file text.h
/// Text for io's messages: fixed-size fields of image files fit to quote, errno's text (internal to io).
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

namespace ichkit::detail {

/// The bytes of `s` up to the first NUL or `n`, with every byte outside printable ASCII as '?'.
inline std::string fixed_string(const char* s, std::size_t n) {
  std::size_t len = 0;
  while (len < n && s[len]) ++len;
  std::string out(s, len);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 32 || static_cast<unsigned char>(c) > 126) c = '?';
  return out;
}

/// strerror(errno), read at the call (before anything else can change errno).
inline std::string errno_text() { return std::strerror(errno); }

}  // namespace ichkit::detail
