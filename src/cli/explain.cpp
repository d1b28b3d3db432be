// `ichkit explain`: Grad-CAM heatmaps on the scan grid (NIfTI + PNG overlays) from the shell.
#include <filesystem>
#include <iostream>

#include "cli.h"
#include "ichkit/core/error.h"
#include "ichkit/explain/gradcam.h"
#include "ichkit/explain/overlay.h"
#include "ichkit/explain/scores.h"
#include "ichkit/io/atomic_file.h"
#include "ichkit/io/nifti.h"
#include "ichkit/io/read.h"

namespace ichkit::cli {

namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

struct ExplainArgs {
  std::string model, out, layer, method = "gradcam", mask;
  std::vector<std::string> scans, heads;
  int target = -1;
  bool down = false, json = false, no_png = false;
  double tolerance_mm = 10, smooth_mm = 0;
};

}  // namespace

std::string stem_of(const std::string& path) {
  std::string s = fs::path(path).filename().string();
  if (s.empty()) s = fs::path(path).parent_path().filename().string();  // "folder/"
  return s.substr(0, s.find('.'));
}

std::vector<std::string> write_heatmap(const std::string& base, const Volume<float>& scan, const explain::Heatmap& h,
                                       const Volume<std::uint8_t>& lesion, bool png) {
  std::vector<std::string> files{base + "_heatmap.nii.gz"};
  io::write_nifti(h.normalized, files[0]);
  if (png) {
    files.push_back(base + "_montage.png");
    files.push_back(base + "_ortho.png");
    explain::write_png(files[1], explain::render_montage(scan, h.normalized, lesion));
    explain::write_png(files[2], explain::render_orthogonal(scan, h.normalized, lesion, {}, h.peak));
  }
  return files;
}

