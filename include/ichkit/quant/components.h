#pragma once
/// \file components.h
/// 3D connected components, binary morphology and hole filling on masks (header-only).
/// Declarations only here - the implementation lands with the skull-strip work.
#include <cstdint>
#include <vector>

#include "ichkit/core/volume.h"
