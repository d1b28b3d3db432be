// Reads a NIfTI file with an installed ichkit and prints its geometry.
#include <ichkit/core.h>
#include <ichkit/io/nifti.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: print_geometry FILE.nii[.gz]\n";
    return 2;
  }
  try {
    ichkit::Volume<float> v = ichkit::io::read_nifti<float>(argv[1]);
    auto s = v.spacing();
    std::cout << "shape " << v.ni() << " x " << v.nj() << " x " << v.nk() << "\n"
              << "spacing " << s[0] << " x " << s[1] << " x " << s[2] << " mm\n"
              << "orientation " << v.geometry().orientation_code() << "\n"
              << "affine\n" << v.geometry().to_string() << "\n";
  } catch (const ichkit::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
