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

/// The number of classes: labels are in `0..CLASSES.len()`.
const CLASS_COUNT: u8 = CLASSES.len() as u8;

/// Why the data set could not be loaded.
#[derive(Debug)]
pub enum DataError {
    Missing {
        dir: PathBuf,
        file: String,
    },
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// The file is not a valid IDX file of the expected layout.
    Format {
        path: PathBuf,
        reason: String,
    },
    /// The file is valid IDX but does not fit the data set (no images, a label out of range, fewer
    /// labels than images…).
    Content {
        path: PathBuf,
        reason: String,
    },
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
            DataError::Content { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for DataError {}

/// Loads the four IDX files from `dir` and standardises the images. Each split must have at least one
/// image, one label per image, and labels in `0..10`; the error names the file that does not.
pub fn load(dir: &Path) -> Result<FashionMnist, DataError> {
    let (train_images, train_labels) = read_split(dir, "train")?;
    let (test_images, test_labels) = read_split(dir, "t10k")?;
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

/// The images and labels of one split (`"train"` or `"t10k"`), checked against each other.
fn read_split(dir: &Path, split: &str) -> Result<(Tensor, Tensor), DataError> {
    let (images_path, images) = read_images(dir, &format!("{split}-images-idx3-ubyte"))?;
    let (labels_path, labels) = read_labels(dir, &format!("{split}-labels-idx1-ubyte"))?;
    let count = images.size()[0];
    if labels.len() as i64 != count {
        return Err(DataError::Content {
            path: labels_path,
            reason: format!("{} labels for the {count} images of {}", labels.len(), images_path.display()),
        });
    }
    Ok((images, Tensor::from_slice(&labels).to_kind(Kind::Int64)))
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
    let expected = sizes
        .iter()
        .try_fold(1usize, |product, &size| product.checked_mul(size as usize))
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or_else(|| bad(format!("shape {sizes:?} is too large")))?;
    if bytes.len() - offset != expected {
        return Err(bad(format!("{} data bytes for shape {sizes:?} ({expected} expected)", bytes.len() - offset)));
    }
    Ok((sizes, offset))
}

/// The images `(N, 1, H, W)` in [0, 1], and the file they came from.
fn read_images(dir: &Path, name: &str) -> Result<(PathBuf, Tensor), DataError> {
    let (path, bytes) = read_file(dir, name)?;
    let (sizes, offset) = parse_idx(&path, &bytes, 3)?;
    if sizes.contains(&0) {
        return Err(DataError::Content { path, reason: format!("no images (shape {sizes:?})") });
    }
    let pixels = Tensor::from_slice(&bytes[offset..]).to_kind(Kind::Float) / 255.0;
    Ok((path, pixels.view([sizes[0], 1, sizes[1], sizes[2]])))
}

/// The labels, each checked to be a class, and the file they came from.
fn read_labels(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), DataError> {
    let (path, mut bytes) = read_file(dir, name)?;
    let (_, offset) = parse_idx(&path, &bytes, 1)?;
    let labels = bytes.split_off(offset);
    if let Some((index, label)) = labels.iter().enumerate().find(|(_, &label)| label >= CLASS_COUNT) {
        return Err(DataError::Content {
            path,
            reason: format!("label {label} at index {index}: the classes are 0..{CLASS_COUNT}"),
        });
    }
    Ok((path, labels))
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

    /// A folder of four IDX files (plain) with the given image count and labels.
    fn folder(tag: &str, images: u32, labels: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("distill-fm-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pixels = vec![7u8; images as usize * 28 * 28];
        for split in ["train", "t10k"] {
            write(&dir, &format!("{split}-images-idx3-ubyte"), &idx(&[images, 28, 28], &pixels), false);
            write(&dir, &format!("{split}-labels-idx1-ubyte"), &idx(&[labels.len() as u32], labels), false);
        }
        dir
    }

    /// The error of loading `dir`, which must name `file`.
    fn load_error(dir: &Path, file: &str) -> String {
        let err = match load(dir) {
            Ok(_) => panic!("{} loaded", dir.display()),
            Err(err) => err.to_string(),
        };
        std::fs::remove_dir_all(dir).unwrap();
        assert!(err.contains(file), "{err}");
        err
    }

    #[test]
    fn inconsistent_files_are_errors_naming_the_file() {
        let err = load_error(&folder("empty", 0, &[]), "train-images-idx3-ubyte");
        assert!(err.contains("no images"), "{err}");
        let err = load_error(&folder("short", 3, &[1, 2]), "train-labels-idx1-ubyte");
        assert!(err.contains("2 labels") && err.contains("3 images"), "{err}");
        let err = load_error(&folder("label", 2, &[1, 10]), "train-labels-idx1-ubyte");
        assert!(err.contains("10"), "{err}");

        // Sizes whose product overflows.
        let dir = folder("overflow", 1, &[1]);
        write(&dir, "train-images-idx3-ubyte", &idx(&[u32::MAX, u32::MAX, u32::MAX], &[]), false);
        let err = load_error(&dir, "train-images-idx3-ubyte");
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn missing_folder_says_how_to_get_the_data() {
        let err = load(Path::new("/nonexistent/fashion")).err().unwrap().to_string();
        assert!(err.contains("apt-get install dataset-fashion-mnist") && err.contains("--data"), "{err}");
    }
}
