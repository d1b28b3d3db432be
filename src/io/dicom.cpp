// DICOM CT series reader on GDCM. Headers are read with gdcm::Reader up to the pixel data
// (folder scans never decode pixels); pixels are decoded by gdcm::ImageReader. Geometry is
// computed here, in double precision, from ImagePositionPatient / ImageOrientationPatient /
// PixelSpacing, never from InstanceNumber or file names.
#include "ichkit/io/dicom.h"

#include <gdcmDataSet.h>
#include <gdcmExplicitDataElement.h>
#include <gdcmImplicitDataElement.h>
#include <gdcmFile.h>
#include <gdcmImage.h>
#include <gdcmImageReader.h>
#include <gdcmReader.h>
#include <gdcmSequenceOfItems.h>
#include <gdcmStringFilter.h>
#include <gdcmTag.h>
#include <gdcmTrace.h>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>

#include "ichkit/core/error.h"
#include "ichkit/core/threading.h"
#include "ichkit/core/value_stats.h"
#include "text.h"

namespace fs = std::filesystem;

namespace ichkit::io {

const char* to_string(SeriesKind k) {
  switch (k) {
    case SeriesKind::AxialCT: return "axial_ct";
    case SeriesKind::Localizer: return "localizer";
    case SeriesKind::SecondaryCapture: return "secondary_capture";
    case SeriesKind::Other: return "other";
  }
  return "other";
}

namespace {

using Vec3 = Eigen::Vector3d;

void quiet_gdcm() {
  static std::once_flag once;
  std::call_once(once, [] {
    gdcm::Trace::SetWarning(false);
    gdcm::Trace::SetDebug(false);
    gdcm::Trace::SetError(false);
  });
}

// Tags used.
const gdcm::Tag kSopClass(0x0008, 0x0016), kSopInstance(0x0008, 0x0018), kModality(0x0008, 0x0060),
    kImageType(0x0008, 0x0008), kSeriesDescription(0x0008, 0x103e), kKernel(0x0018, 0x1210),
    kSliceThickness(0x0018, 0x0050), kStudyUid(0x0020, 0x000d), kSeriesUid(0x0020, 0x000e),
    kInstanceNumber(0x0020, 0x0013), kIpp(0x0020, 0x0032), kIop(0x0020, 0x0037), kSamples(0x0028, 0x0002),
    kFrames(0x0028, 0x0008), kRows(0x0028, 0x0010), kColumns(0x0028, 0x0011), kPixelSpacing(0x0028, 0x0030),
    kBitsAllocated(0x0028, 0x0100), kBitsStored(0x0028, 0x0101), kPixelRepresentation(0x0028, 0x0103),
    kPadding(0x0028, 0x0120), kPaddingRange(0x0028, 0x0121), kIntercept(0x0028, 0x1052), kSlope(0x0028, 0x1053),
    kPixelData(0x7fe0, 0x0010), kSharedGroups(0x5200, 0x9229), kPerFrameGroups(0x5200, 0x9230),
    kPlanePosition(0x0020, 0x9113), kPlaneOrientation(0x0020, 0x9116), kPixelMeasures(0x0028, 0x9110),
    kPixelValueTransform(0x0028, 0x9145);

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  std::size_t b = 0;
  while (b < s.size() && s[b] == ' ') ++b;
  return s.substr(b);
}

// Parse a backslash-separated list of decimal strings; returns false on any bad number.
bool parse_numbers(const std::string& s, std::vector<double>& out) {
  out.clear();
  if (trim(s).empty()) return false;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, '\\')) {
    item = trim(item);
    if (item.empty()) return false;
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(item.c_str(), &end);
    if (end == item.c_str() || *end != '\0' || errno == ERANGE || !std::isfinite(v)) return false;
    out.push_back(v);
  }
  return true;
}

// Header values of one file (and, for multi-frame files, per-frame geometry).
struct FrameGeometry {
  std::optional<Vec3> ipp;
  std::optional<std::array<double, 6>> iop;
  std::optional<std::array<double, 2>> spacing;
  std::optional<double> slope, intercept;
};

struct FileHeader {
  std::string path, sop_class, sop_instance, modality, image_type, description, kernel, study_uid, series_uid,
      transfer_syntax;
  bool has_pixels = false;
  long instance = 0;
  std::size_t rows = 0, columns = 0, frames = 1, samples = 1, bits_allocated = 0, bits_stored = 0;
  int pixel_representation = 0;
  std::optional<double> padding, padding_range;
  std::optional<double> thickness;
  FrameGeometry shared;               // top level or shared functional groups
  std::vector<FrameGeometry> per_frame;  // enhanced multi-frame
  std::string problem;                // why geometry/format values are unusable ("" = fine)
  bool preamble = false;              // 128-byte preamble + "DICM" (seen by the scan)
};

class Strings {
public:
  explicit Strings(const gdcm::File& f) { sf_.SetFile(f); }
  std::string get(const gdcm::DataSet& ds, const gdcm::Tag& t) const {
    if (!ds.FindDataElement(t)) return {};
    const gdcm::DataElement& de = ds.GetDataElement(t);
    if (de.IsEmpty()) return {};
    return trim(sf_.ToString(de));
  }

private:
  gdcm::StringFilter sf_;
};

const gdcm::DataSet* first_item(const gdcm::DataSet& ds, const gdcm::Tag& seq, std::size_t index = 1) {
  if (!ds.FindDataElement(seq)) return nullptr;
  gdcm::SmartPointer<gdcm::SequenceOfItems> sq = ds.GetDataElement(seq).GetValueAsSQ();
  if (!sq || sq->GetNumberOfItems() < index) return nullptr;
  return &sq->GetItem(index).GetNestedDataSet();
}

void read_geometry(const Strings& s, const gdcm::DataSet& ds, FrameGeometry& g, std::string& problem) {
  std::vector<double> v;
  std::string t = s.get(ds, kIpp);
  if (!t.empty()) {
    if (parse_numbers(t, v) && v.size() == 3) g.ipp = Vec3(v[0], v[1], v[2]);
    else problem = "ImagePositionPatient '" + t + "' is not 3 numbers";
  }
  t = s.get(ds, kIop);
  if (!t.empty()) {
    if (parse_numbers(t, v) && v.size() == 6) g.iop = std::array<double, 6>{v[0], v[1], v[2], v[3], v[4], v[5]};
    else problem = "ImageOrientationPatient '" + t + "' is not 6 numbers";
  }
  t = s.get(ds, kPixelSpacing);
  if (!t.empty()) {
    if (parse_numbers(t, v) && v.size() == 2) g.spacing = std::array<double, 2>{v[0], v[1]};
    else problem = "PixelSpacing '" + t + "' is not 2 numbers";
  }
  t = s.get(ds, kSlope);
  if (!t.empty()) {
    if (parse_numbers(t, v) && v.size() == 1) g.slope = v[0];
    else problem = "RescaleSlope '" + t + "' is not a number";
  }
  t = s.get(ds, kIntercept);
  if (!t.empty()) {
    if (parse_numbers(t, v) && v.size() == 1) g.intercept = v[0];
    else problem = "RescaleIntercept '" + t + "' is not a number";
  }
}

// Functional-group geometry of an enhanced multi-frame item.
void read_group(const Strings& s, const gdcm::DataSet& item, FrameGeometry& g, std::string& problem) {
  if (const gdcm::DataSet* p = first_item(item, kPlanePosition)) read_geometry(s, *p, g, problem);
  if (const gdcm::DataSet* p = first_item(item, kPlaneOrientation)) read_geometry(s, *p, g, problem);
  if (const gdcm::DataSet* p = first_item(item, kPixelMeasures)) read_geometry(s, *p, g, problem);
  if (const gdcm::DataSet* p = first_item(item, kPixelValueTransform)) read_geometry(s, *p, g, problem);
}

long to_long(const std::string& s, long fallback = 0) {
  std::vector<double> v;
  if (parse_numbers(s, v) && v.size() >= 1 && std::abs(v[0]) < 1e15) return static_cast<long>(v[0]);
  return fallback;
}

// `preamble` tells whether the file starts with the 128-byte preamble and "DICM".
bool looks_like_dicom(const std::string& path, bool& preamble) {
  preamble = false;
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  char b[132] = {};
  f.read(b, sizeof b);
  const std::streamsize n = f.gcount();
  if (n >= 132 && std::memcmp(b + 128, "DICM", 4) == 0) return preamble = true;
  // No preamble: an implicit/explicit little-endian dataset starting with group 0x0008 or 0x0002.
  if (n >= 8) {
    const unsigned g = static_cast<unsigned char>(b[0]) | (static_cast<unsigned char>(b[1]) << 8);
    return g == 0x0008 || g == 0x0002;
  }
  return false;
}

