#include "worker/data/dataset.h"

#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace pskit::worker {
namespace {

// The whole file, decompressed if it is gzip (gzread passes plain files
// through unchanged).
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("no file '", path, "'"));
  }
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot open '", path, "'"));
  }
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  const std::string what = msg != nullptr ? msg : "";
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is damaged: ", what));
  }
  return out;
}

uint32_t BigEndian32(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) |
         (uint32_t{p[2]} << 8) | p[3];
}

struct Idx {
  std::vector<uint32_t> dims;
  size_t data_offset = 0;
};

// Checks the header of an unsigned-byte IDX file.
absl::StatusOr<Idx> ParseIdx(const std::string& bytes,
                             const std::string& path) {
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is not an IDX file (bad magic number)"));
  }
  if (static_cast<unsigned char>(bytes[2]) != 0x08) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "' holds IDX type 0x", absl::Hex(bytes[2] & 0xff),
        "; only unsigned bytes (0x08) are supported"));
  }
  Idx idx;
  const int rank = static_cast<unsigned char>(bytes[3]);
  if (rank < 1 || bytes.size() < 4 + 4 * static_cast<size_t>(rank)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' has a truncated IDX header"));
  }
  uint64_t count = 1;
  for (int d = 0; d < rank; ++d) {
    idx.dims.push_back(BigEndian32(bytes, 4 + 4 * d));
    count *= idx.dims.back();
  }
  idx.data_offset = 4 + 4 * static_cast<size_t>(rank);
  if (bytes.size() != idx.data_offset + count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "' should hold ", count, " bytes of data after its header, "
        "it holds ", bytes.size() - idx.data_offset,
        " (truncated or not IDX)"));
  }
  return idx;
}

}  // namespace

absl::StatusOr<Dataset> ReadIdx(const std::string& images_path,
                                const std::string& labels_path) {
  PSKIT_ASSIGN_OR_RETURN(std::string images, ReadMaybeGzip(images_path));
  PSKIT_ASSIGN_OR_RETURN(std::string labels, ReadMaybeGzip(labels_path));
  PSKIT_ASSIGN_OR_RETURN(Idx im, ParseIdx(images, images_path));
  PSKIT_ASSIGN_OR_RETURN(Idx lb, ParseIdx(labels, labels_path));
  if (im.dims.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", images_path, "' has ", im.dims.size(),
        " dimension(s); images need [n, rows, cols] or [n, features]"));
  }
  if (lb.dims.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", labels_path, "' has ", lb.dims.size(),
        " dimensions; labels need one, [n]"));
  }
  if (im.dims[0] != lb.dims[0]) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", images_path, "' holds ", im.dims[0], " images but '",
        labels_path, "' holds ", lb.dims[0], " labels"));
  }
  Dataset ds;
  uint64_t dim = 1;
  for (size_t d = 1; d < im.dims.size(); ++d) dim *= im.dims[d];
  ds.feature_dim = static_cast<int>(dim);
  const size_t n = im.dims[0];
  ds.features.resize(n * dim);
  const auto* px = reinterpret_cast<const unsigned char*>(images.data() +
                                                          im.data_offset);
  for (size_t i = 0; i < n * dim; ++i) ds.features[i] = px[i] * (1.0f / 255);
  ds.labels.resize(n);
  int max_label = -1;
  for (size_t i = 0; i < n; ++i) {
    ds.labels[i] = static_cast<unsigned char>(labels[lb.data_offset + i]);
    max_label = std::max(max_label, ds.labels[i]);
  }
  ds.num_classes = max_label + 1;
  return ds;
}

absl::StatusOr<Dataset> ReadIdxDir(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  auto find = [&](const std::string& base) {
    const std::string plain = absl::StrCat(dir, "/", base);
    return std::filesystem::exists(plain) ? plain : plain + ".gz";
  };
  return ReadIdx(find(prefix + "-images-idx3-ubyte"),
                 find(prefix + "-labels-idx1-ubyte"));
}

