// Twin of quickstart.py (and of the README's C++ example): make a synthetic head CT, write it,
// read it back, print its geometry and the hematoma volume.
#include <ichkit/core.h>
#include <ichkit/io/nifti.h>
#include <ichkit/phantom/phantom.h>

#include <iostream>

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "head.nii.gz";
  auto c = ichkit::phantom::make_case({/*shape*/ {256, 256, 32}, /*spacing mm*/ {0.9, 0.9, 5.0}});
  ichkit::io::write_nifti(c.image, path);  // HU, float32, atomic write
  ichkit::Volume<float> v = ichkit::io::read_nifti<float>(path);
  std::cout << v.geometry().orientation_code() << " " << v.spacing().transpose() << " mm, " << c.volume_ml
            << " mL of blood (" << ichkit::phantom::to_string(c.location) << ")\n";
  return 0;
}
