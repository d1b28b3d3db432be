#pragma once
/// \file gradcam.h
/// Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhay et al. 2018) and HiResCAM
/// (Draelos & Carin 2020) for any head of a multi-task model, any target and any encoder stage,
/// returned on the scan's own grid. LibTorch-free header.
///
///   using namespace ichkit;
///   auto model = model::Model::load("model.ichkit");
///   explain::GradCam cam(model);                          // layer4, the last stage
///   auto e = cam.explain(scan, {{"volume"}, {"prognosis", 1}});
///   io::write_nifti(e.maps[0].normalized, "volume_heatmap.nii.gz");  // overlays on `scan`
///
/// How: one forward pass of the encoder without autograd (the fast oneDNN path when the model
/// has one) up to the explained stage; that stage's map A (N, K, d, h, w) is then made a leaf
/// that needs a gradient, the deeper stages and the heads are run on it, and each target's
/// gradient dy/dA comes from torch::autograd::grad to A only - never through the stages before
/// it and never into the weights. Every target shares that one forward pass.
///
/// Maps: with weights w_k (Grad-CAM: the mean of dy/dA_k over space), the raw map is
/// sum_k w_k A_k, signed and in units of the target per unit of activation, so it is comparable
/// across scans of one model; `normalized` is max(raw, 0) / max(raw) in [0, 1]. A map is
/// computed on the stage's own grid, upsampled on the network grid (trilinear, the extent of
/// the grid kept: PyTorch's align_corners = false), then carried back through the pipeline's
/// inverse mapping onto the scan grid (affine and shape of the scan).
///
/// Targets: y is the head's raw output - a class logit (classification), the standardised
/// regression value (regression; a monotone function of the value in user units), one
/// cumulative logit (ordinal; they share their gradient), or the sum of the foreground logits
/// over the predicted mask (segmentation) - times `sign`.
#include <string>
#include <vector>

#include "ichkit/core/volume.h"
#include "ichkit/model/model.h"

namespace ichkit::explain {

enum class Method { GradCam, GradCamPlusPlus, HiResCam };
/// "gradcam", "gradcam++", "hirescam".
std::string to_string(Method m);
/// Parse a method name (case-insensitive; also "gradcampp", "grad-cam"); InvalidArgument otherwise.
Method method_from_string(const std::string& name);

/// What to explain: a head's output.
struct Target {
  std::string head;  ///< head name
  /// Class index (classification), cumulative-logit index (ordinal), output index (regression:
  /// only 0). -1: the predicted class for classification, 0 otherwise.
  int index = -1;
  /// +1: what drives the output up; -1: what drives it down.
  int sign = +1;

  Target() = default;
  Target(std::string h, int i = -1, int s = +1) : head(std::move(h)), index(i), sign(s) {}
};

struct Options {
  Method method = Method::GradCam;
  /// Encoder stage to explain ("stem", "layer1" ... "layer4"); empty: the last. An unknown
  /// name is an InvalidArgument.
  std::string layer;
  /// Carry the maps back onto the scan grid (otherwise `raw` / `normalized` stay on the
  /// network grid).
  bool to_scan = true;
  /// Gaussian smoothing of the map on the network grid (sigma in mm, 0 = none; mirror
  /// boundary), before it goes back to the scan grid: fine-stage maps (HiResCAM at the stem)
  /// carry single-voxel gradient spikes that smoothing keeps from winning the peak.
  double smooth_mm = 0;
};

/// One map for one scan and one target.
struct Heatmap {
  std::string head, layer, method;
  int index = 0;  ///< the class / output explained (the predicted class when asked for -1)
  int sign = +1;
  double score = 0;          ///< the target's value y (raw head output x sign)
  Volume<float> raw;         ///< signed map on the scan grid (network grid when !to_scan)
  Volume<float> normalized;  ///< max(raw, 0) / max(raw) in [0, 1]; all 0 without positive evidence
  Volume<float> network;     ///< signed map on the network grid (the pipeline's output grid)
  /// The signed map on the explained stage's own grid, (d, h, w) C order: what the
  /// hook-based reference implementations compute before any resizing.
  std::vector<float> feature;
  std::vector<std::int64_t> feature_shape;
  /// Where max(normalized) is: voxel index (i, j, k) and world position (mm).
  Shape3 peak{0, 0, 0};  ///< voxel index (i, j, k)
  Eigen::Vector3d peak_world{0, 0, 0};
};

/// Every requested map for one scan, plus the model's prediction from the same forward pass.
struct Explanation {
  model::Prediction prediction;
  std::vector<Heatmap> maps;  ///< in the order of the targets
};

/// Explain `targets` for one scan. Safe to call from several threads on one model.
Explanation explain(const model::Model& model, const Volume<float>& scan, const std::vector<Target>& targets,
                    const Options& options = {});
/// Several scans; scans whose network input has one shape share a forward pass of up to
/// batch_size (rows are independent: the network is in eval mode).
std::vector<Explanation> explain(const model::Model& model, const std::vector<Volume<float>>& scans,
                                 const std::vector<Target>& targets, const Options& options = {}, int batch_size = 4);

/// Grad-CAM bound to a model and a layer.
class GradCam {
public:
  explicit GradCam(model::Model model, std::string layer = "") : GradCam(std::move(model), std::move(layer), Method::GradCam) {}
  Explanation explain(const Volume<float>& scan, const std::vector<Target>& targets, bool to_scan = true) const;
  std::vector<Explanation> explain(const std::vector<Volume<float>>& scans, const std::vector<Target>& targets,
                                   bool to_scan = true, int batch_size = 4) const;
  const model::Model& model() const { return model_; }
  Method method() const { return method_; }
  const std::string& layer() const { return layer_; }

protected:
  GradCam(model::Model model, std::string layer, Method method);

private:
  model::Model model_;
  std::string layer_;
  Method method_;
};

/// Grad-CAM++: weights from second and third powers of the gradient (better for several
/// instances of a class, e.g. multifocal bleeds).
class GradCamPlusPlus : public GradCam {
public:
  explicit GradCamPlusPlus(model::Model model, std::string layer = "")
      : GradCam(std::move(model), std::move(layer), Method::GradCamPlusPlus) {}
};

/// HiResCAM: sum_k dy/dA_k * A_k voxel by voxel (no spatial averaging of the gradient).
class HiResCam : public GradCam {
public:
  explicit HiResCam(model::Model model, std::string layer = "") : GradCam(std::move(model), std::move(layer), Method::HiResCam) {}
};

}  // namespace ichkit::explain
