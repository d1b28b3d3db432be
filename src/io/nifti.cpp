// NIfTI-1/2 reader and writer. Header structures, byte swapping, datatype tables and the
// affine -> quaternion conversion come from nifticlib; the voxel payload is handled here with
// libdeflate (gzip) and plain POSIX reads, so nothing is ever half-filled: every check runs
// before a Volume is returned.
#include "ichkit/io/nifti.h"

#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <nifti/nifti2_io.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ichkit/core/threading.h"
#include "ichkit/core/value_stats.h"
#include "ichkit/io/atomic_file.h"
#include "text.h"

namespace ichkit::io {

namespace {

constexpr std::size_t kN1Size = 348;
constexpr std::size_t kN2Size = 540;
using detail::errno_text;

// ---------------------------------------------------------------- raw file access

class File {
public:
  explicit File(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw IoError("cannot open '" + path + "': " + errno_text());
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw IoError("cannot stat '" + path + "': " + errno_text());
    if (S_ISDIR(st.st_mode)) {
      ::close(fd_);
      fd_ = -1;
      throw IoError("'" + path + "' is a folder, not a NIfTI file");
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  std::uint64_t size() const { return size_; }

  // Read up to n bytes at offset; returns the count read (short only at end of file).
  std::size_t read_at(void* dst, std::size_t n, std::uint64_t offset) const {
    std::size_t done = 0;
    char* p = static_cast<char*>(dst);
    while (done < n) {
      ssize_t r = ::pread(fd_, p + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw IoError("cannot read '" + path_ + "': " + errno_text());
      }
      if (r == 0) break;
      done += static_cast<std::size_t>(r);
    }
    return done;
  }

private:
  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

bool is_gzip(const unsigned char* b, std::size_t n) { return n >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

// Inflate the first `want` bytes of a gzip stream (for the header) with zlib's streaming API.
std::size_t gunzip_prefix(const unsigned char* in, std::size_t in_n, unsigned char* out, std::size_t want) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error("zlib initialisation failed");
  zs.next_in = const_cast<unsigned char*>(in);
  zs.avail_in = static_cast<uInt>(std::min<std::size_t>(in_n, std::numeric_limits<uInt>::max()));
  zs.next_out = out;
  zs.avail_out = static_cast<uInt>(want);
  int rc = Z_OK;
  while (zs.avail_out > 0 && rc == Z_OK) rc = inflate(&zs, Z_NO_FLUSH);
  std::size_t got = want - zs.avail_out;
  inflateEnd(&zs);
  if (rc != Z_OK && rc != Z_STREAM_END && got < want) return got;  // corrupt or short: caller decides
  return got;
}

// Decompress a (possibly multi-member) gzip stream into exactly `need` bytes of `out`.
// Returns the number of bytes produced (less than `need` if the stream is short).
// Throws FormatError on corrupt data.
std::size_t gunzip_into(const unsigned char* in, std::size_t in_n, unsigned char* out, std::size_t need,
                        const std::string& path) {
  std::unique_ptr<libdeflate_decompressor, void (*)(libdeflate_decompressor*)> d(libdeflate_alloc_decompressor(),
                                                                                  libdeflate_free_decompressor);
  if (!d) throw ResourceError("cannot allocate a gzip decompressor");
  std::size_t in_pos = 0, out_pos = 0;
  while (out_pos < need && in_pos < in_n) {
    std::size_t used_in = 0, produced = 0;
    libdeflate_result r = libdeflate_gzip_decompress_ex(d.get(), in + in_pos, in_n - in_pos, out + out_pos,
                                                        need - out_pos, &used_in, &produced);
    if (r == LIBDEFLATE_SUCCESS) {
      in_pos += used_in;
      out_pos += produced;
      continue;
    }
    if (r == LIBDEFLATE_INSUFFICIENT_SPACE) {
      // This member holds more than the image needs (trailing bytes after the voxels):
      // stream it with zlib and keep only what is needed.
      z_stream zs{};
      if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error("zlib initialisation failed");
      zs.next_in = const_cast<unsigned char*>(in + in_pos);
      zs.avail_in = static_cast<uInt>(std::min<std::size_t>(in_n - in_pos, std::numeric_limits<uInt>::max()));
      int rc = Z_OK;
      while (out_pos < need && rc == Z_OK) {
        std::size_t chunk = std::min<std::size_t>(need - out_pos, std::numeric_limits<uInt>::max());
        zs.next_out = out + out_pos;
        zs.avail_out = static_cast<uInt>(chunk);
        rc = inflate(&zs, Z_NO_FLUSH);
        out_pos += chunk - zs.avail_out;
      }
      inflateEnd(&zs);
      if (out_pos < need && rc != Z_STREAM_END) throw FormatError("'" + path + "': corrupt gzip data");
      return out_pos;
    }
    // Bad data: corrupt, or (after at least one member) trailing garbage / a truncated member.
    if (r == LIBDEFLATE_BAD_DATA) {
      // A truncated final member looks like bad data to libdeflate; tell the two apart with zlib.
      z_stream zs{};
      if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error("zlib initialisation failed");
      zs.next_in = const_cast<unsigned char*>(in + in_pos);
      zs.avail_in = static_cast<uInt>(std::min<std::size_t>(in_n - in_pos, std::numeric_limits<uInt>::max()));
      int rc = Z_OK;
      while (out_pos < need && rc == Z_OK) {
        std::size_t chunk = std::min<std::size_t>(need - out_pos, std::numeric_limits<uInt>::max());
        zs.next_out = out + out_pos;
        zs.avail_out = static_cast<uInt>(chunk);
        rc = inflate(&zs, Z_NO_FLUSH);
        out_pos += chunk - zs.avail_out;
        if (rc == Z_BUF_ERROR && zs.avail_in == 0) break;  // input ran out: truncated
      }
      inflateEnd(&zs);
      if (rc == Z_DATA_ERROR || rc == Z_STREAM_ERROR || rc == Z_MEM_ERROR)
        throw FormatError("'" + path + "': corrupt gzip data (" + (zs.msg ? zs.msg : "inflate failed") + ")");
      if (rc == Z_STREAM_END && out_pos < need) {
        in_pos = in_n;  // member ended but more is needed: reported as short by the caller
      }
      return out_pos;
    }
    throw FormatError("'" + path + "': corrupt gzip data");
  }
  return out_pos;
}

// ---------------------------------------------------------------- datatype tables

struct TypeInfo {
  DataType type;
  int size;
};

bool nifti_type_info(int code, TypeInfo& info) {
  switch (code) {
    case NIFTI_TYPE_UINT8: info = {DataType::UInt8, 1}; return true;
    case NIFTI_TYPE_INT8: info = {DataType::Int8, 1}; return true;
    case NIFTI_TYPE_INT16: info = {DataType::Int16, 2}; return true;
    case NIFTI_TYPE_UINT16: info = {DataType::UInt16, 2}; return true;
    case NIFTI_TYPE_INT32: info = {DataType::Int32, 4}; return true;
    case NIFTI_TYPE_UINT32: info = {DataType::UInt32, 4}; return true;
    case NIFTI_TYPE_INT64: info = {DataType::Int64, 8}; return true;
    case NIFTI_TYPE_UINT64: info = {DataType::UInt64, 8}; return true;
    case NIFTI_TYPE_FLOAT32: info = {DataType::Float32, 4}; return true;
    case NIFTI_TYPE_FLOAT64: info = {DataType::Float64, 8}; return true;
    default: return false;
  }
}

int nifti_code(DataType t) {
  switch (t) {
    case DataType::UInt8: return NIFTI_TYPE_UINT8;
    case DataType::Int8: return NIFTI_TYPE_INT8;
    case DataType::Int16: return NIFTI_TYPE_INT16;
    case DataType::UInt16: return NIFTI_TYPE_UINT16;
    case DataType::Int32: return NIFTI_TYPE_INT32;
    case DataType::UInt32: return NIFTI_TYPE_UINT32;
    case DataType::Int64: return NIFTI_TYPE_INT64;
    case DataType::UInt64: return NIFTI_TYPE_UINT64;
    case DataType::Float32: return NIFTI_TYPE_FLOAT32;
    case DataType::Float64: return NIFTI_TYPE_FLOAT64;
  }
  return 0;
}

std::size_t type_size(DataType t) {
  TypeInfo info{};
  nifti_type_info(nifti_code(t), info);
  return static_cast<std::size_t>(info.size);
}

// ---------------------------------------------------------------- affines, nibabel-exact

// nibabel's qform: quaternion filled in long double (numpy float128), quat2mat in long double,
// times diag(pixdim) (pixdim[3] * qfac), rounded to double.
Eigen::Matrix4d qform_affine(double qb, double qc, double qd, double qx, double qy, double qz, const double pixdim[8],
                             double qfac, const std::string& path) {
  using ld = long double;
  ld x = qb, y = qc, z = qd;
  ld dot = ld(0) + x * x;
  dot += y * y;
  dot += z * z;
  ld w2 = ld(1) - dot;
  ld w;
  if (w2 < 0) {
    const ld thresh = -ld(std::numeric_limits<float>::epsilon()) * 3;
    if (w2 < thresh)
      throw FormatError("'" + path + "': qform quaternion is not a unit quaternion (b^2+c^2+d^2 > 1)");
    w = 0;
  } else {
    w = std::sqrt(w2);
  }
  Eigen::Matrix4d out = Eigen::Matrix4d::Identity();
  ld nq = w * w + x * x + y * y + z * z;
  ld r[3][3];
  if (nq < ld(std::numeric_limits<double>::epsilon())) {
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) r[i][j] = i == j ? 1 : 0;
  } else {
    ld s = ld(2) / nq;
    ld X = x * s, Y = y * s, Z = z * s;
    ld wX = w * X, wY = w * Y, wZ = w * Z;
    ld xX = x * X, xY = x * Y, xZ = x * Z;
    ld yY = y * Y, yZ = y * Z, zZ = z * Z;
    r[0][0] = ld(1) - (yY + zZ); r[0][1] = xY - wZ;            r[0][2] = xZ + wY;
    r[1][0] = xY + wZ;            r[1][1] = ld(1) - (xX + zZ); r[1][2] = yZ - wX;
    r[2][0] = xZ - wY;            r[2][1] = yZ + wX;            r[2][2] = ld(1) - (xX + yY);
  }
  double vox[3] = {std::abs(pixdim[1]), std::abs(pixdim[2]), std::abs(pixdim[3])};
  vox[2] *= qfac;  // exact: qfac is +1 or -1
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) out(i, j) = static_cast<double>(r[i][j] * ld(vox[j]));
  out(0, 3) = qx;
  out(1, 3) = qy;
  out(2, 3) = qz;
  return out;
}

// nibabel's fallback for files with neither qform nor sform (Analyze's base affine).
Eigen::Matrix4d base_affine(const Shape3& shape, const double zooms[3]) {
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  for (int c = 0; c < 3; ++c) {
    double z = zooms[c] * (c == 0 ? -1.0 : 1.0);
    a(c, c) = z;
    a(c, 3) = -((static_cast<double>(shape[c]) - 1.0) / 2.0) * z;
  }
  return a;
}

std::string units_name(int code) {
  switch (code & 0x07) {
    case NIFTI_UNITS_MM: return "mm";
    case NIFTI_UNITS_MICRON: return "micron";
    case NIFTI_UNITS_METER: return "meter";
    default: return "unknown";
  }
}

using ichkit::detail::fixed_string;

// ---------------------------------------------------------------- header parsing

struct RawHeader {
  int version = 0;
  bool swapped = false;
};

// Identify the header in the first bytes; returns false if it is not NIfTI at all.
bool identify(const unsigned char* b, std::size_t n, RawHeader& id) {
  if (n < 4) return false;
  std::int32_t sz;
  std::memcpy(&sz, b, 4);
  std::int32_t sw = static_cast<std::int32_t>(__builtin_bswap32(static_cast<std::uint32_t>(sz)));
  if (sz == 348 || sw == 348) {
    id.version = 1;
    id.swapped = sz != 348;
  } else if (sz == 540 || sw == 540) {
    id.version = 2;
    id.swapped = sz != 540;
  } else {
    return false;
  }
  return true;
}

NiftiHeader parse_header(const unsigned char* b, std::size_t n, const std::string& path, bool compressed,
                         std::uint64_t max_bytes) {
  RawHeader id;
  if (!identify(b, n, id))
    throw FormatError("'" + path + "' is not a NIfTI file (first 4 bytes are not a NIfTI-1 or NIfTI-2 header size)");
  NiftiHeader h;
  h.version = id.version;
  h.swapped = id.swapped;
  h.compressed = compressed;

  std::int64_t dim[8];
  double pixdim[8];
  double vox_offset = 0;
  int datatype = 0, bitpix = 0, qform_code = 0, sform_code = 0, xyzt_units = 0;
  double slope = 0, inter = 0;
  double quat[6];
  double srow[3][4];
  const std::size_t need = id.version == 1 ? kN1Size : kN2Size;
  if (n < need)
    throw FormatError("'" + path + "' is truncated: the NIfTI-" + std::to_string(id.version) + " header needs " +
                      std::to_string(need) + " bytes, the file has " + std::to_string(n));

  if (id.version == 1) {
    nifti_1_header hdr;
    std::memcpy(&hdr, b, sizeof hdr);
    if (id.swapped) swap_nifti_header(&hdr, 1);
    if (std::memcmp(hdr.magic, "ni1", 4) == 0)
      throw FormatError("'" + path + "' is a NIfTI-1 header of a .hdr/.img pair; convert it to a single .nii file");
    if (std::memcmp(hdr.magic, "n+1", 4) != 0)
      throw FormatError("'" + path + "' has no NIfTI-1 magic ('n+1'); ANALYZE 7.5 files are not supported");
    for (int i = 0; i < 8; ++i) dim[i] = hdr.dim[i];
    for (int i = 0; i < 8; ++i) pixdim[i] = hdr.pixdim[i];
    vox_offset = hdr.vox_offset;
    datatype = hdr.datatype;
    bitpix = hdr.bitpix;
    qform_code = hdr.qform_code;
    sform_code = hdr.sform_code;
    xyzt_units = hdr.xyzt_units;
    slope = hdr.scl_slope;
    inter = hdr.scl_inter;
    const double q[6] = {hdr.quatern_b, hdr.quatern_c, hdr.quatern_d, hdr.qoffset_x, hdr.qoffset_y, hdr.qoffset_z};
    std::memcpy(quat, q, sizeof q);
    for (int c = 0; c < 4; ++c) {
      srow[0][c] = hdr.srow_x[c];
      srow[1][c] = hdr.srow_y[c];
      srow[2][c] = hdr.srow_z[c];
    }
    h.descrip = fixed_string(hdr.descrip, sizeof hdr.descrip);
  } else {
    nifti_2_header hdr;
    std::memcpy(&hdr, b, sizeof hdr);
    if (id.swapped) swap_nifti_header(&hdr, 2);
    static const char magic2[8] = {'n', '+', '2', '\0', '\r', '\n', '\032', '\n'};
    if (std::memcmp(hdr.magic, "ni2", 4) == 0)
      throw FormatError("'" + path + "' is a NIfTI-2 header of a .hdr/.img pair; convert it to a single .nii file");
    if (std::memcmp(hdr.magic, magic2, 8) != 0)
      throw FormatError("'" + path + "' has no valid NIfTI-2 magic ('n+2\\0\\r\\n\\032\\n')");
    for (int i = 0; i < 8; ++i) dim[i] = hdr.dim[i];
    for (int i = 0; i < 8; ++i) pixdim[i] = hdr.pixdim[i];
    vox_offset = static_cast<double>(hdr.vox_offset);
    datatype = hdr.datatype;
    bitpix = hdr.bitpix;
    qform_code = hdr.qform_code;
    sform_code = hdr.sform_code;
    xyzt_units = hdr.xyzt_units;
    slope = hdr.scl_slope;
    inter = hdr.scl_inter;
    const double q[6] = {hdr.quatern_b, hdr.quatern_c, hdr.quatern_d, hdr.qoffset_x, hdr.qoffset_y, hdr.qoffset_z};
    std::memcpy(quat, q, sizeof q);
    for (int c = 0; c < 4; ++c) {
      srow[0][c] = hdr.srow_x[c];
      srow[1][c] = hdr.srow_y[c];
      srow[2][c] = hdr.srow_z[c];
    }
    h.descrip = fixed_string(hdr.descrip, sizeof hdr.descrip);
  }

  // Dimensions.
  const std::int64_t nd = dim[0];
  if (nd < 1 || nd > 7)
    throw FormatError("'" + path + "': dim[0] = " + std::to_string(nd) + " (number of dimensions must be 1..7)");
  h.ndim = static_cast<int>(nd);
  for (int i = 1; i <= nd; ++i)
    if (dim[i] <= 0)
      throw FormatError("'" + path + "': dim[" + std::to_string(i) + "] = " + std::to_string(dim[i]) +
                        " (every dimension must be >= 1)");
  for (int i = 4; i <= nd; ++i)
    if (dim[i] != 1)
      throw FormatError("'" + path + "' is " + std::to_string(nd) + "D with dim[" + std::to_string(i) +
                        "] = " + std::to_string(dim[i]) + "; ichkit reads 3D volumes (extract one volume first)");
  for (int c = 0; c < 3; ++c) {
    std::int64_t v = c + 1 <= nd ? dim[c + 1] : 1;
    h.shape[c] = static_cast<std::size_t>(v);
  }
  // Datatype.
  TypeInfo info{};
  if (!nifti_type_info(datatype, info)) {
    const char* name = nifti_datatype_string(datatype);
    throw FormatError("'" + path + "': unsupported datatype " + std::to_string(datatype) + " (" +
                      (name ? name : "unknown") + "); supported: uint8, int8, int16, uint16, int32, uint32, int64, "
                                                   "uint64, float32, float64");
  }
  h.datatype = info.type;
  h.nifti_datatype = datatype;
  if (bitpix != info.size * 8)
    throw FormatError("'" + path + "': inconsistent header: bitpix = " + std::to_string(bitpix) + " but datatype " +
                      to_string(info.type) + " has " + std::to_string(info.size * 8) + " bits");
  // Sizes: overflow-safe product, memory budget.
  std::uint64_t count = 1;
  for (int c = 0; c < 3; ++c) {
    if (count > std::numeric_limits<std::uint64_t>::max() / h.shape[c] / 8)
      throw FormatError("'" + path + "': dimensions overflow (" + std::to_string(h.shape[0]) + " x " +
                        std::to_string(h.shape[1]) + " x " + std::to_string(h.shape[2]) + ")");
    count *= h.shape[c];
  }
  const std::uint64_t data_bytes = count * static_cast<std::uint64_t>(info.size);
  if (data_bytes > max_bytes)
    throw ResourceError("'" + path + "': the header claims " + std::to_string(h.shape[0]) + " x " +
                        std::to_string(h.shape[1]) + " x " + std::to_string(h.shape[2]) + " voxels (" +
                        std::to_string(data_bytes) + " bytes), more than the memory budget of " +
                        std::to_string(max_bytes) + " bytes");
  // Voxel offset.
  if (!std::isfinite(vox_offset) || vox_offset != std::floor(vox_offset) || vox_offset < double(need) ||
      vox_offset > 1e12)
    throw FormatError("'" + path + "': inconsistent header: vox_offset = " + std::to_string(vox_offset) +
                      " (must be a whole number >= the " + std::to_string(need) + "-byte header)");
  h.vox_offset = static_cast<std::int64_t>(vox_offset);
  // Scaling, as nibabel reads it: slope 0 or NaN means "no scaling".
  if (std::isinf(slope)) throw FormatError("'" + path + "': scl_slope is infinite");
  if (slope == 0 || std::isnan(slope)) {
    if (std::isfinite(inter) && inter != 0)
      throw FormatError("'" + path + "': inconsistent scaling: scl_slope is " + std::string(slope == 0 ? "0" : "NaN") +
                        " (no scaling) but scl_inter = " + std::to_string(inter));
    h.scl_slope = 1;
    h.scl_inter = 0;
  } else {
    if (!std::isfinite(inter))
      throw FormatError("'" + path + "': scl_slope = " + std::to_string(slope) + " but scl_inter is not finite");
    h.scl_slope = slope;
    h.scl_inter = inter;
  }
  h.has_scaling = !(h.scl_slope == 1 && h.scl_inter == 0);
  // Units: ichkit works in mm; other spatial units are converted.
  double unit = 1;
  switch (xyzt_units & 0x07) {
    case NIFTI_UNITS_METER: unit = 1000; break;
    case NIFTI_UNITS_MICRON: unit = 0.001; break;
    default: break;
  }
  h.xyzt_units = units_name(xyzt_units);
  // Transform codes: nibabel resets unknown codes to 0.
  h.qform_code = (qform_code >= 0 && qform_code <= 5) ? qform_code : 0;
  h.sform_code = (sform_code >= 0 && sform_code <= 5) ? sform_code : 0;
  h.qfac = (pixdim[0] == 1.0 || pixdim[0] == -1.0) ? pixdim[0] : 1.0;
  for (int c = 0; c < 3; ++c) h.pixdim[c] = std::abs(static_cast<double>(pixdim[c + 1]));
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) h.sform(r, c) = srow[r][c];
  try {
    h.qform = qform_affine(quat[0], quat[1], quat[2], quat[3], quat[4], quat[5], pixdim, h.qfac, path);
  } catch (const FormatError&) {
    // An unusable quaternion only matters when the qform is the affine in use (as nibabel).
    if (h.sform_code == 0 && h.qform_code > 0) throw;
    h.qform.setConstant(std::numeric_limits<double>::quiet_NaN());
  }
  if (h.sform_code > 0) {
    h.affine = h.sform;
  } else if (h.qform_code > 0) {
    h.affine = h.qform;
  } else {
    double zooms[3];
    for (int c = 0; c < 3; ++c) zooms[c] = c + 1 <= nd ? h.pixdim[c] : 1.0;
    h.affine = base_affine(h.shape, zooms);
  }
  if (unit != 1) {
    h.affine.topRows<3>() *= unit;
    h.pixdim *= unit;
  }
  try {
    Geometry g(h.affine);
    (void)g;
  } catch (const GeometryError& e) {
    const char* which = h.sform_code > 0 ? "sform" : (h.qform_code > 0 ? "qform" : "pixdim");
    throw GeometryError("'" + path + "': invalid " + std::string(which) + " geometry: " + e.what());
  }
  return h;
}

// Everything needed to produce voxels: the header and the bytes of the voxel block.
struct Loaded {
  NiftiHeader header;
  std::shared_ptr<unsigned char> bytes;  // owner of the block
  unsigned char* voxels = nullptr;       // start of the voxel bytes within the block
};

Loaded load(const std::string& path, const ReadOptions& options, bool header_only) {
  File f(path);
  unsigned char head[kN2Size];
  std::size_t got = f.read_at(head, sizeof head, 0);
  Loaded out;
  if (is_gzip(head, got)) {
    if (f.size() > options.max_bytes)
      throw ResourceError("'" + path + "' is larger than the memory budget (" + std::to_string(options.max_bytes) + " bytes)");
    const std::size_t packed_n = static_cast<std::size_t>(f.size());
    const auto packed = detail::allocate_voxels<unsigned char>(packed_n);  // not zero-filled: read over at once
    if (f.read_at(packed.get(), packed_n, 0) != packed_n) throw IoError("'" + path + "': short read");
    unsigned char hb[kN2Size];
    std::size_t hn = gunzip_prefix(packed.get(), packed_n, hb, sizeof hb);
    if (hn < 4) throw FormatError("'" + path + "': gzip stream is corrupt or too short to hold a NIfTI header");
    out.header = parse_header(hb, hn, path, true, options.max_bytes);
    if (header_only) return out;
    const std::uint64_t nbytes = static_cast<std::uint64_t>(out.header.shape[0]) * out.header.shape[1] *
                                 out.header.shape[2] * type_size(out.header.datatype);
    const std::uint64_t total = static_cast<std::uint64_t>(out.header.vox_offset) + nbytes;
    auto buf = detail::allocate_voxels<unsigned char>(static_cast<std::size_t>(total));
    std::size_t produced = gunzip_into(packed.get(), packed_n, buf.get(), static_cast<std::size_t>(total), path);
    if (produced < total)
      throw FormatError("'" + path + "' is truncated: expected " + std::to_string(nbytes) + " bytes of voxels after offset " +
                        std::to_string(out.header.vox_offset) + ", the decompressed stream holds " +
                        std::to_string(produced > std::uint64_t(out.header.vox_offset) ? produced - out.header.vox_offset : 0));
    out.bytes = buf;
    out.voxels = buf.get() + out.header.vox_offset;
    return out;
  }
  out.header = parse_header(head, got, path, false, options.max_bytes);
  if (header_only) return out;
  const std::uint64_t nbytes = static_cast<std::uint64_t>(out.header.shape[0]) * out.header.shape[1] *
                               out.header.shape[2] * type_size(out.header.datatype);
  const std::uint64_t end = static_cast<std::uint64_t>(out.header.vox_offset) + nbytes;
  if (f.size() < end)
    throw FormatError("'" + path + "' is truncated: the header needs " + std::to_string(end) + " bytes, the file has " +
                      std::to_string(f.size()));
  auto buf = detail::allocate_voxels<unsigned char>(static_cast<std::size_t>(nbytes));
  // Read in parallel chunks: on a warm page cache this is memory-bandwidth bound.
  const std::int64_t chunks = std::max<std::int64_t>(1, static_cast<std::int64_t>(nbytes >> 22));
  parallel_for(chunks, [&](std::int64_t b, std::int64_t e) {
    const std::uint64_t lo = nbytes * b / chunks, hi = nbytes * e / chunks;
    if (f.read_at(buf.get() + lo, hi - lo, out.header.vox_offset + lo) != hi - lo)
      throw IoError("'" + path + "': short read");
  });
  out.bytes = buf;
  out.voxels = buf.get();
  return out;
}

void byteswap_block(unsigned char* p, std::size_t count, std::size_t size) {
  if (size == 1) return;
  parallel_for(static_cast<std::int64_t>(count), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t n = b; n < e; ++n) std::reverse(p + n * size, p + (n + 1) * size);
  }, 1 << 16);
}

