//! GGUF metadata: typed key–value pairs (`general.architecture`, `llama.block_count`,
//! `tokenizer.ggml.tokens`…), every value type of the format, arrays included.

use std::fmt;

use super::error::GgufError;
use super::reader::Reader;

/// Arrays nested deeper than this are refused: the format allows nesting, no writer nests more
/// than a couple of levels, and a hostile file must not exhaust the stack by recursion.
const MAX_ARRAY_DEPTH: usize = 16;

/// One metadata value, as stored in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// `GGUF_TYPE_UINT8`.
    U8(u8),
    /// `GGUF_TYPE_INT8`.
    I8(i8),
    /// `GGUF_TYPE_UINT16`.
    U16(u16),
    /// `GGUF_TYPE_INT16`.
    I16(i16),
    /// `GGUF_TYPE_UINT32`.
    U32(u32),
    /// `GGUF_TYPE_INT32`.
    I32(i32),
    /// `GGUF_TYPE_FLOAT32`.
    F32(f32),
    /// `GGUF_TYPE_BOOL` (one byte, 0 or 1).
    Bool(bool),
    /// `GGUF_TYPE_STRING` (UTF-8).
    String(String),
    /// `GGUF_TYPE_ARRAY`: values of one element type, possibly arrays themselves.
    Array(MetadataArray),
    /// `GGUF_TYPE_UINT64`.
    U64(u64),
    /// `GGUF_TYPE_INT64`.
    I64(i64),
    /// `GGUF_TYPE_FLOAT64`.
    F64(f64),
}

/// A metadata array, stored by element type: a vocabulary's 49 152 token strings are one
/// `Vec<String>`, its token types one `Vec<i32>`.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataArray {
    /// Elements of type `u8`.
    U8(Vec<u8>),
    /// Elements of type `i8`.
    I8(Vec<i8>),
    /// Elements of type `u16`.
    U16(Vec<u16>),
    /// Elements of type `i16`.
    I16(Vec<i16>),
    /// Elements of type `u32`.
    U32(Vec<u32>),
    /// Elements of type `i32`.
    I32(Vec<i32>),
    /// Elements of type `f32`.
    F32(Vec<f32>),
    /// Elements of type `bool`.
    Bool(Vec<bool>),
    /// Strings.
    String(Vec<String>),
    /// Arrays (each with its own element type).
    Array(Vec<MetadataArray>),
    /// Elements of type `u64`.
    U64(Vec<u64>),
    /// Elements of type `i64`.
    I64(Vec<i64>),
    /// Elements of type `f64`.
    F64(Vec<f64>),
}

/// The type tag of a metadata value (`gguf_type` in ggml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `u8`.
    U8,
    /// `i8`.
    I8,
    /// `u16`.
    U16,
    /// `i16`.
    I16,
    /// `u32`.
    U32,
    /// `i32`.
    I32,
    /// `f32`.
    F32,
    /// `bool`.
    Bool,
    /// A string.
    String,
    /// An array.
    Array,
    /// `u64`.
    U64,
    /// `i64`.
    I64,
    /// `f64`.
    F64,
}

impl ValueType {
    /// The type for a tag of the file, if the format defines it.
    pub fn from_id(id: u32) -> Option<ValueType> {
        Some(match id {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::String,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            _ => return None,
        })
    }

    /// The type's name in messages (`u32`, `string`…).
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "u8",
            ValueType::I8 => "i8",
            ValueType::U16 => "u16",
            ValueType::I16 => "i16",
            ValueType::U32 => "u32",
            ValueType::I32 => "i32",
            ValueType::F32 => "f32",
            ValueType::Bool => "bool",
            ValueType::String => "string",
            ValueType::Array => "array",
            ValueType::U64 => "u64",
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type takes in the file: bounds an array's count by the
    /// bytes left before anything is allocated for it.
    fn min_bytes(self) -> usize {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 8,
            // A string's u64 length; an array's u32 element type and u64 count.
            ValueType::String => 8,
            ValueType::Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl MetadataValue {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            MetadataValue::U8(_) => ValueType::U8,
            MetadataValue::I8(_) => ValueType::I8,
            MetadataValue::U16(_) => ValueType::U16,
            MetadataValue::I16(_) => ValueType::I16,
            MetadataValue::U32(_) => ValueType::U32,
            MetadataValue::I32(_) => ValueType::I32,
            MetadataValue::F32(_) => ValueType::F32,
            MetadataValue::Bool(_) => ValueType::Bool,
            MetadataValue::String(_) => ValueType::String,
            MetadataValue::Array(_) => ValueType::Array,
            MetadataValue::U64(_) => ValueType::U64,
            MetadataValue::I64(_) => ValueType::I64,
            MetadataValue::F64(_) => ValueType::F64,
        }
    }

