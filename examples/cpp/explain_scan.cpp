// Read -> predict -> explain, the C++ twin of examples/notebooks' Grad-CAM walk-through:
//   explain_scan MODEL SCAN OUT_DIR
// SCAN is a NIfTI file or a DICOM folder. Writes OUT_DIR/<head>_heatmap.nii.gz (on the scan's
// grid: it overlays the scan in any viewer) and OUT_DIR/<head>_ortho.png; prints predictions.
#include <ichkit/explain/gradcam.h>
#include <ichkit/explain/overlay.h>
#include <ichkit/io/nifti.h>
#include <ichkit/io/read.h>
#include <ichkit/model/model.h>

#include <filesystem>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: explain_scan MODEL SCAN OUT_DIR\n";
    return 2;
  }
  try {
    const auto model = ichkit::model::Model::load(argv[1]);
    const ichkit::Volume<float> scan = ichkit::io::read(argv[2]);  // HU, with its affine
    std::vector<ichkit::explain::Target> targets;
    for (const auto& h : model.config().heads)
      if (h.type != "segmentation") targets.emplace_back(h.name);
    const auto e = ichkit::explain::explain(model, scan, targets);  // one forward pass for all maps
    std::filesystem::create_directories(argv[3]);
    for (const auto& h : e.prediction.heads) {
      std::cout << h.name << ": " << (h.classes.empty() ? std::to_string(h.value) : h.classes.at(std::size_t(h.value)));
      if (!h.probabilities.empty()) std::cout << " (p = " << h.probabilities.at(std::size_t(h.value)) << ")";
      std::cout << "\n";
    }
    for (const auto& m : e.maps) {
      const std::string base = (std::filesystem::path(argv[3]) / m.head).string();
      ichkit::io::write_nifti(m.normalized, base + "_heatmap.nii.gz");
      ichkit::explain::write_png(base + "_ortho.png", ichkit::explain::render_orthogonal(scan, m.normalized));
      std::cout << m.head << " heatmap peak at (" << m.peak_world.transpose() << ") mm -> " << base << "_heatmap.nii.gz\n";
    }
    return 0;
  } catch (const std::exception& ex) {
    std::cerr << "explain_scan: " << ex.what() << "\n";
    return 1;
  }
}
