//! A reader for IDX files, the format of MNIST and Fashion-MNIST, gzipped or plain.
//!
//! An IDX file is a big-endian header followed by raw data:
//!
//! | bytes | images (`…-idx3-ubyte`)       | labels (`…-idx1-ubyte`)        |
//! |-------|-------------------------------|--------------------------------|
//! | 0..4  | magic `0x00000803`            | magic `0x00000801`             |
//! | 4..8  | number of images `n`          | number of labels `n`           |
//! | 8..12 | rows                          | (data starts at byte 8)        |
//! | 12..16| columns                       |                                |
//! | 16..  | `n × rows × cols` pixel bytes | `n` label bytes                |
//!
//! The magic number's third byte (`0x08`) says "unsigned byte" and its fourth the number of
//! dimensions. Files starting with the gzip signature (`1f 8b`) are decompressed first,
//! whatever their name.
//!
//! Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017, MIT licence) is not embedded: it is read from
//! a directory, by default [`DEFAULT_FASHION_MNIST_DIR`], where the Debian package
//! `dataset-fashion-mnist` installs it.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataError, Dataset};

/// Where the Debian package `dataset-fashion-mnist` installs the four gzipped IDX files.
pub const DEFAULT_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Magic number of an IDX file of unsigned-byte images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;

/// Magic number of an IDX file of unsigned-byte labels (1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Number of classes in Fashion-MNIST (and MNIST).
pub const FASHION_MNIST_CLASSES: usize = 10;

/// The Fashion-MNIST class names, indexed by label.
pub const FASHION_MNIST_LABELS: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// How to get Fashion-MNIST when it is missing (part of the [`DataError::Missing`] message).
pub const FASHION_MNIST_HINT: &str = "install it with `apt-get install dataset-fashion-mnist` \
     (files go to /usr/share/datasets/fashion-mnist), or pass `--data DIR` with a directory \
     holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
     t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (gzipped or not)";

const GZIP_SIGNATURE: [u8; 2] = [0x1f, 0x8b];

/// Images decoded from an IDX file: `n` images of `rows × cols` bytes, row-major, one after
/// another in `pixels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `n × rows × cols` pixel values.
    pub pixels: Vec<u8>,
}

/// Reads a whole file, decompressing it if it starts with the gzip signature.
///
/// A file that does not exist gives [`DataError::Missing`]; other I/O problems give
/// [`DataError::Io`]; a corrupt or cut-off gzip stream gives [`DataError::Decompress`].
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
                hint: "check the path".to_string(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    if !raw.starts_with(&GZIP_SIGNATURE) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(|source| DataError::Decompress {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(out)
}

/// Reads the big-endian `u32` at `at`, or reports the file as truncated at a header of
/// `header_len` bytes.
fn be_u32(bytes: &[u8], at: usize, header_len: usize, path: &Path) -> Result<u32, DataError> {
    match bytes.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header_len as u64,
            found: bytes.len() as u64,
        }),
    }
}

fn check_magic(
    bytes: &[u8],
    expected: u32,
    header_len: usize,
    what: &'static str,
    path: &Path,
) -> Result<(), DataError> {
    let found = be_u32(bytes, 0, header_len, path)?;
    if found != expected {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected,
            found,
            what,
        });
    }
    Ok(())
}

/// Checks that `bytes` holds exactly `header_len + payload` bytes.
fn check_len(
    bytes: &[u8],
    header_len: usize,
    payload: Option<usize>,
    path: &Path,
) -> Result<(), DataError> {
    let total = payload
        .and_then(|p| p.checked_add(header_len))
        .ok_or_else(|| DataError::BadHeader {
            path: path.to_path_buf(),
            msg: "the data size the header describes overflows".to_string(),
        })?;
    match bytes.len().cmp(&total) {
        std::cmp::Ordering::Less => Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: total as u64,
            found: bytes.len() as u64,
        }),
        std::cmp::Ordering::Greater => Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            extra: (bytes.len() - total) as u64,
        }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Parses the (already decompressed) contents of an IDX image file. `path` is only used in