    /// The type in messages: `u32`, `string`, `array of string`, `array of array`…
    pub fn type_description(&self) -> String {
        match self {
            MetadataValue::Array(array) => format!("array of {}", array.element_type()),
            other => other.value_type().name().to_owned(),
        }
    }

    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U8(v) => Some(v.into()),
            MetadataValue::U16(v) => Some(v.into()),
            MetadataValue::U32(v) => Some(v.into()),
            MetadataValue::U64(v) => Some(v),
            MetadataValue::I8(v) => u64::try_from(v).ok(),
            MetadataValue::I16(v) => u64::try_from(v).ok(),
            MetadataValue::I32(v) => u64::try_from(v).ok(),
            MetadataValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, when it is an integer of any width that fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetadataValue::I8(v) => Some(v.into()),
            MetadataValue::I16(v) => Some(v.into()),
            MetadataValue::I32(v) => Some(v.into()),
            MetadataValue::I64(v) => Some(v),
            MetadataValue::U8(v) => Some(v.into()),
            MetadataValue::U16(v) => Some(v.into()),
            MetadataValue::U32(v) => Some(v.into()),
            MetadataValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is an `f32` or an `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(v.into()),
            MetadataValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The string, when the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, when the value is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetadataValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The array, when the value is one.
    pub fn as_array(&self) -> Option<&MetadataArray> {
        match self {
            MetadataValue::Array(array) => Some(array),
            _ => None,
        }
    }
}

impl MetadataArray {
    /// The element type.
    pub fn element_type(&self) -> ValueType {
        match self {
            MetadataArray::U8(_) => ValueType::U8,
            MetadataArray::I8(_) => ValueType::I8,
            MetadataArray::U16(_) => ValueType::U16,
            MetadataArray::I16(_) => ValueType::I16,
            MetadataArray::U32(_) => ValueType::U32,
            MetadataArray::I32(_) => ValueType::I32,
            MetadataArray::F32(_) => ValueType::F32,
            MetadataArray::Bool(_) => ValueType::Bool,
            MetadataArray::String(_) => ValueType::String,
            MetadataArray::Array(_) => ValueType::Array,
            MetadataArray::U64(_) => ValueType::U64,
            MetadataArray::I64(_) => ValueType::I64,
            MetadataArray::F64(_) => ValueType::F64,
        }
    }

    /// How many elements the array has.
    pub fn len(&self) -> usize {
        match self {
            MetadataArray::U8(v) => v.len(),
            MetadataArray::I8(v) => v.len(),
            MetadataArray::U16(v) => v.len(),
            MetadataArray::I16(v) => v.len(),
            MetadataArray::U32(v) => v.len(),
            MetadataArray::I32(v) => v.len(),
            MetadataArray::F32(v) => v.len(),
            MetadataArray::Bool(v) => v.len(),
            MetadataArray::String(v) => v.len(),
            MetadataArray::Array(v) => v.len(),
            MetadataArray::U64(v) => v.len(),
            MetadataArray::I64(v) => v.len(),
            MetadataArray::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as signed integers, when they are integers that fit in `i64` (any width);
    /// `None` for other element types or a `u64` past `i64::MAX`.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        fn widen<T: Copy + TryInto<i64>>(values: &[T]) -> Option<Vec<i64>> {
            values.iter().map(|&v| v.try_into().ok()).collect()
        }
        match self {
            MetadataArray::U8(v) => widen(v),
            MetadataArray::I8(v) => widen(v),
            MetadataArray::U16(v) => widen(v),
            MetadataArray::I16(v) => widen(v),
            MetadataArray::U32(v) => widen(v),
            MetadataArray::I32(v) => widen(v),
            MetadataArray::U64(v) => widen(v),
            MetadataArray::I64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// The elements as `f64`, when they are floats.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        match self {
            MetadataArray::F32(v) => Some(v.iter().map(|&x| x.into()).collect()),
            MetadataArray::F64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// The strings, when the elements are strings.
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            MetadataArray::String(v) => Some(v),
            _ => None,
        }
    }
}

/// Reads one value of type `value_type` (its tag already read).
pub(crate) fn read_value(reader: &mut Reader<'_>, value_type: ValueType) -> Result<MetadataValue, GgufError> {
    Ok(match value_type {
        ValueType::U8 => MetadataValue::U8(reader.u8("a u8 value")?),
        ValueType::I8 => MetadataValue::I8(reader.i8("an i8 value")?),
        ValueType::U16 => MetadataValue::U16(reader.u16("a u16 value")?),
        ValueType::I16 => MetadataValue::I16(reader.i16("an i16 value")?),
        ValueType::U32 => MetadataValue::U32(reader.u32("a u32 value")?),
        ValueType::I32 => MetadataValue::I32(reader.i32("an i32 value")?),
        ValueType::F32 => MetadataValue::F32(reader.f32("an f32 value")?),
        ValueType::U64 => MetadataValue::U64(reader.u64("a u64 value")?),
        ValueType::I64 => MetadataValue::I64(reader.i64("an i64 value")?),
        ValueType::F64 => MetadataValue::F64(reader.f64("an f64 value")?),
        ValueType::Bool => MetadataValue::Bool(read_bool(reader)?),
        ValueType::String => MetadataValue::String(reader.string("a string value")?),
        ValueType::Array => MetadataValue::Array(read_array(reader, 1)?),
    })
}

fn read_bool(reader: &mut Reader<'_>) -> Result<bool, GgufError> {
    let at = reader.position();
    match reader.u8("a bool value")? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(reader.error_at(at, format!("a bool value is {other}, neither 0 nor 1"))),
    }
}

/// Reads `count` elements with `read`, the count already checked against the bytes left.
fn elements<T>(
    reader: &mut Reader<'_>,
    count: usize,
    mut read: impl FnMut(&mut Reader<'_>) -> Result<T, GgufError>,
) -> Result<Vec<T>, GgufError> {
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        values.push(read(reader)?);
    }
    Ok(values)
}

/// Reads an array (element type, count, elements) at nesting level `depth` (1 for a top-level one).
fn read_array(reader: &mut Reader<'_>, depth: usize) -> Result<MetadataArray, GgufError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(reader.error_at(reader.position(), format!("arrays are nested more than {MAX_ARRAY_DEPTH} deep")));
    }
    let element_type = read_type(reader, "an array's element type")?;
    // Each element takes at least `min_bytes` of the file, so `count` elements never allocate more
    // than a small multiple of the file's own size, whatever the count field says.
    let n = reader.count(element_type.min_bytes(), "an array's length")?;
    Ok(match element_type {
        ValueType::U8 => MetadataArray::U8(elements(reader, n, |r| r.u8("an array's u8 element"))?),
        ValueType::I8 => MetadataArray::I8(elements(reader, n, |r| r.i8("an array's i8 element"))?),
        ValueType::U16 => MetadataArray::U16(elements(reader, n, |r| r.u16("an array's u16 element"))?),
        ValueType::I16 => MetadataArray::I16(elements(reader, n, |r| r.i16("an array's i16 element"))?),
        ValueType::U32 => MetadataArray::U32(elements(reader, n, |r| r.u32("an array's u32 element"))?),
        ValueType::I32 => MetadataArray::I32(elements(reader, n, |r| r.i32("an array's i32 element"))?),
        ValueType::F32 => MetadataArray::F32(elements(reader, n, |r| r.f32("an array's f32 element"))?),
        ValueType::U64 => MetadataArray::U64(elements(reader, n, |r| r.u64("an array's u64 element"))?),
        ValueType::I64 => MetadataArray::I64(elements(reader, n, |r| r.i64("an array's i64 element"))?),
        ValueType::F64 => MetadataArray::F64(elements(reader, n, |r| r.f64("an array's f64 element"))?),
        ValueType::Bool => MetadataArray::Bool(elements(reader, n, read_bool)?),
        ValueType::String => MetadataArray::String(elements(reader, n, |r| r.string("an array's string element"))?),
        ValueType::Array => MetadataArray::Array(elements(reader, n, |r| read_array(r, depth + 1))?),
    })
}

/// Reads a value type tag (`u32`).
pub(crate) fn read_type(reader: &mut Reader<'_>, what: &str) -> Result<ValueType, GgufError> {
    let at = reader.position();
    let id = reader.u32(what)?;
    ValueType::from_id(id)
        .ok_or_else(|| reader.error_at(at, format!("{what} is {id}, which GGUF does not define (0 to 12)")))
}