// Random-access reads of a file through a 64 KiB window refilled with pread: the length walk
// below reads a few bytes per element and skips values, which through std::ifstream cost a
// seek (lseek + discarded buffer + refill) per element - most of a series read on a VM where
// system calls are dear. Here a header's elements come from one or two preads.
class FileWindow {
public:
  explicit FileWindow(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~FileWindow() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileWindow(const FileWindow&) = delete;
  FileWindow& operator=(const FileWindow&) = delete;
  bool ok() const { return fd_ >= 0; }
  /// The n bytes at `pos` into `out`; false when the file holds fewer or cannot be read.
  bool read_at(std::uint64_t pos, std::uint8_t* out, std::size_t n) {
    if (pos < start_ || pos + n > start_ + len_) {
      if (n > buf_.size()) return pread_all(pos, out, n) == n;
      len_ = pread_all(pos, buf_.data(), buf_.size());
      start_ = pos;
      if (len_ < n) return false;
    }
    std::memcpy(out, buf_.data() + (pos - start_), n);
    return true;
  }

private:
  std::size_t pread_all(std::uint64_t pos, std::uint8_t* out, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
      const ssize_t r = ::pread(fd_, out + got, n - got, static_cast<off_t>(pos + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += static_cast<std::size_t>(r);
    }
    return got;
  }
  int fd_;
  std::vector<std::uint8_t> buf_ = std::vector<std::uint8_t>(std::size_t(64) << 10);
  std::uint64_t start_ = 0;
  std::size_t len_ = 0;
};

// GDCM allocates a data element's declared length before it reads the value, so a 200-byte
// file that declares a 2 GB element costs 2 GB of memory (found by tests/fuzz/fuzz_dicom).
// LengthCheck walks the element headers first, seeking over values, and finds lengths that
// exceed the bytes left in the file (or in their enclosing sequence/item), nesting deeper
// than 32 levels, and structure that GDCM reads only through its recovery paths for broken
// files (invalid VRs, missing item tags, headers cut short), where it asserts (aborting the
// process) or allocates lengths unchecked. Such files get a FormatError. Deflated datasets
// are not walked (GDCM inflates them first).
class LengthCheck {
public:
  /// `header_only`: stop at the pixel data, as the header scan (gdcm::Reader::ReadUpToTag) does.
  LengthCheck(const std::string& path, bool preamble, bool header_only) : f_(path), header_only_(header_only) {
    std::error_code ec;
    size_ = std::filesystem::file_size(path, ec);
    if (ec || !f_.ok()) {
      stop_ = true;
      return;
    }
    pos_ = preamble ? 132 : 0;
    std::uint8_t b[6];
    // a dataset without the preamble: explicit VR when bytes 4-5 look like a VR
    if (!preamble && peek(b, 6)) explicit_ = std::isupper(b[4]) && std::isupper(b[5]);
    // after the preamble GDCM insists on (0002,0000) UL and otherwise falls back to recovery
    // paths that assert on bad input
    if (preamble && (!peek(b, 6) || std::memcmp(b, "\x02\x00\x00\x00UL", 6) != 0))
      bad("the file meta information does not start with its group length (0002,0000) UL");
  }
  /// Empty when nothing implausible was found.
  std::string problem() {
    if (!stop_ && dataset(size_, 0, false) && meta_ && pos_ > 0)  // GDCM asserts on a file that ends after its meta group
      return "the file ends after its meta information: it holds no dataset";
    return problem_;
  }

private:
  static constexpr std::uint32_t kUndefined = 0xFFFFFFFFu;
  FileWindow f_;
  std::uint64_t size_ = 0, pos_ = 0;
  bool header_only_ = false, meta_ = true, first_ = true, explicit_ = true, big_ = false, stop_ = false;
  std::string problem_;

  bool peek(std::uint8_t* b, std::size_t n) {
    return size_ - pos_ >= n && f_.read_at(pos_, b, n);
  }
  bool take(std::uint8_t* b, std::size_t n) {
    // GDCM asserts (aborts the process) on a file that ends inside an element's header
    if (size_ - pos_ < n) return bad("the file ends inside a data element header (at byte " + std::to_string(pos_) + ")");
    if (!f_.read_at(pos_, b, n)) return bad("cannot read the file");
    pos_ += n;
    return true;
  }
  bool skip(std::uint64_t n) {
    pos_ += n;
    return true;
  }
  bool stop() {  // nothing more to check here
    stop_ = true;
    return false;
  }
  // Structure GDCM would only read through its recovery paths for broken files, which are
  // where it asserts and allocates declared lengths unchecked: refused.
  bool malformed(const std::string& what) {
    return bad("malformed data elements (" + what + " at byte " + std::to_string(pos_) + ")");
  }
  bool bad(const std::string& what) {
    problem_ = what;
    stop_ = true;
    return false;
  }
  // GDCM's image reader takes a non-empty Recognition Code (0008,0010), retired since ACR-NEMA,
  // as the mark of an ACR-NEMA file and asserts (aborts) unless its value starts "ACR-NEMA",
  // "ACRNEMA" or "MIPS 2.0"; stored as a sequence it dereferences a null value (found by
  // tests/fuzz/fuzz_dicom_folder).
  bool recognition_code(bool sq, std::uint32_t len) {
    if (sq || len == kUndefined) return bad("the Recognition Code (0008,0010) is stored as a sequence");
    if (len == 0 || len > size_ - pos_) return true;  // empty (GDCM skips it), or too long (refused below)
    char v[8] = {};
    const std::size_t n = std::min<std::size_t>(len, sizeof v);
    if (!f_.read_at(pos_, reinterpret_cast<std::uint8_t*>(v), n)) return bad("cannot read the file");
    const std::string got(v, n);
    if (got.rfind("ACR-NEMA", 0) == 0 || got.rfind("ACRNEMA", 0) == 0 || got.rfind("MIPS 2.0", 0) == 0) return true;
    return bad("the Recognition Code (0008,0010) is '" + detail::fixed_string(v, n) +
               "'; GDCM's image reader accepts only one that starts ACR-NEMA, ACRNEMA or MIPS 2.0");
  }
  // A delimiter's length is 0 (PS3.5 7.5). GDCM allocates and reads whatever a pixel data
  // sequence delimiter declares (found by tests/fuzz/fuzz_dicom: 3.4 GB in a 2 kB file).
  bool delimiter_length(std::uint32_t len, const std::string& of) {
    if (len == 0) return true;
    return bad("the delimiter of " + of + " declares " + std::to_string(len) + " bytes; a delimiter has none");
  }
  std::uint16_t u16(const std::uint8_t* b, bool big) const { return big ? std::uint16_t(b[0] << 8 | b[1]) : std::uint16_t(b[1] << 8 | b[0]); }
  std::uint32_t u32(const std::uint8_t* b, bool big) const {
    return big ? std::uint32_t(b[0]) << 24 | std::uint32_t(b[1]) << 16 | std::uint32_t(b[2]) << 8 | b[3]
               : std::uint32_t(b[3]) << 24 | std::uint32_t(b[2]) << 16 | std::uint32_t(b[1]) << 8 | b[0];
  }
  static std::string hex(unsigned v) {
    char t[8];
    std::snprintf(t, sizeof t, "%04X", v & 0xFFFFu);
    return t;
  }
  // Reads a tag; handles the switch from the meta group (explicit little endian) to the
  // dataset's transfer syntax.
  bool tag(unsigned& g, unsigned& e, bool& ex, bool& big) {
    std::uint8_t b[4];
    if (!take(b, 4)) return false;
    if (meta_ && u16(b, false) != 0x0002) {
      meta_ = false;
      if (ts_ == "1.2.840.10008.1.2.1.99") return stop();  // deflated: GDCM inflates, nothing to walk here
      if (ts_ == "1.2.840.10008.1.2") explicit_ = false;
      if (ts_ == "1.2.840.10008.1.2.2") big_ = true;
    }
    ex = meta_ || explicit_;
    big = !meta_ && big_;
    g = u16(b, big);
    e = u16(b + 2, big);
    return true;
  }
  std::string ts_;

  // Elements until `end`, or until an item delimiter when `in_item` is set.
  bool dataset(std::uint64_t end, int depth, bool in_item) {
    if (depth > 32) return bad("data elements nested more than 32 sequences deep");
    while (pos_ < end) {
      unsigned g, e;
      bool ex, big;
      if (!tag(g, e, ex, big)) return false;
      std::uint8_t b[4];
      if (g == 0xFFFE) {  // delimiters (length 0) end an undefined-length item
        if (!take(b, 4)) return false;
        if (e == 0xE00D && in_item) return delimiter_length(u32(b, big), "an item");
        return malformed("a delimiter outside an item");
      }
      bool sq = false, may_nest = !ex;
      std::uint32_t len;
      if (ex) {
        std::uint8_t vr[2];
        if (!take(vr, 2)) return false;
        // GDCM reads an element with an invalid VR one way or another (as a 32-bit length,
        // or as implicit VR) and allocates that length: such a file is refused outright
        // (OV, SV and UV, from 2019, are unknown to GDCM 3.0 and read through the same paths)
        static const std::set<std::string> vrs{"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
                                               "LT", "OB", "OD", "OF", "OL", "OW", "PN", "SH", "SL", "SQ", "SS",
                                               "ST", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT"};
        const std::string v(reinterpret_cast<char*>(vr), 2);
        if (!vrs.count(v)) return bad("data element (" + hex(g) + "," + hex(e) + ") has an invalid VR");
        // GDCM reads a meta group that does not open with its group length (0002,0000) UL
        // through a recovery path that asserts on bad input
        if (meta_ && first_ && (e != 0x0000 || v != "UL"))
          return bad("the file meta information does not start with its group length (0002,0000) UL");
        first_ = false;
        static const std::set<std::string> short_vrs{"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO",
                                                     "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"};
        if (!short_vrs.count(v)) {  // the 32-bit form: OB, OW, SQ, UN, UT, ... and VRs unknown to this table
          if (!take(b, 2) || !take(b, 4)) return false;
          len = u32(b, big);
        } else {
          if (!take(b, 2)) return false;
          len = u16(b, big);
        }
        sq = v == "SQ";
        // GDCM asserts (aborts) on pixel data stored as a sequence (found by tests/fuzz/fuzz_dicom)
        if (sq && g == 0x7FE0 && e == 0x0010) return bad("Pixel Data (7FE0,0010) is stored as a sequence (VR SQ)");
        // GDCM's image reader converts some attributes with gdcm::Attribute, whose
        // SetFromDataElement asserts (aborts) on another VR: every instance in libgdcmMSFF 3.0
        // (geometry, also inside the functional-group sequences, overlays, segments, surfaces),
        // at any depth, where GDCM's own rule (VR::Compatible) also lets UN through; and the
        // image pixel attributes of group 0028 in the dataset itself, which must have exactly
        // their VR (a US value 2 bytes).
        if (!meta_) {
          struct Want {
            const char* vr;
            bool pixel;  // group 0028, top level only, exactly this VR
          };
          static const std::map<std::uint32_t, Want> attribute_vrs{
              {0x00280002, {"US", true}},  {0x00280004, {"CS", true}},  {0x00280006, {"US", true}},
              {0x00280008, {"IS", true}},  {0x00280010, {"US", true}},  {0x00280011, {"US", true}},
              {0x00280030, {"DS", true}},  {0x00280100, {"US", true}},  {0x00280101, {"US", true}},
              {0x00280102, {"US", true}},  {0x00280103, {"US", true}},  {0x00281052, {"DS", true}},
              {0x00281053, {"DS", true}},  {0x00281054, {"LO", true}},  {0x00200020, {"CS", false}},
              {0x00200030, {"DS", false}}, {0x00200032, {"DS", false}}, {0x00200035, {"DS", false}},
              {0x00200037, {"DS", false}}, {0x00181310, {"US", false}}, {0x0062000D, {"US", false}},
              {0x00660017, {"FL", false}}, {0x0066001A, {"FL", false}}, {0x0066001B, {"FL", false}},
              {0x0066001C, {"FL", false}}, {0x60000050, {"SS", false}}};  // overlay origin, groups 6000-601E
          const bool overlay = g >= 0x6000 && g <= 0x601E && g % 2 == 0;  // a repeating group
          const auto want = attribute_vrs.find(std::uint32_t(overlay ? 0x6000 : g) << 16 | e);
          if (want != attribute_vrs.end() && want->second.pixel && depth == 0) {
            const std::string need = want->second.vr;
            if (v != need || (v == "US" && len != 2))
              return bad("image attribute (0028," + hex(e) + ") has VR " + v + " and " + std::to_string(len) +
                         " bytes; it must be " + need + (need == "US" ? " of 2 bytes" : ""));
          } else if (want != attribute_vrs.end() && !want->second.pixel && v != want->second.vr && v != "UN") {
            return bad("data element (" + hex(g) + "," + hex(e) + ") has VR " + v + "; GDCM's image reader needs " +
                       want->second.vr);
          }
        }
        may_nest = sq || v == "UN" || v == "OB" || v == "OW";
      } else {
        if (!take(b, 4)) return false;
        len = u32(b, big);
      }
      if (meta_ && (sq || len == kUndefined))  // GDCM asserts on these in the file meta group
        return bad("file meta element (" + hex(g) + "," + hex(e) + ") is a sequence or has an undefined length");
      if (header_only_ && depth == 0 && g == 0x7FE0 && e == 0x0010) return stop();
      const std::string name = "(" + hex(g) + "," + hex(e) + ")";
      if (!meta_ && depth == 0 && g == 0x0008 && e == 0x0010 && !recognition_code(sq, len)) return false;
      if (pos_ > end) return bad("data element " + name + " crosses the end of the item that holds it");
      if (len == kUndefined) {
        if (!may_nest) return malformed("an undefined length on an element that cannot hold items");
        if (!sequence(end, depth + 1, name, true)) return false;
        continue;
      }
      if (pos_ > end) return bad("data element " + name + " crosses the end of the item that holds it");
      if (len > end - pos_)
        return bad("data element " + name + " declares " + std::to_string(len) + " bytes, but only " +
                   std::to_string(end - pos_) + " remain");
      if (g == 0x0002 && e == 0x0010 && meta_ && len < 256) {  // the transfer syntax
        std::string t(len, '\0');
        if (!take(reinterpret_cast<std::uint8_t*>(&t[0]), len)) return false;
        while (!t.empty() && (t.back() == '\0' || t.back() == ' ')) t.pop_back();
        ts_ = t;
        continue;
      }
      // a sequence: SQ, or (implicit VR, UN) a value that starts with an item tag
      std::uint8_t it[4];
      if (!sq && may_nest && len >= 8 && peek(it, 4) && u16(it, big) == 0xFFFE && u16(it + 2, big) == 0xE000) sq = true;
      if (sq) {
        if (!sequence(pos_ + len, depth + 1, name, false)) return false;
        continue;
      }
      skip(len);
    }
    // GDCM reads an undefined-length item until its delimiter and asserts (aborts) when the
    // data ends first (found by tests/fuzz/fuzz_dicom_folder)
    if (in_item) return malformed("an item of undefined length that ends without its item delimiter");
    return true;
  }

  // Items until a sequence delimiter (undefined length) or `end`.
  bool sequence(std::uint64_t end, int depth, const std::string& name, bool undefined) {
    if (depth > 32) return bad("data elements nested more than 32 sequences deep");
    while (pos_ < end) {
      unsigned g, e;
      bool ex, big;
      if (!tag(g, e, ex, big)) return false;
      std::uint8_t b[4];
      if (!take(b, 4)) return false;
      const std::uint32_t len = u32(b, big);
      if (g != 0xFFFE) return malformed("a sequence item without an item tag");
      if (e == 0xE0DD) return delimiter_length(len, "the sequence " + name);
      if (e != 0xE000) return malformed("a sequence item without an item tag");
      if (pos_ > end) return bad("an item of " + name + " crosses the end of its sequence");
      if (len == kUndefined) {
        if (!dataset(end, depth + 1, true)) return false;
        continue;
      }
      if (pos_ > end) return bad("an item of " + name + " crosses the end of its sequence");
      if (len > end - pos_)
        return bad("an item of " + name + " declares " + std::to_string(len) + " bytes, but only " + std::to_string(end - pos_) +
                   " remain");
      if (name == "(7FE0,0010)") {
        skip(len);  // an encapsulated pixel data fragment
      } else if (!dataset(pos_ + len, depth + 1, false)) {
        return false;
      }
    }
    // likewise a sequence of undefined length (GDCM asserts on fragments without their delimiter)
    if (undefined) return malformed("the sequence " + name + " of undefined length ends without its delimiter");
    return true;
  }
};

// Read one file's header (no pixel data). Returns false if it is not DICOM at all.
bool read_header(const std::string& path, FileHeader& h) {
  quiet_gdcm();
  if (!looks_like_dicom(path, h.preamble)) return false;
  const std::string problem = LengthCheck(path, h.preamble, true).problem();
  if (!problem.empty()) throw FormatError("'" + path + "': " + problem + " (a corrupt or hostile DICOM file)");
  gdcm::Reader reader;
  reader.SetFileName(path.c_str());
  std::set<gdcm::Tag> skip{kPixelData};
  if (!reader.ReadUpToTag(kPixelData, skip)) return false;
  const gdcm::File& file = reader.GetFile();
  const gdcm::DataSet& ds = file.GetDataSet();
  Strings s(file);
  h.path = path;
  h.transfer_syntax = trim(file.GetHeader().GetDataSetTransferSyntax().GetString() ? file.GetHeader().GetDataSetTransferSyntax().GetString() : "");
  h.sop_class = s.get(ds, kSopClass);
  h.sop_instance = s.get(ds, kSopInstance);
  h.modality = s.get(ds, kModality);
  h.image_type = s.get(ds, kImageType);
  h.description = s.get(ds, kSeriesDescription);
  h.kernel = s.get(ds, kKernel);
  h.study_uid = s.get(ds, kStudyUid);
  h.series_uid = s.get(ds, kSeriesUid);
  h.instance = to_long(s.get(ds, kInstanceNumber));
  h.rows = static_cast<std::size_t>(std::max(0L, to_long(s.get(ds, kRows))));
  h.columns = static_cast<std::size_t>(std::max(0L, to_long(s.get(ds, kColumns))));
  h.frames = static_cast<std::size_t>(std::max(1L, to_long(s.get(ds, kFrames), 1)));
  h.samples = static_cast<std::size_t>(to_long(s.get(ds, kSamples), 1));  // 0 or negative: refused before decoding
  h.bits_allocated = static_cast<std::size_t>(std::max(0L, to_long(s.get(ds, kBitsAllocated))));
  h.bits_stored = static_cast<std::size_t>(std::max(0L, to_long(s.get(ds, kBitsStored), static_cast<long>(h.bits_allocated))));
  h.pixel_representation = static_cast<int>(to_long(s.get(ds, kPixelRepresentation)));
  std::vector<double> v;
  if (parse_numbers(s.get(ds, kPadding), v) && v.size() == 1) h.padding = v[0];
  if (parse_numbers(s.get(ds, kPaddingRange), v) && v.size() == 1) h.padding_range = v[0];
  if (parse_numbers(s.get(ds, kSliceThickness), v) && v.size() == 1) h.thickness = v[0];
  // Pixel data present? ReadUpToTag stops before it; look for the tag in the file's tail.
  h.has_pixels = ds.FindDataElement(kPixelData) || (h.rows > 0 && h.columns > 0 && h.bits_allocated > 0);
  read_geometry(s, ds, h.shared, h.problem);
  if (const gdcm::DataSet* shared = first_item(ds, kSharedGroups)) read_group(s, *shared, h.shared, h.problem);
  if (ds.FindDataElement(kPerFrameGroups)) {
    gdcm::SmartPointer<gdcm::SequenceOfItems> sq = ds.GetDataElement(kPerFrameGroups).GetValueAsSQ();
    if (sq) {
      for (gdcm::SequenceOfItems::SizeType i = 1; i <= sq->GetNumberOfItems(); ++i) {
        FrameGeometry g;
        read_group(s, sq->GetItem(i).GetNestedDataSet(), g, h.problem);
        h.per_frame.push_back(g);
      }
    }
  }
  return true;
}

FrameGeometry frame_geometry(const FileHeader& h, std::size_t frame) {
  FrameGeometry g = h.shared;
  if (frame < h.per_frame.size()) {
    const FrameGeometry& p = h.per_frame[frame];
    if (p.ipp) g.ipp = p.ipp;
    if (p.iop) g.iop = p.iop;
    if (p.spacing) g.spacing = p.spacing;
    if (p.slope) g.slope = p.slope;
    if (p.intercept) g.intercept = p.intercept;
  }
  return g;
}

Vec3 normal_of(const std::array<double, 6>& iop) {
  Vec3 r(iop[0], iop[1], iop[2]), c(iop[3], iop[4], iop[5]);
  Vec3 n = r.cross(c);
  return n.norm() > 0 ? Vec3(n / n.norm()) : n;
}

std::string orientation_name(const std::array<double, 6>& iop) {
  Vec3 n = normal_of(iop).cwiseAbs();
  int a = 0;
  n.maxCoeff(&a);
  if (n[a] < 0.8) return "oblique";
  return a == 2 ? "axial" : a == 1 ? "coronal" : "sagittal";
}

bool same_orientation(const std::array<double, 6>& a, const std::array<double, 6>& b, double tol) {
  for (int i = 0; i < 6; ++i)
    if (std::abs(a[i] - b[i]) > tol) return false;
  return true;
}

bool is_localizer(const FileHeader& h) {
  std::string t = h.image_type;
  std::transform(t.begin(), t.end(), t.begin(), ::toupper);
  return t.find("LOCALIZER") != std::string::npos || t.find("SCOUT") != std::string::npos ||
         t.find("TOPOGRAM") != std::string::npos;
}

bool is_secondary_capture(const std::string& sop) { return sop.rfind("1.2.840.10008.5.1.4.1.1.7", 0) == 0; }

// Soft-tissue vs sharp kernel names of the common vendors.
int kernel_score(std::string k) {
  std::transform(k.begin(), k.end(), k.begin(), ::toupper);
  for (const char* sharp : {"BONE", "LUNG", "SHARP", "EDGE", "DETAIL", "H60", "H70", "H80", "B60", "B70", "B80", "FC30",
                            "FC81", "YC", "YD", "BR6", "BR7", "HR6", "HR7", "J70"})
    if (k.find(sharp) != std::string::npos) return -1;
  for (const char* soft : {"SOFT", "STANDARD", "STND", "STD", "BRAIN", "HEAD", "H30", "H31", "H40", "B30", "B31", "J30",
                           "J40", "BR3", "BR4", "HR3", "HR4", "FC2", "UA", "UB", "FC6", "SMOOTH"})
    if (k.find(soft) != std::string::npos) return 1;
  return 0;
}

std::vector<std::string> collect_files(const std::string& root, const ScanOptions& o) {
  std::vector<std::string> files;
  std::error_code ec;
  fs::file_status st = fs::symlink_status(root, ec);
  if (ec || !fs::exists(st)) throw IoError("cannot open '" + root + "': no such file or folder");
  if (fs::is_regular_file(st) || (fs::is_symlink(st) && fs::is_regular_file(fs::status(root, ec)))) {
    files.push_back(root);
    return files;
  }
  if (!fs::is_directory(fs::status(root, ec))) throw IoError("'" + root + "' is neither a file nor a folder");
  const fs::path canonical_root = fs::weakly_canonical(root, ec);
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec), end;
  if (ec) throw IoError("cannot list '" + root + "': " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw IoError("cannot list '" + root + "': " + ec.message());
    const fs::directory_entry& e = *it;
    fs::file_status ls = e.symlink_status(ec);
    if (fs::is_symlink(ls)) {
      if (!o.follow_symlinks) continue;
      // Follow only links that stay inside the folder.
      fs::path target = fs::weakly_canonical(e.path(), ec);
      const std::string t = target.string(), r = canonical_root.string();
      if (ec || t.compare(0, r.size(), r) != 0 || !fs::is_regular_file(fs::status(target, ec))) continue;
    } else if (!fs::is_regular_file(ls)) {
      continue;
    }
    files.push_back(e.path().string());
    if (files.size() > o.max_files)
      throw ResourceError("'" + root + "' holds more than " + std::to_string(o.max_files) +
                          " files; raise ScanOptions::max_files to scan it");
  }
  std::sort(files.begin(), files.end());
  return files;
}

struct Scan {
  std::vector<FileHeader> headers;  // DICOM image files
  std::size_t skipped = 0;          // not DICOM, or DICOM without pixels
  std::vector<std::string> warnings;
  std::string first_corrupt;  // why the first corrupt file (in path order) was refused
};

Scan scan(const std::string& root, const ScanOptions& o) {
  std::vector<std::string> files = collect_files(root, o);
  std::vector<FileHeader> headers(files.size());
  std::vector<char> ok(files.size(), 0);
  std::vector<std::string> errors(files.size());
  parallel_for(static_cast<std::int64_t>(files.size()), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t n = b; n < e; ++n) {
      try {
        ok[n] = read_header(files[n], headers[n]) ? 1 : 0;
      } catch (const std::exception& e) {
        ok[n] = 2;  // DICOM, but corrupt (e.g. a length past the end of the file)
        errors[n] = e.what();
      }
    }
  }, 8);
  // one file asked for by name: its own error, not "no series"
  if (files.size() == 1 && ok[0] == 2 && std::filesystem::is_regular_file(root)) throw FormatError(errors[0]);
  Scan s;
  for (std::size_t n = 0; n < files.size() && s.first_corrupt.empty(); ++n)
    if (ok[n] == 2) s.first_corrupt = errors[n];
  std::size_t not_dicom = 0, no_pixels = 0, corrupt = 0;
  for (std::size_t n = 0; n < files.size(); ++n) {
    if (ok[n] != 1) {
      ++(ok[n] == 2 ? corrupt : not_dicom);
      continue;
    }
    if (!headers[n].has_pixels || headers[n].rows == 0 || headers[n].columns == 0) {
      ++no_pixels;
      continue;
    }
    s.headers.push_back(std::move(headers[n]));
  }
  s.skipped = not_dicom + no_pixels + corrupt;
  if (corrupt) s.warnings.push_back("skipped " + std::to_string(corrupt) + " corrupt DICOM file(s), the first: " + s.first_corrupt);
  if (not_dicom) s.warnings.push_back("skipped " + std::to_string(not_dicom) + " file(s) that are not DICOM");
  if (no_pixels) s.warnings.push_back("skipped " + std::to_string(no_pixels) + " DICOM file(s) without an image");
  return s;
}

