//! Tensor infos: each tensor's name, dimensions, ggml type and place in the data region.

use std::fmt;

use super::error::GgufError;
use super::reader::Reader;

/// ggml refuses tensors of more dimensions (`GGML_MAX_DIMS`).
pub(crate) const MAX_DIMS: u32 = 4;

/// The storage type of a tensor (`ggml_type`): the ones this reader dequantises, and any other by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // ggml's own names, as every GGUF tool prints them.
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// Blocks of 32: an f16 scale `d`, then 32 `i8` quants; value `q·d`.
    Q8_0,
    /// Blocks of 32: an f16 scale `d`, then 16 bytes of 4-bit quants (low nibbles are elements
    /// 0–15, high nibbles 16–31); value `(q − 8)·d`.
    Q4_0,
    /// Blocks of 32: f16 scale `d` and minimum `m`, then 16 bytes of 4-bit quants laid out as in
    /// `Q4_0`; value `q·d + m`.
    Q4_1,
    /// Any other ggml type (`Q4_K`, `Q6_K`, `IQ2_XS`…), by id: its tensors are listed, and reading
    /// one is [`GgufError::UnsupportedType`].
    Other(u32),
}

impl GgmlType {
    /// The types whose tensors [`GgufFile::tensor`](super::GgufFile::tensor) dequantises.
    pub const SUPPORTED: [GgmlType; 6] =
        [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1];

    /// The type for an id of the file.
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// The id ggml gives the type.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    /// ggml's name of the type (`Q4_1`, `Q6_K`…), or `type N` for an id ggml does not define.
    pub fn name(self) -> &'static str {
        match self.id() {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            6 => "Q5_0",
            7 => "Q5_1",
            8 => "Q8_0",
            9 => "Q8_1",
            10 => "Q2_K",
            11 => "Q3_K",
            12 => "Q4_K",
            13 => "Q5_K",
            14 => "Q6_K",
            15 => "Q8_K",
            16 => "IQ2_XXS",
            17 => "IQ2_XS",
            18 => "IQ3_XXS",
            19 => "IQ1_S",
            20 => "IQ4_NL",
            21 => "IQ3_S",
            22 => "IQ2_S",
            23 => "IQ4_XS",
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            29 => "IQ1_M",
            30 => "BF16",
            34 => "TQ1_0",
            35 => "TQ2_0",
            39 => "MXFP4",
            40 => "NVFP4",
            41 => "Q1_0",
            _ => "an unknown type",
        }
    }

    /// Whether [`GgufFile::tensor`](super::GgufFile::tensor) dequantises this type.
    pub fn is_supported(self) -> bool {
        !matches!(self, GgmlType::Other(_))
    }

    /// `(elements per block, bytes per block)` of a supported type; `None` for the others.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Other(_) => None,
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgmlType::Other(id) if self.name() == "an unknown type" => write!(f, "type {id}"),
            GgmlType::Other(id) => write!(f, "{} (type {id})", self.name()),
            _ => f.write_str(self.name()),
        }
    }
}

/// Where a tensor is and what it holds, as declared in the file's tensor infos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name in llama.cpp's convention (`blk.3.attn_q.weight`, `token_embd.weight`).
    pub name: String,
    /// Dimensions in GGUF order: `dims[0]` (ggml's `ne[0]`) is the innermost, contiguous one,
    /// so PyTorch's shape is this list reversed ([`TensorInfo::shape`]).
    pub dims: Vec<u64>,
    /// The storage type.
    pub ggml_type: GgmlType,
    /// Offset of the tensor's bytes from the start of the data region (a multiple of the alignment).
    pub offset: u64,
}

impl TensorInfo {
    /// The shape in PyTorch's (row-major) order: the GGUF dimensions reversed. A 4096 × 11008
    /// `nn.Linear` weight (`[out, in]` in PyTorch) is stored with `dims = [in, out]`.
    pub fn shape(&self) -> Vec<i64> {
        // Every dim was checked at open to fit in i64 on its own (a zero dimension makes the
        // product fit whatever the others are).
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }

    /// Number of elements.
    pub fn element_count(&self) -> u64 {
        // Checked at open not to overflow.
        self.dims.iter().product()
    }

    /// Bytes the tensor takes in the file, for a supported type; `None` for the others (and for a
    /// size past `u64`, which no file that opened has).
    pub fn byte_size(&self) -> Option<u64> {
        let (block, bytes) = self.ggml_type.block_layout()?;
        (self.element_count() / block).checked_mul(bytes)
    }
}

/// Reads one tensor info and checks what can be checked without the data region: dimensions,
/// element count, block divisibility.
pub(crate) fn read_tensor_info(reader: &mut Reader<'_>) -> Result<TensorInfo, GgufError> {
    let name = reader.string("a tensor name")?;
    let at = reader.position();
    let n_dims = reader.u32("a tensor's dimension count")?;
    if n_dims > MAX_DIMS {
        return Err(
            reader.error_at(at, format!("tensor `{name}` has {n_dims} dimensions; GGUF allows at most {MAX_DIMS}"))
        );
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    let mut count: u64 = 1;
    for _ in 0..n_dims {
        let at = reader.position();
        let dim = reader.u64("a tensor dimension")?;
        // Each dimension on its own, as a zero elsewhere makes the product 0 whatever this one is:
        // `shape` gives PyTorch i64 dimensions.
        if i64::try_from(dim).is_err() {
            return Err(reader.error_at(at, format!("tensor `{name}`: dimension {dim} does not fit in i64")));
        }
        count = count.checked_mul(dim).filter(|&c| i64::try_from(c).is_ok()).ok_or_else(|| {
            reader.error_at(at, format!("tensor `{name}`: its dimensions' product overflows (dimension {dim})"))
        })?;
        dims.push(dim);
    }
    let at = reader.position();
    let ggml_type = GgmlType::from_id(reader.u32("a tensor's type")?);
    if let Some((block, _)) = ggml_type.block_layout() {
        let inner = dims.first().copied().unwrap_or(1);
        if inner % block != 0 {
            return Err(reader.error_at(
                at,
                format!("tensor `{name}` is {ggml_type}, whose blocks hold {block} values, but its first dimension is {inner}"),
            ));
        }
    }
    let offset = reader.u64("a tensor's data offset")?;
    Ok(TensorInfo { name, dims, ggml_type, offset })
}
