//! [`StringPath`]: what an adapter constructor receives for an endpoint written as a string path.

/// The module argument an adapter constructor receives, in `distill!`, for an endpoint written as
/// a string path (`teacher["conv2"]`): a TorchScript module's output, a teacher cache's stored
/// endpoint, or any model's submodule by name. Such a side has no typed module in Rust, only the
/// path.
///
/// Adapters that need nothing of the module — [`fitted_conv1x1_adapter`](super::fitted_conv1x1_adapter)
/// and [`fitted_linear_adapter`](super::fitted_linear_adapter), which take their widths from the
/// dry run — accept it. An adapter that reads the module it adapts, like
/// [`conv2d_adapter`](super::conv2d_adapter) reading a teacher conv's weights, takes that module's
/// type (`&Conv2D`), so a string path on its side is a type error at the path: write that side as
/// a typed path (`teacher.features[0].conv`) instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringPath {
    path: &'static str,
}

impl StringPath {
    /// The endpoint at `path`.
    pub const fn new(path: &'static str) -> StringPath {
        StringPath { path }
    }

    /// The path, as written.
    pub const fn path(&self) -> &'static str {
        self.path
    }
}