template <class S>
S load_unaligned(const unsigned char* p) {
  S v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Convert (and scale) `count` voxels of on-disk type S into T. With `stats` (T = float only),
// also gather the ValueStats of the converted voxels, a block at a time while it is in L1: the
// HU check then needs no second pass over the scan (6 ms of a 512x512x32 scan's ~70 ms on a core).
template <class T, class S>
void convert(const unsigned char* src, T* dst, std::size_t count, const NiftiHeader& h, const std::string& path,
             ValueStats* stats = nullptr) {
  const double slope = h.scl_slope, inter = h.scl_inter;
  const bool scale = h.has_scaling;
  if constexpr (std::is_integral<T>::value) {
    if (scale)
      throw FormatError("'" + path + "' has scl_slope/scl_inter; read it as float32 or float64 (or unscaled with read_nifti_raw)");
  }
  std::mutex stats_mutex;
  parallel_for(static_cast<std::int64_t>(count), [&](std::int64_t b, std::int64_t e) {
    constexpr std::int64_t block = 4096;
    ValueStats local;
    for (std::int64_t first = b; first < e; first += block) {
      const std::int64_t last = std::min(e, first + block);
      for (std::int64_t n = first; n < last; ++n) {
        S s = load_unaligned<S>(src + n * sizeof(S));
        if constexpr (std::is_floating_point<T>::value) {
          if (scale) dst[n] = static_cast<T>(static_cast<double>(s) * slope + inter);
          else dst[n] = static_cast<T>(s);
        } else {
          if constexpr (std::is_floating_point<S>::value) {
            if (!(s == std::floor(s)) || s < static_cast<S>(std::numeric_limits<T>::lowest()) ||
                s > static_cast<S>(std::numeric_limits<T>::max()))
              throw FormatError("'" + path + "': voxel value " + std::to_string(static_cast<double>(s)) +
                                " does not fit the requested integer type");
          } else if constexpr (!std::is_same<S, T>::value) {
            using W = long double;
            if (static_cast<W>(s) < static_cast<W>(std::numeric_limits<T>::lowest()) ||
                static_cast<W>(s) > static_cast<W>(std::numeric_limits<T>::max()))
              throw FormatError("'" + path + "': voxel value " + std::to_string(static_cast<long double>(s)) +
                                " does not fit the requested integer type");
          }
          dst[n] = static_cast<T>(s);
        }
      }
      if constexpr (std::is_same<T, float>::value)
        if (stats) local.merge(value_stats_serial(dst + first, static_cast<std::size_t>(last - first)));
    }
    if (stats) {
      std::lock_guard<std::mutex> lock(stats_mutex);
      stats->merge(local);
    }
  }, 1 << 15);
}

template <class F>
void dispatch(DataType t, F&& f) {
  switch (t) {
    case DataType::UInt8: f(std::uint8_t{}); break;
    case DataType::Int8: f(std::int8_t{}); break;
    case DataType::Int16: f(std::int16_t{}); break;
    case DataType::UInt16: f(std::uint16_t{}); break;
    case DataType::Int32: f(std::int32_t{}); break;
    case DataType::UInt32: f(std::uint32_t{}); break;
    case DataType::Int64: f(std::int64_t{}); break;
    case DataType::UInt64: f(std::uint64_t{}); break;
    case DataType::Float32: f(float{}); break;
    case DataType::Float64: f(double{}); break;
  }
}

void set_metadata(Metadata& m, const NiftiHeader& h, const std::string& path) {
  m.set("source", path);
  m.set("format", h.version == 1 ? "nifti1" : "nifti2");
  m.set("datatype", to_string(h.datatype));
  if (!h.descrip.empty()) m.set("description", h.descrip);
}

// ---------------------------------------------------------------- writing

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<unsigned char> make_header(const Shape3& shape, const Geometry& g, DataType type, const WriteOptions& o) {
  if (o.version != 1 && o.version != 2) throw InvalidArgument("NIfTI version must be 1 or 2");
  if (o.qform_code < 0 || o.qform_code > 5 || o.sform_code < 0 || o.sform_code > 5)
    throw InvalidArgument("qform_code and sform_code must be 0..5");
  if (!std::isfinite(o.scl_slope) || !std::isfinite(o.scl_inter)) throw InvalidArgument("scl_slope/scl_inter must be finite");
  if (o.version == 1)
    for (std::size_t d : shape)
      if (d > 32767) throw InvalidArgument("a dimension exceeds NIfTI-1's 32767 limit; write NIfTI-2 (version=2)");
  const Eigen::Matrix4d& a = g.affine();
  nifti_dmat44 m;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) m.m[r][c] = a(r, c);
  double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
  nifti_dmat44_to_quatern(m, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);

  nifti_image* nim = nifti_simple_init_nim();
  if (!nim) throw ResourceError("nifticlib could not allocate an image header");
  std::unique_ptr<nifti_image, void (*)(nifti_image*)> guard(nim, nifti_image_free);
  nim->ndim = nim->dim[0] = 3;
  nim->nx = nim->dim[1] = static_cast<std::int64_t>(shape[0]);
  nim->ny = nim->dim[2] = static_cast<std::int64_t>(shape[1]);
  nim->nz = nim->dim[3] = static_cast<std::int64_t>(shape[2]);
  for (int i = 4; i < 8; ++i) nim->dim[i] = 1;
  nim->nt = nim->nu = nim->nv = nim->nw = 1;
  nim->nvox = static_cast<std::int64_t>(shape[0] * shape[1] * shape[2]);
  nim->datatype = nifti_code(type);
  int nbyper = 0, swapsize = 0;
  nifti_datatype_sizes(nim->datatype, &nbyper, &swapsize);
  nim->nbyper = nbyper;
  const Eigen::Vector3d sp = g.spacing();
  nim->dx = nim->pixdim[1] = sp[0];
  nim->dy = nim->pixdim[2] = sp[1];
  nim->dz = nim->pixdim[3] = sp[2];
  nim->qform_code = o.qform_code;
  nim->sform_code = o.sform_code;
  nim->quatern_b = qb;
  nim->quatern_c = qc;
  nim->quatern_d = qd;
  nim->qoffset_x = qx;
  nim->qoffset_y = qy;
  nim->qoffset_z = qz;
  nim->qfac = qfac;
  nim->pixdim[0] = qfac;
  nim->qto_xyz = m;
  nim->sto_xyz = m;
  nim->scl_slope = o.scl_slope;
  nim->scl_inter = o.scl_inter;
  nim->xyz_units = NIFTI_UNITS_MM;
  nim->time_units = NIFTI_UNITS_UNKNOWN;
  nim->nifti_type = o.version == 1 ? NIFTI_FTYPE_NIFTI1_1 : NIFTI_FTYPE_NIFTI2_1;
  std::snprintf(nim->descrip, sizeof nim->descrip, "%s", o.descrip.substr(0, 79).c_str());
  std::vector<unsigned char> out;
  if (o.version == 1) {
    nifti_1_header hdr;
    std::memset(&hdr, 0, sizeof hdr);
    if (nifti_convert_nim2n1hdr(nim, &hdr) != 0) throw Error("nifticlib could not build a NIfTI-1 header");
    hdr.vox_offset = 352;
    std::memcpy(hdr.magic, "n+1", 4);
    out.resize(352, 0);
    std::memcpy(out.data(), &hdr, sizeof hdr);
  } else {
    nifti_2_header hdr;
    std::memset(&hdr, 0, sizeof hdr);
    if (nifti_convert_nim2n2hdr(nim, &hdr) != 0) throw Error("nifticlib could not build a NIfTI-2 header");
    hdr.vox_offset = 544;
    static const char magic2[8] = {'n', '+', '2', '\0', '\r', '\n', '\032', '\n'};
    std::memcpy(hdr.magic, magic2, 8);
    out.resize(544, 0);
    std::memcpy(out.data(), &hdr, sizeof hdr);
  }
  return out;  // the 4 bytes after the header: no extensions
}

