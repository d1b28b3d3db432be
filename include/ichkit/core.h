#pragma once
/// \file core.h
/// Everything of the header-only core module.
#include "ichkit/core/any_volume.h"
#include "ichkit/core/error.h"
#include "ichkit/core/geometry.h"
#include "ichkit/core/progress.h"
#include "ichkit/core/threading.h"
#include "ichkit/core/volume.h"
#include "ichkit/core/version.h"
