# FindNIfTI: nifticlib's NIfTI-2 capable library (nifti2_io) and its znz layer.
# Debian's own NIFTIConfig.cmake points at a libznz.so.3.0.0 that does not exist, so
# ichkit finds the pieces itself. Defines NIfTI::nifti2 (and NIfTI_FOUND).
find_path(NIfTI_INCLUDE_DIR nifti2_io.h PATH_SUFFIXES nifti)
find_library(NIfTI_nifti2_LIBRARY NAMES nifti2)
find_library(NIfTI_znz_LIBRARY NAMES znz)
find_package(ZLIB QUIET)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NIfTI REQUIRED_VARS NIfTI_nifti2_LIBRARY NIfTI_znz_LIBRARY NIfTI_INCLUDE_DIR ZLIB_FOUND)
if(NIfTI_FOUND AND NOT TARGET NIfTI::nifti2)
  add_library(NIfTI::znz UNKNOWN IMPORTED)
  set_target_properties(NIfTI::znz PROPERTIES IMPORTED_LOCATION "${NIfTI_znz_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${NIfTI_INCLUDE_DIR}" INTERFACE_LINK_LIBRARIES ZLIB::ZLIB)
  add_library(NIfTI::nifti2 UNKNOWN IMPORTED)
  set_target_properties(NIfTI::nifti2 PROPERTIES IMPORTED_LOCATION "${NIfTI_nifti2_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${NIfTI_INCLUDE_DIR}" INTERFACE_LINK_LIBRARIES "NIfTI::znz;m")
endif()
mark_as_advanced(NIfTI_INCLUDE_DIR NIfTI_nifti2_LIBRARY NIfTI_znz_LIBRARY)