// One complete gzip member of `src` (n bytes, at most 1 GiB: write_gzip's max_member) with
// ISA-L's igzip at `level` (1..3), into `out`. igzip's fast levels compress 1.7x (CT int16) to 6x (float
// heatmaps) faster than libdeflate's level 1 for files 2-5 % larger. igzip streams: the output
// starts at half the input and grows by half whenever igzip fills it (incompressible data:
// twice), so every write of noise goes through the growth path that tests cover.
void igzip_member(const unsigned char* src, std::size_t n, int level, std::vector<std::uint8_t>& level_buf,
                  std::vector<unsigned char>& out) {
  isal_zstream s;
  isal_deflate_init(&s);
  s.gzip_flag = IGZIP_GZIP;
  s.level = static_cast<std::uint32_t>(level);
  s.level_buf = level_buf.data();
  s.level_buf_size = static_cast<std::uint32_t>(level_buf.size());
  s.end_of_stream = 1;
  s.flush = NO_FLUSH;
  s.next_in = const_cast<std::uint8_t*>(src);  // igzip does not write its input
  s.avail_in = static_cast<std::uint32_t>(n);
  out.resize(n / 2 + 4096);
  std::size_t done = 0;
  for (int idle = 0;;) {
    s.next_out = out.data() + done;
    s.avail_out = static_cast<std::uint32_t>(out.size() - done);
    const std::uint32_t in_before = s.avail_in;
    const int rc = isal_deflate(&s);
    if (rc != COMP_OK) throw Error("gzip compression failed (ISA-L igzip error " + std::to_string(rc) + ")");
    const std::size_t now = out.size() - s.avail_out;
    if (s.internal_state.state == ZSTATE_END) {
      done = now;
      break;
    }
    // a call that neither consumes input nor writes output with room left would loop forever
    idle = now == done && s.avail_in == in_before && s.avail_out > 0 ? idle + 1 : 0;
    if (idle > 2) throw Error("gzip compression failed (ISA-L igzip makes no progress)");
    done = now;
    if (s.avail_out == 0) out.resize(out.size() + out.size() / 2);  // ran out of room: more, and go on
  }
  out.resize(done);
}