std::vector<DicomSeries> group(const Scan& s, std::vector<std::string>* warnings) {
  // SeriesInstanceUID -> parts by (matrix size, orientation).
  std::map<std::string, std::vector<std::vector<const FileHeader*>>> by_uid;
  for (const FileHeader& h : s.headers) {
    auto& parts = by_uid[h.series_uid];
    const auto iop = frame_geometry(h, 0).iop;
    bool placed = false;
    for (auto& part : parts) {
      const FileHeader& f = *part.front();
      const auto fiop = frame_geometry(f, 0).iop;
      const bool same_iop = (!iop && !fiop) || (iop && fiop && same_orientation(*iop, *fiop, 0.02));
      if (f.rows == h.rows && f.columns == h.columns && same_iop) {
        part.push_back(&h);
        placed = true;
        break;
      }
    }
    if (!placed) parts.push_back({&h});
  }
  std::vector<DicomSeries> out;
  for (auto& [uid, parts] : by_uid) {
    auto count = [](const std::vector<const FileHeader*>& p) {
      std::size_t n = 0;
      for (auto* h : p) n += h->frames;
      return n;
    };
    std::stable_sort(parts.begin(), parts.end(), [&](auto& a, auto& b) { return count(a) > count(b); });
    if (parts.size() > 1 && warnings)
      warnings->push_back("series " + uid + " mixes " + std::to_string(parts.size()) +
                          " matrix sizes or orientations: split into " + uid + ", " + uid + "#2" +
                          (parts.size() > 2 ? ", ..." : ""));
    for (std::size_t p = 0; p < parts.size(); ++p) {
      const FileHeader& f = *parts[p].front();
      DicomSeries d;
      d.key = p == 0 ? uid : uid + "#" + std::to_string(p + 1);
      d.series_uid = uid;
      d.study_uid = f.study_uid;
      d.description = f.description;
      d.modality = f.modality;
      d.kernel = f.kernel;
      d.sop_class_uid = f.sop_class;
      d.rows = f.rows;
      d.columns = f.columns;
      d.images = count(parts[p]);
      const auto iop = frame_geometry(f, 0).iop;
      if (iop) {
        d.orientation_patient = *iop;
        d.orientation = orientation_name(*iop);
      } else {
        d.orientation = "unknown";
      }
      for (auto* h : parts[p]) d.files.push_back(h->path);
      std::sort(d.files.begin(), d.files.end());
      if (is_secondary_capture(f.sop_class)) d.kind = SeriesKind::SecondaryCapture;
      else if (is_localizer(f)) d.kind = SeriesKind::Localizer;
      else if (f.modality == "CT" && d.orientation == "axial" && d.images >= 2) d.kind = SeriesKind::AxialCT;
      else d.kind = SeriesKind::Other;
      out.push_back(std::move(d));
    }
  }
  return out;
}

