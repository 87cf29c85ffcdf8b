//! Dequantisation of ggml's block formats to f32, computed as ggml and the `gguf` Python package
//! compute it (one f32 multiply, then one add for `Q4_1`; no fused multiply-add), so that values
//! equal theirs exactly.

use super::tensor_info::GgmlType;

/// Elements per block of the quantised formats.
const QK: usize = 32;

/// IEEE half precision bits to f32 (exact: every f16 is an f32).
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    match (exponent, mantissa) {
        (0, 0) => f32::from_bits(sign),
        // Subnormal: mantissa · 2⁻²⁴, exact in f32.
        (0, m) => {
            let magnitude = m as f32 * f32::from_bits(0x3380_0000); // 2^-24
            if sign != 0 {
                -magnitude
            } else {
                magnitude
            }
        }
        // Infinity, or NaN with its payload kept.
        (0x1f, m) => f32::from_bits(sign | 0x7f80_0000 | (m << 13)),
        // Normal: rebias the exponent from 15 to 127.
        (e, m) => f32::from_bits(sign | ((e + 112) << 23) | (m << 13)),
    }
}

/// bfloat16 bits to f32: the upper half of an f32.
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// Appends the values of `bytes`, a whole number of `ty` blocks (checked when the file was opened),
/// to `out`. `ty` is a supported type.
pub(crate) fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut Vec<f32>) {
    match ty {
        GgmlType::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        GgmlType::BF16 => out.extend(bytes.chunks_exact(2).map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        GgmlType::Q8_0 => {
            for block in bytes.chunks_exact(2 + QK) {
                let d = half_at(block, 0);
                out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        GgmlType::Q4_0 => {
            for block in bytes.chunks_exact(2 + QK / 2) {
                let d = half_at(block, 0);
                let qs = &block[2..];
                out.extend(qs.iter().map(|&q| f32::from((q & 0x0f) as i8 - 8) * d));
                out.extend(qs.iter().map(|&q| f32::from((q >> 4) as i8 - 8) * d));
            }
        }
        GgmlType::Q4_1 => {
            for block in bytes.chunks_exact(4 + QK / 2) {
                let d = half_at(block, 0);
                let m = half_at(block, 2);
                let qs = &block[4..];
                out.extend(qs.iter().map(|&q| f32::from(q & 0x0f) * d + m));
                out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
            }
        }
        // The caller checks support first; an unsupported type appends nothing.
        GgmlType::Other(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_covers_every_class() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
    }

    #[test]
    fn bf16_is_the_upper_half() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }

    #[test]
    fn q4_0_puts_low_nibbles_first() {
        // d = 0.5; byte j holds element j (low nibble) and element j + 16 (high nibble).
        let mut block = vec![0x00, 0x38];
        block.extend((0u8..16).map(|j| j | ((15 - j) << 4)));
        let mut out = Vec::new();
        dequantize(GgmlType::Q4_0, &block, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(out[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
        }
    }
}