// gzip the concatenation of `parts` as independent members compressed in parallel
// (a multi-member gzip file is standard: zlib, Python's gzip and nibabel read it whole).
// Levels 1-3 are igzip's (fast), 0 (stored) and 4-12 libdeflate's.
void write_gzip(AtomicFile& f, const std::vector<std::pair<const unsigned char*, std::size_t>>& parts, int level) {
  if (level < 0 || level > 12) throw InvalidArgument("gzip compression level must be 0..12");
  const bool igzip = level >= 1 && level <= 3;
  // Flatten into member-sized slices.
  std::size_t total = 0;
  for (auto& p : parts) total += p.second;
  const int threads = std::max(1, num_threads());
  const std::size_t min_member = std::size_t(1) << 20;
  const std::size_t max_member = std::size_t(1) << 30;  // igzip counts its input and output in 32 bits
  std::size_t members = std::max<std::size_t>(1, std::min<std::size_t>(static_cast<std::size_t>(threads) * 4, total / min_member));
  members = std::max(members, (total + max_member - 1) / max_member);
  struct Slice {
    std::vector<std::pair<const unsigned char*, std::size_t>> pieces;
  };
  std::vector<Slice> slices(members);
  {
    std::size_t per = (total + members - 1) / members, filled = 0, m = 0;
    for (auto& p : parts) {
      std::size_t off = 0;
      while (off < p.second) {
        std::size_t take = std::min(p.second - off, per - filled);
        slices[m].pieces.push_back({p.first + off, take});
        off += take;
        filled += take;
        if (filled == per && m + 1 < members) {
          ++m;
          filled = 0;
        }
      }
    }
  }
  std::vector<std::vector<unsigned char>> out(members);
  parallel_for(static_cast<std::int64_t>(members), [&](std::int64_t b, std::int64_t e) {
    std::unique_ptr<libdeflate_compressor, void (*)(libdeflate_compressor*)> c(igzip ? nullptr : libdeflate_alloc_compressor(level),
                                                                                libdeflate_free_compressor);
    if (!igzip && !c) throw ResourceError("cannot allocate a gzip compressor");
    static constexpr std::uint32_t level_buf_size[4] = {0, ISAL_DEF_LVL1_DEFAULT, ISAL_DEF_LVL2_DEFAULT, ISAL_DEF_LVL3_DEFAULT};
    std::vector<std::uint8_t> level_buf(igzip ? level_buf_size[level] : 0);
    std::vector<unsigned char> flat;
    for (std::int64_t m = b; m < e; ++m) {
      const unsigned char* src;
      std::size_t n = 0;
      if (slices[m].pieces.size() == 1) {
        src = slices[m].pieces[0].first;
        n = slices[m].pieces[0].second;
      } else {
        flat.clear();
        for (auto& p : slices[m].pieces) flat.insert(flat.end(), p.first, p.first + p.second);
        src = flat.data();
        n = flat.size();
      }
      if (igzip) {
        igzip_member(src, n, level, level_buf, out[m]);
        continue;
      }
      out[m].resize(libdeflate_gzip_compress_bound(c.get(), n));
      std::size_t z = libdeflate_gzip_compress(c.get(), src, n, out[m].data(), out[m].size());
      if (z == 0) throw Error("gzip compression failed");
      out[m].resize(z);
    }
  });
  for (auto& o : out) f.write(o.data(), o.size());
}

}  // namespace