// ------------------------------------------------------------------ pixel decoding

struct Slice {
  const FileHeader* file = nullptr;
  std::size_t frame = 0;
  Vec3 ipp;               // LPS
  std::array<double, 6> iop{};
  double row_spacing = 0, col_spacing = 0;  // PixelSpacing[0] (between rows), [1] (between columns)
  double slope = 1, intercept = 0;
  bool has_rescale = false;
  double d = 0;           // position along the normal
  float* hu = nullptr;    // rows x columns, column index fastest (inside one shared buffer)
  ValueStats stats;       // of hu, taken right after decoding it (while it is in cache)
};

template <class S>
void to_hu(const char* src, float* dst, std::size_t n, const Slice& s, int pixrep, std::size_t bits_stored,
           std::size_t bits_allocated, const FileHeader& h, float fill, std::size_t& padding) {
  const double slope = s.slope, inter = s.intercept;
  const bool mask = bits_stored < bits_allocated && bits_stored > 0;
  using U = typename std::make_unsigned<S>::type;
  const U low = mask ? static_cast<U>((U(1) << bits_stored) - 1) : static_cast<U>(~U(0));
  const bool pad = h.padding.has_value();
  double pad_lo = pad ? *h.padding : 0, pad_hi = pad_lo;
  if (pad && h.padding_range) {
    pad_lo = std::min(*h.padding, *h.padding_range);
    pad_hi = std::max(*h.padding, *h.padding_range);
  }
  std::size_t padded = 0;
  for (std::size_t i = 0; i < n; ++i) {
    U raw;
    std::memcpy(&raw, src + i * sizeof(U), sizeof(U));
    double v;
    if (mask) {
      raw &= low;
      if (pixrep == 1 && (raw >> (bits_stored - 1)) & 1) {
        // sign-extend from BitsStored
        v = static_cast<double>(static_cast<std::int64_t>(raw) - (std::int64_t(1) << bits_stored));
      } else {
        v = static_cast<double>(raw);
      }
    } else {
      v = pixrep == 1 ? static_cast<double>(static_cast<typename std::make_signed<S>::type>(raw)) : static_cast<double>(raw);
    }
    if (pad && v >= pad_lo && v <= pad_hi) {
      dst[i] = fill;
      ++padded;
    } else {
      dst[i] = static_cast<float>(v * slope + inter);
    }
  }
  padding += padded;
}

