//! Fashion-MNIST from gzipped IDX files (the layout of Debian's `dataset-fashion-mnist`).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use tch::{Kind, Tensor};

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The ten classes, in label order.
#[allow(dead_code)]
pub const CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// One split: images `(N, 1, 28, 28)` float, standardised with the training set's mean and
/// standard deviation, and labels `(N,)` int64.
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }
}

/// Both splits.
pub struct FashionMnist {
    pub train: Split,
    pub test: Split,
    /// Mean and standard deviation of the raw training pixels (in [0, 1]) used to standardise.
    pub mean: f64,
    pub std: f64,
}

/// Why the data set could not be loaded.
#[derive(Debug)]
pub enum DataError {
    Missing { dir: PathBuf, file: String },
    Io { path: PathBuf, source: io::Error },
    Format { path: PathBuf, reason: String },
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Missing { dir, file } => write!(
                f,
                "Fashion-MNIST not found: {} has no {file}(.gz).\n  Install it with \
                 `apt-get install dataset-fashion-mnist` (scripts/dev main does this when run as root), \
                 or pass --data DIR pointing at the four IDX files (gzipped or not).",
                dir.display()
            ),
            DataError::Io { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            DataError::Format { path, reason } => write!(f, "{} is not a valid IDX file: {reason}", path.display()),
        }
    }
}

impl std::error::Error for DataError {}

/// Loads the four IDX files from `dir` and standardises the images.
pub fn load(dir: &Path) -> Result<FashionMnist, DataError> {
    let train_images = read_images(dir, "train-images-idx3-ubyte")?;
    let train_labels = read_labels(dir, "train-labels-idx1-ubyte")?;
    let test_images = read_images(dir, "t10k-images-idx3-ubyte")?;
    let test_labels = read_labels(dir, "t10k-labels-idx1-ubyte")?;
    let mean = train_images.mean(Kind::Double).double_value(&[]);
    let std = train_images.std(true).double_value(&[]);
    let standardise = |t: Tensor| ((t - mean) / std).contiguous();
    Ok(FashionMnist {
        train: Split { images: standardise(train_images), labels: train_labels },
        test: Split { images: standardise(test_images), labels: test_labels },
        mean,
        std,
    })
}

fn read_file(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), DataError> {
    for (file, gz) in [(format!("{name}.gz"), true), (name.to_owned(), false)] {
        let path = dir.join(&file);
        if !path.is_file() {
            continue;
        }
        let io_err = |source| DataError::Io { path: path.clone(), source };
        let mut bytes = Vec::new();
        let raw = File::open(&path).map_err(io_err)?;
        if gz {
            GzDecoder::new(raw).read_to_end(&mut bytes).map_err(io_err)?;
        } else {
            io::BufReader::new(raw).read_to_end(&mut bytes).map_err(io_err)?;
        }
        return Ok((path, bytes));
    }
    Err(DataError::Missing { dir: dir.to_owned(), file: name.to_owned() })
}

/// Parses an IDX header: magic `0x0000_08_NN` (unsigned bytes, `NN` dimensions), then the sizes.
fn parse_idx(path: &Path, bytes: &[u8], dims: usize) -> Result<(Vec<i64>, usize), DataError> {
    let bad = |reason: String| DataError::Format { path: path.to_owned(), reason };
    let be = |at: usize| -> Option<u32> { Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?)) };
    let magic = be(0).ok_or_else(|| bad("shorter than its header".into()))?;
    if magic != 0x0800 | dims as u32 {
        return Err(bad(format!("magic {magic:#010x}, expected {:#010x}", 0x0800 | dims as u32)));
    }
    let sizes: Vec<i64> = (0..dims)
        .map(|d| be(4 + 4 * d).map(i64::from))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("shorter than its header".into()))?;
    let offset = 4 + 4 * dims;
    let expected = sizes.iter().product::<i64>() as usize;
    if bytes.len() - offset != expected {
        return Err(bad(format!("{} data bytes for shape {sizes:?} ({expected} expected)", bytes.len() - offset)));
    }
    Ok((sizes, offset))
}