/// error messages.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages, DataError> {
    const HEADER: usize = 16;
    check_magic(bytes, IMAGES_MAGIC, HEADER, "images", path)?;
    let n = be_u32(bytes, 4, HEADER, path)? as usize;
    let rows = be_u32(bytes, 8, HEADER, path)? as usize;
    let cols = be_u32(bytes, 12, HEADER, path)? as usize;
    if rows == 0 || cols == 0 {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            msg: format!("image size {rows}×{cols} has a zero dimension"),
        });
    }
    let payload = n.checked_mul(rows).and_then(|x| x.checked_mul(cols));
    check_len(bytes, HEADER, payload, path)?;
    Ok(IdxImages {
        n,
        rows,
        cols,
        pixels: bytes[HEADER..].to_vec(),
    })
}

/// Parses the (already decompressed) contents of an IDX label file, checking that every label
/// is `< classes`. `path` is only used in error messages.
pub fn parse_labels(bytes: &[u8], classes: usize, path: &Path) -> Result<Vec<u8>, DataError> {
    const HEADER: usize = 8;
    check_magic(bytes, LABELS_MAGIC, HEADER, "labels", path)?;
    let n = be_u32(bytes, 4, HEADER, path)? as usize;
    check_len(bytes, HEADER, Some(n), path)?;
    let labels = &bytes[HEADER..];
    if let Some(index) = labels.iter().position(|&l| l as usize >= classes) {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: labels[index] as u32,
            max: classes.saturating_sub(1) as u32,
        });
    }
    Ok(labels.to_vec())
}

/// Reads an IDX image file (gzipped or plain).
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    parse_images(&read_maybe_gz(path)?, path)
}

/// Reads an IDX label file (gzipped or plain), checking every label is `< classes`.
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<u8>, DataError> {
    parse_labels(&read_maybe_gz(path)?, classes, path)
}

/// Reads an image file and its label file into a [`Dataset`] with `d = rows × cols` features
/// scaled to `[0, 1]` (divided by 255).
pub fn load_pair(images: &Path, labels: &Path, classes: usize) -> Result<Dataset, DataError> {
    let img = read_images(images)?;
    let lab = read_labels(labels, classes)?;
    if img.n != lab.len() {
        return Err(DataError::CountMismatch {
            images_path: images.to_path_buf(),
            images: img.n,
            labels_path: labels.to_path_buf(),
            labels: lab.len(),
        });
    }
    Ok(Dataset {
        features: img.pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: lab,
        n: img.n,
        d: img.rows * img.cols,
        classes,
    })
}

/// Finds `dir/stem.gz`, else `dir/stem`; if neither exists, a [`DataError::Missing`] naming the
/// gzipped path with the Fashion-MNIST install hint.
fn find_fashion_file(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{stem}.gz"));
    let plain = dir.join(stem);
    if gz.is_file() {
        Ok(gz)
    } else if plain.is_file() {
        Ok(plain)
    } else {
        Err(DataError::Missing {
            hint: format!(
                "(also looked for {}) Fashion-MNIST is not bundled: {FASHION_MNIST_HINT}",
                plain.display()
            ),
            path: gz,
        })
    }
}

/// Loads Fashion-MNIST from `dir` as `(train, test)`: 60,000 and 10,000 images of 28×28
/// (`d = 784`) with features scaled to `[0, 1]` and labels `0..=9` (names in
/// [`FASHION_MNIST_LABELS`]).
///
/// Reads `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
/// `t10k-images-idx3-ubyte.gz` and `t10k-labels-idx1-ubyte.gz`, or the same names without
/// `.gz`. The image size is taken from the files, not assumed. Use
/// [`DEFAULT_FASHION_MNIST_DIR`] for the Debian package's location.
pub fn load_fashion_mnist(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let mut parts = Vec::with_capacity(2);
    for prefix in ["train", "t10k"] {
        let images = find_fashion_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels = find_fashion_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        parts.push(load_pair(&images, &labels, FASHION_MNIST_CLASSES)?);
    }
    let test = parts.pop().expect("two parts were pushed");
    let train = parts.pop().expect("two parts were pushed");
    Ok((train, test))
}