// Decode every frame of one file into its slices (HU, padding -> fill).
void decode_file(const FileHeader& h, std::vector<Slice*>& slices, float fill, std::size_t& padding) {
  quiet_gdcm();
  const std::string problem = LengthCheck(h.path, h.preamble, false).problem();  // the file may have changed since its header was read
  if (!problem.empty()) throw FormatError("'" + h.path + "': " + problem + " (a corrupt or hostile DICOM file)");
  // GDCM's pixel reader asserts (aborts) on some impossible pixel formats: refused here first
  if (h.samples != 1)
    throw FormatError("'" + h.path + "': colour images (" + std::to_string(static_cast<long>(h.samples)) + " samples per pixel) are not CT");
  if (h.bits_allocated != 8 && h.bits_allocated != 16 && h.bits_allocated != 32)
    throw FormatError("'" + h.path + "': unsupported BitsAllocated " + std::to_string(h.bits_allocated));
  if (h.bits_stored < 1 || h.bits_stored > h.bits_allocated)
    throw FormatError("'" + h.path + "': BitsStored " + std::to_string(h.bits_stored) + " does not fit BitsAllocated " +
                      std::to_string(h.bits_allocated));
  gdcm::ImageReader reader;
  reader.SetFileName(h.path.c_str());
  if (!reader.Read()) throw FormatError("'" + h.path + "': GDCM cannot read the image (corrupt or truncated file)");
  const gdcm::Image& img = reader.GetImage();
  const gdcm::PixelFormat& pf = img.GetPixelFormat();
  if (pf.GetSamplesPerPixel() != 1 || h.samples != 1)
    throw FormatError("'" + h.path + "': colour images (" + std::to_string(pf.GetSamplesPerPixel()) +
                      " samples per pixel) are not CT");
  const std::size_t cols = img.GetDimension(0), rows = img.GetDimension(1);
  const std::size_t frames = img.GetNumberOfDimensions() > 2 ? img.GetDimension(2) : 1;
  if (cols != h.columns || rows != h.rows || frames < h.frames)
    throw FormatError("'" + h.path + "': decoded image size disagrees with the header");
  const std::size_t bits = pf.GetBitsAllocated();
  if (bits != 8 && bits != 16 && bits != 32)
    throw FormatError("'" + h.path + "': unsupported BitsAllocated " + std::to_string(bits));
  const unsigned long len = img.GetBufferLength();
  const std::size_t expect = rows * cols * frames * (bits / 8);
  // A file cut short: GDCM pads a short pixel data element with zeros ("incomplete pixel
  // data") and reads on, so compare the encoded length of what it parsed with the file size.
  const gdcm::DataSet& ds = reader.GetFile().GetDataSet();
  {
    const gdcm::FileMetaInformation& meta = reader.GetFile().GetHeader();
    const gdcm::TransferSyntax& ts = meta.GetDataSetTransferSyntax();
    if (ts != gdcm::TransferSyntax::DeflatedExplicitVRLittleEndian) {
      std::error_code ec;
      const std::uint64_t size = fs::file_size(h.path, ec);
      // GDCM counts a 128-byte preamble and "DICM" in the meta length; without them skip this
      // check (the pixel-data length check below still applies).
      if (!h.preamble) ec = std::make_error_code(std::errc::invalid_argument);
      const std::uint64_t encoded =
          std::uint64_t(meta.GetFullLength()) +
          (ts.IsImplicit() ? std::uint64_t(ds.GetLength<gdcm::ImplicitDataElement>())
                           : std::uint64_t(ds.GetLength<gdcm::ExplicitDataElement>()));
      if (!ec && encoded > size)
        throw FormatError("'" + h.path + "' is truncated: its elements need " + std::to_string(encoded) +
                          " bytes, the file has " + std::to_string(size));
    }
  }
  // Native (uncompressed) pixel data must hold the whole image.
  if (!ds.FindDataElement(kPixelData)) throw FormatError("'" + h.path + "' has no pixel data");
  if (const gdcm::ByteValue* bv = ds.GetDataElement(kPixelData).GetByteValue())
    if (bv->GetLength() < expect)
      throw FormatError("'" + h.path + "': pixel data holds " + std::to_string(bv->GetLength()) + " bytes, the " +
                        std::to_string(cols) + " x " + std::to_string(rows) + " x " + std::to_string(frames) +
                        " image needs " + std::to_string(expect) + " (truncated file)");
  if (len < expect) throw FormatError("'" + h.path + "': pixel data is shorter than the image size");
  std::unique_ptr<char[]> buf(new char[len]);  // uninitialised: GetBuffer fills it
  if (!img.GetBuffer(buf.get()))
    throw FormatError("'" + h.path + "': cannot decode pixel data (transfer syntax " + h.transfer_syntax +
                      ": truncated or unsupported)");
  // The dataset's PixelRepresentation/BitsStored win over what a codec reports (JPEG 2000
  // streams are often unsigned while the header says signed).
  const int pixrep = h.pixel_representation;
  const std::size_t stored = h.bits_stored ? std::min(h.bits_stored, bits) : bits;
  for (Slice* s : slices) {
    const std::size_t n = rows * cols;
    const char* src = buf.get() + s->frame * n * (bits / 8);
    switch (bits) {
      case 8: to_hu<std::int8_t>(src, s->hu, n, *s, pixrep, stored, bits, h, fill, padding); break;
      case 16: to_hu<std::int16_t>(src, s->hu, n, *s, pixrep, stored, bits, h, fill, padding); break;
      case 32: to_hu<std::int32_t>(src, s->hu, n, *s, pixrep, stored, bits, h, fill, padding); break;
    }
    s->stats = value_stats_serial(s->hu, n);
  }
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

std::string mm(double v, int decimals = 2) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}

}  // namespace