Runner add_explain(CLI::App& app, Globals& g) {
  auto a = std::make_shared<ExplainArgs>();
  auto* cmd = app.add_subcommand("explain", "Grad-CAM heatmaps of a model's heads, written on each scan's own grid (NIfTI + PNG)");
  cmd->add_option("--model", a->model, "Model file")->required()->check(CLI::ExistingFile);
  cmd->add_option("scans", a->scans, "NIfTI files and/or DICOM folders")->required();
  cmd->add_option("--head", a->heads, "Head(s) to explain, NAME or NAME:INDEX (repeatable; default: every head that is not a segmentation)");
  cmd->add_option("--target", a->target, "Class index for classification / ordinal heads (default: the predicted class)");
  cmd->add_flag("--down", a->down, "Explain what drives the output down instead of up");
  cmd->add_option("--layer", a->layer, "Encoder stage: stem, layer1, layer2, layer3, layer4 (default: the last)");
  cmd->add_option("--method", a->method, "gradcam, gradcam++ or hirescam")->capture_default_str();
  cmd->add_option("--smooth", a->smooth_mm, "Gaussian sigma (mm) applied to the maps on the network grid")->capture_default_str();
  cmd->add_option("--mask", a->mask, "Lesion mask on the scan's grid (one scan): adds localisation scores")->check(CLI::ExistingPath);
  cmd->add_option("--tolerance", a->tolerance_mm, "Pointing-game tolerance in mm (with --mask)")->capture_default_str();
  cmd->add_option("--out", a->out, "Output folder")->required();
  cmd->add_flag("--no-png", a->no_png, "Write the NIfTI maps only");
  cmd->add_flag("--json", a->json, "Print the results as JSON");
  cmd->footer("Writes, per scan and head, into --out: <scan>_<head>_heatmap.nii.gz (normalised, [0, 1]), <scan>_<head>_raw.nii.gz\n"
              "(signed), <scan>_<head>_montage.png and <scan>_<head>_ortho.png (overlays through the peak), and explain.json.\n"
              "Examples:\n  ichkit explain --model model.ichkit scan.nii.gz --head prognosis --target 1 --out heatmaps/\n"
              "  ichkit explain --model model.ichkit scan.nii.gz --head volume --head prognosis:1 --mask lesion.nii.gz --out heatmaps/\n"
              "  ichkit explain --model model.ichkit dicom_folder/ --head volume --layer layer3 --out heatmaps/ --json");
  return [a, &g]() {
    const model::Model m = model::Model::load(a->model);
    std::vector<explain::Target> targets;
    std::vector<std::string> heads = a->heads;
    if (heads.empty())
      for (const auto& h : m.config().heads)
        if (h.type != "segmentation") heads.push_back(h.name);
    for (const std::string& spec : heads) {
      // NAME or NAME:INDEX; --target applies to the heads with several outputs (classes)
      const std::size_t colon = spec.rfind(':');
      std::string name = spec;
      int index = -1;
      if (colon != std::string::npos) {
        name = spec.substr(0, colon);
        try {
          std::size_t used = 0;
          index = std::stoi(spec.substr(colon + 1), &used);
          if (used != spec.size() - colon - 1) throw std::invalid_argument("");
        } catch (const std::exception&) {
          throw InvalidArgument("--head '" + spec + "': expected NAME or NAME:INDEX");
        }
      } else {
        for (const auto& h : m.config().heads)
          if (h.name == name && (h.type == "classification" || h.type == "ordinal")) index = a->target;
      }
      targets.emplace_back(name, index, a->down ? -1 : +1);
    }
    if (!a->mask.empty() && a->scans.size() != 1) throw InvalidArgument("--mask needs exactly one scan");
    Volume<std::uint8_t> lesion;  // read once; scored against every map
    if (!a->mask.empty()) {
      const Volume<float> mf = io::read(a->mask);
      lesion = Volume<std::uint8_t>(mf.shape(), mf.geometry());
      for (std::size_t x = 0; x < mf.size(); ++x) lesion.data()[x] = mf.data()[x] > 0.5f;
    }
    const explain::Options opts{explain::method_from_string(a->method), a->layer, true, a->smooth_mm};
    fs::create_directories(a->out);
    std::vector<json> rows;
    TerminalProgress bar(!g.quiet && !a->json);
    ProgressScope scope(&bar, "explain", static_cast<std::int64_t>(a->scans.size()));
    std::size_t failed = 0;
    for (const std::string& path : a->scans) try {
      const Volume<float> scan = io::read(path);
      const explain::Explanation e = explain::explain(m, scan, targets, opts);
      const std::string stem = stem_of(path);
      json row{{"scan", path}, {"maps", json::array()}};
      for (const model::HeadPrediction& h : e.prediction.heads) {
        if (!h.probabilities.empty()) row["prediction"][h.name] = {{"class", h.classes.at(std::size_t(h.value))}, {"probabilities", h.probabilities}};
        else row["prediction"][h.name] = h.value;
      }
      for (const explain::Heatmap& h : e.maps) {
        const std::string base = (fs::path(a->out) / (stem + "_" + h.head)).string();
        const std::vector<std::string> files = write_heatmap(base, scan, h, lesion, !a->no_png);
        io::write_nifti(h.raw, base + "_raw.nii.gz");
        json j{{"head", h.head}, {"layer", h.layer}, {"method", h.method}, {"index", h.index}, {"sign", h.sign}, {"score", h.score},
               {"peak_voxel", {h.peak[0], h.peak[1], h.peak[2]}}, {"peak_world_mm", {h.peak_world[0], h.peak_world[1], h.peak_world[2]}},
               {"heatmap", base + "_heatmap.nii.gz"}, {"raw", base + "_raw.nii.gz"}};
        if (!a->mask.empty()) {
          const explain::LocalisationScores s = explain::localisation(h.normalized, lesion, a->tolerance_mm);
          j["scores"] = {{"hit", s.pointing.hit}, {"distance_mm", s.pointing.distance_mm}, {"energy_inside", s.energy_inside},
                         {"auc", s.auc}, {"tolerance_mm", a->tolerance_mm}};
        }
        if (!a->no_png) j["png"] = {files[1], files[2]};
        row["maps"].push_back(j);
      }
      rows.push_back(row);
      scope.advance(1, path);
    } catch (const Error& e) {  // this scan is reported and skipped; the others go on
      ++failed;
      bar.scan_failed(path, e.what());
      rows.push_back({{"scan", path}, {"error", e.what()}});
      scope.advance(1, path);
    }
    const int rc = failed ? 1 : 0;  // some scan could not be explained (each named above)
    io::write_file_atomic((fs::path(a->out) / "explain.json").string(), json(rows).dump(2) + "\n");
    if (a->json) {
      std::cout << json(rows).dump(2) << "\n";
      return rc;
    }
    if (g.quiet) return rc;
    for (const json& r : rows) {
      if (r.contains("error")) continue;  // on stderr already
      std::cout << r["scan"].get<std::string>() << "\n";
      for (const json& j : r["maps"]) {
        std::cout << "  " << j["method"].get<std::string>() << " " << j["head"].get<std::string>() << "[" << j["index"].get<int>() << "]"
                  << (j["sign"].get<int>() < 0 ? " (down)" : "") << " at " << j["layer"].get<std::string>() << ": peak at ("
                  << fixed(j["peak_world_mm"][0].get<double>(), 1) << ", " << fixed(j["peak_world_mm"][1].get<double>(), 1) << ", "
                  << fixed(j["peak_world_mm"][2].get<double>(), 1) << ") mm";
        if (j.contains("scores"))
          std::cout << "; pointing " << (j["scores"]["hit"].get<bool>() ? "hit" : "miss") << " ("
                    << fixed(j["scores"]["distance_mm"].get<double>(), 1) << " mm), energy inside "
                    << fixed(j["scores"]["energy_inside"].get<double>(), 3) << ", AUC " << fixed(j["scores"]["auc"].get<double>(), 3);
        std::cout << "\n";
      }
    }
    std::cout << "wrote " << a->out << "/explain.json and the heatmaps\n";
    return rc;
  };
}

}  // namespace ichkit::cli