fn read_images(dir: &Path, name: &str) -> Result<Tensor, DataError> {
    let (path, bytes) = read_file(dir, name)?;
    let (sizes, offset) = parse_idx(&path, &bytes, 3)?;
    let pixels = Tensor::from_slice(&bytes[offset..]).to_kind(Kind::Float) / 255.0;
    Ok(pixels.view([sizes[0], 1, sizes[1], sizes[2]]))
}

fn read_labels(dir: &Path, name: &str) -> Result<Tensor, DataError> {
    let (path, bytes) = read_file(dir, name)?;
    let (_, offset) = parse_idx(&path, &bytes, 1)?;
    Ok(Tensor::from_slice(&bytes[offset..]).to_kind(Kind::Int64))
}

/// Mini-batches of `split` in the order of `order` (a permutation, or `arange` for evaluation).
pub fn batches<'a>(
    split: &'a Split,
    order: &'a Tensor,
    batch_size: i64,
) -> impl Iterator<Item = (Tensor, Tensor)> + 'a {
    let n = order.size()[0];
    (0..n).step_by(batch_size as usize).map(move |start| {
        let idx = order.narrow(0, start, batch_size.min(n - start));
        (split.images.index_select(0, &idx), split.labels.index_select(0, &idx))
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = (0x0800u32 | dims.len() as u32).to_be_bytes().to_vec();
        dims.iter().for_each(|d| bytes.extend(d.to_be_bytes()));
        bytes.extend(data);
        bytes
    }

    fn write(dir: &Path, name: &str, bytes: &[u8], gz: bool) {
        if gz {
            let mut enc = GzEncoder::new(File::create(dir.join(format!("{name}.gz"))).unwrap(), Compression::fast());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    #[test]
    fn loads_gzipped_and_plain_idx_and_standardises() {
        let dir = std::env::temp_dir().join(format!("distill-fm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pixels: Vec<u8> = (0..2 * 28 * 28).map(|i| (i % 256) as u8).collect();
        write(&dir, "train-images-idx3-ubyte", &idx(&[2, 28, 28], &pixels), true);
        write(&dir, "train-labels-idx1-ubyte", &idx(&[2], &[3, 9]), true);
        write(&dir, "t10k-images-idx3-ubyte", &idx(&[1, 28, 28], &pixels[..784]), false);
        write(&dir, "t10k-labels-idx1-ubyte", &idx(&[1], &[7]), false);
        let data = load(&dir).unwrap();
        assert_eq!(data.train.images.size(), [2, 1, 28, 28]);
        assert_eq!(Vec::<i64>::try_from(&data.train.labels).unwrap(), [3, 9]);
        assert_eq!(Vec::<i64>::try_from(&data.test.labels).unwrap(), [7]);
        let mean = data.train.images.mean(Kind::Double).double_value(&[]);
        let std = data.train.images.std(true).double_value(&[]);
        assert!(mean.abs() < 1e-5 && (std - 1.0).abs() < 1e-5, "standardised: mean {mean}, std {std}");
        // Pixel 5 of the first image is 5/255 before standardisation.
        let first = data.train.images.flatten(0, -1).double_value(&[5]);
        assert!((first - (5.0 / 255.0 - data.mean) / data.std).abs() < 1e-5);

        write(&dir, "t10k-labels-idx1-ubyte", &idx(&[2], &[7]), false);
        let err = load(&dir).err().unwrap().to_string();
        assert!(err.contains("1 data bytes for shape [2]"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_folder_says_how_to_get_the_data() {
        let err = load(Path::new("/nonexistent/fashion")).err().unwrap().to_string();
        assert!(err.contains("apt-get install dataset-fashion-mnist") && err.contains("--data"), "{err}");
    }
}