// ------------------------------------------------------------------ public API

std::string GeometryReport::to_json() const {
  nlohmann::json j;
  j["series_key"] = series_key;
  j["series_uid"] = series_uid;
  j["description"] = description;
  j["modality"] = modality;
  j["kernel"] = kernel;
  j["transfer_syntaxes"] = transfer_syntaxes;
  j["images"] = images;
  j["files_skipped"] = files_skipped;
  j["duplicates"] = duplicates;
  j["tilt_deg"] = tilt_deg;
  j["spacing_min_mm"] = spacing_min_mm;
  j["spacing_median_mm"] = spacing_median_mm;
  j["spacing_max_mm"] = spacing_max_mm;
  j["uniform_spacing"] = uniform_spacing;
  nlohmann::json runs = nlohmann::json::array();
  for (const SpacingRun& r : spacing_runs) runs.push_back({{"spacing_mm", r.spacing_mm}, {"steps", r.steps}});
  j["spacing_runs"] = runs;
  nlohmann::json g = nlohmann::json::array();
  for (const SliceGap& s : gaps) g.push_back({{"position_mm", s.position_mm}, {"size_mm", s.size_mm}});
  j["gaps"] = g;
  j["inconsistent_orientation"] = inconsistent_orientation;
  j["non_hu"] = non_hu;
  j["non_hu_reason"] = non_hu_reason;
  j["padding_voxels"] = padding_voxels;
  j["resampled"] = resampled;
  j["orthogonal"] = orthogonal;
  j["output_spacing"] = {output_spacing[0], output_spacing[1], output_spacing[2]};
  j["actions"] = actions;
  j["warnings"] = warnings;
  return j.dump(2);
}

bool is_dicom(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  FileHeader h;
  try {
    return read_header(path, h);
  } catch (const std::exception&) {
    return h.preamble;  // "DICM" at byte 128: DICOM, if a corrupt one (its read says what is wrong)
  }
}

std::vector<DicomSeries> list_series(const std::string& path, const ScanOptions& options,
                                     std::vector<std::string>* warnings) {
  Scan s = scan(path, options);
  if (warnings) warnings->insert(warnings->end(), s.warnings.begin(), s.warnings.end());
  return group(s, warnings);
}

const DicomSeries& choose_series(const std::vector<DicomSeries>& series, const std::string& key) {
  if (series.empty()) throw FormatError("no DICOM image series found");
  if (!key.empty()) {
    for (const DicomSeries& s : series)
      if (s.key == key) return s;
    std::string known;
    for (const DicomSeries& s : series) known += (known.empty() ? "" : ", ") + s.key;
    throw InvalidArgument("no series '" + key + "' here (found: " + known + ")");
  }
  const DicomSeries* best = nullptr;
  auto score = [](const DicomSeries& s) {
    return std::make_tuple(s.kind == SeriesKind::AxialCT ? 2 : (s.kind == SeriesKind::Other ? 1 : 0), kernel_score(s.kernel),
                           s.images);
  };
  for (const DicomSeries& s : series)
    if (!best || score(s) > score(*best)) best = &s;
  return *best;
}