// ---------------------------------------------------------------- public API

bool is_nifti(const std::string& path) {
  try {
    File f(path);
    unsigned char head[kN2Size];
    std::size_t got = f.read_at(head, sizeof head, 0);
    if (is_gzip(head, got)) {
      std::vector<unsigned char> packed(static_cast<std::size_t>(std::min<std::uint64_t>(f.size(), 1 << 16)));
      std::size_t n = f.read_at(packed.data(), packed.size(), 0);
      unsigned char hb[kN2Size];
      got = gunzip_prefix(packed.data(), n, hb, sizeof hb);
      std::memcpy(head, hb, got);
    }
    RawHeader id;
    if (!identify(head, got, id)) return false;
    if (id.version == 1) return got >= kN1Size && (std::memcmp(head + 344, "n+1", 4) == 0 || std::memcmp(head + 344, "ni1", 4) == 0);
    return got >= 12 && (std::memcmp(head + 4, "n+2", 4) == 0 || std::memcmp(head + 4, "ni2", 4) == 0);
  } catch (const Error&) {
    return false;
  }
}

NiftiHeader read_nifti_header(const std::string& path, const ReadOptions& options) {
  return load(path, options, true).header;
}

namespace {

// read_nifti<T>; for T = float with `stats`, the voxels' ValueStats too (see convert).
template <class T>
Volume<T> read_nifti_impl(const std::string& path, const ReadOptions& options, ValueStats* stats) {
  Loaded l = load(path, options, false);
  const NiftiHeader& h = l.header;
  const std::size_t count = h.shape[0] * h.shape[1] * h.shape[2];
  const std::size_t ssize = type_size(h.datatype);
  if (h.swapped) byteswap_block(l.voxels, count, ssize);
  Geometry g(h.affine);
  Volume<T> v;
  if (h.datatype == datatype_of<T>::value && !h.has_scaling &&
      reinterpret_cast<std::uintptr_t>(l.voxels) % alignof(T) == 0) {
    // Zero-copy: the volume keeps the decompressed block alive.
    v = Volume<T>::adopt(std::shared_ptr<T>(l.bytes, reinterpret_cast<T*>(l.voxels)), h.shape, g);
    if constexpr (std::is_same<T, float>::value)
      if (stats) *stats = value_stats(v.data(), count);
  } else {
    v = Volume<T>::uninitialized(h.shape, g);
    if (stats) *stats = ValueStats{};
    dispatch(h.datatype, [&](auto s) { convert<T, decltype(s)>(l.voxels, v.data(), count, h, path, stats); });
  }
  set_metadata(v.metadata(), h, path);
  return v;
}

}  // namespace

