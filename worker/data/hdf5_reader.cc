// ReadHdf5 (worker/data/dataset.h), on the HDF5 C API.
#include <hdf5.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "worker/data/dataset.h"

namespace pskit::worker {
namespace {

// Closes an HDF5 handle when it goes out of scope.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// Opens dataset `name` and returns its dimensions.
absl::StatusOr<std::vector<hsize_t>> Dims(hid_t file, const std::string& path,
                                          const std::string& name,
                                          hid_t* dataset) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) {
    return absl::NotFoundError(
        absl::StrCat("'", path, "' has no dataset '", name, "'"));
  }
  *dataset = H5Dopen2(file, name.c_str(), H5P_DEFAULT);
  if (*dataset < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open dataset '", name, "' in '", path, "'"));
  }
  Handle space(H5Dget_space(*dataset), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 1 || rank > 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset '", name, "' in '", path, "' has ", rank, " dimensions"));
  }
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return dims;
}

}  // namespace

absl::StatusOr<Dataset> ReadHdf5(const std::string& path,
                                 const std::string& features,
                                 const std::string& labels) {
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("no file '", path, "'"));
  }
  // HDF5 prints its own error stack to stderr by default; our message says
  // what went wrong instead.
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is not an HDF5 file (or cannot be read)"));
  }
  hid_t fid = -1, lid = -1;
  absl::StatusOr<std::vector<hsize_t>> fdims = Dims(file.get(), path, features, &fid);
  Handle fds(fid, H5Dclose);
  if (!fdims.ok()) return fdims.status();
  absl::StatusOr<std::vector<hsize_t>> ldims = Dims(file.get(), path, labels, &lid);
  Handle lds(lid, H5Dclose);
  if (!ldims.ok()) return ldims.status();
  if (ldims->size() != 1 && !(ldims->size() == 2 && (*ldims)[1] == 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "labels dataset '", labels, "' must have shape [n] (or [n, 1])"));
  }
  const hsize_t n = (*fdims)[0];
  if ((*ldims)[0] != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "': '", features, "' holds ", n, " samples but '", labels,
        "' holds ", (*ldims)[0], " labels"));
  }
  hsize_t dim = 1;
  for (size_t d = 1; d < fdims->size(); ++d) dim *= (*fdims)[d];
  if (n == 0 || dim == 0 || dim > (1u << 24)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "': dataset '", features, "' has ", n, " samples of ", dim,
        " features"));
  }
  Dataset ds;
  ds.feature_dim = static_cast<int>(dim);
  ds.features.resize(n * dim);
  ds.labels.resize(n);
  // HDF5 converts any stored numeric type to the memory type asked for.
  if (H5Dread(fds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
              ds.features.data()) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read dataset '", features, "' of '", path, "' as numbers"));
  }
  if (H5Dread(lds.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
              ds.labels.data()) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read dataset '", labels, "' of '", path, "' as integers"));
  }
  for (size_t i = 0; i < ds.labels.size(); ++i) {
    if (ds.labels[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path, "': label ", ds.labels[i], " of sample ", i,
          " is negative; labels are class indices"));
    }
    ds.num_classes = std::max(ds.num_classes, ds.labels[i] + 1);
  }
  return ds;
}

}  // namespace pskit::worker
