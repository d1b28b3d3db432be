#pragma once
/// \file version.h
#define ICHKIT_VERSION_MAJOR 0
#define ICHKIT_VERSION_MINOR 1
#define ICHKIT_VERSION_PATCH 0
#define ICHKIT_VERSION_STRING "0.1.0"

namespace ichkit {
/// Library version, "MAJOR.MINOR.PATCH".
inline const char* version() { return ICHKIT_VERSION_STRING; }
}  // namespace ichkit