absl::StatusOr<Dataset> ReadCsv(const std::string& path,
                                const std::string& label_column) {
  PSKIT_ASSIGN_OR_RETURN(std::string text, ReadMaybeGzip(path));
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  Dataset ds;
  int label_at = -1;
  size_t columns = 0;
  bool first = true;
  std::vector<float> row;
  for (size_t ln = 0; ln < lines.size(); ++ln) {
    absl::string_view line = absl::StripAsciiWhitespace(lines[ln]);
    if (line.empty()) continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ',');
    row.clear();
    bool numeric = true;
    for (absl::string_view f : fields) {
      float v;
      if (!absl::SimpleAtof(absl::StripAsciiWhitespace(f), &v)) {
        numeric = false;
        break;
      }
      row.push_back(v);
    }
    if (first) {
      first = false;
      columns = fields.size();
      if (columns < 2) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", path, "' line ", ln + 1,
            ": a sample needs at least one feature and a label"));
      }
      if (label_column == "last") {
        label_at = static_cast<int>(columns) - 1;
      } else if (!absl::SimpleAtoi(label_column, &label_at)) {
        label_at = -1;
        for (size_t c = 0; c < fields.size() && !numeric; ++c) {
          if (absl::StripAsciiWhitespace(fields[c]) == label_column) {
            label_at = static_cast<int>(c);
          }
        }
        if (label_at < 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "'", path, "' has no column named '", label_column,
              "' in its header; give --label_column as a name, an index or "
              "last"));
        }
      }
      if (label_at < 0 || label_at >= static_cast<int>(columns)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "label column ", label_at, " is outside the ", columns,
            " columns of '", path, "'"));
      }
      ds.feature_dim = static_cast<int>(columns) - 1;
      if (!numeric) continue;  // a header
    } else if (!numeric) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path, "' line ", ln + 1, ": a field is not a number"));
    }
    if (row.size() != columns) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path, "' line ", ln + 1, " has ", row.size(),
          " columns, the first row ", columns));
    }
    const float label = row[label_at];
    if (!(label >= 0) || label != std::floor(label) || label > 1e6f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path, "' line ", ln + 1, ": label ", label,
          " is not a class index (an integer >= 0)"));
    }
    ds.labels.push_back(static_cast<int32_t>(label));
    ds.num_classes = std::max(ds.num_classes, static_cast<int>(label) + 1);
    for (size_t c = 0; c < columns; ++c) {
      if (static_cast<int>(c) != label_at) ds.features.push_back(row[c]);
    }
  }
  if (ds.labels.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' holds no samples"));
  }
  return ds;
}

Dataset MakeTeacherDataset(uint64_t teacher_seed, uint64_t sample_seed,
                           int64_t n, int dim, int classes) {
  constexpr int kHidden = 32;
  std::mt19937_64 teacher_rng(teacher_seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w1(static_cast<size_t>(dim) * kHidden), w2(kHidden * classes);
  for (float& w : w1) w = normal(teacher_rng) / std::sqrt(static_cast<float>(dim));
  for (float& w : w2) w = normal(teacher_rng) / std::sqrt(float{kHidden});
  Dataset ds;
  ds.feature_dim = dim;
  ds.num_classes = classes;
  ds.features.resize(static_cast<size_t>(n) * dim);
  ds.labels.resize(n);
  std::mt19937_64 rng(sample_seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> h(kHidden), out(classes);
  for (int64_t i = 0; i < n; ++i) {
    float* x = ds.features.data() + static_cast<size_t>(i) * dim;
    for (int d = 0; d < dim; ++d) x[d] = uniform(rng);
    for (int j = 0; j < kHidden; ++j) {
      float s = 0;
      for (int d = 0; d < dim; ++d) s += x[d] * w1[static_cast<size_t>(d) * kHidden + j];
      h[j] = std::tanh(2.0f * s);
    }
    int best = 0;
    for (int c = 0; c < classes; ++c) {
      float s = 0;
      for (int j = 0; j < kHidden; ++j) s += h[j] * w2[j * classes + c];
      out[c] = s;
      if (s > out[best]) best = c;
    }
    ds.labels[i] = best;
  }
  return ds;
}

std::pair<int64_t, int64_t> SliceOf(int64_t n, int rank, int world) {
  const int64_t base = n / world, extra = n % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

absl::Status CheckFolds(int folds, int fold) {
  if (folds == 0) {
    if (fold == -1) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        "--fold ", fold, " needs --folds K (K >= 2 folds, --fold in [0, K))"));
  }
  if (folds < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--folds must be at least 2 (or 0: no cross-validation), got ", folds));
  }
  if (fold == -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--folds ", folds, " needs --fold i, the validation fold, 0 <= i < ",
        folds));
  }
  if (fold < 0 || fold >= folds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--fold must be in [0, ", folds, ") with --folds ", folds, ", got ",
        fold));
  }
  return absl::OkStatus();
}

int64_t FoldSize(int64_t n, int folds, int fold) {
  return n / folds + (fold < n % folds ? 1 : 0);
}

absl::StatusOr<FoldSplit> SplitFold(const Dataset& data, int folds, int fold) {
  if (folds == 0) {
    return absl::InvalidArgumentError(
        "--folds must be at least 2 for a validation fold, got 0");
  }
  PSKIT_RETURN_IF_ERROR(CheckFolds(folds, fold));
  if (data.size() < folds) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--folds ", folds, " needs at least ", folds,
        " training samples (one per fold), the data has ", data.size(),
        "; use fewer folds or more data"));
  }
  FoldSplit out;
  for (Dataset* d : {&out.train, &out.validation}) {
    d->feature_dim = data.feature_dim;
    d->num_classes = data.num_classes;
  }
  const int64_t val = FoldSize(data.size(), folds, fold);
  const size_t dim = static_cast<size_t>(data.feature_dim);
  out.validation.labels.reserve(val);
  out.validation.features.reserve(static_cast<size_t>(val) * dim);
  out.train.labels.reserve(data.size() - val);
  out.train.features.reserve(static_cast<size_t>(data.size() - val) * dim);
  for (int64_t j = 0; j < data.size(); ++j) {
    Dataset& to = j % folds == fold ? out.validation : out.train;
    to.labels.push_back(data.labels[j]);
    to.features.insert(to.features.end(), data.row(j), data.row(j) + dim);
  }
  return out;
}

}  // namespace pskit::worker
