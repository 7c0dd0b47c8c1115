#include "inference/store/ollama_store.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace qwen::store {
namespace {

constexpr absl::string_view kModelMediaType = "application/vnd.ollama.image.model";
constexpr absl::string_view kProjectorMediaType = "application/vnd.ollama.image.projector";

bool ValidPart(absl::string_view s, absl::string_view extra) {
  if (s.empty() || s.size() > 256 || s == "." || s == "..") return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        extra.find(c) == absl::string_view::npos) {
      return false;
    }
  }
  return true;
}

absl::Status BadName(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("ollama model name \"", text, "\": ", why,
                   " (expected [host/][namespace/]name[:tag], e.g. qwen3.5:4b)"));
}

// Size of a regular file, or -1 when there is none.
int64_t FileSize(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return -1;
  return static_cast<int64_t>(st.st_size);
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The blob file of a "sha256:<hex>" digest, after checking the digest's form.
absl::StatusOr<std::string> BlobPath(const std::string& models_dir, const std::string& manifest,
                                     const std::string& digest) {
  constexpr absl::string_view kPrefix = "sha256:";
  const absl::string_view hex = absl::string_view(digest).substr(
      absl::StartsWith(digest, kPrefix) ? kPrefix.size() : digest.size());
  bool ok = hex.size() == 64;
  for (char c : hex) ok = ok && absl::ascii_isxdigit(static_cast<unsigned char>(c));
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("manifest ", manifest, ": layer digest \"",
                                                   digest,
                                                   "\" is not of the form sha256:<64 hex digits>"));
  }
  return absl::StrCat(models_dir, "/blobs/sha256-", hex);
}

}  // namespace

bool IsOllamaReference(absl::string_view model) { return absl::StartsWith(model, kOllamaPrefix); }

std::string OllamaName::ToString() const {
  return absl::StrCat(host, "/", name_space, "/", name, ":", tag);
}

absl::StatusOr<OllamaName> ParseOllamaName(absl::string_view text) {
  absl::string_view s = text;
  absl::ConsumePrefix(&s, kOllamaPrefix);
  if (s.empty()) return BadName(text, "the name is empty");
  OllamaName n;
  // The tag follows the last ':' after the last '/' (a host may carry a port: host:5000/...).
  const size_t slash = s.rfind('/');
  const size_t colon = s.rfind(':');
  if (colon != absl::string_view::npos && (slash == absl::string_view::npos || colon > slash)) {
    n.tag = std::string(s.substr(colon + 1));
    s = s.substr(0, colon);
    if (!ValidPart(n.tag, "._-+")) return BadName(text, absl::StrCat("bad tag \"", n.tag, "\""));
  }
  std::vector<std::string> parts = absl::StrSplit(s, '/');
  if (parts.size() > 3) return BadName(text, "more than host/namespace/name");
  n.name = parts.back();
  if (parts.size() >= 2) n.name_space = parts[parts.size() - 2];
  if (parts.size() == 3) n.host = parts[0];
  if (!ValidPart(n.name, "._-")) return BadName(text, absl::StrCat("bad name \"", n.name, "\""));
  if (!ValidPart(n.name_space, "._-")) {
    return BadName(text, absl::StrCat("bad namespace \"", n.name_space, "\""));
  }
  if (!ValidPart(n.host, "._-:")) return BadName(text, absl::StrCat("bad host \"", n.host, "\""));
  return n;
}

std::string DefaultOllamaModelsDir() {
  if (const char* dir = std::getenv("OLLAMA_MODELS"); dir != nullptr && *dir != '\0') return dir;
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return absl::StrCat(home, "/.ollama/models");
  }
  return "";
}

absl::StatusOr<OllamaModelFiles> ResolveOllamaModel(absl::string_view name,
                                                    absl::string_view models_dir) {
  OllamaModelFiles out;
  {
    absl::StatusOr<OllamaName> parsed = ParseOllamaName(name);
    if (!parsed.ok()) return parsed.status();
    out.name = *std::move(parsed);
  }
  std::string dir(models_dir.empty() ? DefaultOllamaModelsDir() : std::string(models_dir));
  if (dir.empty()) {
    return absl::NotFoundError(
        "no Ollama model store: set OLLAMA_MODELS to its directory (HOME is not set either)");
  }
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (!IsDirectory(dir)) {
    return absl::NotFoundError(absl::StrCat(
        "no Ollama model store at ", dir,
        " (set OLLAMA_MODELS to the directory `ollama serve` uses, e.g. /usr/share/ollama/"
        ".ollama/models for the system service)"));
  }
  const OllamaName& n = out.name;
  out.manifest_path =
      absl::StrCat(dir, "/manifests/", n.host, "/", n.name_space, "/", n.name, "/", n.tag);
  std::ifstream in(out.manifest_path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "Ollama has no model ", n.ToString(), ": no manifest at ", out.manifest_path,
        IsDirectory(absl::StrCat(dir, "/manifests/", n.host, "/", n.name_space, "/", n.name))
            ? " (the model is there under other tags)"
            : " (run `ollama pull` for it, or check the name)"));
  }
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json manifest = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest ", out.manifest_path, " is not a JSON object"));
  }
  if (!manifest.contains("layers") && manifest.contains("manifests")) {
    return absl::UnimplementedError(absl::StrCat(
        "manifest ", out.manifest_path,
        " is a manifest list (several variants of the model); name one of its variants"));
  }
  const nlohmann::json* layers = nullptr;
  if (auto it = manifest.find("layers"); it != manifest.end() && it->is_array()) layers = &*it;
  if (layers == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("manifest ", out.manifest_path, " has no \"layers\" array"));
  }
  for (const nlohmann::json& layer : *layers) {
    if (!layer.is_object()) continue;
    const std::string media =
        layer.value("mediaType", nlohmann::json()).is_string() ? layer["mediaType"] : "";
    const bool is_model = media == kModelMediaType;
    const bool is_projector = media == kProjectorMediaType;
    if (!is_model && !is_projector) continue;
    std::string& path = is_model ? out.model_path : out.projector_path;
    if (!path.empty()) {
      return absl::UnimplementedError(
          absl::StrCat("manifest ", out.manifest_path, " has more than one ", media, " layer"));
    }
    if (!layer.contains("digest") || !layer["digest"].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("manifest ", out.manifest_path, ": the ", media, " layer has no digest"));
    }
    const std::string digest = layer["digest"];
    absl::StatusOr<std::string> blob = BlobPath(dir, out.manifest_path, digest);
    if (!blob.ok()) return blob.status();
    const int64_t size = FileSize(*blob);
    if (size < 0) {
      return absl::NotFoundError(absl::StrCat("the ", is_model ? "model" : "projector", " blob of ",
                                              n.ToString(), " is missing: ", *blob,
                                              " (an interrupted pull? run `ollama pull` again)"));
    }
    if (layer.contains("size") && layer["size"].is_number_integer() &&
        layer["size"].get<int64_t>() != size) {
      return absl::FailedPreconditionError(
          absl::StrCat("blob ", *blob, " holds ", size, " bytes, but manifest ", out.manifest_path,
                       " records ", layer["size"].get<int64_t>(), " (a partial pull?)"));
    }
    path = *std::move(blob);
    if (is_model) out.model_digest = digest;
  }
  if (out.model_path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest ", out.manifest_path, " has no model layer (media type ", kModelMediaType, ")"));
  }
  return out;
}

}  // namespace qwen::store