template <class T>
Volume<T> read_nifti(const std::string& path, const ReadOptions& options) {
  return read_nifti_impl<T>(path, options, nullptr);
}

Volume<float> read_nifti(const std::string& path, const ReadOptions& options, ValueStats& stats) {
  return read_nifti_impl<float>(path, options, &stats);
}

AnyVolume read_nifti_raw(const std::string& path, NiftiHeader* header, const ReadOptions& options) {
  Loaded l = load(path, options, false);
  NiftiHeader h = l.header;
  const std::size_t count = h.shape[0] * h.shape[1] * h.shape[2];
  if (h.swapped) byteswap_block(l.voxels, count, type_size(h.datatype));
  Geometry g(h.affine);
  AnyVolume out;
  dispatch(h.datatype, [&](auto s) {
    using S = decltype(s);
    Volume<S> v;
    if (reinterpret_cast<std::uintptr_t>(l.voxels) % alignof(S) == 0) {
      v = Volume<S>::adopt(std::shared_ptr<S>(l.bytes, reinterpret_cast<S*>(l.voxels)), h.shape, g);
    } else {
      v = Volume<S>::uninitialized(h.shape, g);
      std::memcpy(v.data(), l.voxels, count * sizeof(S));
    }
    set_metadata(v.metadata(), h, path);
    out = v;
  });
  if (header) *header = h;
  return out;
}