/// An IDX images file as the loaders read it: the big-endian header `IMAGES_MAGIC, n, rows,
/// cols`, then `pixels` as given (for writing test data; `pixels` need not hold `n·rows·cols`
/// bytes).
pub fn images_bytes(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    idx_bytes(&[IMAGES_MAGIC, n, rows, cols], pixels)
}

/// An IDX labels file as the loaders read it: the big-endian header `LABELS_MAGIC, n`, then
/// `labels` as given (for writing test data).
pub fn labels_bytes(n: u32, labels: &[u8]) -> Vec<u8> {
    idx_bytes(&[LABELS_MAGIC, n], labels)
}

fn idx_bytes(header: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = header.iter().flat_map(|x| x.to_be_bytes()).collect();
    b.extend_from_slice(data);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("optim-dsl-idx-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Writes a complete small Fashion-MNIST-shaped directory (2×3 images): 3 train, 2 test.
    fn write_set(dir: &Path, gz: bool) {
        let train_px: Vec<u8> = (0..18).map(|i| (i * 15) as u8).collect();
        let test_px: Vec<u8> = vec![255; 12];
        let files = [
            ("train-images-idx3-ubyte", images_bytes(3, 2, 3, &train_px)),
            ("train-labels-idx1-ubyte", labels_bytes(3, &[9, 0, 4])),
            ("t10k-images-idx3-ubyte", images_bytes(2, 2, 3, &test_px)),
            ("t10k-labels-idx1-ubyte", labels_bytes(2, &[1, 2])),
        ];
        for (name, bytes) in files {
            if gz {
                std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }

    fn check_set(train: &Dataset, test: &Dataset) {
        assert_eq!((train.n, train.d, train.classes), (3, 6, 10));
        assert_eq!(train.labels, vec![9, 0, 4]);
        assert_eq!(train.features.len(), 18);
        assert_eq!(train.features[0], 0.0);
        assert_eq!(train.features[1], 15.0 / 255.0);
        assert_eq!(train.row(2)[5], 1.0);
        assert_eq!((test.n, test.d), (2, 6));
        assert_eq!(test.labels, vec![1, 2]);
        assert!(test.features.iter().all(|&x| x == 1.0));
    }

    #[test]
    fn loads_gzipped_and_plain_files() {
        for (tag, gzipped) in [("gz", true), ("plain", false)] {
            let dir = TempDir::new(tag);
            write_set(&dir.0, gzipped);
            let (train, test) = load_fashion_mnist(&dir.0).unwrap();
            check_set(&train, &test);
        }
    }

    #[test]
    fn truncated_image_data_is_an_error() {
        let dir = TempDir::new("trunc");
        // Header promises 3 images of 2×2 = 12 bytes; only 10 are there.
        let bytes = images_bytes(3, 2, 2, &[7; 10]);
        for (name, contents) in [("plain", bytes.clone()), ("gz", gzip(&bytes))] {
            let path = dir.0.join(name);
            std::fs::write(&path, contents).unwrap();
            let err = read_images(&path).unwrap_err();
            assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("truncated"), "{msg}");
            assert!(msg.contains("promises 28 bytes"), "{msg}");
            assert!(msg.contains("only 26"), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        // A file cut inside the header.
        let err = parse_labels(&LABELS_MAGIC.to_be_bytes(), 10, Path::new("x")).unwrap_err();
        assert!(
            err.to_string().contains("promises 8 bytes but only 4"),
            "{err}"
        );
        // Label data cut short.
        let err = parse_labels(&labels_bytes(5, &[1, 2]), 10, Path::new("x")).unwrap_err();
        assert!(
            err.to_string().contains("promises 13 bytes but only 10"),
            "{err}"
        );
    }

    #[test]
    fn truncated_gzip_stream_is_an_error() {
        let dir = TempDir::new("gzcut");
        let gz = gzip(&images_bytes(4, 8, 8, &[1; 256]));
        let path = dir.0.join("cut.gz");
        std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
        let err = read_images(&path).unwrap_err();
        assert!(matches!(err, DataError::Decompress { .. }), "{err:?}");
        assert!(err.to_string().contains("truncated gzip"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let err = parse_images(&images_bytes(1, 1, 1, &[1, 2]), Path::new("x")).unwrap_err();
        assert!(
            err.to_string().contains("1 unexpected trailing bytes"),
            "{err}"
        );
    }

    #[test]
    fn wrong_magic_is_an_error() {
        // A label file handed to the image reader, and vice versa.
        let err = parse_images(&labels_bytes(1, &[0]), Path::new("f")).unwrap_err();
        assert!(matches!(err, DataError::BadMagic { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("bad magic number 0x00000801"), "{msg}");
        assert!(msg.contains("expected 0x00000803"), "{msg}");
        let err = parse_labels(&images_bytes(0, 1, 1, &[]), 10, Path::new("f")).unwrap_err();
        assert!(err.to_string().contains("expected 0x00000801"), "{err}");
        // A swapped pair of files on disk.
        let dir = TempDir::new("magic");
        write_set(&dir.0, false);
        std::fs::rename(
            dir.0.join("train-labels-idx1-ubyte"),
            dir.0.join("swap.tmp"),
        )
        .unwrap();
        std::fs::copy(
            dir.0.join("train-images-idx3-ubyte"),
            dir.0.join("train-labels-idx1-ubyte"),
        )
        .unwrap();
        let err = load_fashion_mnist(&dir.0).unwrap_err();
        assert!(err.to_string().contains("train-labels-idx1-ubyte"), "{err}");
        assert!(err.to_string().contains("bad magic"), "{err}");
    }

    #[test]
    fn missing_file_mentions_the_apt_package() {
        let dir = TempDir::new("missing");
        let err = load_fashion_mnist(&dir.0).unwrap_err();
        assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("apt-get install dataset-fashion-mnist"),
            "{msg}"
        );
        assert!(msg.contains("--data DIR"), "{msg}");
        let expected = dir.0.join("train-images-idx3-ubyte.gz");
        assert!(msg.contains(&expected.display().to_string()), "{msg}");
        // Only the test labels missing: the message names that file.
        write_set(&dir.0, true);
        std::fs::remove_file(dir.0.join("t10k-labels-idx1-ubyte.gz")).unwrap();
        let msg = load_fashion_mnist(&dir.0).unwrap_err().to_string();
        assert!(msg.contains("t10k-labels-idx1-ubyte.gz"), "{msg}");
        assert!(
            msg.contains("apt-get install dataset-fashion-mnist"),
            "{msg}"
        );
    }

    #[test]
    fn count_mismatch_and_bad_labels_are_errors() {
        let dir = TempDir::new("count");
        let img = dir.0.join("img");
        let lab = dir.0.join("lab");
        std::fs::write(&img, images_bytes(2, 1, 1, &[0, 0])).unwrap();
        std::fs::write(&lab, labels_bytes(3, &[0, 1, 2])).unwrap();
        let err = load_pair(&img, &lab, 10).unwrap_err();
        assert!(matches!(err, DataError::CountMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("2 images"), "{err}");
        assert!(err.to_string().contains("3 labels"), "{err}");

        std::fs::write(&lab, labels_bytes(2, &[3, 10])).unwrap();
        let err = load_pair(&img, &lab, 10).unwrap_err();
        assert!(matches!(err, DataError::LabelOutOfRange { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("label 10 at sample 1 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn zero_sized_images_are_rejected() {
        let err = parse_images(&images_bytes(1, 0, 28, &[]), Path::new("x")).unwrap_err();
        assert!(matches!(err, DataError::BadHeader { .. }), "{err:?}");
    }

    /// Reads the real data set when the Debian package is installed:
    /// `cargo test -p examples --release -- --ignored`.
    #[test]
    #[ignore = "needs the dataset-fashion-mnist Debian package"]
    fn real_fashion_mnist() {
        let (train, test) = load_fashion_mnist(Path::new(DEFAULT_FASHION_MNIST_DIR)).unwrap();
        assert_eq!((train.n, train.d, train.classes), (60_000, 784, 10));
        assert_eq!((test.n, test.d), (10_000, 784));
        assert_eq!(train.class_counts(), vec![6_000; 10]);
        assert_eq!(test.class_counts(), vec![1_000; 10]);
    }
}
