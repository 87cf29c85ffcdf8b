//! What goes wrong when layers are pruned, or a record of their kept channels is kept, saved or
//! read back.

/// A layer that cannot be pruned as asked, or a prune record that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PruneError {
    /// The filters of an undefined tensor were to be ranked.
    #[error("cannot rank the filters of an undefined tensor")]
    RankUndefined,
    /// The filters of a 0-d tensor were to be ranked.
    #[error("cannot rank the filters of a 0-d tensor")]
    RankScalar,
    /// More filters (or fewer than one) to keep than the weight has.
    #[error("cannot keep {keep} of the {filters} filters of a weight of shape {shape:?}")]
    KeepOutOfRange {
        /// The number asked for.
        keep: i64,
        /// The weight's filters.
        filters: i64,
        /// The weight's shape.
        shape: Vec<i64>,
    },
    /// A keep ratio outside `(0, 1]`, or no channel to keep a ratio of.
    #[error("cannot keep a ratio {ratio} of {channels} channels: need channels ≥ 1 and a ratio in (0, 1]")]
    KeepRatio {
        /// The ratio asked for.
        ratio: f64,
        /// The channels it is a ratio of.
        channels: i64,
    },
    /// A layer wrapped without its configuration, which a pruned copy needs.
    #[error(
        "cannot prune a {layer} wrapped with `{wrapper}::from_tch`: its config is unknown; wrap it with \
         `{wrapper}::from_tch_with_config`"
    )]
    UnknownConfig {
        /// `"conv"` or `"batch norm"`.
        layer: &'static str,
        /// `"Conv"` or `"BatchNorm"`.
        wrapper: &'static str,
    },
    /// A grouped conv, whose channels cannot be pruned one by one.
    #[error("cannot prune the channels of a grouped conv (groups = {groups})")]
    Grouped {
        /// Its group count.
        groups: i64,
    },
    /// A batch norm of a dimension the pruning does not rebuild.
    #[error("cannot prune a {dims}-d batch norm")]
    BatchNormDims {
        /// Its spatial dimensions.
        dims: usize,
    },
    /// A layer's tensor with another number of dimensions than its kind has.
    #[error("cannot prune a {what} whose tensor has shape {shape:?}: expected {dims} dimensions")]
    TensorRank {
        /// The layer (`"conv2d"`, `"linear"`, `"batch norm's running mean"`).
        what: &'static str,
        /// The tensor's shape (empty when undefined).
        shape: Vec<i64>,
        /// The dimensions it must have.
        dims: usize,
    },
    /// A conv given as depthwise whose weight is not `[channels, 1, kh, kw]`.
    #[error("not a depthwise conv: a weight of shape {shape:?} (expected [channels, 1, kh, kw])")]
    NotDepthwise {
        /// Its weight's shape.
        shape: Vec<i64>,
    },
    /// A conv given as depthwise with another group count than channels.
    #[error("not a depthwise conv: {groups} groups for {channels} channels")]
    DepthwiseGroups {
        /// Its group count.
        groups: i64,
        /// Its channels.
        channels: i64,
    },
    /// Another number of kept-channel lists than a block has inner widths.
    #[error(
        "a {block} has {widths} inner width{}, so it takes {widths} list{} of kept channels, not {lists}",
        plural(*widths),
        plural(*widths)
    )]
    KeepLists {
        /// The block's type (`"BasicBlock"`).
        block: &'static str,
        /// Its inner widths.
        widths: usize,
        /// The lists given.
        lists: usize,
    },
    /// A module path with the separator of the saved names.
    #[error("a module path in a prune record cannot contain `/`: `{path}`")]
    PathWithSlash {
        /// The path.
        path: String,
    },
    /// A conv that carries no record of its pruning.
    #[error("the conv at `{path}` carries no pruning record: it was not made by `prune_conv2d`")]
    NotPruned {
        /// Its path.
        path: String,
    },
    /// A layer the record does not hold.
    #[error("the prune record has no layer `{path}`; it records {known:?}")]
    UnknownLayer {
        /// The path asked for.
        path: String,
        /// The recorded paths.
        known: Vec<String>,
    },
    /// A layer's record that does not fit the conv it is attached to.
    #[error("cannot attach the prune record of `{path}`: {source}")]
    Attach {
        /// The layer's path.
        path: String,
        /// Why it does not fit.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file that is not a prune record written by `PruneRecord::save`.
    #[error("{file} is not a prune record: {problem}")]
    NotARecord {
        /// The file.
        file: String,
        /// What it holds instead.
        #[source]
        problem: RecordProblem,
    },
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

/// What a file read as a prune record holds that a record does not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordProblem {
    /// A tensor whose name is not `<path>/<part>` of a record.
    #[error("unexpected tensor `{name}`")]
    UnexpectedTensor {
        /// The tensor's name.
        name: String,
    },
    /// A part that is not a 1-D `int64` tensor.
    #[error("`{name}` is not a 1-D int64 tensor")]
    NotIndices {
        /// The tensor's name.
        name: String,
    },
    /// A layer with a part missing.
    #[error("the record of `{path}` is incomplete")]
    Incomplete {
        /// The layer's path.
        path: String,
    },
    /// A layer whose record is not valid.
    #[error("`{path}`: {source}")]
    InvalidLayer {
        /// The layer's path.
        path: String,
        /// Why it is not valid.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