template <class T>
void write_nifti(const Volume<T>& volume, const std::string& path, const WriteOptions& options) {
  if (volume.empty()) throw InvalidArgument("cannot write an empty volume to '" + path + "'");
  if (!(ends_with(path, ".nii") || ends_with(path, ".nii.gz")))
    throw InvalidArgument("'" + path + "': NIfTI file names end in .nii or .nii.gz");
  std::vector<unsigned char> header = make_header(volume.shape(), volume.geometry(), datatype_of<T>::value, options);
  const auto* data = reinterpret_cast<const unsigned char*>(volume.data());
  const std::size_t nbytes = volume.size() * sizeof(T);
  AtomicFile f(path);
  if (ends_with(path, ".gz")) {
    write_gzip(f, {{header.data(), header.size()}, {data, nbytes}}, options.compression_level);
  } else {
    f.write(header.data(), header.size());
    f.write(data, nbytes);
  }
  f.commit();
}

void write_nifti(const AnyVolume& volume, const std::string& path, const WriteOptions& options) {
  std::visit([&](const auto& v) { write_nifti(v, path, options); }, volume);
}

#define ICHKIT_INSTANTIATE(T)                                                        \
  template Volume<T> read_nifti<T>(const std::string&, const ReadOptions&);         \
  template void write_nifti<T>(const Volume<T>&, const std::string&, const WriteOptions&);
ICHKIT_INSTANTIATE(std::uint8_t)
ICHKIT_INSTANTIATE(std::int8_t)
ICHKIT_INSTANTIATE(std::int16_t)
ICHKIT_INSTANTIATE(std::uint16_t)
ICHKIT_INSTANTIATE(std::int32_t)
ICHKIT_INSTANTIATE(std::uint32_t)
ICHKIT_INSTANTIATE(std::int64_t)
ICHKIT_INSTANTIATE(std::uint64_t)
ICHKIT_INSTANTIATE(float)
ICHKIT_INSTANTIATE(double)
#undef ICHKIT_INSTANTIATE

}  // namespace ichkit::io