DicomVolume read_dicom(const std::string& path, const DicomReadOptions& options) {
  quiet_gdcm();
  Scan s = scan(path, options.scan);
  std::vector<std::string> warnings = s.warnings;
  if (s.headers.empty())
    throw FormatError("'" + path + "' holds no DICOM image" +
                      (s.skipped ? " (" + std::to_string(s.skipped) + " file(s) are not DICOM images" +
                                       (s.first_corrupt.empty() ? std::string() : "; the first corrupt one: " + s.first_corrupt) + ")"
                                 : std::string()));
  std::vector<DicomSeries> all = group(s, &warnings);
  const DicomSeries& chosen = choose_series(all, options.series);
  if (options.series.empty() && all.size() > 1)
    warnings.push_back("the folder holds " + std::to_string(all.size()) + " series; read " + chosen.key + " (" +
                       std::to_string(chosen.images) + " images" + (chosen.description.empty() ? "" : ", '" + chosen.description + "'") + ")");
  std::map<std::string, const FileHeader*> by_path;
  for (const FileHeader& h : s.headers) by_path[h.path] = &h;

  GeometryReport rep;
  rep.series_key = chosen.key;
  rep.series_uid = chosen.series_uid;
  rep.description = chosen.description;
  rep.modality = chosen.modality;
  rep.kernel = chosen.kernel;
  rep.files_skipped = s.skipped;

  // Frames with geometry.
  std::vector<Slice> slices;
  std::set<std::string> syntaxes;
  bool any_rescale_missing = false;
  for (const std::string& f : chosen.files) {
    const FileHeader& h = *by_path.at(f);
    if (!h.problem.empty()) throw GeometryError("'" + h.path + "': " + h.problem);
    syntaxes.insert(h.transfer_syntax);
    for (std::size_t fr = 0; fr < h.frames; ++fr) {
      FrameGeometry g = frame_geometry(h, fr);
      if (!g.ipp) throw GeometryError("'" + h.path + "' has no ImagePositionPatient: the slice cannot be placed in space");
      if (!g.iop) throw GeometryError("'" + h.path + "' has no ImageOrientationPatient: the slice cannot be placed in space");
      if (!g.spacing) throw GeometryError("'" + h.path + "' has no PixelSpacing");
      const auto& sp = *g.spacing;
      if (!(sp[0] > 0) || !(sp[1] > 0))
        throw GeometryError("'" + h.path + "': PixelSpacing " + mm(sp[0], 4) + "\\" + mm(sp[1], 4) + " is not positive");
      Vec3 r((*g.iop)[0], (*g.iop)[1], (*g.iop)[2]), c((*g.iop)[3], (*g.iop)[4], (*g.iop)[5]);
      if (std::abs(r.norm() - 1) > 0.01 || std::abs(c.norm() - 1) > 0.01 || std::abs(r.dot(c)) > 0.01)
        throw GeometryError("'" + h.path + "': ImageOrientationPatient is not two orthogonal unit vectors");
      if (g.slope && *g.slope == 0) throw FormatError("'" + h.path + "': RescaleSlope is 0");
      Slice sl;
      sl.file = &h;
      sl.frame = fr;
      sl.ipp = *g.ipp;
      r.normalize();
      c = (c - r * r.dot(c)).normalized();
      sl.iop = {r[0], r[1], r[2], c[0], c[1], c[2]};
      sl.row_spacing = sp[0];
      sl.col_spacing = sp[1];
      sl.has_rescale = g.slope.has_value() || g.intercept.has_value();
      sl.slope = g.slope.value_or(1.0);
      sl.intercept = g.intercept.value_or(0.0);
      if (!sl.has_rescale) any_rescale_missing = true;
      slices.push_back(sl);
    }
  }
  rep.transfer_syntaxes.assign(syntaxes.begin(), syntaxes.end());
  const std::array<double, 6> iop0 = slices.front().iop;
  const Vec3 r(iop0[0], iop0[1], iop0[2]), c(iop0[3], iop0[4], iop0[5]);
  const Vec3 n = r.cross(c).normalized();
  for (const Slice& sl : slices)
    if (!same_orientation(sl.iop, iop0, 1e-4)) rep.inconsistent_orientation = true;
  if (rep.inconsistent_orientation)
    warnings.push_back("ImageOrientationPatient varies slightly within the series; the first slice's orientation is used");
  const double dr = slices.front().row_spacing, dc = slices.front().col_spacing;
  for (const Slice& sl : slices)
    if (std::abs(sl.row_spacing - dr) > 1e-4 || std::abs(sl.col_spacing - dc) > 1e-4)
      throw GeometryError("PixelSpacing varies within series " + chosen.key + "; ichkit does not mix in-plane spacings");

  // Order along the normal; drop repeated positions.
  for (Slice& sl : slices) sl.d = sl.ipp.dot(n);
  std::stable_sort(slices.begin(), slices.end(), [](const Slice& a, const Slice& b) {
    if (a.d != b.d) return a.d < b.d;
    if (a.file->instance != b.file->instance) return a.file->instance < b.file->instance;
    return a.file->sop_instance < b.file->sop_instance;
  });
  {
    std::vector<Slice> unique;
    for (Slice& sl : slices) {
      if (!unique.empty() && std::abs(sl.d - unique.back().d) < 0.01) {
        ++rep.duplicates;
        continue;
      }
      unique.push_back(std::move(sl));
    }
    slices = std::move(unique);
  }
  if (rep.duplicates)
    rep.actions.push_back("dropped " + std::to_string(rep.duplicates) + " image(s) repeating an earlier slice position");
  rep.images = slices.size();
  const std::size_t nk_in = slices.size();
  if (nk_in < 2 && chosen.images >= 2)
    throw GeometryError("every image of series " + chosen.key + " is at the same position: no 3D volume can be built");

  // Spacing along the normal, gaps, tilt.
  std::vector<double> steps;
  for (std::size_t k = 1; k < nk_in; ++k) steps.push_back(slices[k].d - slices[k - 1].d);
  Vec3 stack = n;  // unit normal component
  if (nk_in >= 2) {
    rep.spacing_min_mm = *std::min_element(steps.begin(), steps.end());
    rep.spacing_max_mm = *std::max_element(steps.begin(), steps.end());
    rep.spacing_median_mm = median(steps);
    rep.uniform_spacing = rep.spacing_max_mm - rep.spacing_min_mm <= 0.01 * rep.spacing_median_mm + 1e-3;
    // Runs of equal steps (e.g. 14 slices at 4 mm then 14 at 7 mm).
    for (double st : steps) {
      if (!rep.spacing_runs.empty() && std::abs(st - rep.spacing_runs.back().spacing_mm) <= 0.01 * st + 1e-3) {
        auto& run = rep.spacing_runs.back();
        run.spacing_mm = (run.spacing_mm * run.steps + st) / (run.steps + 1);
        ++run.steps;
      } else {
        rep.spacing_runs.push_back({st, 1});
      }
    }
    // A missing slice is a step larger than 1.5x the spacing around it (the median of up to
    // three steps on each side), so a second block with a larger spacing is not "missing".
    for (std::size_t k = 0; k < steps.size(); ++k) {
      std::vector<double> around;
      for (std::size_t q = (k >= 3 ? k - 3 : 0); q < std::min(steps.size(), k + 4); ++q)
        if (q != k) around.push_back(steps[q]);
      const double local = around.empty() ? steps[k] : median(around);
      if (steps[k] > 1.5 * local) rep.gaps.push_back({slices[k].d, steps[k]});
    }
    stack = (slices.back().ipp - slices.front().ipp) / (slices.back().d - slices.front().d);
    const Vec3 shear = stack - n;
    rep.tilt_deg = std::atan(shear.norm()) * 180.0 / M_PI;
    // In-plane positions off the straight stacking line are sampled per slice anyway; say so.
    double off = 0;
    for (const Slice& sl : slices) off = std::max(off, (sl.ipp - (slices.front().ipp + stack * (sl.d - slices.front().d))).norm());
    if (off > 0.1) warnings.push_back("slice positions deviate up to " + mm(off) + " mm from a straight stack; each slice is placed by its own position");
  } else {
    const double t = slices.front().file->thickness.value_or(1.0);
    rep.spacing_min_mm = rep.spacing_max_mm = rep.spacing_median_mm = t > 0 ? t : 1.0;
  }
  if (!rep.gaps.empty())
    warnings.push_back(std::to_string(rep.gaps.size()) + " gap(s) larger than 1.5x the spacing around them: missing slices");
  if (rep.spacing_runs.size() > 1) {
    std::string runs;
    for (const auto& r : rep.spacing_runs) runs += (runs.empty() ? "" : ", ") + std::to_string(r.steps) + " x " + mm(r.spacing_mm);
    warnings.push_back("slice spacing varies (" + runs + " mm along the normal)");
  }
  const bool tilted = rep.tilt_deg > 0.01;
  const bool varying = !rep.uniform_spacing;
  if (varying && options.spacing == SpacingMode::Refuse)
    throw GeometryError("slice spacing of series " + chosen.key + " varies from " + mm(rep.spacing_min_mm) + " to " +
                        mm(rep.spacing_max_mm) + " mm" + (rep.gaps.empty() ? "" : " (missing slices)") +
                        "; refusing as asked (spacing=refuse)");

  // Memory budget before decoding.
  const double in_bytes = double(nk_in) * chosen.rows * chosen.columns * 4.0;
  if (in_bytes > double(options.max_bytes))
    throw ResourceError("series " + chosen.key + " needs " + std::to_string(static_cast<long long>(in_bytes)) +
                        " bytes, more than the memory budget");

  // Decode (files in parallel) straight into one slice-ordered buffer (huge-page backed).
  std::shared_ptr<float> stack_buffer = detail::allocate_voxels<float>(nk_in * chosen.rows * chosen.columns);
  for (std::size_t k = 0; k < nk_in; ++k) slices[k].hu = stack_buffer.get() + k * chosen.rows * chosen.columns;
  std::map<const FileHeader*, std::vector<Slice*>> by_file;
  for (Slice& sl : slices) by_file[sl.file].push_back(&sl);
  std::vector<std::pair<const FileHeader*, std::vector<Slice*>>> jobs(by_file.begin(), by_file.end());
  std::vector<std::size_t> padded(jobs.size(), 0);
  parallel_for(static_cast<std::int64_t>(jobs.size()), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t j = b; j < e; ++j) decode_file(*jobs[j].first, jobs[j].second, options.fill_hu, padded[j]);
  });
  rep.padding_voxels = std::accumulate(padded.begin(), padded.end(), std::size_t(0));
  if (rep.padding_voxels)
    rep.actions.push_back("set " + std::to_string(rep.padding_voxels) + " padding voxels (PixelPaddingValue) to " +
                          mm(options.fill_hu, 0) + " HU");

  // HU plausibility, from the slices' value stats.
  ValueStats stacked;
  for (const Slice& sl : slices) stacked.merge(sl.stats);
  const float lo = stacked.lo, hi = stacked.hi;
  if (chosen.modality != "CT") {
    rep.non_hu = true;
    rep.non_hu_reason = "modality is '" + chosen.modality + "', not CT";
  } else if (lo > -200) {
    rep.non_hu = true;
    rep.non_hu_reason = std::string(any_rescale_missing ? "no RescaleSlope/RescaleIntercept and values " : "values ") +
                        mm(lo, 0) + ".." + mm(hi, 0) + " with nothing below -200: air is about -1000 HU in calibrated CT";
  } else if (lo < -3100 || hi > 40000) {
    rep.non_hu = true;
    rep.non_hu_reason = "values " + mm(lo, 0) + ".." + mm(hi, 0) + " are outside the CT range";
  }
  if (rep.non_hu) warnings.push_back("values are probably not Hounsfield units: " + rep.non_hu_reason);

  // Output grid.
  const std::size_t cols = chosen.columns, rows = chosen.rows;
  const Vec3 p0 = slices.front().ipp;
  Eigen::Matrix4d lps = Eigen::Matrix4d::Identity();
  Shape3 shape{cols, rows, nk_in};
  const bool resample = nk_in >= 2 && ((tilted && options.tilt == TiltMode::Resample) || varying ||
                                       options.slice_spacing > 0);
  if (!resample) {
    lps.block<3, 1>(0, 0) = r * dc;
    lps.block<3, 1>(0, 1) = c * dr;
    if (nk_in >= 2) lps.block<3, 1>(0, 2) = (slices.back().ipp - p0) / double(nk_in - 1);
    else lps.block<3, 1>(0, 2) = n * rep.spacing_min_mm;
    lps.block<3, 1>(0, 3) = p0;
  } else {
    // Default output spacing: the smallest spacing that repeats (a lone short step between two
    // blocks of slices would otherwise multiply the slice count), else the smallest step.
    double regular = 0;
    for (const auto& run : rep.spacing_runs)
      if (run.steps >= 2 && (regular == 0 || run.spacing_mm < regular)) regular = run.spacing_mm;
    if (regular == 0) regular = rep.spacing_min_mm;
    const double dz = options.slice_spacing > 0 ? options.slice_spacing : regular;
    const double depth = slices.back().d - slices.front().d;
    const std::size_t nk = static_cast<std::size_t>(std::floor(depth / dz + 1e-6)) + 1;
    if (tilted && options.tilt == TiltMode::Resample) {
      // Orthogonal grid (r, c, n) covering every slice's in-plane extent.
      double umin = 1e300, umax = -1e300, vmin = 1e300, vmax = -1e300;
      for (const Slice& sl : slices) {
        const double u = (sl.ipp - p0).dot(r), v = (sl.ipp - p0).dot(c);
        umin = std::min(umin, u);
        vmin = std::min(vmin, v);
        umax = std::max(umax, u + (cols - 1) * dc);
        vmax = std::max(vmax, v + (rows - 1) * dr);
      }
      const std::size_t ni = static_cast<std::size_t>(std::floor((umax - umin) / dc + 1e-6)) + 1;
      const std::size_t nj = static_cast<std::size_t>(std::floor((vmax - vmin) / dr + 1e-6)) + 1;
      shape = {ni, nj, nk};
      lps.block<3, 1>(0, 0) = r * dc;
      lps.block<3, 1>(0, 1) = c * dr;
      lps.block<3, 1>(0, 2) = n * dz;
      lps.block<3, 1>(0, 3) = p0 + r * umin + c * vmin;
      rep.actions.push_back("resampled the " + mm(rep.tilt_deg) + " degree gantry tilt onto an orthogonal grid (" +
                            std::to_string(ni) + " x " + std::to_string(nj) + " x " + std::to_string(nk) + ", " +
                            mm(dz) + " mm slices) in world space");
    } else {
      shape = {cols, rows, nk};
      lps.block<3, 1>(0, 0) = r * dc;
      lps.block<3, 1>(0, 1) = c * dr;
      lps.block<3, 1>(0, 2) = stack * dz;
      lps.block<3, 1>(0, 3) = p0;
      if (tilted) rep.actions.push_back("kept the " + mm(rep.tilt_deg) + " degree gantry tilt as a sheared affine (tilt=keep)");
    }
    if (varying)
      rep.actions.push_back("resampled varying slice spacing (" + mm(rep.spacing_min_mm) + ".." + mm(rep.spacing_max_mm) +
                            " mm) to a uniform " + mm(dz) + " mm by linear interpolation between neighbouring slices" +
                            (rep.gaps.empty() ? "" : ", bridging " + std::to_string(rep.gaps.size()) + " gap(s)"));
    else if (options.slice_spacing > 0 && !(tilted && options.tilt == TiltMode::Resample))
      rep.actions.push_back("resampled to " + mm(dz) + " mm slices as asked");
  }
  rep.resampled = resample;
  if (double(shape[0]) * shape[1] * shape[2] * 4.0 > double(options.max_bytes))
    throw ResourceError("the output volume would exceed the memory budget");

  Volume<float> out;
  ValueStats resampled_stats;
  if (!resample) {
    out = Volume<float>::adopt(stack_buffer, shape);  // slices were decoded in place, in order
  } else {
    out = Volume<float>::uninitialized(shape, Geometry());
    float* o = out.data();
    const Eigen::Matrix3d m = lps.topLeftCorner<3, 3>();
    const Vec3 origin = lps.block<3, 1>(0, 3);
    std::vector<double> ds(nk_in);
    for (std::size_t k = 0; k < nk_in; ++k) ds[k] = slices[k].d;
    const float fill = options.fill_hu;
    const Vec3 along = (tilted && options.tilt == TiltMode::Keep) ? stack : n;  // unit normal component
    std::vector<ValueStats> out_stats(shape[2]);  // each output slice's, taken as it is written
    parallel_for(static_cast<std::int64_t>(shape[2]), [&](std::int64_t kb, std::int64_t ke) {
      for (std::int64_t k = kb; k < ke; ++k) {
        // The output slice plane is parallel to the input planes in both modes, so the
        // bracketing input slices are fixed per output slice.
        const Vec3 base = origin + m.col(2) * double(k);
        const double d = base.dot(n);
        std::size_t k1 = static_cast<std::size_t>(std::lower_bound(ds.begin(), ds.end(), d - 1e-6) - ds.begin());
        float* dst = o + std::size_t(k) * shape[0] * shape[1];
        if (k1 >= nk_in || (k1 == 0 && d < ds[0] - 1e-6)) {
          std::fill(dst, dst + shape[0] * shape[1], fill);
          out_stats[std::size_t(k)] = value_stats_serial(dst, shape[0] * shape[1]);
          continue;
        }
        std::size_t k0 = k1;
        double t = 0;
        if (std::abs(ds[k1] - d) > 1e-6 && k1 > 0) {
          k0 = k1 - 1;
          t = (d - ds[k0]) / (ds[k1] - ds[k0]);
        }
        const Slice* sl[2] = {&slices[k0], &slices[k1]};
        const double w[2] = {1 - t, t};
        // Output rows run along r with the input's column spacing, so along a row the input
        // coordinates are u = u0 + i, v = v0 (constant): the bilinear weights are fixed per row
        // and the inner loop is a contiguous 4-tap blend the compiler vectorises.
        for (std::size_t j = 0; j < shape[1]; ++j) {
          const Vec3 row0 = base + m.col(1) * double(j);
          float* line = dst + j * shape[0];
          std::int64_t lo = 0, hi = static_cast<std::int64_t>(shape[0]);  // valid i range [lo, hi)
          struct Tap {
            const float *a, *b;  // input rows iv and iv + 1
            std::int64_t x0;     // input column of output i = 0 (floor of u0)
            float fu, fv, w;
          } taps[2];
          int ntaps = 0;
          for (int q = 0; q < 2; ++q) {
            if (w[q] == 0) continue;
            // The point on input slice q reached from the output point along `along`
            // (the normal on an orthogonal grid, the stacking axis on a kept sheared grid).
            Vec3 rel = row0 - sl[q]->ipp;
            rel -= along * rel.dot(n);
            const double u0 = rel.dot(r) / dc, v0 = rel.dot(c) / dr;
            if (v0 < -1e-6 || v0 > double(rows - 1) + 1e-6) {
              lo = hi = 0;  // this row misses the slice
              break;
            }
            const double vc = std::clamp(v0, 0.0, double(rows - 1));
            const std::size_t iv = std::min<std::size_t>(static_cast<std::size_t>(vc), rows - 1);
            const std::size_t iv1 = std::min<std::size_t>(iv + 1, rows - 1);
            const double x0 = std::floor(u0 + 1e-9);
            const double fu = std::max(0.0, u0 - x0);
            // valid i: 0 <= u0 + i <= cols - 1
            lo = std::max<std::int64_t>(lo, static_cast<std::int64_t>(std::ceil(-u0 - 1e-6)));
            hi = std::min<std::int64_t>(hi, static_cast<std::int64_t>(std::floor(double(cols - 1) - u0 + 1e-6)) + 1);
            taps[ntaps++] = {sl[q]->hu + iv * cols, sl[q]->hu + iv1 * cols, static_cast<std::int64_t>(x0),
                             static_cast<float>(fu), static_cast<float>(vc - double(iv)), static_cast<float>(w[q])};
          }
          lo = std::max<std::int64_t>(0, lo);
          hi = std::max<std::int64_t>(lo, hi);
          std::fill(line, line + lo, fill);
          std::fill(line + hi, line + shape[0], fill);
          if (lo == hi) continue;
          std::fill(line + lo, line + hi, 0.0f);
          const std::int64_t last = static_cast<std::int64_t>(cols) - 1;
          for (int q = 0; q < ntaps; ++q) {
            const Tap& tp = taps[q];
            const float w00 = tp.w * (1 - tp.fu) * (1 - tp.fv), w01 = tp.w * tp.fu * (1 - tp.fv);
            const float w10 = tp.w * (1 - tp.fu) * tp.fv, w11 = tp.w * tp.fu * tp.fv;
            std::int64_t i = lo;
            // interior: x + 1 <= last
            const std::int64_t hi_in = std::min<std::int64_t>(hi, last - tp.x0);
            for (; i < hi_in; ++i) {
              const std::int64_t x = tp.x0 + i;
              line[i] += w00 * tp.a[x] + w01 * tp.a[x + 1] + w10 * tp.b[x] + w11 * tp.b[x + 1];
            }
            for (; i < hi; ++i) {  // the last column (u == cols - 1, fu == 0)
              const std::int64_t x = std::min(tp.x0 + i, last), x1 = std::min(x + 1, last);
              line[i] += w00 * tp.a[x] + w01 * tp.a[x1] + w10 * tp.b[x] + w11 * tp.b[x1];
            }
          }
        }
        out_stats[std::size_t(k)] = value_stats_serial(dst, shape[0] * shape[1]);  // the slice is still in cache
      }
    });
    for (const ValueStats& st : out_stats) resampled_stats.merge(st);
  }
  // LPS -> RAS.
  Eigen::Matrix4d ras = lps;
  ras.row(0) *= -1;
  ras.row(1) *= -1;
  Geometry g(ras);
  out.set_geometry(g);
  rep.orthogonal = g.is_orthogonal(1e-6);
  rep.output_spacing = g.spacing();
  rep.warnings = warnings;
  out.metadata().set("source", path);
  out.metadata().set("format", "dicom");
  out.metadata().set("series_uid", chosen.series_uid);
  if (!chosen.description.empty()) out.metadata().set("description", chosen.description);
  out.metadata().set("modality", chosen.modality);
  // the stacked slices' stats, or the resampled (interpolated, filled) slices'
  return {out, rep, resample ? resampled_stats : stacked};
}

}  // namespace ichkit::io
