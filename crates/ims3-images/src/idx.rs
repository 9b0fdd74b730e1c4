//! The IDX format of (Fashion-)MNIST (`train-images-idx3-ubyte[.gz]`, `...-labels-idx1-ubyte`):
//! a big-endian header (two zero bytes, a type byte 0x08 for u8, the number of dimensions, one
//! u32 per dimension), then the values row-major. Gzipped files are recognised by their magic.

use std::io::Read;
use std::path::Path;

use crate::ImageError;

/// An IDX array of u8.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxU8 {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn bad(path: &Path, why: impl Into<String>) -> ImageError {
    ImageError::Decode { path: path.to_path_buf(), why: why.into() }
}

/// Reads an IDX file of unsigned bytes, gzipped or not.
pub fn read_idx_u8(path: &Path) -> Result<IdxU8, ImageError> {
    let raw = std::fs::read(path).map_err(|e| ImageError::Read { path: path.to_path_buf(), why: e.to_string() })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out).map_err(|e| bad(path, format!("gzip: {e}")))?;
        out
    } else {
        raw
    };
    parse_idx_u8(&bytes).map_err(|why| bad(path, why))
}

/// Parses IDX bytes (already decompressed).
pub fn parse_idx_u8(bytes: &[u8]) -> Result<IdxU8, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (bad magic)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x}, only unsigned bytes (0x08) are supported", bytes[2]));
    }
    let nd = bytes[3] as usize;
    let head = 4 + 4 * nd;
    if nd == 0 || bytes.len() < head {
        return Err(format!("IDX header truncated ({nd} dimensions, {} bytes)", bytes.len()));
    }
    let dims: Vec<usize> = (0..nd).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize).collect();
    let n: usize = dims.iter().product();
    if bytes.len() != head + n {
        return Err(format!("IDX dims {dims:?} need {n} values, file has {}", bytes.len() - head));
    }
    Ok(IdxU8 { dims, data: bytes[head..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let mut b = vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend([1, 2, 3, 4, 5, 6]);
        assert_eq!(parse_idx_u8(&b).unwrap(), IdxU8 { dims: vec![2, 3], data: vec![1, 2, 3, 4, 5, 6] });
        assert!(parse_idx_u8(&b[..15]).unwrap_err().contains("need 6 values"));
        b[2] = 0x0d;
        assert!(parse_idx_u8(&b).unwrap_err().contains("0x0d"));
        assert!(parse_idx_u8(b"PNG").unwrap_err().contains("bad magic"));
    }
}
